"""The daemon's core collaborators, built in one place.

``service.make_service`` builds them on real doors (thread pools) and the
plug-ins found by entry point, then adds the web, the libvirt connection and
the service order around them; ``testing.Stack`` builds the same core on
inline doors, a Clock and the mock plug-ins.  Whatever is wired here is wired
the same way in the daemon and in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Config
from .doors import IDoor
from .events import IEventBus
from .imagestore import IImageStore
from .jobs.base_images import BaseImages, BootTester
from .jobs.dispatcher import Dispatcher
from .jobs.fetch import TemplateFetcher
from .jobs.index import BuilderIndex
from .jobs.jobs import CredentialSeal, JobMaker
from .jobs.logs import BuilderLogs, IBuilderLogs, StoreLogs
from .jobs.relay import OutboxRelay
from .jobs.updates import BuilderUpdater
from .metrics import Metrics
from .os import OperatingSystem
from .providers import Provider
from .registry import OS_GROUP, PROVIDERS_GROUP, TARGETS_GROUP, PluginEnvironment, load_plugins
from .store import ILogStore, IStore
from .targets import Target
from .template import MAX_TEMPLATE_BYTES


@dataclass(frozen=True)
class Doors:
    """The doors the core's blocking work leaves the reactor through (see ``doors``)."""

    #: Appending to the builders' log files.
    logs: IDoor
    #: File work: hashing, copying, removing images.
    disk: IDoor
    #: Blocking cloud SDK calls.
    cloud: IDoor
    #: CPU-bound work on request data: parsing and validating templates.
    cpu: IDoor


@dataclass(frozen=True)
class Plugins:
    """The plug-ins a daemon runs with, by name."""

    systems: dict[str, OperatingSystem]
    targets: dict[str, Target]
    providers: dict[str, Provider]


def entry_point_plugins(environment: PluginEnvironment) -> Plugins:
    """Every plug-in installed, found by entry point (the daemon's)."""
    return Plugins(
        systems=load_plugins(OS_GROUP, environment),
        targets=load_plugins(TARGETS_GROUP, environment),
        providers=load_plugins(PROVIDERS_GROUP, environment),
    )


@dataclass(frozen=True)
class Core:
    """The collaborators every daemon has, whatever its web and services around them."""

    #: The SQLite or PostgreSQL store (``store_url``).
    store: IStore
    index: BuilderIndex
    bus: IEventBus
    relay: OutboxRelay
    logs: IBuilderLogs
    metrics: Metrics
    updater: BuilderUpdater
    environment: PluginEnvironment
    base_images: BaseImages
    dispatcher: Dispatcher


def build_core(
    config: Config,
    reactor: Any,
    store: IStore,
    index: BuilderIndex,
    bus: IEventBus,
    doors: Doors,
    *,
    plugins: Callable[[PluginEnvironment], Plugins] = entry_point_plugins,
    libvirt: Any = None,
    boot_tester: BootTester | None = None,
    fetch_timeout: float | None = None,
    image_store: IImageStore | None = None,
) -> Core:
    """The core on an opened ``store`` and the ``index`` of its builders: the relay to ``bus``, the
    builders' updater, the plug-ins and the dispatcher.

    ``fetch_timeout`` overrides ``config.template_fetch_timeout``; ``image_store`` is where target images
    go (default: a directory in the state dir).
    """
    # On PostgreSQL several relays share one outbox: each also looks now and then for what others left.
    relay = OutboxRelay(store, bus, reactor, poll_every=2.0 if config.on_postgresql else None)
    # On PostgreSQL the logs live in the store, so that every node reads the same ones.
    logs: IBuilderLogs = (
        StoreLogs(ILogStore(store), reactor) if store.keeps_logs else BuilderLogs(config.state_dir, doors.logs, reactor)
    )
    metrics = Metrics()
    updater = BuilderUpdater(store, relay, index, logs, metrics, reactor)
    environment = PluginEnvironment(config, reactor, doors.cloud, disk_door=doors.disk, libvirt=libvirt)
    found = plugins(environment)
    base_images = BaseImages(
        reactor,
        found.systems,
        config.state_dir,
        logs,
        config.max_concurrent_local_sessions,
        save_manifest=store.save_manifest,
        boot_tester=boot_tester,
    )
    timeout = config.template_fetch_timeout if fetch_timeout is None else fetch_timeout
    dispatcher = Dispatcher(
        reactor,
        store,
        updater,
        index,
        targets=found.targets,
        providers=found.providers,
        state_dir=config.state_dir,
        fetcher=TemplateFetcher(reactor, timeout, MAX_TEMPLATE_BYTES),
        logs=logs,
        base_images=base_images,
        disk_door=doors.disk,
        build_slots=config.max_concurrent_builds,
        push_slots=config.max_concurrent_pushes,
        cpu_door=doors.cpu,
        image_store=image_store,
        jobs=_job_maker(config),
        # On PostgreSQL, builders left unfinished come back through the work queue.
        recover=not config.on_postgresql,
    )
    return Core(
        store=store,
        index=index,
        bus=bus,
        relay=relay,
        logs=logs,
        metrics=metrics,
        updater=updater,
        environment=environment,
        base_images=base_images,
        dispatcher=dispatcher,
    )


def _job_maker(config: Config) -> JobMaker | None:
    """What makes the work queue's jobs, when builders go to workers through it (PostgreSQL with a broker)."""
    if not config.serves_work_queue or config.job_key is None:
        return None
    return JobMaker(config.amqp_work_queue, CredentialSeal(config.job_key))
