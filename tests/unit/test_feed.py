"""The index feed of a node of several: other nodes' events, and the catch-up after the broker was away.

On the daemon's core (testing.Stack: SQLite, inline doors); the changes "of another node" are written
to the store behind the index's back, as another node's would be.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from imgfac_twisted.events import event_for_change
from imgfac_twisted.jobs.feed import IndexFeed
from imgfac_twisted.model import Builder, BuilderChange, Status
from imgfac_twisted.testing import SPEC_TEMPLATE, Stack, result_of


def build(stack: Stack) -> str:
    started = result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    return started.target_images[0].id


def moved_elsewhere(stack: Stack, builder_id: str, status: Status) -> Builder:
    """Move a builder in the store only, as another node would: this node's index is not told."""
    old = result_of(stack.store.get_builder(builder_id))
    new = old.moved(status, now=stack.clock.seconds())
    result_of(
        stack.store.save_builder(new, old.status, event_for_change(BuilderChange(old, new), stack.clock.seconds()))
    )
    return new


def feed(stack: Stack, ended: list[Builder]) -> IndexFeed:
    bus: Any = None  # catch_up and seen use only the store and the index
    return IndexFeed(bus, stack.store, stack.index, ended.append)


def test_an_event_of_another_node_brings_the_index_up_to_the_store(stack: Stack) -> None:
    builder_id = build(stack)
    moved = moved_elsewhere(stack, builder_id, Status.FAILED)
    ended: list[Builder] = []
    feed(stack, ended).seen(event_for_change(BuilderChange(None, moved), stack.clock.seconds()))
    assert stack.index.get(builder_id).status == Status.FAILED
    assert [builder.id for builder in ended] == [builder_id]


def test_an_event_already_seen_reads_nothing(stack: Stack) -> None:
    builder_id = build(stack)
    held = stack.index.get(builder_id)
    ended: list[Builder] = []
    feed(stack, ended).seen(event_for_change(BuilderChange(None, held), stack.clock.seconds()))
    assert ended == []


def test_after_a_gap_the_catch_up_finds_what_the_events_did_not_say(stack: Stack) -> None:
    """Events missed while the broker was away: a held builder that ended, and one made meanwhile."""
    ended_here = build(stack)
    moved_elsewhere(stack, ended_here, Status.FAILED)
    forgotten = build(stack)
    stack.index.remove([forgotten])  # as if another node made it: this index never saw it
    stack.index._removed.clear()
    assert stack.index.get(ended_here).status != Status.FAILED, "the index has not been told"
    ended: list[Builder] = []
    result_of(ensureDeferred(feed(stack, ended).catch_up()))
    assert stack.index.get(ended_here).status == Status.FAILED
    assert [builder.id for builder in ended if builder.status.is_final] == [ended_here]
    assert forgotten in {builder.id for builder in stack.index.unfinished()}
