"""GNU tar, run through ``run_process``: packing target images (OVA, GCE) and checking what was packed.

tar prints no percentage, so it is asked to print a checkpoint line every
CHECKPOINT_RECORDS records it writes; the bytes written so far, against the
bytes expected, give the progress.  The listing (``tar --list --verbose``)
is parsed to check an archive's members, their order and their sizes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..processes import ProcessReactor, run_process
from .qemu import ImageCheckFailed, LogLine, Runner, Tool, require_tool, timeout_for

TAR = "tar"
#: tar writes records of 20 blocks of 512 bytes (its default blocking factor).
RECORD_BYTES = 20 * 512
#: A checkpoint line every 1000 records: one line per 10 MiB written.
CHECKPOINT_RECORDS = 1000
CHECKPOINT_MARK = "imgfac-checkpoint"
#: A ustar header holds sizes below 8 GiB (11 octal digits).
USTAR_MAX_MEMBER = 8 * 1024**3

_CHECKPOINT = re.compile(rf"{CHECKPOINT_MARK} (\d+)")
#: A line of ``LC_ALL=C tar --list --verbose --numeric-owner``:
#: "-rw-r--r-- 0/0 1073741824 2026-11-22 22:02 disk.raw".
_LISTING = re.compile(r"^(\S)\S{9}\s+\S+\s+(\d+)\s+\S+\s+\S+\s+(.+)$")


@dataclass(frozen=True)
class Member:
    """One file in an archive, as listed."""

    name: str
    size: int
    regular: bool = True


def create_args(
    executable: str,
    archive: str,
    directory: str,
    members: Sequence[str],
    *,
    tar_format: str,
    gzip: bool = False,
    sparse: bool = False,
) -> list[str]:
    """``tar --create`` of ``members`` (in this order) from ``directory``, printing checkpoints."""
    argv = [
        executable,
        f"--format={tar_format}",
        "--create",
        f"--file={archive}",
        f"--checkpoint={CHECKPOINT_RECORDS}",
        f"--checkpoint-action=echo={CHECKPOINT_MARK} %u",
        # The image's owner on the factory's host means nothing to the cloud.
        "--owner=0",
        "--group=0",
        "--numeric-owner",
    ]
    if sparse:
        argv.append("--sparse")
    if gzip:
        argv.append("--gzip")
    # "--" so a member name can never be read as an option.
    return argv + ["--directory", directory, "--", *members]


def list_args(executable: str, archive: str, *, gzip: bool = False) -> list[str]:
    """``tar --list --verbose`` of ``archive`` (reading a .tar.gz to its end checks its gzip CRC too)."""
    return [executable, "--list", "--verbose", "--numeric-owner", *(["--gzip"] if gzip else []), f"--file={archive}"]


def ova_format(largest_member: int) -> str:
    """The tar format of an OVA: ustar as the OVF standard asks, pax only where ustar cannot hold the size."""
    return "ustar" if largest_member < USTAR_MAX_MEMBER else "posix"


def checkpoint_bytes(line: str) -> int | None:
    """Bytes tar has written when it printed ``line``, or None if it is no checkpoint line."""
    match = _CHECKPOINT.search(line)
    return int(match.group(1)) * CHECKPOINT_RECORDS * RECORD_BYTES if match else None


def parse_listing(output: str) -> list[Member]:
    """The members of a verbose listing, in order; ImageCheckFailed on a line that is not a member."""
    members = []
    for line in output.splitlines():
        match = _LISTING.match(line)
        if match is None:
            raise ImageCheckFailed(f"unexpected line in the archive's listing: {line!r}")
        members.append(Member(name=match.group(3), size=int(match.group(2)), regular=match.group(1) == "-"))
    return members


def check_members(archive_name: str, members: list[Member], expected: list[Member]) -> None:
    """ImageCheckFailed unless the archive holds exactly ``expected``, regular files, in that order."""
    if members != expected:
        shown = ", ".join(f"{member.name} ({member.size} bytes)" for member in members) or "nothing"
        meant = ", ".join(f"{member.name} ({member.size} bytes)" for member in expected)
        raise ImageCheckFailed(f"{archive_name} holds {shown}; it must hold exactly {meant}")


class Tar(Tool):
    """GNU tar's create and list, each a child process."""

    def __init__(
        self, reactor: ProcessReactor, log: LogLine, run: Runner = run_process, executable: str | None = None
    ) -> None:
        super().__init__(reactor, log, executable or require_tool(TAR, "tar"), run)

    async def create(
        self,
        archive: str,
        directory: str,
        members: Sequence[str],
        *,
        tar_format: str,
        expected_bytes: int,
        on_progress: Callable[[float], None] | None = None,
        gzip: bool = False,
        sparse: bool = False,
    ) -> None:
        """Pack ``members``; ``on_progress`` gets the percentage of ``expected_bytes`` written so far."""

        def line(text: str) -> None:
            written = checkpoint_bytes(text)
            if written is not None and on_progress is not None:
                on_progress(min(100.0, 100.0 * written / max(expected_bytes, 1)))

        argv = create_args(
            self.executable, archive, directory, members, tar_format=tar_format, gzip=gzip, sparse=sparse
        )
        await self.run(f"packing {', '.join(members)}", argv, timeout_for(expected_bytes), line)

    async def members(self, archive: str, *, gzip: bool = False, size_hint: int = 0) -> list[Member]:
        """The members of ``archive``, in order."""
        result = await self.run(
            "listing the archive", list_args(self.executable, archive, gzip=gzip), timeout_for(size_hint)
        )
        return parse_listing(result.output)
