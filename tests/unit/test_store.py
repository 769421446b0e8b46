"""The store contract: every IStore implementation must pass these tests.

Only the SQLite store exists so far; the PostgreSQL store joins the
``store`` fixture's parameters when it lands.
"""

import sqlite3

import pytest

from imgfac_twisted.errors import InvalidTransition, UnknownObject
from imgfac_twisted.events import event_for_change, event_for_deletion
from imgfac_twisted.model import Build, Builder, BuilderChange, Image, Operation, ProviderImage, Status, TargetImage
from imgfac_twisted.store import IStore
from imgfac_twisted.store.sqlite import SQLiteStore
from imgfac_twisted.testing import InlineDoor, result_of


@pytest.fixture(params=["sqlite"])
def store(request, tmp_path):
    instance = SQLiteStore(str(tmp_path / "store.sqlite"), InlineDoor())
    instance.thd_open()
    yield instance
    instance.thd_close()


def record_one_build(store, target="mock"):
    template = result_of(store.add_template("<template/>", 1.0))
    image = Image("img", template.id, "name", "desc", "Fedora", "14", "x86_64", 1.0)
    build = Build("bld", image.id, template.id, 1.0)
    target_image = TargetImage("ti", build.id, image.id, target, 1.0)
    builder = Builder("ti", Operation.BUILD, Status.NEW, 0, image.id, build.id, target, created=1.0, updated=1.0)
    result_of(store.record_build(image, build, [target_image], [builder], True, [an_event(builder)]))
    return image, build, target_image, builder


def an_event(builder, old=None):
    return event_for_change(BuilderChange(old, builder), 1.0)


def test_provides_the_interface(store):
    """The implementation declares IStore."""
    assert IStore.providedBy(store)


def test_templates_are_kept_once_per_distinct_text(store):
    """The same template text gives back the same stored template; another text a new one."""
    first = result_of(store.add_template("<template>a</template>", 1.0))
    again = result_of(store.add_template("<template>a</template>", 2.0))
    other = result_of(store.add_template("<template>b</template>", 3.0))
    assert first.id == again.id and first.id != other.id
    assert result_of(store.get_template(first.id)).xml == "<template>a</template>"


def test_recorded_build_reads_back(store):
    """An image, its build, target image and builder read back equal to what was recorded."""
    image, build, target_image, builder = record_one_build(store)
    assert result_of(store.get_image(image.id)) == image
    assert result_of(store.get_build(build.id)) == build
    assert result_of(store.get_target_image(target_image.id)) == target_image
    assert result_of(store.get_builder(builder.id)) == builder
    assert result_of(store.list_builders()) == [builder]


def test_unknown_ids_fail_with_unknown_object(store):
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


def test_save_builder_is_guarded_by_the_expected_status(store):
    """A write expecting a status the builder no longer has is refused and changes nothing."""
    *_, builder = record_one_build(store)
    pending = builder.moved(Status.PENDING, now=2.0)
    result_of(store.save_builder(pending, Status.NEW, an_event(pending, builder)))
    building = pending.moved(Status.BUILDING, 10, now=3.0)
    with pytest.raises(InvalidTransition):
        result_of(store.save_builder(building, Status.NEW, an_event(building, pending)))
    assert result_of(store.get_builder(builder.id)) == pending
    assert [e.body["new_status"] for _, e in result_of(store.pending_events(10))] == ["NEW", "PENDING"], (
        "a refused write adds no event"
    )


def test_unfinished_builders(store):
    """Only builders not COMPLETED or FAILED are listed as unfinished."""
    *_, builder = record_one_build(store)
    assert [b.id for b in result_of(store.list_unfinished_builders())] == [builder.id]
    failed = builder.moved(Status.FAILED, now=2.0, status_detail="why")
    result_of(store.save_builder(failed, Status.NEW, an_event(failed, builder)))
    assert result_of(store.list_unfinished_builders()) == []


def test_record_push(store):
    """A provider image and its push builder are recorded together."""
    image, build, target_image, _ = record_one_build(store)
    provider_image, builder = record_one_push(store, image, build, target_image)
    assert result_of(store.get_provider_image("pi")) == provider_image
    assert result_of(store.get_builder("pi")) == builder


