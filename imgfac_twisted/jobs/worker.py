"""A build worker: takes jobs from the work queue, claims their builders in the store and runs them.

The broker gives a worker at most as many jobs as it has slots.  For each
job the worker claims the job's builders in the store (a guarded update:
two workers never run the same builder) and runs them in its
``BuilderRuns``; it acknowledges the job only once the builder's final state
is stored.  While it works it records a heartbeat on its builders every
``heartbeat`` seconds.

A worker that dies (kill -9, lost connection) stops acknowledging: the
broker delivers its jobs again, and the worker that gets one finds the
heartbeat older than three periods, takes the builder over and starts it
again from the beginning, or fails it once ``max_attempts`` starts were
made.  A job whose builder another worker runs, alive, is held until that
builder ends (or its worker is lost).  A worker that stops hands its
builders back: their jobs return to the queue and another worker starts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from ..errors import ImageFactoryError, InvalidTransition
from ..events.amqp_work import JobHandler
from ..model import Builder, Status
from ..store import Claim, ClaimOutcome
from .dispatcher import Dispatcher
from .index import BuilderIndex
from .jobs import PUSH, CredentialSeal
from .logs import IBuilderLogs
from .updates import BuilderUpdater

__all__ = ["Worker"]

#: A builder whose worker's last heartbeat is older than this many periods is taken over.
STALE_PERIODS = 3

#: Starts a consumer of the work queue: (prefetch, handler, retry delay).
Consume = Callable[[int, JobHandler, float], None]


class Worker(Service):
    """Runs the builders of the jobs it takes from the work queue, one claim at a time."""

    log = Logger()
    name = "worker"

    def __init__(
        self,
        reactor: IReactorTime,
        store: Any,  # an IStore that provides IWorkStore
        dispatcher: Dispatcher,
        index: BuilderIndex,
        updater: BuilderUpdater,
        logs: IBuilderLogs,
        seal: CredentialSeal,
        *,
        worker_id: str,
        heartbeat: float,
        max_attempts: int,
        slots: int,
        consume: Consume,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._dispatcher = dispatcher
        self._runs = dispatcher.runs
        self._index = index
        self._updater = updater
        self._logs = logs
        self._seal = seal
        self.worker_id = worker_id
        self._heartbeat = heartbeat
        self._max_attempts = max_attempts
        self._slots = slots
        self._consume = consume
        self._beat = LoopingCall(self._beat_once)
        self._beat.clock = reactor
        self._stopping = False

    # -- the service -----------------------------------------------------

    def startService(self) -> None:
        """Take jobs (as many at once as there are slots) and start the heartbeat."""
        super().startService()
        self._stopping = False
        self._consume(self._slots, self.take, self._heartbeat)
        self._beat.start(self._heartbeat, now=False).addErrback(
            lambda failure: self.log.failure("the worker's heartbeat stopped", failure)
        )
        self.log.info("worker {worker_id} started, {slots} slots", worker_id=self.worker_id, slots=self._slots)

    def stopService(self) -> Deferred[None]:
        """Hand the builders running here back: their jobs go back to the queue, unacknowledged."""
        super().stopService()
        self._stopping = True
        if self._beat.running:
            self._beat.stop()
        return ensureDeferred(self._hand_back())

    async def _hand_back(self) -> None:
        ids = self._runs.running_ids()
        for builder_id in ids:
            self._runs.abandon(builder_id)
        for builder_id in ids:
            await self._runs.stopped(builder_id)
        if ids:
            await self._store.release_builders(ids, self.worker_id)
            self.log.info("handed {count} builders back to the work queue", count=len(ids))

    # -- jobs ------------------------------------------------------------

    def take(self, job: dict[str, Any]) -> Deferred[bool]:
        """Run one job; fire True once its builder's end is stored, False when it is handed back."""
        return ensureDeferred(self._take(job))

    async def _take(self, job: dict[str, Any]) -> bool:
        builder_id = str(job["builder_id"])
        group = [str(i) for i in job.get("builder_ids") or [builder_id]]
        while not self._stopping:
            claims = await self._claim(group)
            await self._start_claimed(job, claims)
            claim = claims[builder_id]
            if claim.outcome in (ClaimOutcome.FINAL, ClaimOutcome.GONE, ClaimOutcome.EXHAUSTED):
                return True
            if claim.outcome == ClaimOutcome.TAKEN:
                # Its worker is alive: hold the job until the builder ends, or its worker is lost.
                await deferLater(self._reactor, self._heartbeat, lambda: None)
                continue
            # Ran here: once it has ended, the next claim finds it FINAL (acknowledge) or, when it was
            # taken over meanwhile, TAKEN (hold on); a worker that stops hands the job back.
            await self._runs.stopped(builder_id)
        return False

    async def _claim(self, builder_ids: Sequence[str]) -> dict[str, Claim]:
        now = self._reactor.seconds()
        stale_before = now - STALE_PERIODS * self._heartbeat
        claims: dict[str, Claim] = await self._store.claim_builders(
            builder_ids, self.worker_id, now, stale_before, self._max_attempts
        )
        return claims

    async def _start_claimed(self, job: dict[str, Any], claims: dict[str, Claim]) -> None:
        """Run the builders claimed (and not running here yet); fail those out of attempts."""
        mine: list[Builder] = []
        for claim in claims.values():
            if claim.builder is None:
                continue
            if claim.outcome == ClaimOutcome.EXHAUSTED:
                await self._give_up(claim)
            elif claim.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.OURS) and not self._runs.is_running(
                claim.builder.id
            ):
                self._index.put(claim.builder)
                if claim.attempts > 1 or claim.builder.status != Status.NEW:
                    await self._logs.append(
                        claim.builder.id,
                        f"started again on worker {self.worker_id} (attempt {claim.attempts} of "
                        f"{self._max_attempts}): its last worker stopped or stopped answering",
                    )
                mine.append(claim.builder)
        if not mine:
            return
        try:
            if job.get("job") == PUSH:
                await self._start_push(job, mine[0])
            else:
                await self._start_build(mine)
        except ImageFactoryError as error:
            # It can never start (its template or credentials cannot be read here): fail it, saying why,
            # rather than take the job again and again.
            for builder in mine:
                await self._fail(builder.id, f"it cannot start on worker {self.worker_id}: {error.message}")

    async def _start_build(self, builders: list[Builder]) -> None:
        build = await self._store.get_build(builders[0].build_id)
        template = await self._dispatcher.template_of(build)
        self._runs.start_builds(build, builders, template)

    async def _start_push(self, job: dict[str, Any], builder: Builder) -> None:
        target_builder = await self._store.get_builder(builder.target_image_id)
        image = await self._store.get_image(builder.image_id)
        provider = self._dispatcher.provider(builder.provider or "")
        credentials = self._seal.open(str(job["credentials"]))
        self._runs.start_push(builder, target_builder, image, provider, credentials)

    async def _give_up(self, claim: Claim) -> None:
        """Fail a builder whose workers were lost ``max_attempts`` times."""
        assert claim.builder is not None
        self._index.put(claim.builder)
        reason = (
            f"its worker {claim.builder.worker} stopped answering, and it was started "
            f"{claim.attempts} times (max_attempts {self._max_attempts})"
        )
        await self._fail(claim.builder.id, reason)

    async def _fail(self, builder_id: str, reason: str) -> None:
        try:
            await self._updater.move(builder_id, Status.FAILED, status_detail=reason)
        except InvalidTransition:
            self.log.info("builder {builder_id} ended meanwhile", builder_id=builder_id)

    # -- heartbeats and news from other nodes ----------------------------

    async def _beat_once(self) -> None:
        ids = self._runs.running_ids()
        if not ids:
            return
        try:
            lost = await self._store.heartbeat(ids, self.worker_id, self._reactor.seconds())
        except Exception:
            # The database is away: beat again next period (the builders run on meanwhile).
            self.log.failure("heartbeat of {count} builders not recorded", count=len(ids))
            return
        for builder_id in lost:
            self._stop_lost(builder_id, "it ended on another node or was taken over")

    def ended_elsewhere(self, builder: Builder) -> None:
        """Another node recorded ``builder`` (seen in the events): stop running it here if it ended."""
        if builder.status.is_final and self._runs.is_running(builder.id):
            self._stop_lost(builder.id, f"it ended elsewhere ({builder.status.value})")

    def _stop_lost(self, builder_id: str, why: str) -> None:
        if self._runs.abandon(builder_id):
            self.log.info("builder {builder_id} stopped here: {why}", builder_id=builder_id, why=why)
