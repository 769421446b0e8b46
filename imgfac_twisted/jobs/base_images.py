"""One base image per build: installed once, shared by every target of the build.

The first target builder that asks starts the install (within the install
limit, ``max_concurrent_local_sessions``); the others wait for the same
image.  While it runs, each waiting builder's progress and log follow it.
``wait_for_slot`` lets the dispatcher keep a builder PENDING until its
build's install holds a slot.  A builder that stops waiting (it was
cancelled) stops only its own wait; the install is cancelled when nobody
waits any more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..deferreds import observe, settle
from ..errors import ImageFactoryError
from ..model import StageName
from ..os import OperatingSystem, Package
from ..template import Template
from .logs import IBuilderLogs

BASE_IMAGE_NAME = "base.raw"
#: In the state directory: one folder per build, holding its base image and install files.
BUILDS_DIR = "builds"


class BootTester(Protocol):
    """Boots an installed base image once to prove it boots (see ``virt.boot``)."""

    def test(self, image_path: str, work_dir: str, build_id: str, log: Callable[[str], None]) -> Deferred[None]:
        """Fire (None) once the image booted to a login prompt; fail with the reason it did not.

        The image itself is never written: the guest runs on a throwaway overlay.
        """


class NoInstaller(ImageFactoryError):
    """No OS plug-in installs the template's operating system."""


@dataclass(frozen=True)
class Follower:
    """How a builder waiting for a base image follows its install: progress (0..100) and stages."""

    progress: Callable[[int], Any]
    stage: Callable[[StageName], Any]


@dataclass
class _Install:
    template: Template
    work_dir: str
    reactor: Any
    image_path: str
    #: The builders waiting, by builder id.
    listeners: dict[str, Follower] = field(default_factory=dict)
    waiters: list[Deferred[str]] = field(default_factory=list)
    #: Builders waiting for the install to get a slot (see BaseImages.wait_for_slot).
    slot_waiters: list[Deferred[None]] = field(default_factory=list)
    #: True once the install holds an install slot, or has ended.
    has_slot: bool = False
    running: Deferred[str] | None = None
    outcome: Any = None
    logs: IBuilderLogs | None = None
    #: The stage the install is in, for builders that come to wait later.
    current_stage: StageName | None = None
    #: The installed system's packages, once the OS plug-in has read them.
    manifest: list[Package] | None = None

    def got_slot(self) -> None:
        self.has_slot = True
        waiters, self.slot_waiters = self.slot_waiters, []
        for waiter in waiters:
            settle(waiter, None)

    def progress(self, percent: int) -> None:
        for follower in list(self.listeners.values()):
            follower.progress(percent)

    def stage(self, name: StageName) -> None:
        self.current_stage = name
        for follower in list(self.listeners.values()):
            follower.stage(name)

    def log(self, message: str) -> None:
        assert self.logs is not None
        for builder_id in list(self.listeners):
            self.logs.append(builder_id, message)


