"""An erased user's rows leave no bytes in a SQLite file: not where they were deleted
(``secure_delete``), and not where SQLite had moved them from before (the scrub)."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from fyp.events import log as event_log_module
from fyp.events.impressions import SqliteImpressionLog
from fyp.events.log import SqliteEventLog
from fyp.storage.sqlite import scrub as sqlite_scrub
from fyp.types import Event, EventType, Impression


@pytest.mark.parametrize("seed", [1, 3])
def test_an_erased_users_impressions_leave_no_bytes_in_the_file(tmp_path: Path, seed: int) -> None:
    """Feeds recorded in small batches for 22 users, then 20 of them erased one by one
    (each after a few more feeds, half of them theirs): no byte of any erased user's
    pseudonym is left in the database file.

    Mutation: a scrub without its ``VACUUM`` (``storage/sqlite.py``), or an erasure
    without the scrub, leaves an erased user's whole row (request id, pseudonym, video)
    in the unallocated space of a page a rebalance had moved it out of, which
    ``secure_delete`` does not overwrite: with these seeds (and SQLite's deterministic
    page layout) one user each."""
    rng = random.Random(seed)
    log = SqliteImpressionLog(tmp_path / "impressions.db")
    users = [f"p{rng.getrandbits(128):032x}" for _ in range(22)]
    live = list(users)
    served = 0

    def feeds(n: int, hot: str | None = None) -> None:
        nonlocal served
        rows: list[Impression] = []
        for i in range(n):
            served += 1
            user = hot if hot is not None and i % 2 else rng.choice(live)
            rows += [
                Impression(
                    f"{served:032x}",
                    user,
                    f"v{served % 60}",
                    position,
                    "explore",
                    0.5,
                    "for_you",
                    served,
                    "because " * (served % 7),
                )
                for position in range(served % 9 + 1)
            ]
        log.record(rows)

    try:
        for _ in range(120):
            feeds(5)
        for user in users[:20]:
            for _ in range(10):
                feeds(2, hot=user)
            live.remove(user)
            assert log.erase_user(user) > 0
            log.scrub()
    finally:
        log.close()
    data = (tmp_path / "impressions.db").read_bytes()
    assert [u for u in users[:20] if u.encode() in data] == []
    assert all(u.encode() in data for u in users[20:])


def test_the_event_log_is_read_while_it_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The learning step reads the event log while it holds the engine's lock: a scrub
    (a VACUUM: seconds on a large log) must not hold those reads, or every feed waits.

    Mutation: scrubbing on the log's shared connection, under its lock, makes the read
    wait for the whole scrub (here, forever: the scrub waits for the read)."""
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([Event(f"e{i}", "p1", "v1", EventType.VIEW, i, 1_000) for i in range(10)])
    read: list[int] = []

    def scrub_and_read_meanwhile(conn: sqlite3.Connection) -> None:
        reader = threading.Thread(target=lambda: read.append(len(log.read(0, 100))))
        reader.start()
        reader.join(10)  # (a bound for the mutation: it never ends)
        sqlite_scrub(conn)

    monkeypatch.setattr(event_log_module, "scrub", scrub_and_read_meanwhile)
    try:
        log.scrub()
        assert read == [10]
    finally:
        log.close()