def test_failed_transaction_records_nothing(store):
    """A build whose records cannot all be written leaves none of them behind."""
    image, build, target_image, builder = record_one_build(store)
    second = Build("bld2", image.id, image.template_id, 2.0)
    duplicate = Builder(builder.id, Operation.BUILD, Status.NEW, 0, image.id, second.id, "mock")
    with pytest.raises(sqlite3.IntegrityError):
        result_of(store.record_build(image, second, [], [duplicate], False, [an_event(duplicate)]))
    with pytest.raises(UnknownObject):
        result_of(store.get_build("bld2"))


def test_outbox_keeps_events_in_order_until_deleted(store):
    """Events come out oldest first, whole, and stay until deleted."""
    *_, builder = record_one_build(store)
    moved = builder.moved(Status.PENDING, now=2.0)
    result_of(store.save_builder(moved, Status.NEW, an_event(moved, builder)))
    pending = result_of(store.pending_events(10))
    assert [e.body["sequence"] for _, e in pending] == [1, 2]
    assert pending[1][1].body["old_status"] == "NEW" and pending[1][1].routing_key == "target_image.build.pending"
    assert result_of(store.count_pending_events()) == 2
    result_of(store.delete_events([pending[0][0]]))
    assert [e.body["sequence"] for _, e in result_of(store.pending_events(10))] == [2]
    assert [e.body["sequence"] for _, e in result_of(store.pending_events(1))] == [2]


def test_sqlite_survives_reopening(tmp_path):
    """What was committed is there after the store is closed and opened again."""
    path = str(tmp_path / "store.sqlite")
    first = SQLiteStore(path, InlineDoor())
    first.thd_open()
    *_, builder = record_one_build(first)
    first.thd_close()
    second = SQLiteStore(path, InlineDoor())
    second.thd_open()
    assert result_of(second.get_builder(builder.id)) == builder
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second.thd_close()


def record_one_push(store, image, build, target_image, provider_image_id="pi"):
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


def test_images_and_builds_are_listed_oldest_first(store):
    """list_images and list_builds give every recorded image and build."""
    image, build, _, _ = record_one_build(store)
    later = Build("bld2", image.id, image.template_id, 5.0)
    result_of(store.record_build(image, later, [], [], False, []))
    assert result_of(store.list_images()) == [image]
    assert result_of(store.list_builds()) == [build, later]


def test_deleting_a_provider_image_removes_it_and_its_builder_only(store):
    """The provider image and its push builder go; the target image stays."""
    image, build, target_image, builder = record_one_build(store)
    record_one_push(store, image, build, target_image)
    result_of(store.delete_provider_image("pi"))
    for getter in (store.get_provider_image, store.get_builder):
        with pytest.raises(UnknownObject):
            result_of(getter("pi"))
    assert result_of(store.get_target_image(target_image.id)) == target_image
    assert result_of(store.list_builders()) == [builder]


def test_deleting_a_target_image_removes_its_provider_images(store):
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
def test_deleting_a_build_or_an_image_removes_everything_under_it(store, level):
    """A build (or image) goes with its target and provider images and their builders; templates stay."""
    image, build, target_image, _ = record_one_build(store)
    record_one_push(store, image, build, target_image)
    if level == "build":
        result_of(store.delete_build(build.id))
        assert result_of(store.get_image(image.id)) == image
    else:
        result_of(store.delete_image(image.id))
        with pytest.raises(UnknownObject):
            result_of(store.get_image(image.id))
    assert result_of(store.list_builds()) == []
    assert result_of(store.list_builders()) == []
    with pytest.raises(UnknownObject):
        result_of(store.get_provider_image("pi"))
    assert result_of(store.get_template(image.template_id)).id == image.template_id


def test_a_deletion_puts_its_events_in_the_outbox_in_the_same_transaction(store):
    """The DELETED events given with a deletion are written to the outbox by the same transaction."""
    image, build, target_image, builder = record_one_build(store)
    before = result_of(store.count_pending_events())
    deleted = event_for_deletion(builder, 10.0)
    result_of(store.delete_target_image(target_image.id, [deleted]))
    pending = result_of(store.pending_events(100))
    assert result_of(store.count_pending_events()) == before + 1
    assert pending[-1][1].body["event"] == "DELETED" and pending[-1][1].body["id"] == builder.id


