"""The default event bus: subscribers in this process, called at once."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from . import Event, EventCallback, IEventBus, ISubscription


def topic_matches(pattern: str, routing_key: str) -> bool:
    """True when an AMQP topic ``pattern`` matches ``routing_key`` (``*`` one word, ``#`` any number)."""
    return _words_match(pattern.split("."), routing_key.split("."))


def _words_match(pattern: list[str], key: list[str]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, key[skip:]) for skip in range(len(key) + 1))
    return bool(key) and head in ("*", key[0]) and _words_match(rest, key[1:])


@implementer(ISubscription)
class _Subscription:
    def __init__(self, bus: InProcessBus, entry: tuple[str, EventCallback]) -> None:
        self._bus = bus
        self._entry = entry

    def cancel(self) -> Deferred[None]:
        if self._entry in self._bus._subscribers:
            self._bus._subscribers.remove(self._entry)
        return succeed(None)


@implementer(IEventBus)
class InProcessBus:
    """Delivers each event to every matching subscriber, in order, synchronously."""

    log = Logger()

    def __init__(self) -> None:
        self._subscribers: list[tuple[str, EventCallback]] = []

    def publish(self, event: Event) -> Deferred[None]:
        """Call every matching subscriber; one that raises is logged and does not stop the others."""
        for pattern, callback in list(self._subscribers):
            if topic_matches(pattern, event.routing_key):
                try:
                    callback(event)
                except Exception:
                    self.log.failure("event subscriber {callback!r} failed", callback=callback)
        return succeed(None)

    def subscribe(self, pattern: str, callback: EventCallback) -> Deferred[ISubscription]:
        """Add a subscriber; fires with its subscription at once."""
        entry = (pattern, callback)
        self._subscribers.append(entry)
        return succeed(_Subscription(self, entry))
