"""The factory's objects, their statuses and the transitions a builder may make.

Plain data only: nothing here does I/O, knows HTTP or touches the reactor.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidTransition


def iso8601_utc(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """Return a fresh random UUID string, the id of every factory object."""
    return str(uuid.uuid4())


class Status(str, enum.Enum):
    """The life of a builder.  Values are the spec's status strings."""

    #: Recorded, not yet handed to the dispatcher.
    NEW = "NEW"
    #: Waiting for a free slot (or, for a push, for its turn).
    PENDING = "PENDING"
    #: A build step is running (operation ``build``).
    BUILDING = "BUILDING"
    #: A push step is running (operation ``push``).
    PUSHING = "PUSHING"
    #: Finished; the target or provider image exists.  Final.
    COMPLETED = "COMPLETED"
    #: Ended without an image; ``status_detail`` says why.  Final.
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        """True for COMPLETED and FAILED, which a builder never leaves."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED})

#: Every move a builder may make.  Any status but a final one may fail
#: (an error, a cancellation, a restart of the daemon).
ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.PENDING, Status.FAILED}),
    Status.PENDING: frozenset({Status.BUILDING, Status.PUSHING, Status.FAILED}),
    # Back to PENDING: a builder whose worker was lost is started again by another (``jobs.worker``).
    Status.BUILDING: frozenset({Status.COMPLETED, Status.FAILED, Status.PENDING}),
    Status.PUSHING: frozenset({Status.COMPLETED, Status.FAILED, Status.PENDING}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
}


def check_transition(old: Status, new: Status) -> None:
    """Raise InvalidTransition unless a builder may move from ``old`` to ``new``.

    Staying in the same status is allowed: that is a progress update.
    """
    if old == new and not old.is_final:
        return
    if new not in ALLOWED_TRANSITIONS[old]:
        raise InvalidTransition(f"a builder cannot go from {old.value} to {new.value}")


class Operation(str, enum.Enum):
    """What a builder does."""

    BUILD = "build"
    PUSH = "push"


class StageName(str, enum.Enum):
    """The stages of a builder's work, in the order they may run."""

    #: Waiting for a slot, or for the build's install to get a local session.
    WAITING = "waiting"
    #: Bringing the OS installer (kernel, initrd, ISO) to disk.
    DOWNLOADING = "downloading"
    #: The OS installer runs in its VM (or the Mock OS makes its disk).
    INSTALLING = "installing"
    #: The installed base image boots once, in a throwaway overlay, to a login prompt.
    BOOT_TEST = "boot_test"
    #: The base image becomes the target's format.
    CONVERTING = "converting"
    #: A target image goes to a cloud.
    PUSHING = "pushing"


@dataclass(frozen=True)
class Stage:
    """One stage a builder ran: its name, when it started and when it ended (None while it runs)."""

    name: StageName
    started_at: float
    ended_at: float | None = None

    def ended(self, now: float) -> Stage:
        """This stage, ended at ``now`` (unchanged when it had ended)."""
        return self if self.ended_at is not None else dataclasses.replace(self, ended_at=now)

    # Status polls show every builder's stages: each time is written as text once per stage, not per read.
    @functools.cached_property
    def started_text(self) -> str:
        """``started_at`` in ISO 8601, UTC."""
        return iso8601_utc(self.started_at)

    @functools.cached_property
    def ended_text(self) -> str | None:
        """``ended_at`` in ISO 8601, UTC; None while the stage runs."""
        return iso8601_utc(self.ended_at) if self.ended_at is not None else None


def entered(stages: tuple[Stage, ...], name: StageName, now: float) -> tuple[Stage, ...]:
    """``stages`` with the running one ended and ``name`` started at ``now``; unchanged when ``name`` runs already."""
    if stages and stages[-1].name == name and stages[-1].ended_at is None:
        return stages
    return ended_stages(stages, now) + (Stage(name, now),)


def ended_stages(stages: tuple[Stage, ...], now: float) -> tuple[Stage, ...]:
    """``stages`` with the running one, if any, ended at ``now``."""
    if not stages or stages[-1].ended_at is not None:
        return stages
    return stages[:-1] + (stages[-1].ended(now),)


@dataclass(frozen=True)
class StoredTemplate:
    """A distinct TDL template, kept once however many images use it."""

    id: str
    xml: str
    created: float


@dataclass(frozen=True)
class Image:
    """What a template describes; rebuilt as new builds over time."""

    id: str
    template_id: str
    name: str
    description: str | None
    os_name: str
    os_version: str
    os_arch: str
    created: float


