"""The dispatcher: turns build and push requests into builders and runs them.

A request is checked, recorded in the store and answered at once; each
builder then runs in the background through the same states whatever its
target or provider: NEW -> PENDING (waiting for a slot) -> BUILDING or
PUSHING -> COMPLETED or FAILED.  Every change goes through BuilderUpdater.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, ensureDeferred, succeed
from twisted.internet.defer import TimeoutError as WaitTimedOut
from twisted.logger import Logger

from ..deferreds import InFlight, observe
from ..doors import IDoor
from ..errors import ImageFactoryError, InvalidRequest, UnknownObject
from ..model import (
    Build,
    Builder,
    Image,
    Operation,
    ProviderImage,
    StageName,
    Status,
    TargetImage,
    build_builder,
    new_id,
    push_builder,
)
from ..os import Package
from ..providers import Credentials, Provider
from ..store import IStore
from ..targets import Target
from ..template import Template
from .base_images import BUILDS_DIR, BaseImages
from .fetch import TemplateFetcher
from .index import BuilderIndex
from .logs import BuilderLogs
from .plugins import plugin_serving, serving
from .templates import UUID_PATTERN, TemplateSource, parse_targets
from .updates import BuilderUpdater
from .work import ProviderPushJob, TargetBuildJob, discard_path, follower

RESTART_REASON = "the daemon restarted while this builder was {status}; start the work again"
STOP_REASON = "the daemon stopped while this builder was running"
CANCEL_REASON = "cancelled by a client"
#: How long a cancelled builder waits for its abandoned install to clean up (destroy its VM) before ending.
WIND_DOWN_TIMEOUT = 60.0


@dataclass(frozen=True)
class StartedBuild:
    """What a build request made: the image, its new build and one target image per target."""

    image: Image
    build: Build
    target_images: list[TargetImage]


@dataclass
class _Running:
    deferred: Deferred[None]
    stop_reason: list[str] = field(default_factory=list)


class Dispatcher(Service):
    """Starts, runs, cancels and recovers builders."""

    log = Logger()
    name = "dispatcher"

    def __init__(
        self,
        reactor: Any,
        store: IStore,
        updater: BuilderUpdater,
        index: BuilderIndex,
        targets: dict[str, Target],
        providers: dict[str, Provider],
        state_dir: str,
        fetcher: TemplateFetcher,
        logs: BuilderLogs,
        base_images: BaseImages,
        disk_door: IDoor,
        build_slots: int,
        push_slots: int,
        cpu_door: IDoor,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._updater = updater
        self._index = index
        self._targets = targets
        self._providers = providers
        self._state_dir = state_dir
        self._logs = logs
        self._base_images = base_images
        self._disk_door = disk_door
        self._templates = TemplateSource(store, fetcher, cpu_door)
        self._build_slots = DeferredSemaphore(build_slots)
        self._push_slots = DeferredSemaphore(push_slots)
        self._running: dict[str, _Running] = {}
        #: Every piece of work started in the background: stopService waits for it.
        self._background = InFlight()

    # -- requests --------------------------------------------------------

    async def start_build(
        self, template_text: str | None, targets_text: str, image_id: str | None = None, build_id: str | None = None
    ) -> StartedBuild:
        """Record a new build (of a new image, or of ``image_id``) and start its builders.

        With ``build_id``, the targets are added to that build of the image
        instead, made from the build's own template.  An ``image_id`` never
        seen, given with a template, is created under that id (Conductor
        chose its images' ids before asking the factory).
        """
        target_names = parse_targets(targets_text, list(self._targets))
        if build_id is not None:
            return await self._add_to_build(image_id, build_id, target_names)
        image = await self._image_to_rebuild(image_id, template_text)
        if template_text is None or not template_text.strip():
            if image is None:
                raise InvalidRequest("parameter 'template' is missing (give TDL XML, an image UUID or a URL)")
            template = await self._templates.parse((await self._store.get_template(image.template_id)).xml)
        else:
            template = await self._templates.resolve(template_text.strip())
        now = self._reactor.seconds()
        stored = await self._store.add_template(template.xml, now)
        new_image = image is None
        if image is None:
            image = Image(
                id=image_id or new_id(),
                template_id=stored.id,
                name=template.name,
                description=template.description,
                os_name=template.os_name,
                os_version=template.os_version,
                os_arch=template.os_arch,
                created=now,
            )
        build = Build(id=new_id(), image_id=image.id, template_id=stored.id, created=now)
        target_images, builders = self._new_targets(image, build, target_names, now)
        await self._updater.record_build(image, build, target_images, builders, new_image)
        self._start_builders(build, builders, template)
        return StartedBuild(image=image, build=build, target_images=target_images)

    async def _image_to_rebuild(self, image_id: str | None, template_text: str | None) -> Image | None:
        """The image ``image_id``; None for a new image (no id, or an unknown UUID given with a template)."""
        if image_id is None:
            return None
        try:
            return await self._store.get_image(image_id)
        except UnknownObject:
            if template_text and template_text.strip() and UUID_PATTERN.match(image_id):
                return None
            raise

    async def _add_to_build(self, image_id: str | None, build_id: str, target_names: list[str]) -> StartedBuild:
        """More target images in an existing build, made from its template."""
        build = await self._store.get_build(build_id)
        if image_id is not None and build.image_id != image_id:
            raise UnknownObject(f"no build {build_id!r} of image {image_id!r}")
        image = await self._store.get_image(build.image_id)
        template = await self._templates.parse((await self._store.get_template(build.template_id)).xml)
        target_images, builders = self._new_targets(image, build, target_names, self._reactor.seconds())
        await self._updater.record_created(
            builders, lambda events: self._store.add_to_build(target_images, builders, events)
        )
        self._start_builders(build, builders, template)
        return StartedBuild(image=image, build=build, target_images=target_images)

    @staticmethod
    def _new_targets(
        image: Image, build: Build, target_names: list[str], now: float
    ) -> tuple[list[TargetImage], list[Builder]]:
        """One target image per target, each with its NEW builder."""
        target_images = [
            TargetImage(id=new_id(), build_id=build.id, image_id=image.id, target=name, created=now)
            for name in target_names
        ]
        builders = [build_builder(target_image, now) for target_image in target_images]
        return target_images, builders

    def _start_builders(self, build: Build, builders: list[Builder], template: Template) -> None:
        for builder in builders:
            self._launch(
                builder,
                self._build_slots,
                Status.BUILDING,
                self._build_work(builder, template),
                ready=self._install_slot(builder, template),
            )
        self._clean_up_after(build.id, [self._running[builder.id].deferred for builder in builders])

    async def start_push(
        self,
        target_image_id: str,
        provider_name: str,
        credentials_xml: str,
        image_id: str | None = None,
        build_id: str | None = None,
    ) -> ProviderImage:
        """Record a push of a COMPLETED target image to ``provider_name`` and start it."""
        target_image = await self._store.get_target_image(target_image_id)
        if (image_id, build_id) != (None, None) and (target_image.image_id, target_image.build_id) != (
            image_id,
            build_id,
        ):
            raise UnknownObject(f"no target image {target_image_id!r} in build {build_id!r} of image {image_id!r}")
        provider = self._provider(provider_name)
        target_builder = await self.check_pushable(target_image_id, provider_name)
        credentials = provider.parse_credentials(credentials_xml)
        return await self._record_push(target_image, target_builder, provider, provider_name, credentials)

    async def start_push_with_credentials(
        self, target_image_id: str, provider_name: str, credentials: Credentials
    ) -> ProviderImage:
        """Record a push of a COMPLETED target image with credentials already parsed (a provider account's)."""
        target_image = await self._store.get_target_image(target_image_id)
        provider = self._provider(provider_name)
        target_builder = await self.check_pushable(target_image_id, provider_name)
        return await self._record_push(target_image, target_builder, provider, provider_name, credentials)

    async def check_pushable(self, target_image_id: str, provider_name: str) -> Builder:
        """The target image's builder, if it may be pushed to ``provider_name``; InvalidRequest saying why not."""
        provider = self._provider(provider_name)
        target_builder = self._index.get(target_image_id) or await self._store.get_builder(target_image_id)
        if target_builder.status != Status.COMPLETED:
            raise InvalidRequest(
                f"target image {target_image_id} is {target_builder.status.value}: only a COMPLETED target image can be pushed"
            )
        if target_builder.artifact_path is None:
            raise InvalidRequest(f"target image {target_image_id} has no image file to push (it was imported)")
        if not provider.accepts_target(target_builder.target):
            raise InvalidRequest(
                f"provider {provider_name!r} cannot take {target_builder.target!r} images "
                f"(push a target image built for it, e.g. target 'ec2' for EC2)"
            )
        return target_builder

    async def _record_push(
        self,
        target_image: TargetImage,
        target_builder: Builder,
        provider: Provider,
        provider_name: str,
        credentials: Credentials,
    ) -> ProviderImage:
        image = await self._store.get_image(target_image.image_id)
        now = self._reactor.seconds()
        provider_image = ProviderImage(
            id=new_id(),
            target_image_id=target_image.id,
            build_id=target_image.build_id,
            image_id=target_image.image_id,
            provider=provider_name,
            provider_account_identifier=credentials.account_identifier,
            created=now,
        )
        builder = push_builder(provider_image, target_image.target, now)
        await self._updater.record_push(provider_image, builder)
        self._launch(
            builder,
            self._push_slots,
            Status.PUSHING,
            self._push_work(builder, target_builder, image, provider, credentials),
        )
        return provider_image

    async def contents(self, target_builder: Builder) -> tuple[Image, list[Package]]:
        """A COMPLETED target image's image and the packages of its build's system (none for the Mock OS,
        or for a target made without a base image); UnknownObject before it is COMPLETED."""
        if target_builder.operation != Operation.BUILD or target_builder.status != Status.COMPLETED:
            raise UnknownObject(
                f"target image {target_builder.id} is {target_builder.status.value}: "
                "its package list is known once COMPLETED"
            )
        image = await self._store.get_image(target_builder.image_id)
        packages = await self._store.get_manifest(target_builder.build_id)
        return image, [Package(*package) for package in packages or []]

    def provider_type(self, provider_name: str) -> str | None:
        """The name of the provider plug-in that serves ``provider_name`` (``ec2``, ``mock``), or None."""
        return plugin_serving(self._providers, provider_name)

    def provider(self, provider_name: str) -> Provider:
        """The provider plug-in serving ``provider_name``; InvalidRequest when none does."""
        return self._provider(provider_name)

    def stopped(self, builder_id: str) -> Deferred[None]:
        """Fire (with None) once the builder's running work has ended; at once when it is not running."""
        running = self._running.get(builder_id)
        return succeed(None) if running is None else observe(running.deferred)

    def cancel(self, builder_id: str) -> bool:
        """Stop a running builder, which then ends FAILED; False when it is not running."""
        return self._stop(builder_id, CANCEL_REASON)

    def queue_lengths(self) -> dict[str, int]:
        """How many builds and pushes wait for a slot."""
        return {"build": len(self._build_slots.waiting), "push": len(self._push_slots.waiting)}

    def known_targets(self) -> list[str]:
        """The names of the targets this daemon can build."""
        return sorted(self._targets)

    # -- service ---------------------------------------------------------

    def startService(self) -> None:
        """Fail the builders a previous run of the daemon left unfinished."""
        super().startService()
        for builder in self._index.all():
            if not builder.status.is_final:
                reason = RESTART_REASON.format(status=builder.status.value)
                self._track(builder.id, ensureDeferred(self._fail(builder.id, reason)))

    def stopService(self) -> Deferred[None]:
        """Stop every running builder and wait until each is recorded FAILED."""
        super().stopService()
        for builder_id in list(self._running):
            self._stop(builder_id, STOP_REASON)
        self._base_images.stop()
        # The builders' runs and the FAILED records of the start-up recovery.
        return self._background.ended()

    # -- running ---------------------------------------------------------

    def _provider(self, name: str) -> Provider:
        return serving(self._providers, name)

    def _work_dir(self, builder: Builder) -> str:
        """The builder's own folder in the state directory, made if need be."""
        work_dir = os.path.join(self._state_dir, "builders", builder.id)
        os.makedirs(work_dir, exist_ok=True)
        return work_dir

    def _build_job(self, builder: Builder, template: Template) -> TargetBuildJob:
        """What the builder's target plug-in builds from."""
        return TargetBuildJob(
            builder=builder,
            work_dir=self._work_dir(builder),
            reactor=self._reactor,
            logs=self._logs,
            report=lambda percent: self._updater.move(builder.id, Status.BUILDING, percent),
            template=template,
            base_images=self._base_images,
            disk_door=self._disk_door,
            enter_stage=lambda stage: self._updater.enter_stage(builder.id, stage),
        )

    def _push_job(self, builder: Builder, target_builder: Builder, image: Image) -> ProviderPushJob:
        """What the builder's provider plug-in pushes from."""
        return ProviderPushJob(
            builder=builder,
            work_dir=self._work_dir(builder),
            reactor=self._reactor,
            logs=self._logs,
            report=lambda percent: self._updater.move(builder.id, Status.PUSHING, percent),
            target_builder=target_builder,
            image=image,
        )

    def _build_work(self, builder: Builder, template: Template) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def work() -> dict[str, Any]:
            target = self._targets[builder.target]
            artifact = await target.build(self._build_job(builder, template))
            return {"artifact_path": artifact.path, "artifact_size": artifact.size, "artifact_sha256": artifact.sha256}

        return work

    def _build_running(self, build_id: str) -> bool:
        """True while a target builder of the build is running."""
        return any(
            builder is not None and builder.operation == Operation.BUILD and builder.build_id == build_id
            for builder in map(self._index.get, self._running)
        )

    def _clean_up_after(self, build_id: str, ended: list[Deferred[None]]) -> None:
        """Once every target of a build has ended, remove its base image and install files.

        Each target image is a file of its own by then; the builders' logs
        live elsewhere and stay.  A daemon stopped before that leaves them
        to the next start, which removes every build's work files.
        """

        def clean(_: object) -> Deferred[None] | None:
            if self._build_running(build_id):
                # Targets added to the build later still need its base image; the last to end cleans up.
                return None
            self._base_images.forget(build_id)
            return self._disk_door.run(discard_path, os.path.join(self._state_dir, BUILDS_DIR, build_id))

        cleaned = DeferredList(ended, consumeErrors=True).addCallback(clean)
        self._background.run_logged(cleaned, self.log, "work files of build {build_id} not removed", build_id=build_id)

    def _push_work(
        self, builder: Builder, target_builder: Builder, image: Image, provider: Provider, credentials: Credentials
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def work() -> dict[str, Any]:
            pushed = await provider.push(self._push_job(builder, target_builder, image), credentials)
            return {
                "identifier_on_provider": pushed.identifier,
                "provider_details": json.dumps(pushed.details) if pushed.details else None,
            }

        return work

    def _install_slot(self, builder: Builder, template: Template) -> Callable[[], Deferred[None]] | None:
        """For a target made from the base image: wait, PENDING, until the build's install holds a local session."""
        if not self._targets[builder.target].uses_base_image:
            return None
        following = follower(
            lambda percent: self._updater.move(builder.id, Status.BUILDING, percent),
            lambda stage: self._updater.enter_stage(builder.id, stage),
        )
        return lambda: self._base_images.wait_for_slot(builder.build_id, template, builder.id, following)

    def _launch(
        self,
        builder: Builder,
        slots: DeferredSemaphore,
        active: Status,
        work: Callable[[], Awaitable[dict[str, Any]]],
        ready: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        running = _Running(deferred=Deferred())
        self._running[builder.id] = running
        running.deferred = ensureDeferred(self._run(builder.id, slots, active, work, running, ready))
        self._track(builder.id, running.deferred)
        running.deferred.addBoth(lambda _: self._running.pop(builder.id, None))

    async def _run(
        self,
        builder_id: str,
        slots: DeferredSemaphore,
        active: Status,
        work: Callable[[], Awaitable[dict[str, Any]]],
        running: _Running,
        ready: Callable[[], Deferred[None]] | None,
    ) -> None:
        try:
            await self._updater.move(builder_id, Status.PENDING, stage=StageName.WAITING)
            await slots.acquire()
            try:
                if ready is not None:
                    await ready()
                await self._updater.move(builder_id, active, 0, stage=self._first_stage(builder_id, active))
                changes = await work()
            finally:
                slots.release()
            await self._updater.move(builder_id, Status.COMPLETED, 100, **changes)
        except CancelledError:
            await self._wound_down(builder_id)
            await self._fail(builder_id, running.stop_reason[0] if running.stop_reason else CANCEL_REASON)
        except ImageFactoryError as error:
            await self._fail(builder_id, error.message)
        except Exception:
            self.log.failure("builder {builder_id} failed unexpectedly", builder_id=builder_id)
            await self._fail(
                builder_id, f"unexpected error in the factory; its log has the details (builder {builder_id})"
            )

    def _first_stage(self, builder_id: str, active: Status) -> StageName | None:
        """The stage a builder's work starts in: ``pushing``, or ``converting`` for a target made without a
        base image; a target made from one follows its install's stages (None: it stays ``waiting`` till then)."""
        if active == Status.PUSHING:
            return StageName.PUSHING
        builder = self._index.get(builder_id)
        if builder is not None and not self._targets[builder.target].uses_base_image:
            return StageName.CONVERTING
        return None

    async def _wound_down(self, builder_id: str) -> None:
        """Wait (a bounded time) for the builder's abandoned install, if any, to have cleaned up its VM."""
        builder = self._index.get(builder_id)
        if builder is None or builder.operation != Operation.BUILD:
            return
        try:
            await self._base_images.wound_down(builder.build_id).addTimeout(WIND_DOWN_TIMEOUT, self._reactor)
        except WaitTimedOut:
            self.log.warn(
                "builder {builder_id}: its install did not end within {seconds} s of being cancelled",
                builder_id=builder_id,
                seconds=WIND_DOWN_TIMEOUT,
            )

    async def _fail(self, builder_id: str, reason: str) -> None:
        await self._updater.move(builder_id, Status.FAILED, status_detail=reason)

    def _stop(self, builder_id: str, reason: str) -> bool:
        running = self._running.get(builder_id)
        if running is None:
            return False
        running.stop_reason.append(reason)
        running.deferred.cancel()
        return True

    def _track(self, builder_id: str, deferred: Deferred[None]) -> None:
        """Keep background work until it ends (stopService waits) and log what it fails with."""
        self._background.run_logged(
            deferred, self.log, "background work for builder {builder_id} failed", builder_id=builder_id
        )
