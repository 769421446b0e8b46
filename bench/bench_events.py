"""Benchmark: events through the AMQP bus, against two baselines, in the same run.

Measures events/second from ``publish`` to a subscriber, and p50/p99 latency
from the ``publish`` call to the subscriber's callback, for:

* ``AmqpBus``: publisher confirms, publishes pipelined in batches (``--batch``
  publishes in flight, then wait for all their confirms), consumed by a
  second ``AmqpBus`` (its own connection) through ``subscribe``;
* ``raw txamqp``: the same messages, published with plain txamqp, no
  confirms (fire and forget), consumed the same way: what confirms and the
  bus's bookkeeping cost;
* ``InProcessBus``: the default bus (no broker): the floor.

Runs alternate between the transports for ``--rounds`` rounds so that machine
noise hits all of them; medians are printed, with the ratio AmqpBus/raw.
Latency is measured twice: under the throughput load (queueing included) and
with one event at a time (``--single`` events).

A benchmark, not a test: exits 0 whatever the figures; non-zero only if
something broke (no broker, an event lost, a publish failed).

Usage: ``.venv/bin/python bench/bench_events.py [--count 20000] [--batch 200] [--rounds 3]
[--amqp-url amqp://guest:guest@127.0.0.1:5672/%2F]``.  Needs the RabbitMQ
broker and Debian's amqp-specs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientCreator
from twisted.internet.task import deferLater, react
from txamqp.client import TwistedDelegate
from txamqp.content import Content
from txamqp.protocol import AMQClient

from imgfac_twisted.events import Event, event_for_change
from imgfac_twisted.events.amqp import DEFAULT_URL, AmqpBus, parse_amqp_url
from imgfac_twisted.events.inprocess import InProcessBus
from imgfac_twisted.model import Builder, BuilderChange, Operation, Status, new_id


def make_events(count: int) -> list[Event]:
    """``count`` realistic events: a build's progress updates (about 550-byte bodies)."""
    builder = Builder(
        id=new_id(),
        operation=Operation.BUILD,
        status=Status.BUILDING,
        completed=0,
        image_id=new_id(),
        build_id=new_id(),
        target="openstack-kvm",
    )
    events = []
    for i in range(count):
        new = builder.moved(Status.BUILDING, i % 100, now=float(i))
        events.append(event_for_change(BuilderChange(builder, new), 1_700_000_000.0 + i))
        builder = new
    return events


@dataclass
class Result:
    """One transport's run: events/s and latencies (seconds)."""

    rate: float
    loaded: list[float] = field(default_factory=list)
    single: list[float] = field(default_factory=list)