@dataclass(frozen=True)
class Build:
    """One run of an image's template: one base image, several targets."""

    id: str
    image_id: str
    template_id: str
    created: float


@dataclass(frozen=True)
class TargetImage:
    """A build's output for one target (``mock``, ``ec2``, ...)."""

    id: str
    build_id: str
    image_id: str
    target: str
    created: float


@dataclass(frozen=True)
class ProviderImage:
    """A target image pushed to one provider account."""

    id: str
    target_image_id: str
    build_id: str
    image_id: str
    provider: str
    provider_account_identifier: str | None
    created: float


@dataclass(frozen=True)
class Builder:
    """The unit of work behind a target image (build) or provider image (push).

    Its id is the id of the target or provider image it makes.
    """

    id: str
    operation: Operation
    status: Status
    completed: int
    image_id: str
    build_id: str
    target: str
    provider: str | None = None
    target_image_id: str | None = None
    provider_account_identifier: str | None = None
    status_detail: str | None = None
    #: Where the image this builder made lies, its size and SHA-256, once COMPLETED.
    artifact_path: str | None = None
    artifact_size: int | None = None
    artifact_sha256: str | None = None
    #: The image's id on the provider (e.g. an AMI id), once a push COMPLETED.
    identifier_on_provider: str | None = None
    #: What else the provider reported about a pushed image (e.g. ``snapshot_id``), as JSON text.
    provider_details: str | None = None
    created: float = 0.0
    updated: float = 0.0
    #: How many events this builder has had; its next event is numbered one more.
    sequence: int = 1
    #: The stages its work ran, in order; the last one runs while ``ended_at`` is None.
    stages: tuple[Stage, ...] = ()
    #: The ``worker_id`` of the node that runs or ran it (None before a worker claims it).
    #: Written only by the store's claims (``IWorkStore``), never by ``save_builder``.
    worker: str | None = None

    @property
    def stage(self) -> StageName | None:
        """The stage running now, or None (not started, or ended)."""
        if self.stages and self.stages[-1].ended_at is None:
            return self.stages[-1].name
        return None

    def moved(self, status: Status, completed: int | None = None, *, now: float, **changes: Any) -> Builder:
        """Return a copy in ``status``, after checking the move is allowed."""
        check_transition(self.status, status)
        if completed is None:
            completed = 100 if status == Status.COMPLETED else self.completed
        if not 0 <= completed <= 100:
            raise ValueError(f"completed must be within 0..100, not {completed}")
        if status.is_final:
            # A builder that ended runs no stage any more.
            changes = {**changes, "stages": ended_stages(changes.get("stages", self.stages), now)}
        return dataclasses.replace(
            self,
            status=status,
            completed=completed,
            updated=now,
            sequence=self.sequence + 1,
            **changes,
        )


@dataclass(frozen=True)
class BuilderChange:
    """One change of one builder: what the event bus publishes.

    ``old`` is None when the builder was just created.
    """

    old: Builder | None
    new: Builder

    @property
    def kind(self) -> str:
        """``STATUS``, ``PERCENTAGE`` or ``FAILURE``, as the original factory named its events."""
        if self.new.status == Status.FAILED:
            return "FAILURE"
        if self.old is not None and self.old.status == self.new.status:
            return "PERCENTAGE"
        return "STATUS"


def build_builder(target_image: TargetImage, now: float, status: Status = Status.NEW, **details: Any) -> Builder:
    """The builder that makes ``target_image`` (its id is the target image's), in ``status`` (NEW: to be run)."""
    return Builder(
        id=target_image.id,
        operation=Operation.BUILD,
        status=status,
        completed=100 if status == Status.COMPLETED else 0,
        image_id=target_image.image_id,
        build_id=target_image.build_id,
        target=target_image.target,
        created=now,
        updated=now,
        **details,
    )


def push_builder(
    provider_image: ProviderImage, target: str, now: float, status: Status = Status.NEW, **details: Any
) -> Builder:
    """The builder that pushes ``provider_image`` (made from a ``target`` image), in ``status``."""
    return Builder(
        id=provider_image.id,
        operation=Operation.PUSH,
        status=status,
        completed=100 if status == Status.COMPLETED else 0,
        image_id=provider_image.image_id,
        build_id=provider_image.build_id,
        target=target,
        provider=provider_image.provider,
        target_image_id=provider_image.target_image_id,
        provider_account_identifier=provider_image.provider_account_identifier,
        created=now,
        updated=now,
        **details,
    )
