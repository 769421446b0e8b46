"""The store contract: every test here (the IStore methods) and in test_store_contract_work.py (IWorkStore)
runs against SQLiteStore and PostgresStore (a fresh database on 127.0.0.1:5432), so that the embedded
store and the shared one cannot drift apart.

What only several nodes need (the outbox claimed by two relays, the logs in the store) is in
test_store_postgres.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from imgfac_twisted.errors import InvalidTransition, UnknownObject
from imgfac_twisted.events import event_for_change, event_for_deletion
from imgfac_twisted.model import (
    Build,
    Builder,
    BuilderChange,
    Image,
    Operation,
    ProviderImage,
    Stage,
    StageName,
    Status,
    TargetImage,
)
from imgfac_twisted.store import IStore, IWorkStore
from imgfac_twisted.testing import result_of

Store = Any
MakeStore = Callable[[], Store]


@pytest.fixture
def store(store_factory: MakeStore) -> Store:
    """One open store (``store_factory``: tests/conftest.py, once per kind of store)."""
    return store_factory()


def an_event(builder: Builder, old: Builder | None = None) -> Any:
    return event_for_change(BuilderChange(old, builder), 1.0)


def record_one_build(store: Store, target: str = "mock", suffix: str = "") -> tuple[Image, Build, TargetImage, Builder]:
    template = result_of(store.add_template("<template/>", 1.0))
    image = Image("img" + suffix, template.id, "name", "desc", "Fedora", "14", "x86_64", 1.0)
    build = Build("bld" + suffix, image.id, template.id, 1.0)
    target_image = TargetImage("ti" + suffix, build.id, image.id, target, 1.0)
    builder = Builder(
        target_image.id, Operation.BUILD, Status.NEW, 0, image.id, build.id, target, created=1.0, updated=1.0
    )
    result_of(store.record_build(image, build, [target_image], [builder], True, [an_event(builder)]))
    return image, build, target_image, builder


def record_one_push(
    store: Store, image: Image, build: Build, target_image: TargetImage, provider_image_id: str = "pi"
) -> tuple[ProviderImage, Builder]:
    provider_image = ProviderImage(provider_image_id, target_image.id, build.id, image.id, "mock", "user", 2.0)
    builder = Builder(
        provider_image_id,
        Operation.PUSH,
        Status.NEW,
        0,
        image.id,
        build.id,
        "mock",
        provider="mock",
        target_image_id=target_image.id,
        provider_account_identifier="user",
        created=2.0,
        updated=2.0,
    )
    result_of(store.record_push(provider_image, builder, [an_event(builder)]))
    return provider_image, builder


def move(store: Store, builder: Builder, status: Status, log_lines: tuple[str, ...] = (), **changes: Any) -> Builder:
    moved = builder.moved(status, now=builder.updated + 1, **changes)
    result_of(store.save_builder(moved, builder.status, an_event(moved, builder), log_lines))
    return moved


# -- IStore ------------------------------------------------------------------------------------


def test_provides_the_interfaces(store: Store) -> None:
    """Both stores declare IStore and IWorkStore."""
    assert IStore.providedBy(store) and IWorkStore.providedBy(store)


def test_templates_are_kept_once_per_distinct_text(store: Store) -> None:
    """The same template text gives back the same stored template; another text a new one."""
    first = result_of(store.add_template("<template>a</template>", 1.0))
    again = result_of(store.add_template("<template>a</template>", 2.0))
    other = result_of(store.add_template("<template>b</template>", 3.0))
    assert first == again and first.id != other.id
    assert result_of(store.get_template(first.id)).xml == "<template>a</template>"


def test_recorded_build_reads_back(store: Store) -> None:
    """An image, its build, target image and builder read back equal to what was recorded."""
    image, build, target_image, builder = record_one_build(store)
    assert result_of(store.get_image(image.id)) == image
    assert result_of(store.get_build(build.id)) == build
    assert result_of(store.get_target_image(target_image.id)) == target_image
    assert result_of(store.get_builder(builder.id)) == builder
    assert result_of(store.list_builders()) == [builder] == store.thd_list_builders()


def test_more_target_images_and_an_import_are_recorded(store: Store) -> None:
    """add_to_build adds target images and builders to a build; record_import records all five objects."""
    image, build, _, builder = record_one_build(store)
    more = TargetImage("ti2", build.id, image.id, "ec2", 3.0)
    second = Builder("ti2", Operation.BUILD, Status.NEW, 0, image.id, build.id, "ec2", created=3.0, updated=3.0)
    result_of(store.add_to_build([more], [second], [an_event(second)]))
    assert [b.id for b in result_of(store.list_builders())] == [builder.id, "ti2"]
    template = result_of(store.add_template("<imported/>", 4.0))
    imported = Image("img-i", template.id, "imported", None, "Fedora", "14", "x86_64", 4.0)
    ibuild = Build("bld-i", imported.id, template.id, 4.0)
    itarget = TargetImage("ti-i", ibuild.id, imported.id, "ec2", 4.0)
    iprovider = ProviderImage("pi-i", itarget.id, ibuild.id, imported.id, "ec2", "acct", 4.0)
    done = Builder("pi-i", Operation.PUSH, Status.COMPLETED, 100, imported.id, ibuild.id, "ec2", created=4.0)
    result_of(store.record_import(imported, ibuild, itarget, iprovider, [done], [an_event(done)]))
    assert result_of(store.get_provider_image("pi-i")) == iprovider
    assert result_of(store.get_builder("pi-i")) == done
    assert result_of(store.count_pending_events()) == 3


def test_unknown_ids_fail_with_unknown_object(store: Store) -> None:
    """Every getter fails with UnknownObject naming the id."""
    for getter in (
        store.get_image,
        store.get_build,
        store.get_target_image,
        store.get_provider_image,
        store.get_builder,
        store.get_template,
    ):
        with pytest.raises(UnknownObject, match="nope"):
            result_of(getter("nope"))


def test_save_builder_is_guarded_by_the_expected_status(store: Store) -> None:
    """A write expecting a status the builder no longer has is refused and changes nothing, events included."""
    *_, builder = record_one_build(store)
    pending = move(store, builder, Status.PENDING)
    building = pending.moved(Status.BUILDING, 10, now=3.0)
    with pytest.raises(InvalidTransition, match="no longer NEW"):
        result_of(store.save_builder(building, Status.NEW, an_event(building, pending), ["refused line"]))
    assert result_of(store.get_builder(builder.id)) == pending
    assert [e.body["new_status"] for _, e in result_of(store.pending_events(10))] == ["NEW", "PENDING"]
    if store.keeps_logs:
        assert result_of(store.read_log(builder.id, 0, 1000)) == b"", "a refused write adds no log line"


def test_save_builder_never_writes_the_worker(store: Store) -> None:
    """Only a claim sets ``worker``: a save of a builder whose ``worker`` is None keeps the stored one."""
    *_, builder = record_one_build(store)
    claimed = result_of(store.claim_builders([builder.id], "w1", 10.0, 0.0, 2))[builder.id]
    assert claimed.builder.worker == "w1"
    moved = move(store, builder, Status.PENDING)
    assert moved.worker is None
    assert result_of(store.get_builder(builder.id)).worker == "w1"


def test_unfinished_builders(store: Store) -> None:
    """Only builders not COMPLETED or FAILED are listed as unfinished (blocking and not)."""
    *_, builder = record_one_build(store)
    assert [b.id for b in result_of(store.list_unfinished_builders())] == [builder.id]
    assert store.thd_list_unfinished_builders() == result_of(store.list_unfinished_builders())
    move(store, builder, Status.FAILED, status_detail="why")
    assert result_of(store.list_unfinished_builders()) == [] == store.thd_list_unfinished_builders()


def test_failed_transaction_records_nothing(store: Store) -> None:
    """A build whose records cannot all be written leaves none of them behind."""
    image, build, target_image, builder = record_one_build(store)
    second = Build("bld2", image.id, image.template_id, 2.0)
    duplicate = Builder(builder.id, Operation.BUILD, Status.NEW, 0, image.id, second.id, "mock")
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        result_of(store.record_build(image, second, [], [duplicate], False, [an_event(duplicate)]))
    with pytest.raises(UnknownObject):
        result_of(store.get_build("bld2"))
    assert result_of(store.count_pending_events()) == 1


def test_outbox_keeps_events_in_order_until_deleted(store: Store) -> None:
    """Events come out oldest first, whole, and stay until deleted."""
    *_, builder = record_one_build(store)
    move(store, builder, Status.PENDING)
    pending = result_of(store.pending_events(10))
    assert [e.body["sequence"] for _, e in pending] == [1, 2]
    assert pending[1][1].body["old_status"] == "NEW" and pending[1][1].routing_key == "target_image.build.pending"
    assert result_of(store.count_pending_events()) == 2
    result_of(store.delete_events([pending[0][0]]))
    assert [e.body["sequence"] for _, e in result_of(store.pending_events(10))] == [2]
    assert [e.body["sequence"] for _, e in result_of(store.pending_events(1))] == [2]
    result_of(store.delete_events([]))
    assert result_of(store.count_pending_events()) == 1


def test_images_and_builds_are_listed_oldest_first(store: Store) -> None:
    """list_images and list_builds give every recorded image and build, oldest first."""
    image, build, _, _ = record_one_build(store)
    later = Build("bld2", image.id, image.template_id, 5.0)
    result_of(store.record_build(image, later, [], [], False, []))
    assert result_of(store.list_images()) == [image]
    assert result_of(store.list_builds()) == [build, later]


def record_builders(store: Store, count: int, created: float = 1.0) -> list[Builder]:
    """``count`` builders of one build, all made in the same instant (only the insertion order tells them apart)."""
    image, build, _, first = record_one_build(store)
    rest = [
        Builder(f"b{index:03d}", Operation.BUILD, Status.NEW, 0, image.id, build.id, "mock", created=created)
        for index in range(count - 1, 0, -1)
    ]
    result_of(store.add_to_build([], rest, []))
    return [first, *rest]


def test_pages_follow_the_full_list_from_a_marker(store: Store) -> None:
    """Pages of ``limit`` builders after each page's last one give the full list, in its order, once."""
    builders = record_builders(store, 7)
    assert result_of(store.list_builders()) == builders
    pages, marker = [], None
    while True:
        page = result_of(store.list_builders_page(3, marker))
        if not page:
            break
        pages.append(page)
        marker = page[-1].id
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [b for page in pages for b in page] == builders
    assert store.thd_list_builders_page(100, builders[-1].id) == []
    assert result_of(store.list_builders_page(0, None)) == [] == result_of(store.list_builders_page(-1, None))


