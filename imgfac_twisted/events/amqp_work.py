"""The AMQP bus's work queue consumer: jobs taken from a durable queue, acknowledged once done.

Unlike a subscription (a live view, no acks), a job is acknowledged only
when its handler says the work is durably finished.  The broker hands a
consumer at most ``prefetch`` unacknowledged jobs, so a worker with that
many slots is never given more than it can run; a job whose worker dies
or loses its connection is delivered again, to whichever worker the broker
chooses.  The consumer is bound to one connection: the bus starts it again
on every (re)connect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.message import Message
from txamqp.protocol import AMQChannel

from .amqp_wire import AmqpClient, describe

__all__ = ["JobHandler", "WorkConsumer"]

#: The handler of one job (its JSON object): fires True once it is done (acknowledge it), False to leave it
#: unacknowledged (handed back: the broker delivers it again once this connection ends).  A failure rejects
#: it back to the queue after ``retry_delay`` seconds.
JobHandler = Callable[[dict[str, Any]], "Deferred[bool]"]

#: The work consumer's channel: far above the subscriptions' (2, 3, ...), below RabbitMQ's 2047.
WORK_CHANNEL = 1000


class WorkConsumer:
    """Consumes one durable queue with manual acknowledgements and a prefetch, on the bus's current connection."""

    log = Logger()

    def __init__(self, queue: str, prefetch: int, handler: JobHandler, clock: IReactorTime, retry_delay: float) -> None:
        self.queue = queue
        self._prefetch = prefetch
        self._handler = handler
        self._clock = clock
        self._retry_delay = retry_delay
        self._channel: AMQChannel | None = None
        self._tag: str | None = None

    def owns(self, consumer_tag: str) -> bool:
        """Whether a delivery with ``consumer_tag`` is one of this consumer's jobs."""
        return consumer_tag == self._tag

    async def start(self, client: AmqpClient) -> None:
        """Declare the queue, set the prefetch and consume, on a channel of ``client``'s connection."""
        channel = await client.channel(WORK_CHANNEL)
        await channel.channel_open()
        await channel.queue_declare(queue=self.queue.encode("utf-8"), durable=True)
        await channel.basic_qos(prefetch_count=self._prefetch)
        tag = f"imagefactory-work-{uuid.uuid4().hex}"
        # Registered before consuming, so that no delivery can come first.
        self._channel, self._tag = channel, tag
        await channel.basic_consume(queue=self.queue.encode("utf-8"), consumer_tag=tag, no_ack=False)
        self.log.info(
            "taking jobs from queue {queue}, at most {prefetch} at a time", queue=self.queue, prefetch=self._prefetch
        )

    def end(self) -> None:
        """The connection went: the broker gives its unacknowledged jobs to other consumers."""
        self._channel, self._tag = None, None

    def delivered(self, msg: Message) -> None:
        """Hand a job to the handler; acknowledge, or reject it back to the queue, by its outcome."""
        channel = self._channel
        if channel is None:
            return
        try:
            raw = msg.content.body if msg.content is not None else b""
            job = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            if not isinstance(job, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as error:
            self.log.error("dropped a job that is not a JSON object ({error})", error=str(error))
            self._settle(
                channel, msg.delivery_tag, lambda: channel.basic_reject(delivery_tag=msg.delivery_tag, requeue=False)
            )
            return
        done = maybeDeferred(self._handler, job)
        done.addCallbacks(
            self._finished,
            self._failed,
            callbackArgs=(channel, msg.delivery_tag),
            errbackArgs=(channel, msg.delivery_tag),
        )

    def _finished(self, acknowledge: bool, channel: AMQChannel, delivery_tag: int) -> None:
        if acknowledge:
            self._settle(channel, delivery_tag, lambda: channel.basic_ack(delivery_tag=delivery_tag))

    def _failed(self, failure: Failure, channel: AMQChannel, delivery_tag: int) -> None:
        self.log.failure("a job failed; it goes back to the queue in {delay} s", failure, delay=self._retry_delay)
        self._clock.callLater(
            self._retry_delay,
            self._settle,
            channel,
            delivery_tag,
            lambda: channel.basic_reject(delivery_tag=delivery_tag, requeue=True),
        )

    def _settle(self, channel: AMQChannel, delivery_tag: int, answer: Callable[[], Deferred[Any]]) -> None:
        """Acknowledge or reject on the channel the job came on, if it is still the live one."""
        if self._channel is None or channel is not self._channel or channel.closed:
            return  # that connection went: the broker has requeued the job already
        maybeDeferred(answer).addErrback(self._not_settled, delivery_tag)

    def _not_settled(self, failure: Failure, delivery_tag: int) -> None:
        # The channel closed meanwhile: the broker requeues the job, and its next worker finds it done or not.
        self.log.debug("job {tag} not settled: {reason}", tag=delivery_tag, reason=describe(failure))
