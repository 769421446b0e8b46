"""Builds the daemon's service tree from a Config; owns start-up order and shutdown.

Start-up work that may fail for an operator's reason (state directory,
certificate, database file, plug-ins) runs here, before the reactor, so the
daemon refuses to start with a clear message instead of half-starting.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.resource import Resource

from .config import Config
from .core import Doors, build_core
from .doors import IDoor, ThreadDoor, cpu_door
from .errors import ConfigError
from .events import IEventBus
from .events.amqp import AmqpBus
from .events.inprocess import InProcessBus
from .imagestore import image_store_from_config
from .jobs.accounts import ProviderAccount, load_accounts
from .jobs.base_images import BUILDS_DIR, BootTester
from .jobs.deletions import Deleter
from .jobs.dispatcher import Dispatcher
from .jobs.imports import Importer
from .jobs.index import BuilderIndex, every_pair
from .jobs.logs import IBuilderLogs
from .metrics import Metrics
from .nodes import add_node_services, open_store, store_name
from .store import IStore
from .virt.boot import LibvirtBootTester
from .virt.connection import LibvirtConnection
from .virt.leftovers import LeftoverDomainsSweep
from .web import tls
from .web.basic_auth import BasicAuthenticator
from .web.conductor.app import ConductorAPI
from .web.conductor.resource import ConductorResource, SiteRoot
from .web.factory import FactoryAPI
from .web.fast_reads import FactoryRoot
from .web.oauth import OAuthVerifier
from .web.site import make_site

log = Logger()


class OrderedServices(MultiService):
    """Starts children in the order added and stops them in reverse, each after the last has stopped.

    MultiService stops all children at once; here the web stops before the
    dispatcher, which records its builders FAILED before the store closes.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)

        async def stop_in_turn() -> None:
            for child in reversed(list(self)):
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    log.failure("stopping {service} failed", service=child.name)

        return ensureDeferred(stop_in_turn())


class _StoreCloser(Service):
    """Closes the store at shutdown, after everything that writes to it has stopped."""

    name = "store"

    def __init__(self, store: IStore) -> None:
        self._store = store

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._store.close()


def make_service(config: Config, reactor: Any) -> IService:
    """The root service of a daemon configured by ``config``."""
    _make_state_dir(config.state_dir)
    remove_unfinished_work(config.state_dir)
    root = OrderedServices()
    store, door = open_store(config, reactor)
    # Opened before the reactor runs: the index must hold the unfinished builders
    # before the first request (the rest it reads through), and a broken database should stop the start.
    try:
        store.thd_open()
        index = BuilderIndex(store, store.thd_list_unfinished_builders())
    except Exception as error:
        raise ConfigError(f"the store {store_name(config)} cannot be opened: {error}") from None
    bus = _event_bus(config, reactor)
    pools = [
        ThreadDoor(reactor, "builder-logs", threads=1),
        ThreadDoor(reactor, "disk", threads=2),
        ThreadDoor(reactor, "cloud", threads=config.cloud_threads),
        cpu_door(reactor),
    ]
    doors = Doors(logs=pools[0], disk=pools[1], cloud=pools[2], cpu=pools[3])
    # Opened lazily on its own thread: a daemon that installs no real OS needs no libvirtd.
    libvirt = LibvirtConnection(reactor, config.libvirt_uri)
    core = build_core(
        config,
        reactor,
        store,
        index,
        bus,
        doors,
        libvirt=libvirt,
        boot_tester=_boot_tester(config, reactor, libvirt, doors.disk),
        image_store=image_store_from_config(config, doors.disk, doors.cloud, reactor),
    )
    relay, logs, metrics, dispatcher = core.relay, core.logs, core.metrics, core.dispatcher
    updater, disk_door = core.updater, doors.disk
    register_gauges(metrics, index, dispatcher, store)
    importer = Importer(store, updater, dispatcher.known_targets, dispatcher.provider, reactor)
    # The Conductor API's accounts are read once, before the reactor: a bad one stops the start.
    conductor = None
    if config.conductor:
        accounts = load_accounts(config.provider_accounts, dispatcher.provider_type, dispatcher.provider)
        auth_door = ThreadDoor(reactor, "basic-auth", threads=2)
        auth_door.setServiceParent(root)
        deleter = Deleter(store, index, dispatcher, accounts, disk_door, config.state_dir, updater)
        conductor = _conductor_resource(
            config, reactor, dispatcher, store, index, deleter, accounts, auth_door, importer
        )
    for pool in (door, *pools):
        pool.setServiceParent(root)
    _StoreCloser(store).setServiceParent(root)
    # Before the dispatcher, so it stops after the installs; the sweep's call
    # is the first on the libvirt thread, ahead of any new install's.
    libvirt.setServiceParent(root)
    LeftoverDomainsSweep(libvirt, config.state_dir).setServiceParent(root)
    if isinstance(bus, AmqpBus):
        # Deliver what waited in the outbox as soon as the broker is back.
        bus.when_connected(relay.retry_now)
        bus.setServiceParent(root)
    relay.setServiceParent(root)
    dispatcher.setServiceParent(root)
    add_node_services(config, reactor, root, core)
    if config.rest:
        _web_service(
            config,
            reactor,
            dispatcher,
            index,
            logs,
            metrics,
            _oauth_verifier(config, reactor, store),
            conductor,
            importer,
        ).setServiceParent(root)
    log.info("imagefactory configured: {settings}", settings=config.redacted())
    return root