def test_a_page_after_an_unknown_marker_fails_with_unknown_object(store: Store) -> None:
    """A marker that names no builder is an UnknownObject (the caller answers 400 or 404)."""
    record_builders(store, 2)
    with pytest.raises(UnknownObject, match="no-such-builder"):
        result_of(store.list_builders_page(10, "no-such-builder"))


def test_builders_are_counted_by_operation_and_status(store: Store) -> None:
    """count_builders gives one count per (operation, status) present."""
    image, build, target_image, builder = record_one_build(store)
    record_one_push(store, image, build, target_image)
    move(store, builder, Status.PENDING)
    assert result_of(store.count_builders()) == {("build", "PENDING"): 1, ("push", "NEW"): 1}


def test_deleting_a_provider_image_removes_it_and_its_builder_only(store: Store) -> None:
    """The provider image and its push builder go; the target image stays."""
    image, build, target_image, builder = record_one_build(store)
    record_one_push(store, image, build, target_image)
    result_of(store.delete_provider_image("pi"))
    for getter in (store.get_provider_image, store.get_builder):
        with pytest.raises(UnknownObject):
            result_of(getter("pi"))
    assert result_of(store.get_target_image(target_image.id)) == target_image
    assert result_of(store.list_builders()) == [builder]


def test_deleting_a_target_image_removes_its_provider_images(store: Store) -> None:
    """A target image goes with its provider images and every builder of either."""
    image, build, target_image, _ = record_one_build(store)
    record_one_push(store, image, build, target_image)
    result_of(store.delete_target_image(target_image.id))
    for getter, object_id in (
        (store.get_target_image, target_image.id),
        (store.get_provider_image, "pi"),
        (store.get_builder, "pi"),
        (store.get_builder, target_image.id),
    ):
        with pytest.raises(UnknownObject):
            result_of(getter(object_id))
    assert result_of(store.get_build(build.id)) == build


