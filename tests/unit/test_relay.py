"""The outbox relay: every event reaches the bus, in order, even when the bus fails for a while."""

import pytest
from twisted.internet.defer import ensureDeferred, fail, succeed
from zope.interface import implementer

from imgfac_twisted.events import IEventBus
from imgfac_twisted.jobs.relay import OutboxRelay
from imgfac_twisted.model import Status
from imgfac_twisted.testing import SPEC_TEMPLATE, Stack, result_of


@implementer(IEventBus)
class FlakyBus:
    """A bus that refuses events while ``down`` and records what it accepted."""

    def __init__(self):
        self.down = False
        self.accepted = []

    def publish(self, event):
        if self.down:
            return fail(ConnectionError("broker away"))
        self.accepted.append(event)
        return succeed(None)

    def subscribe(self, pattern, callback):
        raise NotImplementedError


@pytest.fixture
def flaky(stack):
    """The ``stack`` (tests/conftest.py) with its relay delivering to a FlakyBus, retrying after 0.5 s up to 2 s."""
    stack.relay.stopService()
    stack.bus = FlakyBus()
    stack.relay = OutboxRelay(stack.store, stack.bus, stack.clock, first_retry=0.5, max_retry=2.0)
    stack.updater._relay = stack.relay
    stack.relay.startService()
    return stack


def test_events_wait_while_the_bus_is_down_and_all_arrive_in_order_after(stack, flaky):
    """Builds go on while the bus is down; afterwards every event arrives, in order, none twice per builder."""
    stack.bus.down = True
    started = result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    builder_id = started.target_images[0].id
    stack.run_for(1.5)
    assert stack.index.get(builder_id).status == Status.COMPLETED
    assert stack.bus.accepted == []
    waiting = result_of(stack.store.count_pending_events())
    assert waiting >= 12
    stack.bus.down = False
    stack.run_for(2.5)  # the longest backoff is 2 s
    sequences = [e.body["sequence"] for e in stack.bus.accepted if e.body["id"] == builder_id]
    assert sequences == list(range(1, waiting + 1))
    assert result_of(stack.store.count_pending_events()) == 0


def test_backoff_is_capped(stack, flaky):
    """Retries double from the first delay up to the cap, then stay there."""
    stack.bus.down = True
    result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    delays = []
    for _ in range(5):
        call = stack.relay._retry_call
        delays.append(call.getTime() - stack.clock.seconds())
        stack.clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_restart_delivers_what_the_outbox_holds(tmp_path):
    """Events left in the outbox by a daemon that died are delivered by the next one."""
    first = Stack(str(tmp_path))
    first.relay.stopService()  # as if the daemon died before delivering
    result_of(ensureDeferred(first.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    first.relay._woken = False
    first.close()
    second = Stack(str(tmp_path))
    assert [e.body["new_status"] for e in second.events][:3] == ["NEW", "PENDING", "BUILDING"]
    second.close()


def test_a_relay_on_a_shared_store_looks_at_the_outbox_without_being_woken(stack):
    """Events another node left in a shared outbox are delivered at the next look (poll_every), unwoken."""
    stack.relay.stopService()
    bus = FlakyBus()
    polling = OutboxRelay(stack.store, bus, stack.clock, poll_every=2.0)
    polling.startService()
    # Another node's change: written to the store, this relay not woken.
    started = result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    stack.run_for(1.5)
    assert bus.accepted == []
    stack.run_for(1.0)
    assert {event.body["id"] for event in bus.accepted} == {started.target_images[0].id}
    result_of(polling.stopService())
