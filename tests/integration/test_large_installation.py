"""A daemon whose store already holds thousands of builders: it starts without loading them all, pages,
lists them all (streamed) and reads any of them."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from support.daemon import Daemon, DaemonPool, mock_config
from support.many_builders import fill_sqlite

COUNT = 3000
UNFINISHED = 5


@pytest.fixture(scope="module")
def stored(module_daemon_factory: DaemonPool) -> tuple[Daemon, list[str]]:
    """A daemon on a store of 3 000 builders, the last 5 left unfinished by a daemon that was killed."""
    daemon = module_daemon_factory.make(mock_config(), name="large", start=False)
    ids = fill_sqlite(str(daemon.state_dir), COUNT, unfinished=UNFINISHED)
    daemon.start_ready()
    return daemon, ids


def test_pages_cover_every_builder_once_in_order(stored: tuple[Daemon, list[str]]) -> None:
    """Following ``next`` from the first page lists every builder once, oldest first; the last page's next is null."""
    daemon, ids = stored
    seen: list[str] = []
    url: str | None = daemon.url("/imagefactory/builders?limit=1000")
    while url is not None:
        page = daemon.get_json(url)
        seen += [builder["id"] for builder in page["builders"]]
        url = page["next"]
        if url is not None:
            assert urlsplit(url).query == f"limit=1000&marker={seen[-1]}"
    assert seen == ids
    middle = daemon.get_json(f"/imagefactory/builders?limit=10&marker={ids[1499]}")
    assert [b["id"] for b in middle["builders"]] == ids[1500:1510]
    answer = daemon.get("/imagefactory/builders?limit=10&marker=no-such-builder")
    assert answer.status_code == 400 and "marker" in answer.json()["message"]
    assert daemon.get("/imagefactory/builders?limit=100000").status_code == 400


def test_the_full_list_is_complete(stored: tuple[Daemon, list[str]]) -> None:
    """Without ``limit`` the answer is the spec's document with every builder, oldest first."""
    daemon, ids = stored
    listing = daemon.get_json("/imagefactory/builders")
    assert set(listing) == {"_type", "href", "builders"} and listing["_type"] == "builders"
    assert [b["id"] for b in listing["builders"]] == ids
    # The builders a killed daemon left unfinished were failed at start, as before.
    statuses = {b["id"]: b["status"] for b in listing["builders"]}
    assert [statuses[i] for i in ids[-UNFINISHED:]] == ["FAILED"] * UNFINISHED


def test_any_builder_reads_through_to_the_store(stored: tuple[Daemon, list[str]]) -> None:
    """A finished builder the daemon did not load at start is read from the store, by every read path."""
    daemon, ids = stored
    builder = daemon.get_json(f"/imagefactory/builders/{ids[7]}")
    assert builder["id"] == ids[7] and builder["status"] == "COMPLETED"
    target = daemon.get_json(
        f"/imagefactory/images/{builder['image_id']}/builds/{builder['build_id']}/target_images/{ids[8]}/status"
    )
    assert target["status"] == "COMPLETED" and target["_type"] == "target_image_status"
    assert daemon.get(f"/imagefactory/builders/{ids[9]}/log").status_code == 200
    assert daemon.get("/imagefactory/builders/no-such-builder").status_code == 404
    unfinished = daemon.get_json("/imagefactory/builders?unfinished=1")["builders"]
    assert unfinished == []


def test_a_restart_does_not_load_every_builder(stored: tuple[Daemon, list[str]]) -> None:
    """A restart on 3 000 stored builders serves again within a few seconds, counts from the store."""
    daemon, ids = stored
    daemon.stop()
    began = time.monotonic()
    daemon.start_ready()
    assert time.monotonic() - began < 10
    metrics = daemon.get("/metrics").text
    assert 'imagefactory_builders{operation="build",status="COMPLETED"} 2696.0' in metrics
    assert f"imagefactory_builders_stored {COUNT}.0" in metrics
