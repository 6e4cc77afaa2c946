"""The PostgreSQL stores' shared pool (``fyp.storage.postgres.database``): once the
server could not be reached, the stores fail at once for a short while instead of each
waiting the pool's timeout again (found under load: a request touching two stores while
the server was down waited twice, past a client's patience)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from fyp.storage.errors import StorageUnavailableError
from fyp.storage.postgres import database
from fyp.storage.postgres.database import DOWN_HOLD_S, Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Database, Clock]]:
    clock = Clock()
    monkeypatch.setattr(database.time, "monotonic", clock)
    opened = Database(postgres_url)
    try:
        yield opened, clock
    finally:
        opened.pool.close()


def _failing_pool(db: Database, error: Exception) -> list[int]:
    """The pool's connections fail with ``error``; returns the count of asks."""
    asked = [0]

    @contextlib.contextmanager
    def connection(*args: Any, **kwargs: Any) -> Iterator[Any]:
        asked[0] += 1
        raise error
        yield  # (a generator)

    db.pool.connection = connection  # type: ignore[method-assign]
    return asked


def test_after_the_server_could_not_be_reached_the_stores_fail_at_once_a_while(
    db: tuple[Database, Clock],
) -> None:
    store, clock = db
    working = store.pool.connection
    asked = _failing_pool(store, PoolTimeout("no connection in time"))
    with pytest.raises(StorageUnavailableError), store.transaction():
        pass
    assert asked == [1]
    with pytest.raises(StorageUnavailableError), store.transaction():
        pass
    with pytest.raises(StorageUnavailableError), store.autocommit():
        pass
    assert asked == [1]  # (failed at once: the pool not asked to wait again)
    clock.now += DOWN_HOLD_S + 0.01
    store.pool.connection = working  # type: ignore[method-assign]
    with store.transaction() as cur:  # (tried again, and the server answers)
        assert cur.execute("SELECT 1").fetchone() == (1,)


def test_an_error_of_the_servers_own_does_not_hold_the_stores(
    db: tuple[Database, Clock],
) -> None:
    store, _ = db
    with pytest.raises(psycopg.errors.UndefinedTable), store.transaction() as cur:
        cur.execute("SELECT * FROM no_such_table")
    with store.transaction() as cur:
        assert cur.execute("SELECT 1").fetchone() == (1,)


def test_a_broken_pooled_connection_does_not_hold_the_stores(
    db: tuple[Database, Clock],
) -> None:
    """A pooled connection the server's restart cut fails (an error without a SQLSTATE)
    at once, and the pool discards it: the next request asks the pool again. Held for a
    second each instead, a pool of several such connections answered 503 for several
    seconds after the server was back (one second per connection)."""
    store, _ = db
    working = store.pool.connection
    asked = _failing_pool(store, psycopg.OperationalError("server closed the connection"))
    with pytest.raises(StorageUnavailableError), store.transaction():
        pass
    with pytest.raises(StorageUnavailableError), store.transaction():
        pass
    assert asked == [2]  # (the pool asked again: another connection may be sound)
    store.pool.connection = working  # type: ignore[method-assign]
    with store.transaction() as cur:
        assert cur.execute("SELECT 1").fetchone() == (1,)
