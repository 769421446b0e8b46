"""Jobs: the messages that hand builders to workers through the RabbitMQ work queue.

On PostgreSQL an API node records each new builder with one job in the
store's outbox, in the same transaction (so a job is never lost, and waits
there while the broker is away); the outbox relay publishes it, persistent
and confirmed, to the durable work queue through the default exchange.  A
worker takes it, claims the builder in the store and runs it (``worker``).

A build request's builders share one install: each of their jobs names all
of them (``builder_ids``), and the worker that takes the first claims them
all, so the install runs once, on one worker.  A push's credentials travel
in its job encrypted with the ``job_key`` every node shares (Fernet:
AES-128-CBC with an HMAC): they are never stored or published in clear.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from ..errors import ImageFactoryError
from ..events import Event
from ..model import Builder
from ..providers import Credentials

__all__ = ["BUILD", "PUSH", "CredentialSeal", "JobMaker"]

BUILD = "build"
PUSH = "push"


class CredentialSeal:
    """Encrypts a push's credentials for its job, and decrypts them on the worker."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode("ascii"))

    def seal(self, credentials: Credentials) -> str:
        """The credentials as an encrypted, authenticated token."""
        text = json.dumps({"account": credentials.account_identifier, "secrets": credentials.secrets})
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> Credentials:
        """The credentials ``seal`` made; ImageFactoryError when the token was made with another key."""
        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, ValueError):
            raise ImageFactoryError(
                "the push's credentials cannot be decrypted here: every node needs the same job_key"
            ) from None
        return Credentials(account_identifier=data["account"], secrets=data["secrets"])


@dataclass(frozen=True)
class JobMaker:
    """Makes the job messages of new builders, for the work queue ``queue``."""

    queue: str
    seal: CredentialSeal

    def build_jobs(self, builders: Sequence[Builder]) -> list[Event]:
        """One job per builder of one build request, each naming them all (they share the install)."""
        ids = [builder.id for builder in builders]
        return [self._job(BUILD, builder, builder_ids=ids) for builder in builders]

    def push_job(self, builder: Builder, credentials: Credentials) -> Event:
        """The job of a push builder, its credentials sealed."""
        return self._job(PUSH, builder, credentials=self.seal.seal(credentials))

    def _job(self, kind: str, builder: Builder, **details: Any) -> Event:
        body = {"event_id": str(uuid.uuid4()), "job": kind, "builder_id": builder.id, **details}
        return Event(routing_key=self.queue, body=body, exchange="")