class Receiver:
    """Counts deliveries and notes, per event id, when each arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.waiting: tuple[int, Deferred] | None = None

    def __call__(self, event: Event) -> None:
        self.arrived[event.event_id] = time.perf_counter()
        if self.waiting is not None and len(self.arrived) >= self.waiting[0]:
            d = self.waiting[1]
            self.waiting = None
            d.callback(None)

    def until(self, count: int, reactor: Any, timeout: float = 120.0) -> Deferred:
        d: Deferred = Deferred()
        if len(self.arrived) >= count:
            d.callback(None)
        else:
            self.waiting = (count, d)
        return d.addTimeout(timeout, reactor)


async def measure(
    reactor: Any,
    publish: Callable[[Event], Deferred | None],
    receiver: Receiver,
    events: list[Event],
    batch: int,
    single: int,
) -> Result:
    """Publish ``events`` in batches, then ``single`` more one at a time; time everything."""
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        pending = []
        for event in events[i : i + batch]:
            sent[event.event_id] = time.perf_counter()
            d = publish(event)
            if d is not None:
                pending.append(d)
        if pending:
            await gatherResults(pending, consumeErrors=True)
        else:
            await deferLater(reactor, 0, lambda: None)  # let the reactor write and read
    await receiver.until(len(events), reactor)
    elapsed = time.perf_counter() - started
    result = Result(
        rate=len(events) / elapsed, loaded=[receiver.arrived[e.event_id] - sent[e.event_id] for e in events]
    )
    for event in make_events(single):
        target = len(receiver.arrived) + 1
        t0 = time.perf_counter()
        d = publish(event)
        await receiver.until(target, reactor)
        result.single.append(receiver.arrived[event.event_id] - t0)
        if d is not None:
            await d
    return result


async def run_amqp(reactor: Any, url: str, events: list[Event], batch: int, single: int) -> Result:
    exchange = f"imagefactory-bench-{uuid.uuid4().hex[:8]}"
    publisher = AmqpBus(reactor, url, exchange=exchange)
    consumer = AmqpBus(reactor, url, exchange=exchange)
    for bus in (publisher, consumer):
        bus.startService()
        await bus.wait_connected(fail_fast=True)
    receiver = Receiver()
    await consumer.subscribe("#", receiver)
    try:
        return await measure(reactor, publisher.publish, receiver, events, batch, single)
    finally:
        await publisher.stopService()
        await consumer.stopService()
        await delete_exchange(url, exchange)


async def raw_client(url: str) -> Any:
    from twisted.internet import reactor

    address = parse_amqp_url(url)
    client = await ClientCreator(
        reactor, AMQClient, delegate=TwistedDelegate(), vhost=address.vhost, spec=AmqpBus(reactor, url)._spec
    ).connectTCP(address.host, address.port)
    await client.authenticate(address.username, address.password)
    channel = await client.channel(1)
    await channel.channel_open()
    return client, channel


async def delete_exchange(url: str, exchange: str) -> None:
    client, channel = await raw_client(url)
    await channel.exchange_delete(exchange=exchange)
    client.transport.loseConnection()


async def run_raw(reactor: Any, url: str, events: list[Event], batch: int, single: int) -> Result:
    exchange = f"imagefactory-bench-{uuid.uuid4().hex[:8]}"
    consumer = AmqpBus(reactor, url, exchange=exchange)  # declares the exchange
    consumer.startService()
    await consumer.wait_connected(fail_fast=True)
    receiver = Receiver()
    await consumer.subscribe("#", receiver)
    client, channel = await raw_client(url)

    def publish(event: Event) -> None:
        channel.basic_publish(
            exchange=exchange,
            routing_key=event.routing_key,
            content=Content(
                event.body_bytes(),
                properties={"content-type": "application/json", "delivery-mode": 2, "message-id": event.event_id},
            ),
        )

    try:
        return await measure(reactor, publish, receiver, events, batch, single)
    finally:
        client.transport.loseConnection()
        await consumer.stopService()
        await delete_exchange(url, exchange)


async def run_inprocess(reactor: Any, url: str, events: list[Event], batch: int, single: int) -> Result:
    bus = InProcessBus()
    receiver = Receiver()
    await bus.subscribe("#", receiver)
    return await measure(reactor, bus.publish, receiver, events, batch, single)


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(reactor: Any, options: argparse.Namespace) -> None:
    transports = {
        f"AmqpBus (confirms, batches of {options.batch})": run_amqp,
        "raw txamqp (no confirms)": run_raw,
        "InProcessBus": run_inprocess,
    }
    results: dict[str, list[Result]] = {name: [] for name in transports}
    for round_ in range(1, options.rounds + 1):
        for name, run in transports.items():
            events = make_events(options.count)
            result = await run(reactor, options.amqp_url, events, options.batch, options.single)
            results[name].append(result)
            print(f"round {round_}: {name:<36} {result.rate:>10.0f} events/s", file=sys.stderr, flush=True)

    print(
        f"\n{options.count} events per run ({len(make_events(1)[0].body_bytes())}-byte bodies), "
        f"{options.rounds} rounds, medians; broker {parse_amqp_url(options.amqp_url).host}:"
        f"{parse_amqp_url(options.amqp_url).port}"
    )
    print(
        f"{'transport':<38} {'events/s':>10} {'loaded p50':>11} {'loaded p99':>11} "
        f"{'single p50':>11} {'single p99':>11}"
    )
    medians = {}
    for name, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        medians[name] = rate
        loaded = [x for r in runs for x in r.loaded]
        single = [x for r in runs for x in r.single]
        print(
            f"{name:<38} {rate:>10.0f} {ms(loaded, 0.5):>9.2f}ms {ms(loaded, 0.99):>9.2f}ms "
            f"{ms(single, 0.5):>9.2f}ms {ms(single, 0.99):>9.2f}ms"
        )
    amqp, raw, local = (medians[name] for name in transports)
    print(f"\nratio AmqpBus / raw txamqp: {amqp / raw:.2f}   AmqpBus / InProcessBus: {amqp / local:.3f}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=os.environ.get("IMAGEFACTORY_AMQP_URL", DEFAULT_URL))
    parser.add_argument("--count", type=int, default=20000, help="events per run (default 20000)")
    parser.add_argument("--batch", type=int, default=200, help="publishes in flight per batch (default 200)")
    parser.add_argument("--single", type=int, default=500, help="one-at-a-time events per run (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per transport (default 3)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    react(lambda reactor: main(reactor, args))
