"""The default event bus: subscribers in this process, called at once."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..model import BuilderChange
from . import IEventBus, Subscriber


@implementer(IEventBus)
class InProcessBus:
    """Delivers each change to every subscriber, in order, synchronously."""

    log = Logger()

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def publish(self, change: BuilderChange) -> Deferred:
        """Call every subscriber; one that raises is logged and does not stop the others."""
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:
                self.log.failure("event subscriber {subscriber!r} failed", subscriber=subscriber)
        return succeed(None)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; the returned function removes it again."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)
