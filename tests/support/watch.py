"""A watch of the virt layer (an install, or a boot test) run on a fake libvirt and a Clock, for unit tests."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from imgfac_twisted.testing import FakeLibvirtConnection, result_of
from imgfac_twisted.virt.install import InstallFailed, InstallSpec, WatchRules, run_install


class WatchRun:
    """One ``run_install`` of ``spec`` on a FakeLibvirtConnection and a Clock, with what it reported."""

    def __init__(
        self,
        spec: InstallSpec,
        *,
        inactivity: float,
        total: float,
        rules: WatchRules | None = None,
        hold: bool = False,
    ) -> None:
        self.clock = Clock()
        self.connection = FakeLibvirtConnection()
        self.connection.hold = hold
        self.spec = spec
        self.progress: list[int] = []
        self.lines: list[str] = []
        self.result = run_install(
            self.connection,
            self.spec,
            domain_type="qemu",
            clock=self.clock,
            inactivity_timeout=inactivity,
            total_timeout=total,
            progress=self.progress.append,
            log=self.lines.append,
            poll_interval=1.0,
            rules=rules,
        )

    @property
    def domain(self) -> Any:
        return self.connection.libvirt.domains[self.spec.name]

    def console(self, data: bytes) -> None:
        """The guest prints ``data`` on its serial console."""
        with open(self.spec.console_log, "ab") as console:
            console.write(data)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, a second at a time (one poll each)."""
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def gone(self) -> bool:
        """Whether the domain was destroyed and undefined."""
        return self.spec.name not in self.connection.libvirt.domains

    def failure_message(self) -> str:
        """The reason the watch failed with (it must have failed)."""
        with pytest.raises(InstallFailed) as failed:
            result_of(self.result)
        return str(failed.value)