@pytest.mark.parametrize("level", ["build", "image"])
def test_deleting_a_build_or_an_image_removes_everything_under_it(store: Store, level: str) -> None:
    """A build (or image) goes with its target and provider images, builders, manifest (and logs); templates stay."""
    image, build, target_image, builder = record_one_build(store)
    record_one_push(store, image, build, target_image)
    result_of(store.save_manifest(build.id, [("bash", "5.2", "amd64")]))
    if store.keeps_logs:
        result_of(store.append_log(builder.id, ["a line"]))
        result_of(store.append_log("pi", ["another"]))
    if level == "build":
        result_of(store.delete_build(build.id))
        assert result_of(store.get_image(image.id)) == image
    else:
        result_of(store.delete_image(image.id))
        with pytest.raises(UnknownObject):
            result_of(store.get_image(image.id))
    assert result_of(store.list_builds()) == [] and result_of(store.list_builders()) == []
    assert result_of(store.get_manifest(build.id)) is None
    with pytest.raises(UnknownObject):
        result_of(store.get_provider_image("pi"))
    assert result_of(store.get_template(image.template_id)).id == image.template_id
    if store.keeps_logs:
        assert store.thd_count_logs([builder.id, "pi"]) == 0


def test_a_deletion_puts_its_events_in_the_outbox_in_the_same_transaction(store: Store) -> None:
    """The DELETED events given with a deletion are written to the outbox by the same transaction."""
    _, _, target_image, builder = record_one_build(store)
    before = result_of(store.count_pending_events())
    result_of(store.delete_target_image(target_image.id, [event_for_deletion(builder, 10.0)]))
    pending = result_of(store.pending_events(100))
    assert result_of(store.count_pending_events()) == before + 1
    assert pending[-1][1].body["event"] == "DELETED" and pending[-1][1].body["id"] == builder.id


