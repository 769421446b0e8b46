"""AmqpBus and the consumer without a broker: URL parsing and redaction, the spec file, publisher
confirms on a fake channel, failing fast before start, the consumer's readable lines (with the broker:
tests/integration/test_events_amqp.py)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from txamqp.content import Content

from imgfac_twisted.events.amqp import (
    DEFAULT_SPEC_PATH,
    AmqpBus,
    BusUnavailable,
    PublishRejected,
    parse_amqp_url,
    redacted_url,
)
from imgfac_twisted.events.consumer import readable_line
from support.rabbitmq import SECRET, sample_events, with_credentials

pytestmark = pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")


def test_url_default_vhost_encoded_and_default_port() -> None:
    """%2F decodes to the vhost '/', and the port defaults to 5672."""
    address = parse_amqp_url("amqp://guest:guest@127.0.0.1/%2F")
    assert (address.host, address.port, address.username, address.password, address.vhost) == (
        "127.0.0.1",
        5672,
        "guest",
        "guest",
        "/",
    )


def test_url_explicit_port_and_named_vhost() -> None:
    """An explicit port is used; a named vhost is percent-decoded."""
    address = parse_amqp_url("amqp://factory:pw@broker.example.com:5673/images%2Fprod")
    assert (address.host, address.port, address.vhost) == ("broker.example.com", 5673, "images/prod")


def test_url_percent_encoded_credentials() -> None:
    """User and password are percent-decoded (':', '@', '/', '%' and non-ASCII)."""
    url = with_credentials("amqp://h/%2F", "us@er", SECRET)
    address = parse_amqp_url(url)
    assert (address.username, address.password) == ("us@er", SECRET)
    assert SECRET not in repr(address) and quote(SECRET, safe="") not in repr(address)


def test_url_defaults() -> None:
    """No credentials means guest/guest; no path means the vhost '/'; IPv6 hosts work."""
    address = parse_amqp_url("amqp://localhost")
    assert (address.username, address.password, address.port, address.vhost) == ("guest", "guest", 5672, "/")
    assert parse_amqp_url("amqp://[::1]:5673/").host == "::1"


@pytest.mark.parametrize("url", ["http://h/%2F", "amqps://h/%2F", "amqp:///%2F", "amqp://h:port/%2F", "amqp://h/a/b"])
def test_url_rejected(url: str) -> None:
    """What is not an amqp:// URL we can use is refused with ValueError."""
    with pytest.raises(ValueError):
        parse_amqp_url(url)


def test_redacted_url() -> None:
    """The redacted URL keeps user, host, port and vhost, and hides the password."""
    url = with_credentials("amqp://127.0.0.1/%2F", "factory", SECRET)
    assert redacted_url(url) == "amqp://factory:***@127.0.0.1:5672/%2F"
    assert redacted_url("amqp://h:5673/prod") == "amqp://h:5673/prod"
    assert redacted_url("amqp://u:p@h:notaport/x") == "amqp://<unparseable>"


def test_missing_spec_file_says_what_to_install() -> None:
    """Without the spec XML, the bus fails at construction and names the Debian package."""
    with pytest.raises(FileNotFoundError, match="amqp-specs"):
        AmqpBus(Clock(), "amqp://h/%2F", spec_path="/nonexistent/amqp.xml")
    assert os.path.exists(DEFAULT_SPEC_PATH)


class _FakeChannel:
    """Stands for the publishing channel: takes publishes, confirms nothing by itself."""

    closed = False

    def __init__(self) -> None:
        self.published: list[tuple[str, Content]] = []

    def basic_publish(self, exchange: str, routing_key: str, content: Content) -> Deferred:
        self.published.append((routing_key, content))
        return succeed(None)


def test_confirms_multiple_and_nack_unit() -> None:
    """Unit (no broker): an ack with multiple=True confirms every earlier tag, a nack fails its publish
    with PublishRejected, a single ack confirms only its own."""
    bus = AmqpBus(Clock(), "amqp://h/%2F")
    client, channel = object(), _FakeChannel()
    bus._client, bus._channel = client, channel  # type: ignore[assignment]  # connected, as far as it knows
    results: list[Any] = []
    for event in sample_events()[:6]:
        bus.publish(event).addBoth(results.append)
    assert len(channel.published) == 6 and results == []
    bus.confirmed(client, channel, 3, True, None)  # type: ignore[arg-type]
    assert results == [None, None, None]
    bus.confirmed(client, channel, 5, False, None)  # type: ignore[arg-type]
    assert results == [None, None, None, None]
    bus.confirmed(client, channel, 4, False, PublishRejected("no"))  # type: ignore[arg-type]
    assert results[-1].check(PublishRejected)
    bus.confirmed(client, channel, 6, True, None)  # type: ignore[arg-type]
    assert len(results) == 6 and results[-1] is None
    bus._client, bus._channel = None, None


def test_publish_and_subscribe_fail_fast_when_never_started() -> None:
    """Before the bus is started, publish and subscribe fail at once with BusUnavailable."""
    bus = AmqpBus(Clock(), "amqp://h/%2F")
    failures: list[Failure] = []
    bus.publish(sample_events()[0]).addErrback(failures.append)
    bus.subscribe("#", lambda e: None).addErrback(failures.append)
    assert [f.check(BusUnavailable) for f in failures] == [BusUnavailable, BusUnavailable]
    assert not bus.is_connected


def test_readable_line_of_a_new_build() -> None:
    """A creation has no old status: it shows as '(none)'."""
    event = sample_events()[0]
    body = event.body
    assert readable_line(event) == f"{body['timestamp']} {body['id']} build mock (none)->NEW 0%"