def _boot_tester(config: Config, reactor: Any, libvirt: LibvirtConnection, disk_door: IDoor) -> BootTester | None:
    """What boots each real-OS base image once before its targets are made; None with ``boot_test`` off."""
    if not config.boot_test:
        return None
    return LibvirtBootTester(
        libvirt,
        reactor,
        disk_door,
        domain_type=config.libvirt_domain_type,
        timeout=config.boot_test_timeout,
        memory_mib=config.install_memory_mib,
    )


def _event_bus(config: Config, reactor: Any) -> IEventBus:
    """The in-process bus, or the AMQP one when ``amqp_url`` is set."""
    if config.amqp_url is None:
        return InProcessBus()
    try:
        work_queue = config.amqp_work_queue if config.serves_work_queue else None
        bus = AmqpBus(reactor, config.amqp_url, config.amqp_exchange, work_queue=work_queue)
    except (ValueError, OSError) as error:
        raise ConfigError(f"amqp_url: {error}") from None
    log.info("events go to exchange {exchange} at {url}", exchange=config.amqp_exchange, url=bus.url)
    return bus


def remove_unfinished_work(state_dir: str) -> None:
    """Delete what a killed daemon left: conversion staging folders, builds' base images and install files.

    Blocking, but it runs once, before the reactor starts.
    """
    for staging in glob.glob(os.path.join(state_dir, "builders", "*", "staging")):
        shutil.rmtree(staging, ignore_errors=True)
    # Every build's targets ended when its daemon stopped: no base image or install file is needed again.
    for build in glob.glob(os.path.join(state_dir, BUILDS_DIR, "*")):
        shutil.rmtree(build, ignore_errors=True)


def _make_state_dir(path: str) -> None:
    try:
        os.makedirs(os.path.join(path, "builders"), mode=0o750, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"state directory {path} cannot be created: {error.strerror}") from None


def register_gauges(metrics: Metrics, index: BuilderIndex, dispatcher: Dispatcher, store: IStore) -> None:
    """The gauges: read from the pieces that know, at each scrape."""
    # The store counts the builders (the index holds only some) before each scrape, every pair listed.
    counts = every_pair({})

    def count_builders() -> Deferred[int]:
        def keep(fetched: dict[tuple[str, str], int]) -> int:
            counts.update(every_pair(fetched))
            return sum(fetched.values())

        return store.count_builders().addCallback(keep)

    metrics.add_slow_gauge("imagefactory_builders_stored", "Builders in the store, of any kind.", count_builders)
    metrics.add_gauge(
        "imagefactory_builders", "Builders by operation and status.", ["operation", "status"], counts.items
    )
    metrics.add_gauge(
        "imagefactory_dispatcher_queue_length",
        "Builders waiting for a slot.",
        ["operation"],
        lambda: [((operation,), waiting) for operation, waiting in dispatcher.queue_lengths().items()],
    )
    metrics.add_slow_gauge(
        "imagefactory_event_outbox_length", "Events not yet confirmed by the event bus.", store.count_pending_events
    )


