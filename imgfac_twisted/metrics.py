"""What the daemon counts, for Prometheus: builders, durations, queues, HTTP requests.

Gauges are read at scrape time from the pieces that know (the builder
index, the dispatcher's slots, the event outbox), so they cannot drift;
counters and histograms are fed as things happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, gatherResults

from .model import Builder, Operation, Status

#: What a slow gauge reads: a count or a measure.
Number = TypeVar("Number", int, float)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
ACTIVE = (Status.BUILDING, Status.PUSHING)

#: Path segments that are names, not ids; any other segment is shown as {id}.
ROUTE_WORDS = frozenset(
    {
        b"imagefactory",
        b"images",
        b"builds",
        b"target_images",
        b"provider_images",
        b"builders",
        b"status",
        b"log",
        b"static",
        b"openapi.json",
        b"metrics",
        b"raw_image",
        # the Conductor API's words
        b"conductor",
        b"api",
        b"provider_accounts",
        b"providers",
        b"provider_types",
        b"environments",
    }
)
MAX_ROUTE_SEGMENTS = 10

GaugeReader = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class _Gauges(Collector):
    """Gauges whose values are read when scraped."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, list[str], GaugeReader]] = []

    def add(self, name: str, documentation: str, labels: list[str], read: GaugeReader) -> None:
        self._gauges.append((name, documentation, labels, read))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, documentation, labels, read in self._gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for label_values, value in read():
                family.add_metric(list(label_values), value)
            yield family


def route_of(segments: list[bytes]) -> str:
    """A request path as a route label: names kept, ids as ``{id}`` (bounded cardinality)."""
    if len(segments) > MAX_ROUTE_SEGMENTS:
        return "other"
    if segments and segments[-1].endswith(b".xml"):
        # ActiveResource's format suffix (aeolus-cli): the same route as without it.
        segments = [*segments[:-1], segments[-1][:-4]]
    return (b"/" + b"/".join([segment if segment in ROUTE_WORDS else b"{id}" for segment in segments])).decode("ascii")


class Metrics:
    """The daemon's metrics registry and the hooks that feed it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self._build_seconds = Histogram(
            "imagefactory_build_duration_seconds",
            "Time from BUILDING to COMPLETED or FAILED.",
            ["target", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._push_seconds = Histogram(
            "imagefactory_push_duration_seconds",
            "Time from PUSHING to COMPLETED or FAILED.",
            ["provider", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._stage_seconds = Histogram(
            "imagefactory_stage_duration_seconds",
            "Time each stage of a builder's work took.",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "imagefactory_http_requests",
            "HTTP requests answered, by route, method and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self._started: dict[str, float] = {}
        # labels() takes a lock and builds a key each time: counting a request
        # is on the hot path, so each (route, method, code) child is kept.
        self._request_counters: dict[tuple[str, bytes, int], Any] = {}
        self._refreshers: list[Callable[[], Deferred[None]]] = []

    def add_gauge(self, name: str, documentation: str, labels: list[str], read: GaugeReader) -> None:
        """Publish a gauge whose samples ``read`` returns at each scrape."""
        self._gauges.add(name, documentation, labels, read)

    def add_slow_gauge(self, name: str, documentation: str, fetch: Callable[[], Deferred[Number]]) -> None:
        """Publish a gauge whose value needs blocking work (e.g. a store count): fetched before each scrape."""
        gauge = Gauge(name, documentation, registry=self.registry)
        self._refreshers.append(lambda: fetch().addCallback(gauge.set))

    def builder_moved(self, old: Builder, new: Builder) -> None:
        """Time work from its start (BUILDING or PUSHING) to its end, and each stage that ended."""
        self._stages_ended(old, new)
        if new.status in ACTIVE and old.status not in ACTIVE:
            self._started[new.id] = new.updated
        elif new.status.is_final and new.id in self._started:
            seconds = new.updated - self._started.pop(new.id)
            outcome = new.status.value.lower()
            if new.operation == Operation.PUSH:
                self._push_seconds.labels(new.provider or "", outcome).observe(seconds)
            else:
                self._build_seconds.labels(new.target, outcome).observe(seconds)

    def _stages_ended(self, old: Builder, new: Builder) -> None:
        # Stages only grow at the end, and only the last one can end: compare it.
        for index in range(max(0, len(old.stages) - 1), len(new.stages)):
            stage = new.stages[index]
            was_running = index >= len(old.stages) or old.stages[index].ended_at is None
            if stage.ended_at is not None and was_running:
                self._stage_seconds.labels(stage.name.value).observe(stage.ended_at - stage.started_at)

    def http_request(self, segments: list[bytes], method: bytes, code: int) -> None:
        """Count one answered request."""
        key = (route_of(segments), method, code)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._requests.labels(key[0], method.decode("ascii", "replace"), str(code))
            self._request_counters[key] = counter
        counter.inc()

    def render(self) -> Deferred[bytes]:
        """Fire with the metrics in Prometheus' text format."""
        refreshing = gatherResults([refresh() for refresh in self._refreshers], consumeErrors=True)
        return refreshing.addCallback(lambda _: generate_latest(self.registry))
