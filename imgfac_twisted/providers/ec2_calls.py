"""Calling EC2 and EBS through boto3: clients, error mapping, retries with backoff.

Every SDK call leaves the reactor through the cloud door.  botocore's own
retries are off (one attempt per call, short connect timeout) so that this
module alone decides what is retried and for how long: transient errors
(throttling, 5xx, connection resets and refusals, time-outs) are retried with
capped exponential backoff, within a number of attempts and a time budget
per call; anything else fails at once with the service's code and message.
"""

from __future__ import annotations

import dataclasses
import html
import random
import re
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ..errors import ImageFactoryError
from ..redaction import scrub
from .ec2_blocks import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_SCAN_BYTES
from .ec2_endpoints import Endpoint

T = TypeVar("T")

#: Error codes that mean "try again later", over EC2 (query) and EBS (REST-JSON).
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
        "ConcurrentLimitExceededException",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

#: Connect quickly or not at all; a 512 KiB block must not take a minute.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


class Ec2Error(ImageFactoryError):
    """An EC2 push failed; the message says which call and why (never a secret)."""


class Ec2ServiceError(Ec2Error):
    """The service answered with an error (its code and message are kept)."""

    def __init__(self, message: str, action: str, code: str, service_message: str, status: int | None) -> None:
        super().__init__(message)
        self.action = action
        self.code = code
        self.service_message = service_message
        self.status = status


class Ec2ConnectionError(Ec2Error):
    """The endpoint could not be reached (refused, unresolvable, timed out, reset)."""


@dataclass(frozen=True)
class Problem:
    """What went wrong with one attempt of a call."""

    #: The service's error code, or a name for a connection problem.
    code: str
    message: str
    transient: bool
    status: int | None = None
    connection: bool = False


def classify(error: BaseException) -> Problem:
    """Map an exception raised by a boto3 call to a Problem."""
    import botocore.exceptions as bce

    if isinstance(error, bce.ClientError):
        details = error.response.get("Error", {}) or {}
        status = (error.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code, message = _readable(str(details.get("Code") or ""), str(details.get("Message") or ""), status)
        transient = code in TRANSIENT_CODES or (isinstance(status, int) and (status >= 500 or status == 429))
        return Problem(code=code, message=message, transient=transient, status=status)
    if isinstance(error, bce.SSLError):
        return Problem(code="SSLError", message=str(error), transient=False, connection=True)
    if isinstance(
        error,
        (
            bce.EndpointConnectionError,
            bce.ConnectionClosedError,
            bce.ConnectTimeoutError,
            bce.ReadTimeoutError,
            bce.ProxyConnectionError,
            bce.HTTPClientError,
            bce.IncompleteReadError,
            bce.ResponseStreamingError,
        ),
    ):
        return Problem(code=type(error).__name__, message=str(error), transient=True, connection=True)
    if isinstance(error, (ConnectionError, TimeoutError)):
        return Problem(
            code=type(error).__name__, message=str(error) or type(error).__name__, transient=True, connection=True
        )
    if isinstance(error, bce.ParamValidationError):
        return Problem(code="ParamValidationError", message=str(error).replace("\n", " "), transient=False)
    if isinstance(error, bce.BotoCoreError):
        return Problem(code=type(error).__name__, message=str(error), transient=False)
    return Problem(code=type(error).__name__, message=str(error) or repr(error), transient=False)


_XML_CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,2000})</Message>")
_HTML_TITLE = re.compile(r"<title>([^<]{1,200})</title>", re.IGNORECASE)
MAX_MESSAGE_CHARS = 1000


def _readable(code: str, message: str, status: Any) -> tuple[str, str]:
    """The error code and message, even when botocore could not parse the body.

    An endpoint that answers a JSON API with an XML error (moto does, for
    authentication) or an HTML page (a proxy, a crashed server) leaves the
    whole body as the message and the HTTP status as the code.
    """
    message = message.strip()
    if message.startswith("<"):
        found_code, found_message = _XML_CODE.search(message), _XML_MESSAGE.search(message)
        title = _HTML_TITLE.search(message)
        if found_code:
            code = found_code.group(1).strip()
            message = html.unescape(found_message.group(1).strip()) if found_message else ""
        elif title:
            message = html.unescape(title.group(1).strip())
        else:
            message = f"an answer of {len(message)} characters that is not an error document"
    if not code or code.isdigit():
        code = code or "Unknown"
        if status is not None and not message:
            message = f"HTTP status {status}"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    return code, message or "(no message)"


