"""The lock of user writes: event batches share it; an exclusive holder (an erasure
setting its tombstone) waits for every shared one and keeps new ones out. An engine's
batches are appended at once (under one plain lock each waited for the other's
append: on Redis, for its fsync)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from fyp.engine import Engine
from fyp.events.log import AppendResult
from fyp.privacy.user_writes import UserWrites
from fyp.types import Event


def test_shared_holders_hold_it_at_once() -> None:
    lock = UserWrites()
    both_in = threading.Barrier(2, timeout=5)

    def batch() -> None:
        with lock.shared():
            both_in.wait()  # (a plain lock: the second never gets in, BrokenBarrierError)

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not both_in.broken


def test_an_exclusive_holder_waits_for_the_shared_and_keeps_new_ones_out() -> None:
    lock = UserWrites()
    order: list[str] = []
    in_first, release_first = threading.Event(), threading.Event()

    def first_batch() -> None:
        with lock.shared():
            in_first.set()
            release_first.wait(5)
            order.append("first batch done")

    def erasure() -> None:
        with lock:
            order.append("tombstone")

    def later_batch() -> None:
        with lock.shared():
            order.append("later batch")

    t1 = threading.Thread(target=first_batch)
    t1.start()
    assert in_first.wait(5)
    t2 = threading.Thread(target=erasure)
    t2.start()
    time.sleep(0.1)  # (the erasure waiting)
    t3 = threading.Thread(target=later_batch)
    t3.start()
    time.sleep(0.1)  # (a batch arriving while an erasure waits: it waits too)
    assert order == []
    release_first.set()
    for t in (t1, t2, t3):
        t.join(10)
    assert order == ["first batch done", "tombstone", "later batch"]


def test_two_batches_of_one_engine_are_appended_at_once(engine: Engine, kit: Any) -> None:
    log = engine.event_log
    append = log.append
    both_appending = threading.Barrier(2, timeout=5)

    def slow_append(events: Sequence[Event]) -> AppendResult:
        both_appending.wait()  # (one at a time: BrokenBarrierError, both rejected)
        return append(events)

    log.append = slow_append  # type: ignore[method-assign]
    video = kit.catalog()[0].video_id
    results = []

    def post(user: str) -> None:
        results.append(engine.ingest([kit.view(user, video)]))

    threads = [threading.Thread(target=post, args=(u,)) for u in ("ua", "ub")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r.accepted for r in results] == [1, 1]
    assert not both_appending.broken
