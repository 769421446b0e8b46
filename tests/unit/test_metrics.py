"""Metrics: builders by status, durations, queue and outbox lengths, HTTP requests."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import ensureDeferred

from imgfac_twisted.metrics import route_of
from imgfac_twisted.service import register_gauges
from imgfac_twisted.testing import SPEC_TEMPLATE, result_of


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


@pytest.fixture
def stack_settings():
    """One build at a time, so a second build waits in the queue (the ``stack`` fixture is tests/conftest.py's)."""
    return {"max_concurrent_builds": 1}


@pytest.fixture
def gauges(stack):
    """The service's gauges registered on the stack's metrics, as ``make_service`` registers them."""
    register_gauges(stack.metrics, stack.index, stack.dispatcher, stack.store)


def scrape(stack):
    return samples(result_of(stack.metrics.render()).decode("utf-8"))


def test_gauges_and_durations_follow_the_builds(stack, gauges):
    """Builders by status, the queue and the durations move as builds run and end."""
    for _ in range(2):
        result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    page = scrape(stack)
    assert page["imagefactory_builders", frozenset({("operation", "build"), ("status", "BUILDING")})] == 1
    assert page["imagefactory_builders", frozenset({("operation", "build"), ("status", "PENDING")})] == 1
    assert page["imagefactory_dispatcher_queue_length", frozenset({("operation", "build")})] == 1
    assert page["imagefactory_event_outbox_length", frozenset()] == 0
    stack.run_for(2.2)
    page = scrape(stack)
    assert page["imagefactory_builders", frozenset({("operation", "build"), ("status", "COMPLETED")})] == 2
    labels = frozenset({("target", "mock"), ("outcome", "completed")})
    assert page["imagefactory_build_duration_seconds_count", labels] == 2
    assert 1.0 <= page["imagefactory_build_duration_seconds_sum", labels] / 2 <= 1.2


@pytest.mark.parametrize(
    "path, label",
    [
        (
            "/imagefactory/images/3f2a/builds/9b1c/target_images/77aa/raw_image",
            "/imagefactory/images/{id}/builds/{id}/target_images/{id}/raw_image",
        ),
        ("/conductor/api/provider_images/5ee6", "/conductor/api/provider_images/{id}"),
        ("/conductor/api/provider_accounts/ec2-acc", "/conductor/api/provider_accounts/{id}"),
        ("/conductor/api/images.xml", "/conductor/api/images"),
        ("/conductor/api/target_images/77aa.xml", "/conductor/api/target_images/{id}"),
        ("/conductor/api/environments/default/images.xml", "/conductor/api/environments/{id}/images"),
        ("/" + "x/" * 11, "other"),
    ],
)
def test_route_labels_keep_the_api_words_and_hide_ids(path, label):
    assert route_of([segment.encode() for segment in path.strip("/").split("/")]) == label
