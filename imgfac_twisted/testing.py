"""Fakes for fast unit tests: no threads, no sockets, time driven by a Clock.

They implement the same interfaces as the real pieces and the real pieces'
conformance suites run against them where both exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from .doors import IDoor

T = TypeVar("T")

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

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
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
        from .core import Doors, Plugins, build_core
        from .events.inprocess import InProcessBus
        from .jobs.index import BuilderIndex
        from .os.mock import MockOS
        from .providers.mock import MockProvider
        from .registry import PluginEnvironment
        from .store.sqlite import SQLiteStore
        from .targets.mock import MockTarget

        def mock_plugins(environment: PluginEnvironment) -> Plugins:
            return Plugins(
                systems={"mock": MockOS(environment)},
                targets={"mock": MockTarget(environment)},
                providers={"mock": MockProvider(environment)},
            )

        settings.setdefault("mock_duration", 1.0)
        settings.setdefault("max_concurrent_local_sessions", 1)
        self.config = Config(state_dir=state_dir, **settings)
        self.clock = FakeReactor()
        store = SQLiteStore(f"{state_dir}/imagefactory.sqlite", InlineDoor())
        store.thd_open()
        bus = InProcessBus()
        #: Every event the relay delivered, in order.
        self.events: list[Any] = []
        bus.subscribe("#", self.events.append)
        core = build_core(
            self.config,
            self.clock,
            store,
            BuilderIndex(store, store.thd_list_builders()),
            bus,
            Doors(logs=InlineDoor(), disk=InlineDoor(), cloud=InlineDoor(), cpu=InlineDoor()),
            plugins=mock_plugins,
            fetch_timeout=5.0,
        )
        self.store, self.index, self.bus, self.relay = core.store, core.index, bus, core.relay
        self.logs, self.metrics, self.updater = core.logs, core.metrics, core.updater
        self.base_images, self.dispatcher = core.base_images, core.dispatcher
        self.relay.startService()

    def run_for(self, seconds: float, step: float = 0.05) -> None:
        """Advance the clock in small steps so every timer on the way fires."""
        for _ in range(int(seconds / step) + 1):
            self.clock.advance(step)

    def close(self) -> None:
        self.store.thd_close()


def result_of(deferred: Deferred[T]) -> T:
    """The result of a Deferred that has already fired; raise its failure if it failed."""
    outcome: list[Any] = []

    def keep(result: T | Failure) -> T | None:
        outcome.append(result)
        # A failure is taken here (and raised below); a success stays the result.
        return None if isinstance(result, Failure) else result

    deferred.addBoth(keep)
    if not outcome:
        raise AssertionError(f"{deferred!r} has not fired")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    result: T = outcome[0]
    return result


# --- libvirt ---------------------------------------------------------------------------------------------------


def libvirt_error(message: str, code: int) -> Exception:
    """A libvirt.libvirtError with ``message`` and error ``code`` (libvirt.VIR_ERR_*), as libvirt raises them."""
    import libvirt

    # libvirtError() would take its message from libvirt's last error of
    # this thread, which may be stale: build it by hand.
    error = libvirt.libvirtError.__new__(libvirt.libvirtError)
    Exception.__init__(error, message)
    error.err = (code, 0, message, 2, None, None, None, 0, 0)
    made: Exception = error
    return made


class FakeDomain:
    """A libvirt virDomain in memory; a test moves it with power_off(), crash() and write()."""

    def __init__(self, libvirt: FakeLibvirt, name: str, xml: str) -> None:
        import libvirt as real

        self._libvirt = libvirt
        self._name = name
        self.xml = xml
        self._state = (real.VIR_DOMAIN_SHUTOFF, real.VIR_DOMAIN_SHUTOFF_UNKNOWN)
        #: (write requests, bytes written) of the disk since the start.
        self.writes = (0, 0)
        #: Method name to the libvirtError its next call raises.
        self.failures: dict[str, Exception] = {}

    def _check(self, method: str) -> None:
        if method in self.failures:
            raise self.failures.pop(method)

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int = 0) -> str:
        return self.xml

    def create(self) -> int:
        import libvirt as real

        self._check("create")
        self._state = (real.VIR_DOMAIN_RUNNING, real.VIR_DOMAIN_RUNNING_BOOTED)
        return 0

    def state(self) -> list[int]:
        self._check("state")
        return list(self._state)

    def isActive(self) -> int:
        import libvirt as real

        return int(self._state[0] not in (real.VIR_DOMAIN_SHUTOFF, real.VIR_DOMAIN_CRASHED))

    def isPersistent(self) -> int:
        return int(self._name in self._libvirt.domains)

    def blockStats(self, disk: str) -> tuple[int, int, int, int, int]:
        import libvirt as real

        self._check("blockStats")
        if not self.isActive():
            raise libvirt_error(
                "Requested operation is not valid: domain is not running", real.VIR_ERR_OPERATION_INVALID
            )
        if disk != "vda":
            raise libvirt_error(f"invalid argument: invalid path: {disk}", real.VIR_ERR_INVALID_ARG)
        return (0, 0, self.writes[0], self.writes[1], -1)

    def destroy(self) -> int:
        import libvirt as real

        self._check("destroy")
        if not self.isActive():
            raise libvirt_error(
                "Requested operation is not valid: domain is not running", real.VIR_ERR_OPERATION_INVALID
            )
        self._state = (real.VIR_DOMAIN_SHUTOFF, real.VIR_DOMAIN_SHUTOFF_DESTROYED)
        self._libvirt.destroyed.append(self._name)
        return 0

    def undefine(self) -> int:
        self._check("undefine")
        self._libvirt.domains.pop(self._name)
        self._libvirt.undefined.append(self._name)
        return 0

    # What the guest does:

    def write(self, nbytes: int) -> None:
        """The guest writes ``nbytes`` to its disk."""
        self.writes = (self.writes[0] + 1, self.writes[1] + nbytes)

    def power_off(self) -> None:
        """The guest powers itself off (ACPI): QEMU exits, libvirt says SHUTOFF / SHUTDOWN."""
        import libvirt as real

        self._state = (real.VIR_DOMAIN_SHUTOFF, real.VIR_DOMAIN_SHUTOFF_SHUTDOWN)

    def crash(self) -> None:
        """QEMU or the guest crashed: SHUTOFF / CRASHED."""
        import libvirt as real

        self._state = (real.VIR_DOMAIN_SHUTOFF, real.VIR_DOMAIN_SHUTOFF_CRASHED)


class FakeLibvirt:
    """A libvirt virConnect in memory: defines, looks up and lists FakeDomains."""

    def __init__(self) -> None:
        #: The defined domains by name.
        self.domains: dict[str, FakeDomain] = {}
        #: Names of the domains destroyed and undefined, in order.
        self.destroyed: list[str] = []
        self.undefined: list[str] = []
        #: Method name to the libvirtError its next call raises.
        self.failures: dict[str, Exception] = {}

    def defineXML(self, xml: str) -> FakeDomain:
        from lxml import etree

        if "defineXML" in self.failures:
            raise self.failures.pop("defineXML")
        name = etree.fromstring(xml).findtext("name")
        assert name is not None, "a domain's XML names it"
        domain = self.domains.get(name) or FakeDomain(self, name, xml)
        domain.xml = xml
        self.domains[name] = domain
        return domain

    def lookupByName(self, name: str) -> FakeDomain:
        import libvirt as real

        if name not in self.domains:
            raise libvirt_error(f"Domain not found: no domain with matching name '{name}'", real.VIR_ERR_NO_DOMAIN)
        return self.domains[name]

    def listAllDomains(self, flags: int = 0) -> list[FakeDomain]:
        return list(self.domains.values())


class FakeLibvirtConnection:
    """Stands in for virt.connection.LibvirtConnection: runs each call at once on a FakeLibvirt.

    With ``hold = True`` calls wait until ``release()``, as a busy libvirt thread would make them.
    """

    uri = "fake:///"

    def __init__(self, libvirt: FakeLibvirt | None = None) -> None:
        self.libvirt = libvirt or FakeLibvirt()
        self.hold = False
        self._held: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        #: Names of the functions run, in order.
        self.calls: list[str] = []

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if self.hold:
            waiting: Deferred[T] = Deferred()
            self._held.append((waiting, fn, args, kwargs))
            return waiting
        return self._call(fn, args, kwargs)

    def release(self) -> None:
        """Run the held calls, in order."""
        self.hold = False
        held, self._held = self._held, []
        for waiting, fn, args, kwargs in held:
            self._call(fn, args, kwargs).chainDeferred(waiting)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Deferred[T]:
        self.calls.append(fn.__name__)
        try:
            return succeed(fn(self.libvirt, *args, **kwargs))
        except BaseException:
            return fail()
