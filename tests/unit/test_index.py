"""The builder index: every unfinished builder, an LRU of finished ones, the newest sequence, reads through."""

import dataclasses

from twisted.internet.defer import ensureDeferred

from imgfac_twisted.jobs.index import BuilderIndex
from imgfac_twisted.model import Builder, Operation, Status
from imgfac_twisted.store.sqlite import SQLiteStore
from imgfac_twisted.testing import InlineDoor, result_of
from support.many_builders import fill_sqlite


def a_builder(number, status=Status.COMPLETED, sequence=3, operation=Operation.BUILD, target_image_id=None):
    return Builder(
        id=f"b{number}",
        operation=operation,
        status=status,
        completed=0,
        image_id="i",
        build_id="b",
        target="mock",
        target_image_id=target_image_id,
        created=float(number),
        sequence=sequence,
    )


def filled_store(tmp_path, count, unfinished=0):
    """A SQLite store (inline door) holding ``count`` builders, and their ids oldest first."""
    ids = fill_sqlite(str(tmp_path), count, unfinished)
    store = SQLiteStore(str(tmp_path / "imagefactory.sqlite"), InlineDoor())
    store.thd_open()
    return store, ids


def test_finished_builders_beyond_the_capacity_are_forgotten_least_recently_used_first(tmp_path):
    """Finished builders are kept up to the bound, the least recently read or written going first."""
    index = BuilderIndex(None, finished_capacity=3)
    for number in range(3):
        index.put(a_builder(number))
    assert index.get("b0") is not None  # b0 now the most recently used: b1 goes next
    index.put(a_builder(3))
    assert [index.get(f"b{n}") is not None for n in range(4)] == [True, False, True, True]
    assert len(index) == 3


def test_unfinished_builders_stay_whatever_the_capacity(tmp_path):
    """Unfinished builders are never forgotten; once finished they join the LRU."""
    index = BuilderIndex(None, finished_capacity=1)
    for number in range(5):
        index.put(a_builder(number, Status.BUILDING, sequence=2))
    index.put(a_builder(10))
    index.put(a_builder(11))
    assert all(index.get(f"b{n}") is not None for n in range(5))
    assert index.get("b10") is None and index.get("b11") is not None
    assert [b.id for b in index.unfinished()] == [f"b{n}" for n in range(5)]
    index.put(a_builder(0, Status.COMPLETED, sequence=3))
    assert [b.id for b in index.unfinished()] == [f"b{n}" for n in range(1, 5)]
    assert index.get("b11") is None and index.get("b0").status == Status.COMPLETED


def test_an_older_state_does_not_replace_a_newer_one():
    """``put`` of a lower ``sequence`` than held (a late event from another node) is ignored; equal or higher wins."""
    index = BuilderIndex(None)
    index.put(a_builder(1, Status.COMPLETED, sequence=5))
    index.put(a_builder(1, Status.BUILDING, sequence=4))
    assert index.get("b1").status == Status.COMPLETED and index.unfinished() == []
    index.put(dataclasses.replace(a_builder(1, sequence=6), status_detail="later"))
    assert index.get("b1").status_detail == "later"


def test_removed_builders_are_gone_and_stay_gone():
    """A late event (or a store read begun before the deletion) does not bring a removed builder back."""
    index = BuilderIndex(None)
    index.put(a_builder(1, Status.PENDING, sequence=1))
    index.put(a_builder(2))
    index.remove(["b1", "b2", "nope"])
    assert index.get("b1") is None and index.get("b2") is None and len(index) == 0
    index.put(a_builder(1, Status.BUILDING, sequence=2))
    assert index.get("b1") is None and index.unfinished() == []


def test_a_miss_reads_the_store_and_keeps_what_it_found(tmp_path):
    """``get`` answers only what is held; ``lookup`` reads a miss from the store and holds it; unknown is None."""
    store, ids = filled_store(tmp_path, 5)
    index = BuilderIndex(store)
    assert index.get(ids[2]) is None
    found = result_of(ensureDeferred(index.lookup(ids[2])))
    assert found.id == ids[2] and found.status == Status.COMPLETED
    assert index.get(ids[2]) is found
    assert result_of(ensureDeferred(index.lookup("no-such-builder"))) is None
    store.thd_close()


def test_pages_come_from_the_store_with_the_newest_state_held(tmp_path):
    """A page lists the store's builders oldest first, each as held when the index holds a newer state."""
    store, ids = filled_store(tmp_path, 25, unfinished=2)
    index = BuilderIndex(store, store.thd_list_unfinished_builders())
    assert [b.id for b in index.unfinished()] == ids[-2:]
    newer = index.get(ids[-1]).moved(Status.BUILDING, now=2e9)
    index.put(newer)
    page = result_of(ensureDeferred(index.page(10, ids[14])))
    assert [b.id for b in page] == ids[15:25] and page[-1] is newer
    assert [b.id for b in result_of(ensureDeferred(index.scan(lambda b: b.status == Status.FAILED)))] == ids[9:23:10]
    store.thd_close()


def test_counts_list_every_pair(tmp_path):
    """``count`` comes from the store, every (operation, status) pair listed, 0 when none."""
    store, _ = filled_store(tmp_path, 20, unfinished=1)
    counts = result_of(BuilderIndex(store).count())
    assert counts["build", "COMPLETED"] == 18 and counts["build", "FAILED"] == 1 and counts["build", "PENDING"] == 1
    assert counts["push", "BUILDING"] == 0 and len(counts) == len(Operation) * len(Status)
    store.thd_close()


def test_the_pushes_version_moves_when_a_provider_image_may_have_come_or_gone():
    index = BuilderIndex(None)
    before = index.pushes_version("t1")
    index.put(a_builder(1, Status.PENDING, sequence=1, operation=Operation.PUSH, target_image_id="t2"))
    assert index.pushes_version("t1") == before
    index.put(a_builder(2, Status.PENDING, sequence=1, operation=Operation.PUSH, target_image_id="t1"))
    after_push = index.pushes_version("t1")
    assert after_push != before
    index.put(a_builder(2, Status.BUILDING, sequence=2, operation=Operation.PUSH, target_image_id="t1"))
    assert index.pushes_version("t1") == after_push
    index.remove(["b1"])
    assert index.pushes_version("t1") != after_push


def test_a_scan_after_a_builder_reads_only_those_made_later_and_from_the_start_when_it_is_gone(tmp_path):
    store, ids = filled_store(tmp_path, 30)
    index = BuilderIndex(store)
    assert [b.id for b in result_of(ensureDeferred(index.scan(lambda b: True, after=ids[24])))] == ids[25:]
    missing = ensureDeferred(index.scan(lambda b: b.status == Status.FAILED, after="gone"))
    assert [b.id for b in result_of(missing)] == [ids[9], ids[19], ids[29]]
    store.thd_close()
