"""qemu-img, run through ``run_process``: argument building, progress, convert, create, info and checks.

Nothing here blocks the reactor: every qemu-img run is a child process
watched by a ProcessProtocol, with a timeout that grows with the image, and
cancelling a run's Deferred kills the tool.  The argument builders and
parsers are plain functions so they can be tested without a process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from ..errors import ImageFactoryError
from ..processes import ProcessFailed, ProcessReactor, ProcessResult, run_process

QEMU_IMG = "qemu-img"
GIB = 1024**3
MIB = 1024**2
#: A conversion may take this long plus TIMEOUT_PER_GIB per GiB of virtual size.
BASE_TIMEOUT = 600.0
TIMEOUT_PER_GIB = 60.0
#: ``qemu-img info`` reads headers only: it is quick whatever the size.
INFO_TIMEOUT = 60.0

#: What ``qemu-img convert -p`` prints (and redraws with \r): "    (12.34/100%)".
_PROGRESS = re.compile(r"^\s*\((\d+(?:\.\d+)?)/100%\)\s*$")

#: The signature of ``run_process``, so tests can hand in a scripted runner.
Runner = Callable[..., Deferred[ProcessResult]]
#: Where command lines and timings go (a job's ``log``, which returns a Deferred).
LogLine = Callable[[str], Deferred[None]]


class ConversionFailed(ImageFactoryError):
    """A tool that makes a target image failed, ran too long, or is missing."""


class ImageCheckFailed(ConversionFailed):
    """A produced image is not what it should be (format, size, structure)."""


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info --output=json`` says about an image."""

    format: str
    virtual_size: int
    #: Bytes allocated on the disk (a sparse image takes less than its size).
    actual_size: int | None = None
    #: The ``data`` of ``format-specific`` (e.g. qcow2 ``compat``, vmdk ``create-type``).
    specific: Mapping[str, Any] = field(default_factory=dict)


# -- arguments -------------------------------------------------------------


def timeout_for(size: int) -> float:
    """Seconds allowed for a run over an image of ``size`` bytes."""
    return BASE_TIMEOUT + TIMEOUT_PER_GIB * math.ceil(size / GIB)


def options_args(options: Mapping[str, str]) -> list[str]:
    """``-o key=value,...`` (nothing when there are no options)."""
    if not options:
        return []
    # qemu-img reads a comma inside a value as the next option: refuse it
    # rather than build a command that means something else.
    for key, value in options.items():
        if "," in key or "," in value or "=" in key:
            raise ValueError(f"qemu-img option {key}={value} cannot be passed safely")
    return ["-o", ",".join(f"{key}={value}" for key, value in options.items())]


def convert_args(
    executable: str,
    source: str,
    source_format: str,
    target: str,
    target_format: str,
    options: Mapping[str, str],
    *,
    existing_target: bool = False,
) -> list[str]:
    """The ``qemu-img convert -p`` command line.

    ``existing_target`` writes into an image made beforehand by ``create``
    (``-n``); it is known to read as zeros, so qemu-img need not zero it.
    """
    argv = [executable, "convert", "-p", "-f", source_format, "-O", target_format]
    argv += ["-n", "--target-is-zero"] if existing_target else options_args(options)
    return argv + [source, target]


def create_args(executable: str, path: str, image_format: str, options: Mapping[str, str], size: int) -> list[str]:
    """The ``qemu-img create`` command line for an empty image of ``size`` bytes."""
    return [executable, "create", "-q", "-f", image_format, *options_args(options), path, str(size)]


def info_args(executable: str, path: str, image_format: str) -> list[str]:
    """``qemu-img info`` as JSON, with the format named (a fixed VHD would probe as raw)."""
    return [executable, "info", "--output=json", "-f", image_format, path]


# -- parsing and checks ----------------------------------------------------


def parse_progress(line: str) -> float | None:
    """The percentage of a ``qemu-img -p`` progress line, or None for any other line."""
    match = _PROGRESS.match(line)
    return float(match.group(1)) if match else None


def parse_info(output: str, path: str) -> ImageInfo:
    """The ImageInfo of ``qemu-img info --output=json`` output; ImageCheckFailed if it is not that."""
    # run_process joins both streams: keep the JSON object, drop any warning around it.
    start, end = output.find("{"), output.rfind("}")
    try:
        document = json.loads(output[start : end + 1]) if start >= 0 else None
    except ValueError:
        document = None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("virtual-size"), int)
        or not isinstance(document.get("format"), str)
    ):
        raise ImageCheckFailed(
            f"qemu-img info gave no usable description of {os.path.basename(path)}: {output[:200]!r}"
        )
    specific = document.get("format-specific")
    return ImageInfo(
        format=document["format"],
        virtual_size=document["virtual-size"],
        actual_size=document.get("actual-size"),
        specific=specific.get("data", {}) if isinstance(specific, dict) else {},
    )