def test_spent_nonces_are_kept_until_they_expire(store):
    """spend_nonce records (key, nonce, expiry); thd_spent_nonces gives the live ones; expired ones are dropped."""
    result_of(store.spend_nonce("client1", "n-1", 100.0, 50.0))
    result_of(store.spend_nonce("weird key/é", "n-1", 200.0, 60.0))
    assert sorted(store.thd_spent_nonces(99.0)) == [("client1", "n-1", 100.0), ("weird key/é", "n-1", 200.0)]
    assert store.thd_spent_nonces(150.0) == [("weird key/é", "n-1", 200.0)]
    result_of(store.spend_nonce("client1", "n-2", 300.0, 150.0))
    rows = store.thd_spent_nonces(0.0)
    assert ("client1", "n-1", 100.0) not in rows and len(rows) == 2, "expired nonces are deleted as new ones come"


def test_stages_read_back(store):
    """A builder's stages (names, starts, ends; the last one running) are stored and read back as they were."""
    from imgfac_twisted.model import Stage, StageName

    _, _, _, builder = record_one_build(store)
    stages = (Stage(StageName.WAITING, 1.0, 2.5), Stage(StageName.INSTALLING, 2.5, None))
    moved = builder.moved(Status.PENDING, now=3.0, stages=stages)
    result_of(store.save_builder(moved, Status.NEW, an_event(moved, builder)))
    assert result_of(store.get_builder(builder.id)).stages == stages
    assert result_of(store.get_builder(builder.id)).stage == StageName.INSTALLING


def test_manifests_are_kept_per_build_and_go_with_it(store):
    """A build's package list reads back in order; an unknown build has none; deleting the image removes it."""
    image, build, _, _ = record_one_build(store)
    packages = [("openssh-server", "1:9.2p1-2+deb12u3", "amd64"), ("tzdata", "2024a-0+deb12u1", "all")]
    assert result_of(store.get_manifest(build.id)) is None
    result_of(store.save_manifest(build.id, packages))
    assert result_of(store.get_manifest(build.id)) == packages
    result_of(store.delete_image(image.id))
    assert result_of(store.get_manifest(build.id)) is None


def test_a_database_of_the_first_schema_is_migrated_keeping_every_record(tmp_path):
    """A database written by the release before schema versions (the first schema, user_version 0) is brought
    to the current version at open: its records all read back, and the new columns and tables work."""
    from imgfac_twisted.store.sqlite import SCHEMA, SCHEMA_VERSION

    path = str(tmp_path / "old.sqlite")
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)
    old.execute("INSERT INTO templates VALUES ('t', 'digest', '<template/>', 1.0)")
    old.execute("INSERT INTO images VALUES ('img', 't', 'name', NULL, 'Fedora', '14', 'x86_64', 1.0)")
    old.execute("INSERT INTO builds VALUES ('bld', 'img', 't', 1.0)")
    old.execute("INSERT INTO target_images VALUES ('ti', 'bld', 'img', 'ec2', 1.0)")
    old.execute(
        "INSERT INTO builders (id, operation, status, completed, image_id, build_id, target, created, "
        "updated, sequence, artifact_sha256) VALUES ('ti', 'build', 'COMPLETED', 100, 'img', 'bld', 'ec2', "
        "1.0, 2.0, 4, 'abc')"
    )
    old.execute("INSERT INTO outbox (event) VALUES ('{}')")
    old.execute("INSERT INTO oauth_nonces VALUES ('client1', 'n1', 99.0)")
    old.commit()
    old.close()

    store = SQLiteStore(path, InlineDoor())
    store.thd_open()
    try:
        assert store.thd_schema_version() == SCHEMA_VERSION
        builder = result_of(store.get_builder("ti"))
        assert (builder.status, builder.artifact_sha256, builder.sequence, builder.stages) == (
            Status.COMPLETED,
            "abc",
            4,
            (),
        )
        assert result_of(store.get_image("img")).name == "name"
        assert result_of(store.get_target_image("ti")).target == "ec2"
        assert result_of(store.count_pending_events()) == 1
        assert store.thd_spent_nonces(0.0) == [("client1", "n1", 99.0)]
        result_of(store.save_manifest("bld", [("bash", "5.2", "amd64")]))
        assert result_of(store.get_manifest("bld")) == [("bash", "5.2", "amd64")]
    finally:
        store.thd_close()
    again = SQLiteStore(path, InlineDoor())
    again.thd_open()
    try:
        assert again.thd_schema_version() == SCHEMA_VERSION, "opening a migrated database again changes nothing"
        assert result_of(again.get_manifest("bld")) == [("bash", "5.2", "amd64")]
    finally:
        again.thd_close()
