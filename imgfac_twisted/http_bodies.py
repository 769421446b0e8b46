"""Reading HTTP response bodies (treq) with a cap on their size."""

from __future__ import annotations

from typing import Any, Callable

import treq


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
