"""The install flow the OS families share: boot the OS installer in a VM with an answer file.

1. Find the installer kernel and initrd (in the URL tree, or in the ISO) and
   bring them to disk (progress 0..10).
2. Append the generated answer file (kickstart, preseed) to a copy of the
   initrd in the build's work dir.
3. Create the sparse raw disk of the template's exact size.
4. Boot the kernel directly with the family's command line, serial console
   last, and let ``virt.install.run_install`` watch it until the guest powers
   itself off (progress 10..100).

A family plug-in subclasses :class:`VMInstaller` and says which templates
it takes, where its boot files are, and what the answer file and kernel
options are.  Cancelling ``install()`` cancels whatever step is under way.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from ..errors import ImageFactoryError
from ..model import StageName
from ..redaction import redact_url
from ..registry import PluginEnvironment
from ..template import Template
from . import InstallJob
from .downloads import Downloader, DownloadFailed, check_http_url
from .initrd import copy_and_append
from .iso import extract_boot_files, file_checksum, is_local, local_iso_path
from .manifest import ManifestReader
from .trees import TREEINFO, BootFiles, from_treeinfo

T = TypeVar("T")

#: Progress when the boot files are on disk; the VM's run fills the rest.
DOWNLOADED = 10
#: Marker left in a tree's cache folder when the tree has no .treeinfo.
NO_TREEINFO = ".treeinfo.absent"
#: How the guest reaches this host on QEMU's user-mode network (the domain's only network).
HOST_SEEN_FROM_GUEST = "10.0.2.2"
CHECKSUMS = ("sha256sum", "sha1sum", "md5sum")


class InstallError(ImageFactoryError):
    """An OS install failed; the message says which OS and why (the cause's own message follows)."""


@dataclass(frozen=True)
class BootMedia:
    """The installer on disk: kernel and initrd as found, the ISO to attach, the tree's URL."""

    kernel: str
    initrd: str
    iso: str | None = None
    tree_url: str | None = None


def create_sparse_disk(path: str, size: int) -> None:
    """A raw disk file of ``size`` bytes taking no space yet (blocking)."""
    with open(path, "wb") as disk:
        disk.truncate(size)


class _ReactorThreads:
    """A door on the reactor's own thread pool, for environments without a disk door."""

    def __init__(self, reactor: IReactorThreads) -> None:
        self._reactor = reactor

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args, **kwargs)


