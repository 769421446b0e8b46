"""AMQP URLs: ``amqp://user:password@host:port/vhost``, parsed here and shown only without the password.

User, password and vhost are percent-encoded; the default vhost ``/`` is
``%2F``.  They are parsed here, not by txamqp, whose parser keeps ``%2F``
encoded and rejects explicit ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ..redaction import redact_url

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PORT = 5672


@dataclass(frozen=True)
class AmqpAddress:
    """Where and as whom to connect, from an ``amqp://`` URL."""

    host: str
    port: int
    username: str
    password: str
    vhost: str

    def __repr__(self) -> str:
        # Keeps the password out of tracebacks and debug output.
        return (
            f"AmqpAddress(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
            f"password='***', vhost={self.vhost!r})"
        )


def parse_amqp_url(url: str) -> AmqpAddress:
    """Split an ``amqp://user:password@host:port/vhost`` URL; raise ValueError if it is not one.

    User, password and vhost are percent-decoded; the port defaults to 5672,
    the vhost to ``/``, user and password to ``guest``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a valid AMQP URL ({e}): {redacted_url(url)}") from None
    if parts.scheme != "amqp":
        raise ValueError(f"an AMQP URL starts with amqp:// (amqps is not supported): {redacted_url(url)}")
    if not parts.hostname:
        raise ValueError(f"an AMQP URL needs a host: {redacted_url(url)}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "/" in path:
        raise ValueError(f"a '/' in the vhost of an AMQP URL must be written %2F: {redacted_url(url)}")
    return AmqpAddress(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
    )


def redacted_url(url: str) -> str:
    """``url`` fit for logs: ``amqp://user:***@host:port/vhost`` (no password, port and vhost explicit)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        port, host = None, None
    if host is None:
        # Unparseable: keep only the scheme, never what might be credentials.
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return f"{scheme}://<unparseable>"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = quote(unquote(path) if path else "/", safe="")
    return redact_url(f"{parts.scheme}://{userinfo}{host}:{port if port is not None else DEFAULT_PORT}/{vhost}")