def test_spent_nonces_are_kept_until_they_expire(store_factory: MakeStore) -> None:
    """spend_nonce records (key, nonce, expiry); every instance sees the live ones; expired ones are dropped."""
    store, other = store_factory(), store_factory()
    result_of(store.spend_nonce("client1", "n-1", 100.0, 50.0))
    result_of(store.spend_nonce("weird key/é", "n-1", 200.0, 60.0))
    assert sorted(other.thd_spent_nonces(99.0)) == [("client1", "n-1", 100.0), ("weird key/é", "n-1", 200.0)]
    assert other.thd_spent_nonces(150.0) == [("weird key/é", "n-1", 200.0)]
    result_of(store.spend_nonce("client1", "n-2", 300.0, 150.0))
    rows = store.thd_spent_nonces(0.0)
    assert ("client1", "n-1", 100.0) not in rows and len(rows) == 2, "expired nonces are deleted as new ones come"


def test_a_nonce_is_claimed_once_whichever_instance_claims_it(store_factory: MakeStore) -> None:
    """claim_nonce fires True on a nonce's first use only, on any instance; once expired it may be used again."""
    store, other = store_factory(), store_factory()
    assert result_of(store.claim_nonce("client1", "n-1", 100.0, 50.0)) is True
    assert result_of(other.claim_nonce("client1", "n-1", 100.0, 51.0)) is False, "a replay on another node"
    assert result_of(other.claim_nonce("weird key/é", "n-1", 100.0, 51.0)) is True, "nonces are per client"
    assert result_of(other.claim_nonce("client1", "n-1", 300.0, 150.0)) is True, "expired, then forgotten"


def test_stages_read_back(store: Store) -> None:
    """A builder's stages (names, starts, ends; the last one running) are stored and read back as they were."""
    *_, builder = record_one_build(store)
    stages = (Stage(StageName.WAITING, 1.0, 2.5), Stage(StageName.INSTALLING, 2.5, None))
    move(store, builder, Status.PENDING, stages=stages)
    assert result_of(store.get_builder(builder.id)).stages == stages
    assert result_of(store.get_builder(builder.id)).stage == StageName.INSTALLING


def test_manifests_are_kept_per_build_and_replaced(store: Store) -> None:
    """A build's package list reads back in order; an unknown build has none; a second save replaces it."""
    _, build, _, _ = record_one_build(store)
    packages = [("openssh-server", "1:9.2p1-2+deb12u3", "amd64"), ("tzdata", "2024a-0+deb12u1", "all")]
    assert result_of(store.get_manifest(build.id)) is None
    result_of(store.save_manifest(build.id, packages))
    assert result_of(store.get_manifest(build.id)) == packages
    result_of(store.save_manifest(build.id, packages[:1]))
    assert result_of(store.get_manifest(build.id)) == packages[:1]