def check_info(
    info: ImageInfo, path: str, image_format: str, size: int, specific: Mapping[str, Any] | None = None
) -> None:
    """Raise ImageCheckFailed naming every way ``info`` differs from what was meant."""
    problems = []
    if info.format != image_format:
        problems.append(f"format {info.format}, not {image_format}")
    if info.virtual_size != size:
        problems.append(f"virtual size {info.virtual_size} bytes, not {size}")
    for key, value in (specific or {}).items():
        if info.specific.get(key) != value:
            problems.append(f"{key} {info.specific.get(key)!r}, not {value!r}")
    if problems:
        raise ImageCheckFailed(f"{os.path.basename(path)} is not the image meant: {'; '.join(problems)}")


def describe(info: ImageInfo) -> str:
    """A log line's worth of ImageInfo."""
    extra = "".join(f", {key} {info.specific[key]}" for key in ("compat", "create-type") if key in info.specific)
    return f"{info.format}, virtual size {info.virtual_size} bytes{extra}"


def require_tool(name: str, package: str) -> str:
    """The path of the program ``name``; ConversionFailed naming the Debian package if it is missing."""
    path = shutil.which(name)
    if path is None:
        raise ConversionFailed(f"{name} is not installed on the factory's host (Debian package {package})")
    return path


def tool_environment() -> dict[str, str]:
    """The daemon's environment in the C locale, so tools print what the parsers expect."""
    return {**os.environ, "LC_ALL": "C"}


# -- running ---------------------------------------------------------------


class Tool:
    """Runs one program's commands through ``run``, logging each command line and its duration."""

    def __init__(self, reactor: ProcessReactor, log: LogLine, executable: str, run: Runner = run_process) -> None:
        self.reactor = reactor
        self.executable = executable
        self._log = log
        self._run = run

    async def run(
        self, what: str, argv: Sequence[str], timeout: float, on_line: Callable[[str], None] | None = None
    ) -> ProcessResult:
        """Run ``argv``; ConversionFailed saying ``what`` failed if it does not exit 0."""
        await self._log(f"{what}: {' '.join(argv)}")
        started = self.reactor.seconds()
        running = True

        def line(text: str) -> None:
            # A cancelled tool may print on until SIGTERM lands: its lines no longer count.
            if running and on_line is not None:
                on_line(text)

        try:
            result = await self._run(self.reactor, list(argv), timeout=timeout, on_line=line, env=tool_environment())
        except ProcessFailed as error:
            raise ConversionFailed(f"{what} failed: {error.message}") from None
        finally:
            running = False
        await self._log(f"{what}: done in {self.reactor.seconds() - started:.2f} s")
        return result


class QemuImg(Tool):
    """qemu-img's convert, create and info, each a child process."""

    def __init__(
        self, reactor: ProcessReactor, log: LogLine, run: Runner = run_process, executable: str | None = None
    ) -> None:
        super().__init__(reactor, log, executable or require_tool(QEMU_IMG, "qemu-utils"), run)

    async def convert(
        self,
        source: str,
        source_format: str,
        target: str,
        target_format: str,
        options: Mapping[str, str],
        *,
        size: int,
        on_progress: Callable[[float], None] | None = None,
        existing_target: bool = False,
    ) -> None:
        """Convert ``source`` into ``target``, handing ``on_progress`` each percentage printed."""

        def line(text: str) -> None:
            percent = parse_progress(text)
            if percent is not None and on_progress is not None:
                on_progress(percent)

        argv = convert_args(
            self.executable, source, source_format, target, target_format, options, existing_target=existing_target
        )
        await self.run(f"converting to {target_format}", argv, timeout_for(size), line)

    async def create(self, path: str, image_format: str, options: Mapping[str, str], size: int) -> None:
        """Make an empty image of ``size`` bytes."""
        await self.run(
            f"creating an empty {image_format} image",
            create_args(self.executable, path, image_format, options, size),
            timeout_for(size),
        )

    async def info(self, path: str, image_format: str) -> ImageInfo:
        """What qemu-img reads in ``path`` as ``image_format``; ImageCheckFailed if it cannot."""
        try:
            result = await self._run(
                self.reactor,
                info_args(self.executable, path, image_format),
                timeout=INFO_TIMEOUT,
                env=tool_environment(),
            )
        except ProcessFailed as error:
            raise ImageCheckFailed(
                f"qemu-img cannot read {os.path.basename(path)} as {image_format}: {error.message}"
            ) from None
        return parse_info(result.output, path)

    async def check(
        self, path: str, image_format: str, size: int, specific: Mapping[str, Any] | None = None
    ) -> ImageInfo:
        """``info``, then ImageCheckFailed unless format, virtual size and ``specific`` are as meant."""
        info = await self.info(path, image_format)
        check_info(info, path, image_format, size, specific)
        await self._log(f"checked {os.path.basename(path)}: {describe(info)}")
        return info