class VMInstaller:
    """Installs one OS family by booting its installer in a libvirt VM."""

    #: Shown in the daemon's list of installable systems.
    name = "?"
    #: Lower-case ``<os><name>`` values this plug-in takes.
    os_names: tuple[str, ...] = ()
    #: The answer file's name at the root of the initrd.
    answer_file = "?"
    #: A real OS: its base images boot, and are boot-tested.
    boot_tested = True

    def __init__(self, environment: PluginEnvironment, *, virt: Any = None, http_client: Any = None) -> None:
        self._environment = environment
        config = environment.config
        self._downloader = Downloader(
            environment.reactor,
            os.path.join(config.state_dir, "cache", "trees"),
            config.install_download_timeout,
            config.install_download_max_bytes,
            http_client,
        )
        self._door = environment.disk_door or _ReactorThreads(environment.reactor)
        # The virt layer is imported when first needed, so a daemon that
        # never installs a real OS needs no libvirt; tests pass a fake.
        self._virt = virt

    # -- what a family says ---------------------------------------------------

    def handles(self, template: Template) -> bool:
        """Whether the template's ``<os><name>`` is one of this family's."""
        return template.os_name.strip().lower() in self.os_names

    def tree_paths(self, template: Template) -> list[BootFiles]:
        """Where the kernel and initrd are in a URL tree without .treeinfo, in order of preference."""
        raise NotImplementedError

    def iso_paths(self, template: Template) -> list[BootFiles]:
        """Where they are on an ISO without .treeinfo."""
        raise NotImplementedError

    def answers(self, template: Template, tree_url: str | None) -> str:
        """The answer file's text."""
        raise NotImplementedError

    def kernel_arguments(self, template: Template, tree_url: str | None) -> str:
        """The installer's kernel options, without console=."""
        raise NotImplementedError

    # -- the flow -------------------------------------------------------------

    def install(self, job: InstallJob) -> Deferred[None]:
        """Install the template's OS into a raw disk at ``job.image_path``."""
        return ensureDeferred(self._install(job))

    def command_line(self, template: Template, tree_url: str | None) -> str:
        """The whole kernel command line; the serial console is the last console=, for the build log."""
        parts = [self.kernel_arguments(template, tree_url), template.kernel_params or "", "console=tty0 console=ttyS0"]
        return " ".join(part for part in parts if part)

    async def _install(self, job: InstallJob) -> None:
        what = f"{job.template.os_name} {job.template.os_version} install failed"
        try:
            await self._steps(job)
        except ImageFactoryError as error:
            raise InstallError(f"{what}: {error.message}") from error
        except OSError as error:
            # Disk full, permissions...: say what, without the state_dir layout.
            name = os.path.basename(error.filename) if error.filename else ""
            raise InstallError(f"{what}: {error.strerror or error}{f' ({name})' if name else ''}") from error

    async def _steps(self, job: InstallJob) -> None:
        template = job.template
        job.progress(0)
        job.stage(StageName.DOWNLOADING)
        media = await self._boot_media(job)
        job.progress(DOWNLOADED)
        kernel = os.path.join(job.work_dir, "vmlinuz")
        initrd = os.path.join(job.work_dir, "initrd.img")
        tree_url = as_seen_from_guest(media.tree_url)
        if tree_url != media.tree_url:
            job.log(
                f"the guest reaches this host as {HOST_SEEN_FROM_GUEST}: "
                f"the installer is given {redact_url(tree_url or '')}"
            )
        answers = self.answers(template, tree_url).encode("utf-8")
        if media.kernel != kernel:
            await self._door.run(shutil.copyfile, media.kernel, kernel)
        await self._door.run(copy_and_append, media.initrd, initrd, self.answer_file, answers)
        job.log(f"appended {self.answer_file} to the initrd")
        await self._door.run(create_sparse_disk, job.image_path, template.disk_size_bytes)
        job.log(f"created a sparse raw disk of {template.disk_size_bytes} bytes")
        await self._run_vm(job, kernel, initrd, media, tree_url)
        job.progress(100)

    async def _run_vm(self, job: InstallJob, kernel: str, initrd: str, media: BootMedia, tree_url: str | None) -> None:
        virt = self._virt or importlib.import_module("imgfac_twisted.virt.install")
        config = self._environment.config
        connection = self._environment.libvirt
        if connection is None:
            raise ImageFactoryError("this daemon has no libvirt connection to install with")
        spec = virt.InstallSpec(
            name=virt.DOMAIN_PREFIX + job.build_id,
            disk_path=job.image_path,
            kernel_path=kernel,
            initrd_path=initrd,
            cmdline=self.command_line(job.template, tree_url),
            console_log=os.path.join(job.work_dir, "console.log"),
            iso_path=media.iso,
            memory_mib=config.install_memory_mib,
        )
        job.log(f"starting the installer: {_without_passwords(spec.cmdline)}")
        job.stage(StageName.INSTALLING)
        span = 100 - DOWNLOADED
        manifest = ManifestReader(job.log)
        await virt.run_install(
            connection,
            spec,
            domain_type=config.libvirt_domain_type,
            clock=job.reactor,
            inactivity_timeout=config.install_inactivity_timeout,
            total_timeout=config.install_timeout,
            progress=lambda percent: job.progress(DOWNLOADED + percent * span // 100),
            log=manifest.line,
        )
        job.log("the installer finished and powered the guest off")
        if manifest.packages is None:
            raise ImageFactoryError(
                "the installer powered off without printing the package manifest on the "
                "serial console (its answer file's last step)"
            )
        job.record_manifest(manifest.packages)

    # -- finding the installer ------------------------------------------------

    async def _boot_media(self, job: InstallJob) -> BootMedia:
        template = job.template
        if template.install_type == "iso":
            return await self._iso_media(job)
        tree = template.install_location
        check_http_url(tree, "the install URL")
        candidates = await self._tree_candidates(tree, template, job.log)
        tried: list[str] = []
        for boot in candidates:
            try:
                kernel = await self._downloader.from_tree(tree, boot.kernel, _share(job, 0, 3), job.log)
            except DownloadFailed as error:
                # A missing candidate (404, or the 403 of S3-backed mirrors): try the next.
                if not error.absent:
                    raise
                tried.append(f"{boot.kernel}: HTTP {error.code}")
                continue
            # The initrd beside a kernel that exists must exist: any error fails the install.
            initrd = await self._downloader.from_tree(tree, boot.initrd, _share(job, 3, DOWNLOADED), job.log)
            return BootMedia(kernel=kernel, initrd=initrd, tree_url=tree)
        raise ImageFactoryError(
            f"no installer kernel in the install tree {redact_url(tree)} (looked for {', '.join(tried)})"
        )

    async def _tree_candidates(
        self, tree: str, template: Template, log: Callable[[str], None] | None
    ) -> list[BootFiles]:
        """The .treeinfo's kernel and initrd when the tree has one, else the family's standard paths."""
        absent = os.path.join(self._downloader.tree_dir(tree), NO_TREEINFO)
        if not os.path.exists(absent):
            try:
                path = await self._downloader.from_tree(tree, TREEINFO, None, log)
            except DownloadFailed as error:
                # 403 too: S3- and CDN-backed mirrors answer it for a file they do not have.
                if not error.absent:
                    raise
                if log:
                    log(f"the install tree has no {TREEINFO} (HTTP {error.code}): using the standard paths")
                # Remembered, so that a second build of the tree asks nothing.
                os.makedirs(os.path.dirname(absent), exist_ok=True)
                open(absent, "wb").close()
            else:
                with open(path, encoding="utf-8", errors="replace") as stream:
                    named = from_treeinfo(stream.read(), template.os_arch)
                if named is not None:
                    return [named]
        return self.tree_paths(template)

    async def _iso_media(self, job: InstallJob) -> BootMedia:
        template = job.template
        location = template.install_location
        if is_local(location):
            iso = local_iso_path(location, self._environment.config.install_iso_dir)
            job.log(f"installing from the local ISO {iso}")
        else:
            check_http_url(location, "the ISO URL")
            iso = await self._downloader.cached(
                location, self._downloader.file_path(location), _share(job, 0, DOWNLOADED - 1), job.log
            )
        await self._verify_iso(job, iso)
        kernel, initrd = await self._door.run(
            extract_boot_files, iso, self.iso_paths(template), template.os_arch, job.work_dir
        )
        job.log("took the installer kernel and initrd out of the ISO")
        return BootMedia(kernel=kernel, initrd=initrd, iso=iso)

    async def _verify_iso(self, job: InstallJob, iso: str) -> None:
        """Check the ISO against the template's checksum, when it gives one."""
        install = job.template.tree().find("os/install")
        assert install is not None, "the TDL schema requires <os><install>"
        for algorithm in CHECKSUMS:
            expected = install.findtext(algorithm)
            if expected:
                actual = await self._door.run(file_checksum, iso, algorithm.removesuffix("sum"))
                if actual.lower() != expected.strip().lower():
                    raise ImageFactoryError(
                        f"the ISO {redact_url(job.template.install_location)} does not match its "
                        f"{algorithm} (got {actual})"
                    )
                job.log(f"the ISO matches its {algorithm}")
                return


def _without_passwords(cmdline: str) -> str:
    """The command line with the password of any URL's user info hidden."""
    words = []
    for word in cmdline.split():
        key, equals, value = word.partition("=")
        words.append(key + equals + redact_url(value) if "://" in value else word)
    return " ".join(words)


def _share(job: InstallJob, start: int, end: int) -> Callable[[int, int | None], None]:
    """A download progress callback moving the job's progress from ``start`` to ``end``."""

    def report(received: int, total: int | None) -> None:
        if total:
            job.progress(start + (end - start) * min(received, total) // total)

    return report


def as_seen_from_guest(url: str | None) -> str | None:
    """``url`` with a loopback host (127.0.0.0/8, localhost, ::1) made the address the guest reaches this host at.

    The factory downloads the kernel from the URL as given; the installer,
    inside the VM, fetches the rest from it, and inside the VM 127.0.0.1 is
    the guest itself.
    """
    if url is None:
        return None
    parts = urlsplit(url)
    if not _is_loopback(parts.hostname or ""):
        return url
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + HOST_SEEN_FROM_GUEST + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
