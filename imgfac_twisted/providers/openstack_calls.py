"""Blocking calls to Keystone and Glance (keystoneauth1, python-glanceclient), run on the cloud door.

- :func:`connect` authenticates with Keystone (a password or an application
  credential) and finds Glance in the catalog (or uses the cloud's
  ``image_endpoint``);
- :func:`call` runs one client call and turns every client error into an
  :class:`OpenStackError` whose message names the cloud, the call and the
  service's words, never a secret;
- :class:`StreamingReader` is the file object an upload reads: the image
  in 1 MiB pieces, hashed on the way, counting what was sent, and stoppable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ImageFactoryError
from ..redaction import scrub
from . import Credentials
from .openstack_clouds import Cloud

T = TypeVar("T")

#: Seconds a connection or a read may take before a call fails.
CALL_TIMEOUT = 60.0
#: Pieces an upload reads and sends.
PIECE_BYTES = 1024 * 1024
#: The hash Glance computes by default (``os_hash_algo``).
DEFAULT_HASH = "sha512"
#: The credentials' secret parts.
SECRET_FIELDS = ("password", "application_credential_secret")


class OpenStackError(ImageFactoryError):
    """A push to (or removal from) OpenStack failed; the message says which call and why (never a secret)."""


class UploadStopped(Exception):
    """The upload was stopped (the push is cancelled or failing)."""


@dataclass
class Connection:
    """An authenticated Glance v2 client and the endpoint it talks to."""

    glance: Any
    endpoint: str


def connect(cloud: Cloud, credentials: Credentials, timeout: float = CALL_TIMEOUT) -> Connection:
    """Authenticate with the cloud's Keystone and make a Glance client (blocking)."""
    from glanceclient import Client  # type: ignore[import-untyped]
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    secrets = credentials.secrets
    auth: Any
    if "application_credential_id" in secrets:
        auth = v3.ApplicationCredential(
            auth_url=cloud.auth_url,
            application_credential_id=secrets["application_credential_id"],
            application_credential_secret=secrets["application_credential_secret"],
        )
    else:
        auth = v3.Password(
            auth_url=cloud.auth_url,
            username=secrets["username"],
            password=secrets["password"],
            project_name=secrets["project_name"],
            user_domain_name=secrets["user_domain_name"],
            project_domain_name=secrets["project_domain_name"],
        )
    keystone = session.Session(auth=auth, verify=cloud.ca_bundle or True, timeout=timeout)
    # Authenticate now: a refused password fails here, before anything is made.
    keystone.get_token()
    endpoint = cloud.image_endpoint or keystone.get_endpoint(
        service_type="image", interface=cloud.interface, region_name=cloud.region
    )
    if not endpoint:
        region = f"region {cloud.region}" if cloud.region else "any region"
        raise OpenStackError(
            f"{cloud.name}: Keystone's catalog has no {cloud.interface} image (Glance) endpoint in {region}"
        )
    glance = Client("2", session=keystone, endpoint=endpoint, interface=cloud.interface, region_name=cloud.region)
    return Connection(glance=glance, endpoint=endpoint)


def secret_values(credentials: Credentials) -> tuple[str, ...]:
    """The values to hide wherever a message could show them (not the user name or project)."""
    return tuple(value for name, value in credentials.secrets.items() if name in SECRET_FIELDS and value)


def call(cloud: str, action: str, secrets: tuple[str, ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; any client error becomes an OpenStackError naming ``action`` (blocking)."""
    try:
        return fn(*args, **kwargs)
    except (OpenStackError, UploadStopped):
        raise
    except Exception as error:
        raise OpenStackError(scrub(f"{cloud}: {action} failed: {describe(error)}", secrets)) from None


def describe(error: BaseException) -> str:
    """A client error in a few words: what the service said, or why it could not be reached."""
    from glanceclient import exc as glance_errors
    from keystoneauth1 import exceptions as auth_errors

    if isinstance(error, auth_errors.Unauthorized):
        return "Keystone refused the credentials (HTTP 401)"
    if isinstance(error, auth_errors.EndpointNotFound):
        return f"not in Keystone's catalog: {_first_line(error)}"
    if isinstance(error, auth_errors.ConnectFailure | glance_errors.CommunicationError | glance_errors.InvalidEndpoint):
        return f"cannot reach the endpoint: {_first_line(error)}"
    if isinstance(error, auth_errors.HttpError):
        return f"HTTP {error.http_status}: {error.message}"
    if isinstance(error, glance_errors.HTTPException):
        return f"HTTP {error.code}: {(error.details or '').strip() or type(error).__name__}"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


class StreamingReader:
    """The image file as an upload reads it: in pieces, hashed on the way, stoppable (blocking reads)."""

    def __init__(self, path: str, algorithm: str = DEFAULT_HASH) -> None:
        # Closed by close(), once the upload has returned.
        self._file = open(path, "rb")
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        #: Bytes read so far (read by the reactor thread for progress; an int is safe to share).
        self.sent = 0
        self.stopped = False

    def read(self, size: int = -1) -> bytes:
        """The next piece; UploadStopped once :meth:`stop` was called."""
        if self.stopped:
            raise UploadStopped("the upload was stopped")
        piece = self._file.read(PIECE_BYTES if size is None or size < 0 else min(size, PIECE_BYTES))
        self._hash.update(piece)
        self.sent += len(piece)
        return piece

    def stop(self) -> None:
        """Make the next read fail, ending the upload (called from the reactor thread)."""
        self.stopped = True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._file.close()


def file_hash(path: str, algorithm: str) -> str:
    """The hex digest of a file under ``algorithm`` (blocking; for a Glance that hashes otherwise)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while piece := stream.read(PIECE_BYTES):
            digest.update(piece)
    return digest.hexdigest()
