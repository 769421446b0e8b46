"""Fakes the providers' unit tests share: the job a provider's push is handed, a door that holds calls."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from imgfac_twisted.doors import IDoor
from imgfac_twisted.model import Builder, Image, Operation, Status

IMAGE = Image(
    id="i", template_id="tpl", name="f14jeos", description=None, os_name="Fedora", os_version="14",
    os_arch="x86_64", created=0.0,
)  # fmt: skip


class PushJob:
    """What the dispatcher hands a provider's push (the push, its target image, the image), recording logs
    and progress; the target image's file is ``path``."""

    def __init__(
        self,
        path: str,
        target: str,
        provider: str,
        builder_id: str = "prov-1",
        image: Image = IMAGE,
        reactor: Any = None,
        work_dir: str | None = None,
    ) -> None:
        self.builder = Builder(
            id=builder_id, operation=Operation.PUSH, status=Status.PUSHING, completed=0, image_id="i",
            build_id="b", target=target, provider=provider, target_image_id="t",
        )  # fmt: skip
        self.target_builder = Builder(
            id="t", operation=Operation.BUILD, status=Status.COMPLETED, completed=100, image_id="i",
            build_id="b", target=target, artifact_path=path,
        )  # fmt: skip
        self.image = image
        self.work_dir = work_dir or os.path.dirname(path)
        self.reactor = reactor
        self.logs: list[str] = []
        self.percents: list[int] = []

    def log(self, message: str) -> Deferred[None]:
        self.logs.append(message)
        return succeed(None)

    def progress(self, percent: int) -> Deferred[None]:
        self.percents.append(percent)
        return succeed(None)

    def image_file(self) -> Deferred[str]:
        """The target's file as it is (a directory image store's)."""
        return succeed(self.target_builder.artifact_path or "")


@implementer(IDoor)
class HeldDoor:
    """A door whose calls wait until the test releases them (to cancel a push between them, or see calls in
    flight)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Deferred[Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        deferred: Deferred[Any] = Deferred()
        self.waiting.append((fn, args, kwargs, deferred))
        return deferred

    def release(self, count: int | None = None) -> int:
        """Run the first ``count`` waiting calls (all by default); how many ran."""
        batch = self.waiting[:count] if count is not None else list(self.waiting)
        del self.waiting[: len(batch)]
        for fn, args, kwargs, deferred in batch:
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                deferred.errback(Failure())
            else:
                deferred.callback(result)
        return len(batch)
