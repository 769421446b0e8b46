"""The event bus: every builder change, published for whoever listens.

``IEventBus`` has an in-process implementation (the default); the AMQP one
plugs in behind the same interface.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from zope.interface import Interface

from ..model import BuilderChange

Subscriber = Callable[[BuilderChange], None]


class IEventBus(Interface):
    """Publishes builder changes to subscribers."""

    def publish(change: BuilderChange) -> Deferred:
        """Publish one change; fire once it is handed on (or safely kept)."""

    def subscribe(subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every later change; return a function that unsubscribes."""
