"""Steps that stand in for real work in the mock target and mock provider."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

MOCK_STEPS = 10


async def advance_in_steps(
    reactor: IReactorTime,
    duration: float,
    progress: Callable[[int], Deferred[None]],
    fail_at_step: int | None = None,
    failure: Exception | None = None,
) -> None:
    """Move ``progress`` from 0 to 90 in equal steps over ``duration`` seconds.

    Raises ``failure`` instead of taking step ``fail_at_step``.  The last
    10 percent belong to the caller, who finishes the job.
    """
    for step in range(MOCK_STEPS):
        if step == fail_at_step and failure is not None:
            raise failure
        await deferLater(reactor, duration / MOCK_STEPS, lambda: None)
        await progress(step * 90 // (MOCK_STEPS - 1))
