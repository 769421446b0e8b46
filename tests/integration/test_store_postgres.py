"""What the PostgreSQL store does beyond the contract (test_store_contract.py): migrations taken by
several nodes at once and from the previous schema, the outbox claimed by two relays, the builders'
logs, the password kept out of errors, and pages of a large table."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import pytest_twisted
from test_store_contract import record_builders, record_one_build
from twisted.internet.defer import gatherResults

from imgfac_twisted.events import event_for_change
from imgfac_twisted.model import Build, Builder, BuilderChange, Image, Operation, Status
from imgfac_twisted.store import ClaimOutcome, ILogStore
from imgfac_twisted.store.postgres import PostgresStore, StoreUnavailable
from imgfac_twisted.store.postgres_schema import SCHEMA_VERSION, migrate
from imgfac_twisted.testing import InlineDoor, result_of
from support.postgres import database_url, role_with_password


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[PostgresStore]]:
    """Two open stores on one database: two nodes."""
    made = [PostgresStore(postgres_url, InlineDoor(), owner=f"node{index}") for index in (1, 2)]
    for store in made:
        store.thd_open()
    yield made
    for store in made:
        store.thd_close()


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_version ORDER BY version")]


def test_nodes_started_at_once_on_an_empty_database_all_come_up(postgres_url: str) -> None:
    """Six stores opened at the same instant on an empty database all open; the schema is made once."""
    start = threading.Barrier(6)

    def open_one(index: int) -> int:
        store = PostgresStore(postgres_url, InlineDoor())
        start.wait()
        store.thd_open()
        try:
            return store.thd_schema_version()
        finally:
            store.thd_close()

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_one, range(6))) == [SCHEMA_VERSION] * 6
    assert versions(postgres_url) == list(range(1, SCHEMA_VERSION + 1))


def test_a_database_of_the_previous_schema_is_migrated_keeping_every_record(postgres_url: str) -> None:
    """A database made by schema version 1 (no claims, no logs) is brought to the current version at open:
    its records all read back, and claims and logs work on them."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert migrate(connection, upto=1) == 0
        for sql in (
            "INSERT INTO templates VALUES ('t', 'digest', '<template/>', 1.0)",
            "INSERT INTO images VALUES ('img', 't', 'name', NULL, 'Fedora', '14', 'x86_64', 1.0)",
            "INSERT INTO builds VALUES ('bld', 'img', 't', 1.0)",
            "INSERT INTO target_images VALUES ('ti', 'bld', 'img', 'ec2', 1.0)",
            "INSERT INTO builders (id, operation, status, completed, image_id, build_id, target, created, updated, "
            "sequence, artifact_sha256) VALUES ('ti', 'build', 'BUILDING', 40, 'img', 'bld', 'ec2', 1.0, 2.0, 4, 'a')",
            "INSERT INTO outbox (event) VALUES ('{}')",
            "INSERT INTO oauth_nonces VALUES ('client1', 'n1', 99.0)",
            'INSERT INTO manifests VALUES (\'bld\', \'[["bash", "5.2", "amd64"]]\')',
        ):
            connection.execute(sql.encode())
    assert versions(postgres_url) == [1]
    store = PostgresStore(postgres_url, InlineDoor())
    store.thd_open()
    try:
        assert store.thd_schema_version() == SCHEMA_VERSION == 2
        builder = result_of(store.get_builder("ti"))
        assert (builder.status, builder.completed, builder.sequence, builder.artifact_sha256, builder.worker) == (
            Status.BUILDING,
            40,
            4,
            "a",
            None,
        )
        assert result_of(store.get_image("img")).name == "name"
        assert result_of(store.get_build("bld")).template_id == "t"
        assert result_of(store.get_target_image("ti")).target == "ec2"
        assert result_of(store.get_manifest("bld")) == [("bash", "5.2", "amd64")]
        assert result_of(store.count_pending_events()) == 1
        assert store.thd_spent_nonces(0.0) == [("client1", "n1", 99.0)]
        claim = result_of(store.claim_builders(["ti"], "w1", 10.0, 0.0, 2))["ti"]
        assert (claim.outcome, claim.attempts) == (ClaimOutcome.CLAIMED, 1)
        result_of(store.append_log("ti", ["migrated"]))
        assert result_of(store.read_log("ti", 0, 100)) == b"migrated\n"
    finally:
        store.thd_close()


def record_events(store: PostgresStore, count: int) -> None:
    """``count`` builders and their events (plus the first build's event)."""
    builders = record_builders(store, count)
    result_of(store.add_to_build([], [], [event_for_change(BuilderChange(None, b), 2.0) for b in builders]))


