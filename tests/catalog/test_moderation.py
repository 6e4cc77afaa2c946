"""The ModerationStore contract, run against every implementation (as
tests/catalog/test_store.py: one entry in ``IMPLEMENTATIONS`` a backend)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fyp.catalog.moderation import ModerationStore, SqliteModerationStore
from fyp.types import ModerationAction
from postgres_servers import opener

OpenStore = Callable[[], ModerationStore]


def pg_moderation(url: str) -> ModerationStore:
    from fyp.storage.postgres.catalog import PgModerationStore  # (psycopg: a skip if absent)
    from fyp.storage.postgres.database import Database

    return PgModerationStore(Database(url))


IMPLEMENTATIONS = [
    pytest.param(lambda where: SqliteModerationStore(where / "moderation.db"), id="sqlite"),
    pytest.param(pg_moderation, id="postgresql"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    yield from opener(request, tmp_path)


REMOVE = ModerationAction("v1", "removed", None, "spam", "api", 10)
RELABEL = ModerationAction("v2", None, ("sensitive", "Ünïcode label"), 'a "why"\n', "reports", 11)
CLEAR = ModerationAction("v1", "active", (), "appeal upheld", "api", 12)


def test_an_empty_store_has_no_history(open_store: OpenStore) -> None:
    store = open_store()
    assert store.history() == []
    assert store.history("v1") == []


def test_actions_come_back_whole_oldest_first_and_by_video(open_store: OpenStore) -> None:
    store = open_store()
    store.add([REMOVE, RELABEL])
    store.add([])
    store.add([CLEAR])
    assert store.history() == [REMOVE, RELABEL, CLEAR]
    assert store.history("v1") == [REMOVE, CLEAR]  # labels None and () kept apart
    assert store.history("v2") == [RELABEL]
    assert store.history("V1") == []


def test_the_history_survives_close_and_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.add([REMOVE, RELABEL])
    store.close()
    reopened = open_store()
    assert reopened.history() == [REMOVE, RELABEL]
    reopened.add([CLEAR])
    assert reopened.history("v1") == [REMOVE, CLEAR]