class BaseImages:
    """Installs and hands out the base images of builds."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        systems: dict[str, OperatingSystem],
        state_dir: str,
        logs: IBuilderLogs,
        install_slots: int,
        save_manifest: Callable[[str, list[Package]], Deferred[None]],
        boot_tester: BootTester | None = None,
    ) -> None:
        self._reactor = reactor
        self._systems = systems
        self._state_dir = state_dir
        self._logs = logs
        self._save_manifest = save_manifest
        self._boot_tester = boot_tester
        self._slots = DeferredSemaphore(install_slots)
        self._installs: dict[str, _Install] = {}

    def wait_for(self, build_id: str, template: Template, builder_id: str, follower: Follower) -> Deferred[str]:
        """Fire with the path of the build's base image, installing it if nobody has yet."""
        install = self._listen(build_id, template, builder_id, follower)
        waiter: Deferred[str] = Deferred(lambda waiting: self._stop_listening(install, builder_id, waiting))
        if install.outcome is not None:
            self._settle(waiter, install.outcome)
        else:
            install.waiters.append(waiter)
        return waiter

    def wait_for_slot(self, build_id: str, template: Template, builder_id: str, follower: Follower) -> Deferred[None]:
        """Fire (None) once the build's install holds an install slot or has ended, starting it if need be.

        Until then the builder waits for a local session, as a PENDING
        builder does; from then on it follows the install's progress.
        """
        install = self._listen(build_id, template, builder_id, follower)
        waiter: Deferred[None] = Deferred(lambda waiting: self._stop_listening(install, builder_id, waiting))
        if install.has_slot or install.outcome is not None:
            waiter.callback(None)
        else:
            install.slot_waiters.append(waiter)
        return waiter

    def _listen(self, build_id: str, template: Template, builder_id: str, follower: Follower) -> _Install:
        """The build's install, with ``builder_id`` among its listeners; started if it was not."""
        install = self._installs.get(build_id)
        if install is None:
            install = self._prepare(build_id, template)
        install.listeners[builder_id] = follower
        if install.running is not None and install.current_stage is not None:
            follower.stage(install.current_stage)
        if install.running is None and install.outcome is None:
            # Started only once the first builder listens, so it sees the install's first log line.
            self._start(build_id, install)
        return install

    @staticmethod
    def _stop_listening(install: _Install, builder_id: str, waiter: Deferred[Any]) -> None:
        """A builder stopped waiting (cancelled); the install is cancelled when nobody waits any more."""
        install.listeners.pop(builder_id, None)
        for waiting in (install.waiters, install.slot_waiters):
            if waiter in waiting:
                waiting.remove(waiter)
        if not install.listeners and install.running is not None:
            install.running.cancel()

    def wound_down(self, build_id: str) -> Deferred[None]:
        """Fire (None) once an install of the build that nobody waits for any more has ended; at once otherwise.

        A cancelled builder waits for this before it ends, so that when it
        shows FAILED its VM is already destroyed (the install's own end
        comes after its clean-up).
        """
        install = self._installs.get(build_id)
        if install is None or install.listeners or install.running is None:
            return succeed(None)
        # The caller may give up waiting (a timeout): the install runs on regardless.
        return observe(install.running)

    def forget(self, build_id: str) -> None:
        """The build's targets are done with its base image: drop it (an install still running is cancelled)."""
        install = self._installs.pop(build_id, None)
        if install is not None and install.running is not None:
            install.running.cancel()

    def installing(self) -> int:
        """How many installs are under way or waiting for a slot."""
        return sum(1 for install in self._installs.values() if install.running is not None)

    def _prepare(self, build_id: str, template: Template) -> _Install:
        work_dir = os.path.join(self._state_dir, BUILDS_DIR, build_id)
        os.makedirs(work_dir, exist_ok=True)
        install = _Install(
            template=template,
            work_dir=work_dir,
            reactor=self._reactor,
            image_path=os.path.join(work_dir, BASE_IMAGE_NAME),
            logs=self._logs,
        )
        self._installs[build_id] = install
        return install

    def _start(self, build_id: str, install: _Install) -> None:
        install.running = ensureDeferred(self._install(install))
        install.running.addBoth(self._finished, build_id, install)

    async def _install(self, install: _Install) -> str:
        system = next((s for s in self._systems.values() if s.handles(install.template)), None)
        if system is None:
            raise NoInstaller(
                f"no installer for the operating system {install.template.os_name!r} "
                f"(this daemon installs: {', '.join(sorted(s.name for s in self._systems.values()))})"
            )
        await self._slots.acquire()
        install.got_slot()
        try:
            partial = install.image_path + ".partial"
            job = _InstallJob(install, partial)
            await system.install(job)
            if install.manifest is None:
                raise ImageFactoryError(f"the {system.name} installer gave no package list of the installed system")
            if system.boot_tested and self._boot_tester is not None:
                install.stage(StageName.BOOT_TEST)
                await self._boot_tester.test(partial, install.work_dir, job.build_id, install.log)
            await self._save_manifest(job.build_id, install.manifest)
            # Only a complete image carries the final name.
            os.replace(partial, install.image_path)
            return install.image_path
        finally:
            self._slots.release()

    def _finished(self, outcome: Any, build_id: str, install: _Install) -> None:
        install.running = None
        install.outcome = outcome
        # Those waiting for a slot go on, and meet the outcome when they wait for the image.
        install.got_slot()
        if isinstance(outcome, Failure):
            _remove(install.image_path + ".partial")
            if outcome.check(CancelledError):
                # Abandoned (nobody waited any more): a target of the build that comes later starts afresh.
                # A failure is kept, so the build's other targets fail with its reason, not a second install.
                self._installs.pop(build_id, None)
        waiters, install.waiters = install.waiters, []
        for waiter in waiters:
            self._settle(waiter, outcome)

    @staticmethod
    def _settle(waiter: Deferred[str], outcome: Any) -> None:
        """Hand a waiting builder the install's outcome; a cancelled install is a plain failure to it."""
        if isinstance(outcome, Failure) and outcome.check(CancelledError):
            outcome = Failure(ImageFactoryError("the base image install was cancelled"))
        settle(waiter, outcome)

    def stop(self) -> None:
        """Cancel every install under way (the daemon is stopping)."""
        for install in list(self._installs.values()):
            if install.running is not None:
                install.running.cancel()


@dataclass
class _InstallJob:
    """The InstallJob an OS plug-in gets: the build's template and where to write."""

    _install: _Install
    image_path: str

    @property
    def template(self) -> Template:
        return self._install.template

    @property
    def build_id(self) -> str:
        # The work dir is state_dir/builds/<build id> (see BaseImages._start).
        return os.path.basename(self._install.work_dir)

    @property
    def work_dir(self) -> str:
        return self._install.work_dir

    @property
    def reactor(self) -> Any:
        return self._install.reactor

    def progress(self, percent: int) -> None:
        self._install.progress(percent)

    def stage(self, name: StageName) -> None:
        self._install.stage(name)

    def record_manifest(self, packages: list[Package]) -> None:
        self._install.manifest = list(packages)

    def log(self, message: str) -> None:
        self._install.log(message)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
