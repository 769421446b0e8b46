"""What the providers' pushes share (ec2_push, openstack_push, vsphere_push).

Each push has its own steps and its own clean-up; around them all three do the same: the builder log
written with every secret scrubbed, progress that only rises, the door calls still running waited for
(bounded) before cleaning up, and on an error or a cancel the clean-up run first, its note (what is
left on the provider) added to the error, and the error let go on.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from ..deferreds import InFlight
from ..doors import shielded
from ..errors import ImageFactoryError
from ..redaction import scrub
from . import PushJob

T = TypeVar("T")


def message_of(error: BaseException) -> str:
    """What to say of ``error``: an ImageFactoryError's message, else its text or its type's name."""
    return error.message if isinstance(error, ImageFactoryError) else (str(error) or type(error).__name__)


class PushSteps:
    """The part of a push around its own steps; a subclass defines ``_clean_up`` and the error it raises."""

    #: The provider's error: an error's message with the clean-up's note becomes one.
    error_type: type[ImageFactoryError] = ImageFactoryError
    #: What sets the clean-up off (CancelledError is an Exception).
    cleaned_on: type[BaseException] = Exception

    def __init__(self, job: PushJob, door: Any, reactor: IReactorTime, secrets: Iterable[str]) -> None:
        self._job = job
        self._door = door
        self._reactor = reactor
        self._secrets = tuple(secrets)
        #: The door calls still running (a thread cannot be stopped half-way).
        self._calls = InFlight()
        self._progress = -1

    async def _cleaning_up(self, steps: Awaitable[T]) -> T:
        """Await ``steps``; on an error or a cancel clean up, then let the error go on (with the note)."""
        try:
            return await steps
        except self.cleaned_on as error:
            note = await self._clean_up(error)
            if note and isinstance(error, ImageFactoryError):
                raise self.error_type(f"{error.message}; {note}") from error
            raise

    async def _clean_up(self, error: BaseException) -> str | None:
        """Remove what the push made (best effort); a note of what remains, if anything does."""
        raise NotImplementedError

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (a file, a client made) on the door, among the calls in flight."""
        return await shielded(self._calls.add(self._door.run(fn, *args)))

    async def _image_size(self, path: str) -> int:
        """The size of the image file at ``path``; the provider's error if it cannot be read."""
        try:
            size: int = await self._blocking(os.path.getsize, path)
        except OSError as error:
            target = self._job.target_builder.id
            raise self.error_type(f"the image file of target image {target} cannot be read: {error.strerror}") from None
        return size

    async def _settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the door calls still running have returned."""
        if self._calls:
            await self._calls.ended().addTimeout(timeout, self._reactor, onTimeoutCancel=lambda *_: None)

    async def _log(self, message: str) -> None:
        await shielded(self._job.log(scrub(message, self._secrets)))

    def _report(self, percent: int) -> Deferred[None]:
        """Report ``percent`` done unless as much was reported already."""
        if percent <= self._progress:
            return succeed(None)
        self._progress = percent
        return shielded(self._job.progress(percent))
