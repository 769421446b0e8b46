"""Fixtures of the integration tier (every test here is marked ``integration`` by tests/conftest.py).

* ``rabbitmq_url``: a reachable RabbitMQ broker, started here if it is local and down.
"""

from __future__ import annotations

import pytest
from support.rabbitmq import BROKER_URL, port_open, start_local_broker

from imgfac_twisted.events.amqp import parse_amqp_url


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of a reachable RabbitMQ broker (started here if it is local and down)."""
    address = parse_amqp_url(BROKER_URL)
    if not port_open(address.host, address.port):
        why_not = start_local_broker(address.host, address.port)
        if why_not is not None:
            pytest.skip(f"no RabbitMQ broker at {address.host}:{address.port} and {why_not}")
    return BROKER_URL
