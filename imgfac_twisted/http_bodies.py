"""HTTP clients on the injected reactor, and reading their response bodies with a cap on their size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent


def http_client_on(reactor: IReactorTime) -> HTTPClient:
    """A treq client whose connections and timers run on ``reactor``.

    The ``treq`` module's own functions use the global reactor: a test
    driving another one, or a Clock, would not see their timers.
    """
    return HTTPClient(Agent(reactor))


class BodyTooLarge(Exception):
    """A response body went past its cap; treq dropped the connection."""


async def collect_capped(response: Any, sink: Callable[[bytes], None], max_bytes: int) -> int:
    """Hand the body of ``response`` to ``sink`` piece by piece; its length, or BodyTooLarge past ``max_bytes``.

    The collector raises once the cap is passed and treq then drops the
    connection, so an endless body costs at most ``max_bytes``.
    """
    received = 0

    def collect(data: bytes) -> None:
        nonlocal received
        received += len(data)
        if received > max_bytes:
            raise BodyTooLarge()
        sink(data)

    await treq.collect(response, collect)
    return received
