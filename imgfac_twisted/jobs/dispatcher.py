"""The dispatcher: turns build and push requests into builders and runs them.

A request is checked, recorded in the store and answered at once; each
builder then runs in the background through the same states whatever its
target or provider: NEW -> PENDING (waiting for a slot) -> BUILDING or
PUSHING -> COMPLETED or FAILED.  Every change goes through BuilderUpdater.

This module holds the request side (checking, recording, answering);
running the builders, their slots, cancellation and recovery after a
restart are ``runs.BuilderRuns``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import Logger

from ..deferreds import InFlight
from ..doors import IDoor
from ..errors import InvalidRequest, InvalidTransition, UnknownObject
from ..imagestore import IImageStore
from ..model import (
    Build,
    Builder,
    Image,
    Operation,
    ProviderImage,
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
from .base_images import BaseImages
from .fetch import TemplateFetcher
from .index import BuilderIndex
from .jobs import JobMaker
from .logs import IBuilderLogs
from .plugins import plugin_serving, serving
from .runs import CANCEL_REASON, BuilderRuns
from .templates import UUID_PATTERN, TemplateSource, parse_targets
from .updates import BuilderUpdater


@dataclass(frozen=True)
class StartedBuild:
    """What a build request made: the image, its new build and one target image per target."""

    image: Image
    build: Build
    target_images: list[TargetImage]


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
        logs: IBuilderLogs,
        base_images: BaseImages,
        disk_door: IDoor,
        build_slots: int,
        push_slots: int,
        cpu_door: IDoor,
        image_store: IImageStore | None = None,
        jobs: JobMaker | None = None,
        recover: bool = True,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._updater = updater
        self._index = index
        self._targets = targets
        self._providers = providers
        self._templates = TemplateSource(store, fetcher, cpu_door)
        self._runs = BuilderRuns(
            reactor,
            updater,
            index,
            targets,
            state_dir,
            logs,
            base_images,
            disk_door,
            build_slots,
            push_slots,
            image_store,
        )
        #: Where finished target images are kept (``raw_image`` downloads read from there).
        self.image_store = self._runs.image_store
        #: With a work queue (PostgreSQL), new builders are handed to workers as jobs, not run here.
        self._jobs = jobs
        #: On SQLite, builders left unfinished by the last run are failed at start; on PostgreSQL their
        #: jobs come back to the workers instead.
        self._recover = recover
        self._cancels = InFlight()

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
            template = await self._stored_template(image.template_id)
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
        jobs = self._jobs.build_jobs(builders) if self._jobs is not None else ()
        await self._updater.record_build(image, build, target_images, builders, new_image, jobs)
        if self._jobs is None:
            self._runs.start_builds(build, builders, template)
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
        template = await self.template_of(build)
        target_images, builders = self._new_targets(image, build, target_names, self._reactor.seconds())
        jobs = self._jobs.build_jobs(builders) if self._jobs is not None else ()
        await self._updater.record_created(
            builders, lambda events: self._store.add_to_build(target_images, builders, events), jobs
        )
        if self._jobs is None:
            self._runs.start_builds(build, builders, template)
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
        if self._jobs is not None:
            await self._updater.record_push(provider_image, builder, [self._jobs.push_job(builder, credentials)])
        else:
            await self._updater.record_push(provider_image, builder)
            self._runs.start_push(builder, target_builder, image, provider, credentials)
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
        return self._runs.stopped(builder_id)

    def cancel(self, builder_id: str) -> bool:
        """Stop a running builder, which then ends FAILED; False when it is not running.

        With a work queue, a builder not running here but unfinished is recorded FAILED in the
        store; its worker sees that (the events, or its next heartbeat) and stops its work.
        """
        if self._runs.cancel(builder_id):
            return True
        builder = self._index.get(builder_id)
        if self._jobs is None or builder is None or builder.status.is_final:
            return False
        cancelling = ensureDeferred(self._cancel_elsewhere(builder_id))
        self._cancels.run_logged(cancelling, self.log, "cancel of {builder_id} failed", builder_id=builder_id)
        return True

    async def _cancel_elsewhere(self, builder_id: str) -> None:
        """Record a builder another node runs FAILED (cancelled), from its latest stored state."""
        for _ in range(5):
            builder = await self._store.get_builder(builder_id)
            self._index.put(builder)
            if builder.status.is_final:
                return
            try:
                await self._updater.move(builder_id, Status.FAILED, status_detail=CANCEL_REASON)
                return
            except InvalidTransition:
                continue  # its worker moved it meanwhile: read it again

    @property
    def runs(self) -> BuilderRuns:
        """The builders running on this node (a worker starts the ones it claims there)."""
        return self._runs

    async def template_of(self, build: Build) -> Template:
        """The parsed template a build was made from (parsed through the CPU door)."""
        return await self._stored_template(build.template_id)

    async def _stored_template(self, template_id: str) -> Template:
        return await self._templates.parse((await self._store.get_template(template_id)).xml)

    def queue_lengths(self) -> dict[str, int]:
        """How many builds and pushes wait for a slot."""
        return self._runs.queue_lengths()

    def known_targets(self) -> list[str]:
        """The names of the targets this daemon can build."""
        return sorted(self._targets)

    # -- service ---------------------------------------------------------

    def startService(self) -> None:
        """Fail the builders a previous run of the daemon left unfinished."""
        super().startService()
        if self._recover:
            self._runs.recover()

    def stopService(self) -> Deferred[None]:
        """Stop every running builder and wait until each is recorded FAILED."""
        super().stopService()
        # The builders' runs and the FAILED records of the start-up recovery, and the cancels under way.
        stopped = gatherResults([self._runs.stop_all(), self._cancels.ended()], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def _provider(self, name: str) -> Provider:
        return serving(self._providers, name)
