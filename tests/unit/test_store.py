"""The SQLite store's own behaviour: reopening a file and migrating a database of an older schema.

The store contract both stores pass (every IStore and IWorkStore method) is
tests/integration/test_store_contract.py; what is here needs no server.
"""

import sqlite3

import pytest

from imgfac_twisted.model import Build, Builder, Image, Operation, Status, TargetImage
from imgfac_twisted.store import IStore, IWorkStore, StoreUnavailable
from imgfac_twisted.store.sqlite import SCHEMA_VERSION, SQLiteStore
from imgfac_twisted.testing import InlineDoor, result_of


def record_one_build(store):
    template = result_of(store.add_template("<template/>", 1.0))
    image = Image("img", template.id, "name", "desc", "Fedora", "14", "x86_64", 1.0)
    build = Build("bld", image.id, template.id, 1.0)
    target_image = TargetImage("ti", build.id, image.id, "mock", 1.0)
    builder = Builder("ti", Operation.BUILD, Status.NEW, 0, image.id, build.id, "mock", created=1.0, updated=1.0)
    result_of(store.record_build(image, build, [target_image], [builder], True, []))
    return image, build, target_image, builder


def test_provides_the_interfaces(tmp_path):
    """The SQLite store declares IStore and IWorkStore, and keeps no logs (they are files)."""
    store = SQLiteStore(str(tmp_path / "store.sqlite"), InlineDoor())
    assert IStore.providedBy(store) and IWorkStore.providedBy(store) and not store.keeps_logs


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


def test_a_database_of_a_later_release_is_refused(tmp_path):
    """A file whose schema version is newer than this release knows is not opened, and says why."""
    path = str(tmp_path / "later.sqlite")
    later = sqlite3.connect(path)
    later.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    later.close()
    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}, made by a later release"):
        SQLiteStore(path, InlineDoor()).thd_open()
