"""Durable state behind one interface.

``IStore`` is what the dispatcher and the web layer use; ``SQLiteStore`` is
the embedded default, ``PostgresStore`` (``store.postgres``) the one several
nodes share; both pass one contract suite (tests/integration/test_store_contract.py)
and share their statements (``store.sql``, ``store.rows``, ``store.claims``).
Every method returns a Deferred and does its blocking work through a door,
never on the reactor thread.  Methods that change a
builder are guarded (``UPDATE ... WHERE status = expected``) so that several
daemons sharing one database cannot both move the same builder.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from ..errors import ImageFactoryError

if TYPE_CHECKING:
    from ..events import Event
    from ..model import Build, Builder, Image, ProviderImage, Status, StoredTemplate, TargetImage

#: A package of a base image's manifest: (name, version, arch).
Package = tuple[str, str, str]


class StoreUnavailable(ImageFactoryError):
    """The store cannot be opened or reached: a database down, or made by a later release.

    The message names the database without its password.
    """


class IStore(Interface):
    """Images, builds, target and provider images, builders and templates."""

    keeps_logs = Attribute("True when builders' logs live in the store (``ILogStore``), False when they are files.")

    def open() -> Deferred[None]:
        """Open the store and create what is missing."""

    def close() -> Deferred[None]:
        """Close the store."""

    # Blocking calls, for the daemon's start-up only (before the reactor runs).

    def thd_open() -> None:
        """Open the store and create what is missing, blocking."""

    def thd_close() -> None:
        """Close the store, blocking (a test's teardown, on the store's own thread or with an inline door)."""

    def thd_list_builders() -> list[Builder]:
        """Every builder, oldest first, blocking."""

    def thd_list_unfinished_builders() -> list[Builder]:
        """Every builder not COMPLETED or FAILED, oldest first, blocking."""

    def thd_spent_nonces(now: float) -> list[tuple[str, str, float]]:
        """The OAuth nonces (client key, nonce, expiry) spent and not expired at ``now``, blocking."""

    # The reactor's calls.

    def add_template(xml: str, now: float) -> Deferred[StoredTemplate]:
        """Keep ``xml`` as a template, once per distinct text; fire with its StoredTemplate."""

    def get_template(template_id: str) -> Deferred[StoredTemplate]:
        """Fire with the StoredTemplate, or fail with UnknownObject."""

    def record_build(
        image: Image,
        build: Build,
        target_images: list[TargetImage],
        builders: list[Builder],
        new_image: bool,
        events: list[Event],
    ) -> Deferred[None]:
        """In one transaction: the image (when ``new_image``), the build, its target images, builders and events."""

    def record_push(provider_image: ProviderImage, builder: Builder, events: list[Event]) -> Deferred[None]:
        """In one transaction: a provider image, its push builder and events."""

    def add_to_build(target_images: list[TargetImage], builders: list[Builder], events: list[Event]) -> Deferred[None]:
        """In one transaction: more target images (and their builders, events) in a build already recorded."""

    def record_import(
        image: Image,
        build: Build,
        target_image: TargetImage,
        provider_image: ProviderImage,
        builders: list[Builder],
        events: list[Event],
    ) -> Deferred[None]:
        """In one transaction: an imported image, its build, target image, provider image, builders and events."""

    def save_builder(
        builder: Builder, expected_status: Status, event: Event, log_lines: Sequence[str] = ()
    ) -> Deferred[None]:
        """Write ``builder`` and add ``event`` to the outbox, if its stored status is still ``expected_status``.

        Fails with InvalidTransition, writing nothing, when another writer moved it first.
        ``builder.worker`` is not written (only claims set it).  ``log_lines`` (time-stamped
        text, no newline) are appended to the builder's log in the same transaction when
        the store ``keeps_logs``, and ignored otherwise (the logs are files then).
        """

    def pending_events(limit: int) -> Deferred[list[tuple[int, Event]]]:
        """Fire with up to ``limit`` (outbox id, Event) pairs, oldest first.

        A store shared by several nodes claims them for this instance for a lease: another
        instance is not handed them until they are deleted or the lease lapsed, and this one is
        handed them again (its relay retries).
        """

    def delete_events(outbox_ids: list[int]) -> Deferred[None]:
        """Remove delivered events from the outbox."""

    def count_pending_events() -> Deferred[int]:
        """Fire with the number of events waiting in the outbox."""

    def spend_nonce(client_key: str, nonce: str, expiry: float, now: float) -> Deferred[None]:
        """Record an OAuth nonce as spent until ``expiry``; forget those expired before ``now``."""

    def claim_nonce(client_key: str, nonce: str, expiry: float, now: float) -> Deferred[bool]:
        """Record an OAuth nonce as spent until ``expiry`` unless it already is; fire True on its first use
        (several nodes: a request replayed to another node is caught here)."""

    def save_manifest(build_id: str, packages: Sequence[Package]) -> Deferred[None]:
        """Keep the package list ``[(name, version, arch), ...]`` of a build's base image."""

    def get_manifest(build_id: str) -> Deferred[list[Package] | None]:
        """Fire with the build's package list ``[(name, version, arch), ...]``, or None when none was kept."""

    def get_image(image_id: str) -> Deferred[Image]:
        """Fire with the Image, or fail with UnknownObject."""

    def get_build(build_id: str) -> Deferred[Build]:
        """Fire with the Build, or fail with UnknownObject."""

    def get_target_image(target_image_id: str) -> Deferred[TargetImage]:
        """Fire with the TargetImage, or fail with UnknownObject."""

    def get_provider_image(provider_image_id: str) -> Deferred[ProviderImage]:
        """Fire with the ProviderImage, or fail with UnknownObject."""

    def get_builder(builder_id: str) -> Deferred[Builder]:
        """Fire with the Builder, or fail with UnknownObject."""

    def list_builders() -> Deferred[list[Builder]]:
        """Fire with every Builder, oldest first."""

    def list_builders_page(limit: int, marker: str | None) -> Deferred[list[Builder]]:
        """Fire with up to ``limit`` builders, oldest first, after the builder ``marker`` (from the first without).

        Fails with UnknownObject when ``marker`` names no builder.
        """

    def count_builders() -> Deferred[dict[tuple[str, str], int]]:
        """Fire with how many builders there are of each (operation, status) present."""

    def list_unfinished_builders() -> Deferred[list[Builder]]:
        """Fire with every Builder whose status is not final."""

    def list_images() -> Deferred[list[Image]]:
        """Fire with every Image, oldest first."""

    def list_builds() -> Deferred[list[Build]]:
        """Fire with every Build, oldest first."""

    def delete_image(image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        """In one transaction: remove the image, its builds, target and provider images and their builders,
        and put ``events`` (their DELETED events) in the outbox."""

    def delete_build(build_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        """In one transaction: remove the build, its target and provider images and their builders (+ ``events``)."""

    def delete_target_image(target_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        """In one transaction: remove the target image, its provider images and their builders (+ ``events``)."""

    def delete_provider_image(provider_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        """In one transaction: remove the provider image and its builder (+ ``events``)."""


class ILogStore(Interface):
    """Builders' logs kept in the store, so that every node sees them (the PostgreSQL store)."""

    def append_log(builder_id: str, lines: Sequence[str]) -> Deferred[None]:
        """Append ``lines`` (time-stamped text, no newline) to the builder's log."""

    def read_log(builder_id: str, offset: int, limit: int) -> Deferred[bytes]:
        """Fire with up to ``limit`` bytes of the log (UTF-8, a newline after each line) from byte ``offset``."""


class ClaimOutcome(enum.Enum):
    """What a worker's claim of a builder found."""

    #: Now this worker's: it was unclaimed, or its worker's heartbeat was stale.
    CLAIMED = "claimed"
    #: This worker's already.
    OURS = "ours"
    #: Another worker runs it and its heartbeat is fresh.
    TAKEN = "taken"
    #: It has ended (COMPLETED or FAILED): nothing to do.
    FINAL = "final"
    #: Its worker was lost and it was started ``max_attempts`` times already: to be failed.
    EXHAUSTED = "exhausted"
    #: No such builder (deleted).
    GONE = "gone"


@dataclass(frozen=True)
class Claim:
    """A claim's outcome for one builder, the builder as stored after it (None when GONE) and its attempts."""

    outcome: ClaimOutcome
    builder: Builder | None
    attempts: int


class IWorkStore(Interface):
    """Claims and heartbeats: how workers sharing one database never run the same builder twice."""

    def claim_builders(
        builder_ids: Sequence[str], worker_id: str, now: float, stale_before: float, max_attempts: int
    ) -> Deferred[dict[str, Claim]]:
        """Claim each builder for ``worker_id``, in one transaction (rows locked), and fire with each's Claim.

        A builder is CLAIMED when it is not final and has no worker, or its worker's
        last heartbeat is older than ``stale_before``; claiming sets ``worker``, the
        heartbeat to ``now`` and adds one to its attempts.  A builder to be taken over
        whose attempts already reached ``max_attempts`` is EXHAUSTED instead (left as it
        is, for the caller to fail).
        """

    def heartbeat(builder_ids: Sequence[str], worker_id: str, now: float) -> Deferred[list[str]]:
        """Set the heartbeat of those builders still ``worker_id``'s and not final; fire with the others' ids
        (ended elsewhere, e.g. cancelled on an API node, or taken over: the worker stops them)."""

    def release_builders(builder_ids: Sequence[str], worker_id: str) -> Deferred[None]:
        """Hand builders back (a worker stopping): no worker, no heartbeat, one attempt less; their status stays."""