def test_each_outbox_event_is_handed_to_one_relay_in_order(stores: list[PostgresStore]) -> None:
    """Two nodes' relays draining the outbox at once (take a batch, deliver it, delete it): every event is
    delivered by exactly one of them, and all of them in the order they were written."""
    record_events(stores[0], 60)
    start = threading.Barrier(2)
    published: list[int] = []
    publishing = threading.Lock()

    def drain(store: PostgresStore) -> list[int]:
        start.wait()
        delivered: list[int] = []
        idle = 0
        while idle < 50:
            batch = [outbox_id for outbox_id, _ in result_of(store.pending_events(3))]
            if not batch:
                # The other relay holds older events: wait for it, as the relay retries.
                idle += 1
                time.sleep(0.01)
                continue
            with publishing:
                published.extend(batch)
            delivered += batch
            result_of(store.delete_events(batch))
        return delivered

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(drain, stores)
    assert not set(first) & set(second), "no event delivered twice"
    assert len(first) + len(second) == 61
    assert published == sorted(published), "never an event before an older one"
    assert result_of(stores[0].count_pending_events()) == 0


def test_a_claimed_batch_holds_the_others_back_until_delivered_or_lapsed(
    stores: list[PostgresStore], postgres_url: str
) -> None:
    """A batch not yet delivered comes back to the node that took it (its relay retries); the other node
    takes nothing newer meanwhile (events stay in order), and takes the batch once the lease lapsed."""
    first, second = stores
    record_events(first, 5)
    mine = [outbox_id for outbox_id, _ in result_of(first.pending_events(4))]
    assert len(mine) == 4
    assert result_of(second.pending_events(100)) == [], "nothing newer than a batch held elsewhere"
    assert [outbox_id for outbox_id, _ in result_of(first.pending_events(4))] == mine
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE claimed_by = 'node1'")
    taken = [outbox_id for outbox_id, _ in result_of(second.pending_events(100))]
    assert taken == sorted(taken) and len(taken) == 6 and set(mine) <= set(taken)


def test_logs_are_read_by_byte_offset_from_any_node(stores: list[PostgresStore]) -> None:
    """Lines appended on one node read back on another as UTF-8 text, each line + newline, from any byte offset."""
    first, second = stores
    assert ILogStore.providedBy(first)
    lines = ["2026-12-07T15:00:00Z started", "2026-12-07T15:00:01Z température 20°", "last"]
    result_of(first.append_log("b1", lines[:2]))
    result_of(first.append_log("b1", lines[2:]))
    whole = "".join(line + "\n" for line in lines).encode("utf-8")
    assert result_of(second.read_log("b1", 0, 10_000)) == whole
    for offset in range(len(whole) + 2):
        for limit in (1, 7, 40, 10_000):
            assert result_of(second.read_log("b1", offset, limit)) == whole[offset : offset + limit], (offset, limit)
    assert result_of(second.read_log("nobody", 0, 100)) == b""
    assert result_of(second.read_log("b1", 5, 0)) == b""


def test_save_builder_appends_its_log_lines_in_the_same_transaction(stores: list[PostgresStore]) -> None:
    """The log lines given to save_builder are in the log once the new status is stored."""
    first, second = stores
    *_, builder = record_one_build(first)
    moved = builder.moved(Status.PENDING, now=2.0)
    result_of(first.save_builder(moved, Status.NEW, event_for_change(BuilderChange(builder, moved), 2.0), ["a", "b"]))
    assert result_of(second.read_log(builder.id, 0, 100)) == b"a\nb\n"


def test_concurrent_appends_to_one_log_keep_every_line(stores: list[PostgresStore]) -> None:
    """Two nodes appending to one builder's log at once: every line is there once, offsets contiguous."""
    start = threading.Barrier(2)

    def append(store: PostgresStore, name: str) -> None:
        start.wait()
        for index in range(40):
            result_of(store.append_log("b1", [f"{name} {index}"]))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(append, stores, ["one", "two"]))
    text = result_of(stores[0].read_log("b1", 0, 100_000)).decode()
    assert sorted(text.splitlines()) == sorted(f"{name} {i}" for name in ("one", "two") for i in range(40))


def test_the_password_is_never_in_an_error_nor_the_repr() -> None:
    """A store that cannot reach its database says where, with the password hidden."""
    secret = "s3cr:t@p/ss%w\u00f6rd"
    from urllib.parse import quote

    url = f"postgresql://imagefactory:{quote(secret, safe='')}@127.0.0.1:1/imagefactory"
    store = PostgresStore(url, InlineDoor())
    with pytest.raises(StoreUnavailable) as caught:
        store.thd_open()
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "***" in message
    assert secret not in message and quote(secret, safe="") not in message and "s3cr" not in message
    assert "s3cr" not in repr(store)


def test_a_user_with_a_password_works(postgres_url: str) -> None:
    """A URL with a user and a percent-encoded password opens the store (trust: what is checked is the URL)."""
    from urllib.parse import quote

    # Migrated first by user postgres, so that the role owns nothing and can be dropped after.
    PostgresStore(postgres_url, InlineDoor()).thd_open()
    with role_with_password("pa ss@word") as role:
        name = postgres_url.rsplit("/", 1)[1]
        url = database_url(name).replace("postgres@", f"{role}:{quote('pa ss@word', safe='')}@")
        store = PostgresStore(url, InlineDoor())
        store.thd_open()
        assert store.thd_schema_version() == SCHEMA_VERSION
        store.thd_close()


