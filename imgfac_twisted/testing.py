"""Fakes for fast unit tests: no threads, no sockets, time driven by a Clock.

They implement the same interfaces as the real pieces and the real pieces'
conformance suites run against them where both exist.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from .doors import IDoor

SPEC_TEMPLATE = (
    "<template><name>f14jeos</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/x86_64/os/</url>"
    "</install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description></template>"
)


def template_named(name: str) -> str:
    """The spec's example template under another name (``FAIL`` makes mock builds fail)."""
    return SPEC_TEMPLATE.replace("<name>f14jeos</name>", f"<name>{name}</name>")


@implementer(IDoor)
class InlineDoor:
    """A door that runs the function at once, on the calling thread."""

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        try:
            return succeed(fn(*args, **kwargs))
        except BaseException:
            return fail()


class FakeReactor(Clock):
    """A Clock standing in for the reactor where only time is used."""


class Stack:
    """The daemon's pieces wired together on fakes: a SQLite file, an inline door, a Clock."""

    def __init__(self, state_dir: str, **settings: Any) -> None:
        from .config import Config
        from .events.inprocess import InProcessBus
        from .events.relay import OutboxRelay
        from .jobs.base_images import BaseImages
        from .jobs.dispatcher import Dispatcher
        from .os.mock import MockOS
        from .registry import PluginEnvironment
        from .jobs.fetch import TemplateFetcher
        from .jobs.index import BuilderIndex
        from .jobs.logs import BuilderLogs
        from .metrics import Metrics
        from .jobs.updates import BuilderUpdater
        from .providers.mock import MockProvider
        from .store.sqlite import SQLiteStore
        from .targets.mock import MockTarget

        settings.setdefault("mock_duration", 1.0)
        self.config = Config(state_dir=state_dir, **settings)
        self.clock = FakeReactor()
        self.store = SQLiteStore(f"{state_dir}/imagefactory.sqlite", InlineDoor())
        self.store.thd_open()
        self.index = BuilderIndex(self.store.thd_list_builders())
        self.bus = InProcessBus()
        #: Every event the relay delivered, in order.
        self.events: list[Any] = []
        self.bus.subscribe("#", self.events.append)
        self.relay = OutboxRelay(self.store, self.bus, self.clock)
        self.relay.startService()
        self.logs = BuilderLogs(state_dir, InlineDoor(), self.clock)
        self.metrics = Metrics()
        self.updater = BuilderUpdater(self.store, self.relay, self.index, self.logs, self.metrics, self.clock)
        environment = PluginEnvironment(self.config, self.clock, InlineDoor())
        self.base_images = BaseImages(self.clock, {"mock": MockOS(environment)}, state_dir, self.logs, 1)
        self.dispatcher = Dispatcher(
            self.clock, self.store, self.updater, self.index,
            targets={"mock": MockTarget(environment)},
            providers={"mock": MockProvider(environment)},
            state_dir=state_dir,
            fetcher=TemplateFetcher(self.clock, 5.0, 1024 * 1024),
            logs=self.logs,
            base_images=self.base_images,
            disk_door=InlineDoor(),
            build_slots=self.config.max_concurrent_builds,
            push_slots=self.config.max_concurrent_pushes,
        )

    def run_for(self, seconds: float, step: float = 0.05) -> None:
        """Advance the clock in small steps so every timer on the way fires."""
        for _ in range(int(seconds / step) + 1):
            self.clock.advance(step)

    def close(self) -> None:
        self.store.thd_close()


def result_of(deferred: Deferred) -> Any:
    """The result of a Deferred that has already fired; raise its failure if it failed."""
    outcome: list[Any] = []

    def keep(result: Any) -> Any:
        outcome.append(result)
        # A failure is taken here (and raised below); a success stays the result.
        return None if isinstance(result, Failure) else result

    deferred.addBoth(keep)
    if not outcome:
        raise AssertionError(f"{deferred!r} has not fired")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
