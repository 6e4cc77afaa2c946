"""Reported videos are sent to review by one serving process at a time, the holder of a
lease on the event log's Redis: two processes (real ones: the holder is killed with
kill -9) never hold it at once, and the other takes it over within the lease's time
once the holder dies; two engines folding the same reports send each video to review
once, and the survivor of a killed holder neither decides again what the holder decided
nor leaves undecided what it had not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fyp.cluster.changes import changes_url
from fyp.cluster.review_lease import ReviewLease
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.safety.labels import ModerationState
from fyp.safety.moderator import REPORTS_ACTOR
from fyp.types import DAY_MS, Video, now_ms
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

LEASE_MS, RENEW_MS, MARGIN_MS = 1_000, 200, 300
SRC = Path(__file__).resolve().parents[2] / "src"

HOLDER = f"""
import sys, time
from fyp.cluster.review_lease import ReviewLease
lease = ReviewLease(sys.argv[1], lease_ms={LEASE_MS}, renew_ms={RENEW_MS}, margin_ms={MARGIN_MS})
lease.start()
while True:  # (when this process believed it held the lease, on the shared monotonic clock)
    print(f"{{time.monotonic():.4f}} {{int(lease.held())}}", flush=True)
    time.sleep(0.01)
"""


@pytest.fixture
def redis_url(unavailable: Callable[[str], NoReturn]) -> Iterator[str]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    try:
        yield f"{SHARED_URL}?prefix={prefix}"
    finally:
        delete_prefix(client, prefix)
        client.close()


def _held_spans(path: Path) -> list[tuple[float, bool]]:
    spans = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            spans.append((float(parts[0]), parts[1] == "1"))
    return spans


def test_a_killed_holder_is_taken_over_within_the_lease(tmp_path: Path, redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    logs = [tmp_path / "p0.log", tmp_path / "p1.log"]
    procs = []
    for log in logs:
        with log.open("w") as out:
            procs.append(
                subprocess.Popen([sys.executable, "-c", HOLDER, redis_url], stdout=out, env=env)
            )
    try:
        deadline = time.monotonic() + 20
        holder = None
        while holder is None:
            assert time.monotonic() < deadline, "no process took the lease"
            time.sleep(0.05)
            for i, log in enumerate(logs):
                spans = _held_spans(log)
                if spans and spans[-1][1]:
                    holder = i
        time.sleep(0.5)  # (both running: the other has tried and failed meanwhile)
        procs[holder].send_signal(signal.SIGKILL)
        procs[holder].wait()
        killed_at = time.monotonic()
        other = 1 - holder
        while not (_held_spans(logs[other]) and _held_spans(logs[other])[-1][1]):
            assert time.monotonic() < deadline, "the survivor never took the lease"
            time.sleep(0.01)
        taken_after = time.monotonic() - killed_at
        # The key lapses LEASE_MS after the last renewal; the survivor tries every RENEW_MS
        # (and the load of a shared machine delays either a little).
        assert taken_after <= (LEASE_MS + RENEW_MS) / 1000 + 1.0, taken_after
        held_by_holder = [t for t, h in _held_spans(logs[holder]) if h]
        held_by_other = [t for t, h in _held_spans(logs[other]) if h]
        assert held_by_holder, "the killed process had held the lease"
        assert min(held_by_other) > max(held_by_holder), "both held the lease at once"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _settings(data_dir: Path, store: str, log: str) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "store": store,
            "event_log": log,
            "privacy": {"secret_file": data_dir.with_name("shared.secret")},
        },
        environ={},
    )


def _report(engine: Engine, video_id: str, tag: str) -> None:
    """Four established accounts (a view a week old each) report ``video_id``."""
    ts = now_ms()
    users = [f"{tag}-r{i}" for i in range(4)]
    engine.register_users(users)
    events: list[dict[str, Any]] = []
    for i, user in enumerate(users):
        old = ts - 7 * DAY_MS
        events.append({"event_id": f"{tag}-v{i}", "user_id": user, "video_id": "v9", "ts": old})
        events[-1].update(type="view", watch_ms=5_000)
        events.append({"event_id": f"{tag}-r{i}", "user_id": user, "video_id": video_id, "ts": ts})
        events[-1]["type"] = "report"
    assert engine.ingest(events).accepted == 8


def _automatic(engine: Engine, video_id: str) -> int:
    return sum(a.actor == REPORTS_ACTOR for a in engine.moderation_store.history(video_id))


def _eventually(check: Callable[[], bool], what: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_two_engines_send_a_video_to_review_once_and_the_survivor_takes_over(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    log = f"{redis_url}&durability=none"
    a = Engine.open(_settings(tmp_path / "a", postgres_url, log))
    b = Engine.open(_settings(tmp_path / "b", postgres_url, log))
    url = changes_url(a.settings)
    assert url is not None
    lease_a = ReviewLease(url, LEASE_MS, RENEW_MS, MARGIN_MS)
    lease_b = ReviewLease(url, LEASE_MS, RENEW_MS, MARGIN_MS)
    a.moderator.review_turn, b.moderator.review_turn = lease_a.held, lease_b.held
    try:
        a.upsert_videos([Video(f"v{i}", f"c{i % 2}", duration_ms=10_000) for i in range(10)])
        b.reconcile_changes()
        lease_a.start()
        _eventually(lease_a.held, "A never took the lease", 5)
        lease_b.start()

        _report(a, "v1", "first")
        a.learn()
        b.learn()
        assert _automatic(a, "v1") == 1, "the holder sent the video to review"
        row = b.catalog.row_of["v1"]
        assert b.state.reports.due == [row], "B keeps it due while it is not B's turn"

        lease_a.stop(release=False)  # (A killed: its lease lapses)
        _report(a, "v2", "second")  # (accepted just before)
        _eventually(lease_b.held, "B never took the lease over", (LEASE_MS + RENEW_MS) / 1000 + 3)
        b.learn()
        assert _automatic(b, "v1") == 1, "B decided again what A had decided"
        assert _automatic(b, "v2") == 1, "B left undecided what A had not decided"
        assert b.state.reports.due == []
        for video in ("v1", "v2"):
            assert b.catalog.states[b.catalog.row_of[video]] is ModerationState.PENDING
    finally:
        lease_b.stop()
        lease_a.stop()
        b.close()
        a.close()


def test_a_holder_whose_renewal_stalled_takes_its_own_live_key_back(redis_url: str) -> None:
    """Regression: a holder whose renewal came later than its margin counts the lease as
    lost, while the key still holds its token (no other process can take it). Its next
    step takes it back at once; it used to wait for the key to expire (SET NX failed on
    its own key), holding up reviews for up to the lease's time. Another process's key
    is still not taken."""
    lease = ReviewLease(redis_url, lease_ms=60_000, renew_ms=RENEW_MS, margin_ms=MARGIN_MS)
    other = ReviewLease(redis_url, lease_ms=60_000, renew_ms=RENEW_MS, margin_ms=MARGIN_MS)
    try:
        assert lease.step() and lease.held()
        lease._valid_until = float("-inf")  # (its margin passed before it renewed)
        assert not lease.held()
        assert lease.step(), "its own live key was not taken back"
        assert lease.held() and lease.taken == 2
        assert not other.step() and not other.held()
    finally:
        other.stop()
        lease.stop()


def test_an_engine_whose_change_follower_stopped_reviews_again(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Regression: stopping the change follower stopped its review lease but left the
    moderator asking that lease for its turn, never held again: an engine used on after
    (alone) kept every reported video due for good. Stopped, the engine reviews as one
    process does, without turns."""
    from fyp.cluster.changes import ChangeFollower, ChangeStream

    log = f"{redis_url}&durability=none"
    engine = Engine.open(_settings(tmp_path / "a", postgres_url, log))
    url = changes_url(engine.settings)
    assert url is not None
    follower = ChangeFollower(engine, ChangeStream(url), lease=ReviewLease(url))
    try:
        engine.upsert_videos([Video(f"v{i}", f"c{i % 2}", duration_ms=10_000) for i in range(10)])
        assert engine.moderator.review_turn is not None
        follower.stop()
        _report(engine, "v1", "after")
        engine.learn()
        assert _automatic(engine, "v1") == 1, "the reported video was kept due"
    finally:
        follower.stop()
        engine.close()


def test_a_holder_stopped_while_its_renewal_stalled_still_gives_the_lease_up(
    redis_url: str,
) -> None:
    """Regression: a holder stopped cleanly while its renewal was past its margin (it
    counts the lease as lost, the key still holds its token) left the key to expire, and
    no other process could take it until then. A clean stop gives it up, as the module
    says, so another takes it at its next try."""
    lease = ReviewLease(redis_url, lease_ms=60_000, renew_ms=RENEW_MS, margin_ms=MARGIN_MS)
    other = ReviewLease(redis_url, lease_ms=60_000, renew_ms=RENEW_MS, margin_ms=MARGIN_MS)
    try:
        assert lease.step()
        lease._valid_until = float("-inf")  # (its margin passed before it renewed)
        lease.stop()
        assert other.step() and other.held(), "the stopped holder's key was left to expire"
    finally:
        other.stop()
        lease.stop()