def test_pages_of_a_hundred_thousand_builders_are_fast(postgres_url: str) -> None:
    """With 100,000 builders, a page after a marker deep in the table comes from the index in milliseconds."""
    store = PostgresStore(postgres_url, InlineDoor())
    store.thd_open()
    try:
        *_, first = record_one_build(store)
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(
                "INSERT INTO builders (id, operation, status, completed, image_id, build_id, target, created, updated, "
                "sequence) SELECT 'b' || lpad(n::text, 6, '0'), 'build', 'COMPLETED', 100, 'img', 'bld', 'mock', "
                "2.0 + n / 1000, 2.0, 3 FROM generate_series(1, 100000) AS n"
            )
            connection.execute("ANALYZE builders")
        counts = result_of(store.count_builders())
        assert counts == {("build", "COMPLETED"): 100_000, ("build", "NEW"): 1}
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            page = result_of(store.list_builders_page(100, "b070000"))
            timings.append(time.perf_counter() - began)
        assert [b.id for b in page] == [f"b{n:06d}" for n in range(70001, 70101)]
        assert isinstance(page[0], Builder) and page[0].operation is Operation.BUILD
        assert sorted(timings)[10] < 0.02, f"median page time {sorted(timings)[10] * 1000:.1f} ms"
        assert [b.id for b in result_of(store.list_builders_page(2, None))] == [first.id, "b000001"]
    finally:
        store.thd_close()


@pytest_twisted.ensureDeferred
async def test_on_its_own_threads_under_the_reactor(postgres_url: str) -> None:
    """``on_own_threads``: a door of several threads, each with its connection; concurrent calls from the
    reactor all land, claims included, and closing closes every connection."""
    from twisted.internet import reactor

    store, door = PostgresStore.on_own_threads(reactor, postgres_url)
    door.startService()
    try:
        await store.open()
        template = await store.add_template("<t/>", 1.0)
        image = Image("img", template.id, "n", None, "Fedora", "14", "x86_64", 1.0)
        build = Build("bld", image.id, template.id, 1.0)
        many = [
            Builder(f"b{index:02d}", Operation.BUILD, Status.NEW, 0, image.id, build.id, "mock", created=1.0)
            for index in range(40)
        ]
        await store.record_build(image, build, [], many, True, [])
        reads = await gatherResults([store.get_builder(b.id) for b in many])
        assert reads == many
        claims = await gatherResults(
            [store.claim_builders([b.id for b in many], f"w{n}", 10.0, 5.0, 2) for n in range(4)]
        )
        for builder in many:
            assert sorted(c[builder.id].outcome.value for c in claims) == ["claimed", "taken", "taken", "taken"]
        connections = list(store._connections)
        assert len(connections) >= 2, "several threads, several connections"
        await store.close()
        assert all(connection.closed for connection in connections)
    finally:
        door.stopService()


def test_a_dropped_connection_is_made_again(store_and_url: tuple[PostgresStore, str]) -> None:
    """After the server dropped the store's connection (a restart), the next call connects again."""
    store, url = store_and_url
    record_one_build(store)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    failures = 0
    for _ in range(2):
        try:
            assert result_of(store.get_builder("ti")).id == "ti"
        except psycopg.OperationalError:
            failures += 1
    assert failures <= 1
    assert result_of(store.get_builder("ti")).id == "ti"


@pytest.fixture
def store_and_url(postgres_url: str) -> Iterator[tuple[PostgresStore, str]]:
    store = PostgresStore(postgres_url, InlineDoor())
    store.thd_open()
    yield store, postgres_url
    store.thd_close()


def test_a_schema_made_by_a_later_release_is_refused(store_and_url: tuple[PostgresStore, str]) -> None:
    """A database whose schema version is newer than this release knows is not opened, and says why."""
    _, url = store_and_url
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO schema_version (version) VALUES (%s)", [SCHEMA_VERSION + 1])
    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}, made by a later release"):
        PostgresStore(url, InlineDoor()).thd_open()


def test_heartbeats_claims_and_releases_at_once_never_deadlock(stores: list[PostgresStore]) -> None:
    """One node beating for and releasing its builders while another claims them over and over: every call
    returns (rows are locked in one order by all three), none fails with a deadlock."""
    first, second = stores
    ids = [b.id for b in record_builders(first, 60)]
    result_of(first.claim_builders(ids, "w1", 1.0, 0.0, 1000))
    start = threading.Barrier(2)

    def beat() -> None:
        start.wait()
        for round_ in range(30):
            result_of(first.heartbeat(list(reversed(ids)), "w1", 2.0 + round_))
            result_of(first.release_builders(ids[::2], "w1"))
            result_of(first.claim_builders(ids[::-3], "w1", 2.0 + round_, 0.0, 1000))

    def claim() -> None:
        start.wait()
        for round_ in range(30):
            result_of(second.claim_builders(list(reversed(ids)), "w2", 3.0 + round_, 1e9, 1000))

    with ThreadPoolExecutor(2) as pool:
        for running in [pool.submit(beat), pool.submit(claim)]:
            running.result()
