"""Which store a daemon opens, and what a node of several runs beside the core.

On the embedded SQLite store one daemon does everything.  On PostgreSQL
(``store_url``) daemons are nodes sharing one database, one broker and one
image store: an API node (``--rest``) records requests and hands the work
to the RabbitMQ work queue; a worker (no ``--rest``, or ``--rest --worker``)
takes jobs from it (``jobs.worker``); every node keeps its index up to date
from the others' events (``jobs.feed``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.service import MultiService

from .config import Config
from .core import Core
from .doors import ThreadDoor
from .events.amqp import AmqpBus
from .jobs.feed import IndexFeed
from .jobs.jobs import CredentialSeal
from .jobs.worker import Worker
from .redaction import redact_url
from .store.postgres import PostgresStore
from .store.sqlite import SQLiteStore

__all__ = ["add_node_services", "default_worker_id", "open_store", "store_name"]


def default_worker_id() -> str:
    """A worker's name when the config gives none: its host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def open_store(config: Config, reactor: Any) -> tuple[SQLiteStore | PostgresStore, ThreadDoor]:
    """The store ``store_url`` names, unopened, and the door its calls go through (start it first)."""
    if config.on_postgresql:
        return PostgresStore.on_own_threads(reactor, config.store_url)
    return SQLiteStore.on_own_thread(reactor, os.path.join(config.state_dir, "imagefactory.sqlite"))


def store_name(config: Config) -> str:
    """The store as a log or an error names it: its URL without the password, or the SQLite file's directory."""
    return redact_url(config.store_url) if config.on_postgresql else f"in {config.state_dir}"


def add_node_services(config: Config, reactor: Any, root: MultiService, core: Core) -> Worker | None:
    """On PostgreSQL with a broker: the index feed, and the worker when this node works; the worker, or None.

    Added after the dispatcher, so that they stop first: a stopping worker
    hands its builders back before the dispatcher would fail them.
    """
    if not config.serves_work_queue or not isinstance(core.bus, AmqpBus):
        return None
    worker = None
    if config.does_work:
        assert config.job_key is not None  # the config refuses PostgreSQL without one
        worker = Worker(
            reactor,
            core.store,
            core.dispatcher,
            core.index,
            core.updater,
            core.logs,
            CredentialSeal(config.job_key),
            worker_id=config.worker_id or default_worker_id(),
            heartbeat=config.worker_heartbeat,
            max_attempts=config.max_attempts,
            slots=config.max_concurrent_builds + config.max_concurrent_pushes,
            consume=core.bus.consume_work,
        )
    IndexFeed(core.bus, core.store, core.index, worker.ended_elsewhere if worker else None).setServiceParent(root)
    if worker is not None:
        worker.setServiceParent(root)
    return worker