def _conductor_resource(
    config: Config,
    reactor: Any,
    dispatcher: Dispatcher,
    store: IStore,
    index: BuilderIndex,
    deleter: Deleter,
    accounts: dict[str, ProviderAccount],
    auth_door: ThreadDoor,
    importer: Importer,
) -> Resource:
    """The Conductor API's resource: Basic auth against ``conductor_users``, then its Klein app."""
    if not config.conductor_users:
        log.warn("the Conductor API is on but the config names no conductor_users: every request will be refused")
    api = ConductorAPI(dispatcher, store, index, deleter, accounts, config.max_body_bytes, importer)
    return ConductorResource(
        api.app.resource(), BasicAuthenticator(config.conductor_users, auth_door, reactor), api.fast_read
    )


def _oauth_verifier(config: Config, reactor: Any, store: IStore) -> OAuthVerifier | None:
    """The OAuth verifier, or None with ``no_oauth``; spent nonces are kept in the store, so they outlive a restart.

    The store is written behind the request (off the reactor): a replay
    is refused from memory at once, and after a restart from what the store kept.
    """
    if config.no_oauth:
        return None

    def spent(client_key: str, nonce: str, expiry: float) -> None:
        store.spend_nonce(client_key, nonce, expiry, reactor.seconds()).addErrback(
            lambda failure: log.failure("spent OAuth nonce not stored", failure)
        )

    def shared_spend(client_key: str, nonce: str, expiry: float) -> Deferred[bool]:
        return store.claim_nonce(client_key, nonce, expiry, reactor.seconds())

    # Several nodes: each write waits for its nonce to be spent in the shared store, so that a
    # request replayed to another node is refused too.
    return OAuthVerifier(
        config.clients,
        reactor,
        config.oauth_timestamp_window,
        known_nonces=store.thd_spent_nonces(reactor.seconds()),
        spent=None if config.on_postgresql else spent,
        require_body_hash=config.oauth_require_body_hash,
        shared_spend=shared_spend if config.on_postgresql else None,
    )


def _web_service(
    config: Config,
    reactor: Any,
    dispatcher: Dispatcher,
    index: BuilderIndex,
    logs: IBuilderLogs,
    metrics: Metrics,
    verifier: OAuthVerifier | None,
    conductor: Resource | None = None,
    importer: Importer | None = None,
) -> IService:
    if verifier is not None and not config.clients:
        log.warn("OAuth is on but the config names no clients: every write request will be refused")
    api = FactoryAPI(dispatcher, index, logs, metrics, verifier, importer)
    root: Resource = FactoryRoot(api, api.app.resource())
    if conductor is not None:
        root = SiteRoot(root, conductor)
    site = make_site(root, config.max_body_bytes, config.access_log, metrics)
    # Both endpoints take an IPv6 interface too ("::"), despite their names.
    endpoint: IStreamServerEndpoint
    if config.no_ssl:
        endpoint = TCP4ServerEndpoint(reactor, config.port, interface=config.address)
        scheme = "http"
    else:
        pem = config.ssl_pem or tls.ensure_self_signed_pem(config.state_dir, socket.gethostname())
        context = tls.server_context_factory(pem)
        endpoint = SSL4ServerEndpoint(reactor, config.port, context, interface=config.address)
        scheme = "https"
        log.info(
            "TLS certificate {pem}, SHA-256 fingerprint {fingerprint}",
            pem=pem,
            fingerprint=tls.certificate_fingerprint(pem),
        )
    service = StreamServerEndpointService(endpoint, site)
    # Fail the start at once (port taken, address unknown) rather than log
    # the error and run a daemon that serves nothing.
    service._raiseSynchronously = True
    service.setName("web")
    log.info(
        "REST API on {scheme}://{address}:{port}/imagefactory (OAuth {oauth})",
        scheme=scheme,
        address=config.address,
        port=config.port,
        oauth="off" if verifier is None else "on",
    )
    return service