def failure_for(
    provider: str, action: str, problem: Problem, attempts: int, elapsed: float, secrets: tuple[str, ...] = ()
) -> Ec2Error:
    """The error a push fails with after ``attempts`` attempts of ``action`` ended in ``problem``."""
    tried = f" (after {attempts} attempts in {elapsed:.0f} s)" if attempts > 1 else ""
    if problem.connection:
        message = f"{provider}: {action} failed: cannot reach the endpoint: {problem.message}{tried}"
        return Ec2ConnectionError(scrub(message, secrets))
    message = f"{provider}: {action} failed: {problem.code}: {problem.message}{tried}"
    return Ec2ServiceError(
        scrub(message, secrets), action, problem.code, scrub(problem.message, secrets), problem.status
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How one call is retried: capped exponential backoff with jitter, within attempts and a budget."""

    max_attempts: int = 6
    first_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 20.0
    #: No new attempt starts once this many seconds passed since the first one.
    budget: float = 90.0
    #: Each delay is drawn from [delay * (1 - jitter), delay].
    jitter: float = 0.25

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.first_delay * self.factor ** (attempt - 1))
        return base * (1 - self.jitter * rand())

    def next_delay(self, attempt: int, elapsed: float, rand: Callable[[], float] = random.random) -> float | None:
        """The wait before another attempt, or None when the attempts or the budget are spent."""
        if attempt >= self.max_attempts:
            return None
        delay = self.delay(attempt, rand)
        if elapsed + delay > self.budget:
            return None
        return delay


#: Told of each retry: the problem, the attempt that failed (1-based) and the wait before the next.
RetryObserver = Callable[[Problem, int, float], Awaitable[None]]


async def with_retries(
    clock: IReactorTime,
    policy: RetryPolicy,
    provider: str,
    action: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    secrets: tuple[str, ...] = (),
    also_transient: Collection[str] = (),
    gone: Collection[str] = (),
    stopping: Callable[[], bool] = lambda: False,
    on_retry: RetryObserver | None = None,
) -> T | None:
    """``attempt()`` until it succeeds, retrying transient errors as ``policy`` allows.

    An error whose code is in ``gone`` counts as done (None: the thing to
    remove is not there); one in ``also_transient`` is retried too.  Once
    ``stopping()`` is true no new attempt starts.  What cannot be retried
    raises the Ec2Error of :func:`failure_for`, with ``secrets`` scrubbed.
    """
    first = clock.seconds()
    attempts = 0
    while True:
        if stopping():
            raise CancelledError()
        attempts += 1
        try:
            return await attempt()
        except CancelledError:
            raise
        except Exception as error:
            problem = classify(error)
        if problem.code in gone:
            return None
        if problem.code in also_transient:
            problem = dataclasses.replace(problem, transient=True)
        elapsed = clock.seconds() - first
        delay = policy.next_delay(attempts, elapsed) if problem.transient else None
        if delay is None or stopping():
            raise failure_for(provider, action, problem, attempts, elapsed, secrets)
        if on_retry is not None:
            await on_retry(problem, attempts, delay)
        await deferLater(clock, delay, lambda: None)


@dataclass(frozen=True)
class Ec2Settings:
    """The knobs of a push (tests shrink the waits)."""

    #: PutSnapshotBlock calls in flight per push.
    puts_in_flight: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Deleting what a failed push made: a few quick attempts.
    cleanup_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=4, budget=20.0))
    #: Longest wait for the snapshot to complete, and for the AMI to become available.
    snapshot_wait: float = 3600.0
    image_wait: float = 900.0
    #: How long a just-made snapshot or AMI may be "not found" (eventual consistency).
    not_found_grace: float = 120.0
    poll_first: float = 1.0
    poll_max: float = 15.0
    #: At a failure, how long to wait for SDK calls still running before cleaning up.
    settle_wait: float = 10.0
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_scan_bytes: int = DEFAULT_MAX_SCAN_BYTES


ClientFactory = Callable[[Endpoint, str, str, int], tuple[Any, Any]]


_session_lock = threading.Lock()
_session: Any = None


def make_clients(endpoint: Endpoint, access_key: str, secret_key: str, pool_size: int) -> tuple[Any, Any]:
    """EC2 and EBS clients for one push (blocking: run it on the cloud door).

    The clients carry the push's own credentials; the boto3 session they come
    from has none and is shared, so the service models are parsed once per
    daemon (about 0.2 s and 30 MiB each time otherwise).  boto3 sessions are
    not thread-safe: clients are made under a lock, then used freely.
    """
    from botocore.config import Config

    config = Config(
        region_name=endpoint.region,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, pool_size),
        user_agent_extra="imgfac-twisted",
    )
    verify: Any = endpoint.ca_bundle if endpoint.ca_bundle else None
    keys = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key, "aws_session_token": None}
    with _session_lock:
        session = _shared_session()
        ec2 = session.client(
            "ec2", region_name=endpoint.region, endpoint_url=endpoint.endpoint_url, config=config, verify=verify, **keys
        )
        ebs = session.client(
            "ebs",
            region_name=endpoint.region,
            endpoint_url=endpoint.ebs_endpoint_url or endpoint.endpoint_url,
            config=config,
            verify=verify,
            **keys,
        )
    return ec2, ebs


def _shared_session() -> Any:
    global _session
    if _session is None:
        import boto3

        _session = boto3.session.Session()
    return _session
