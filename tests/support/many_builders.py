"""A store filled with many finished mock builders at once, for the large-installation tests and benchmark.

The builders go in through the store's own ``record_build`` (one transaction
per build, no events), before any daemon runs: 100 000 take a few seconds.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from imgfac_twisted.model import Build, Builder, Image, Operation, Status, TargetImage, new_id
from imgfac_twisted.store.sqlite import SQLiteStore
from imgfac_twisted.testing import InlineDoor, result_of

#: Target images per build (one image, one build of this many targets).
PER_BUILD = 100


def fill_sqlite(state_dir: str, count: int, unfinished: int = 0, start: float = 1.7e9) -> list[str]:
    """Put ``count`` mock target image builders in the state dir's SQLite store; answer their ids, oldest first.

    Every builder is COMPLETED (one in 10 FAILED) except the last ``unfinished``, left PENDING.
    """
    os.makedirs(state_dir, exist_ok=True)
    return fill_store(
        SQLiteStore(os.path.join(state_dir, "imagefactory.sqlite"), InlineDoor()), count, unfinished, start
    )


def fill_postgres(url: str, count: int, unfinished: int = 0, start: float = 1.7e9) -> list[str]:
    """``fill_sqlite`` for the PostgreSQL database at ``url``."""
    from imgfac_twisted.store.postgres import PostgresStore

    return fill_store(PostgresStore(url, InlineDoor()), count, unfinished, start)


def fill_store(store: Any, count: int, unfinished: int = 0, start: float = 1.7e9) -> list[str]:
    """``fill_sqlite`` for any store (on an inline door, not yet open): opened, filled and closed here."""
    store.thd_open()
    template = result_of(store.add_template("<template><name>many</name></template>", start))
    ids: list[str] = []
    try:
        for first in range(0, count, PER_BUILD):
            builders = [
                _builder(number, count - number <= unfinished, start)
                for number in range(first, min(count, first + PER_BUILD))
            ]
            _record(store, template.id, builders, start + first)
            ids.extend(builder.id for builder in builders)
    finally:
        store.thd_close()
    return ids


def _builder(number: int, unfinished: bool, start: float) -> Builder:
    created = start + number * 0.001
    status = Status.PENDING if unfinished else (Status.FAILED if number % 10 == 9 else Status.COMPLETED)
    finished: dict[str, Any] = {}
    if status == Status.COMPLETED:
        finished = {"artifact_path": f"/nowhere/{number}.raw", "artifact_size": 1024, "artifact_sha256": "0" * 64}
    elif status == Status.FAILED:
        finished = {"status_detail": "mock failure"}
    return Builder(
        id=new_id(),
        operation=Operation.BUILD,
        status=status,
        completed=100 if status == Status.COMPLETED else 0,
        image_id="",
        build_id="",
        target="mock",
        created=created,
        updated=created,
        sequence=3 if status.is_final else 1,
        **finished,
    )


def _record(store: Any, template_id: str, builders: list[Builder], created: float) -> None:
    image = Image(new_id(), template_id, "many", None, "Mock", "1", "x86_64", created)
    build = Build(new_id(), image.id, template_id, created)
    builders = [_placed(builder, image.id, build.id) for builder in builders]
    targets = [TargetImage(b.id, build.id, image.id, b.target, b.created) for b in builders]
    result_of(store.record_build(image, build, targets, builders, True, []))


def _placed(builder: Builder, image_id: str, build_id: str) -> Builder:
    return replace(builder, image_id=image_id, build_id=build_id)
