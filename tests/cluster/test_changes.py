"""Changes made through one API process are in force in another within a second: two
apps in this test process, each with a data dir of its own, over one PostgreSQL schema
and one event log on Redis (a prefix of this test's own). A moderation, a new video, a
controls change, a refresh and an erasure made through A show in B's next feed (or B's
state), polled against a deadline; and the stream's notices hold no pseudonym of an
erased user."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.cluster.changes import ChangeFollower, ChangeStream, changes_url, follow_changes
from fyp.cluster.review_lease import ReviewLease
from fyp.config import LOAD_GENERATOR_AUTH, Settings, load_settings
from fyp.engine import Engine
from fyp.privacy.keys import bearer, create_key
from fyp.safety.labels import ModerationState
from fyp.types import Video, now_ms
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

DEADLINE_S = 5.0  # generous: the target is 1 s (bench/cluster_changes.py measures it)
N_VIDEOS = 40


@pytest.fixture
def shared(unavailable: Callable[[str], NoReturn], postgres_url: str) -> Iterator[tuple[str, str]]:
    """(the store URL, the event log URL) both processes are given."""
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    try:
        yield postgres_url, f"{SHARED_URL}?prefix={prefix}&durability=none"
    finally:
        delete_prefix(client, prefix)
        client.close()


def _settings(data_dir: Path, store: str, log: str, registered: bool = False) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "store": store,
            "event_log": log,
            # One pseudonym secret for every process: the stores hold users by it.
            "privacy": {
                "require_registered_users": registered,
                "secret_file": data_dir.with_name("shared.secret"),
            },
            "auth": LOAD_GENERATOR_AUTH,
        },
        environ={},
    )


class Process:
    """One API process: its engine and its app, served by TestClient."""

    def __init__(self, data_dir: Path, store: str, log: str) -> None:
        self.settings = _settings(data_dir, store, log)
        self.engine = Engine.open(self.settings)
        headers = bearer(create_key(data_dir, label="tests", store_url=store)[1])
        self.client = TestClient(create_app(self.settings, engine=self.engine), headers=headers)
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.engine.close()

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.client.request(method, path, **kwargs)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def feed(self, user_id: str, count: int = 20) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ok(
            "GET", "/v1/feed", params={"user_id": user_id, "count": count}
        )["items"]
        return items


def video(i: int, creator: str | None = None) -> dict[str, Any]:
    return {
        "video_id": f"v{i:03d}",
        "creator_id": creator or f"c{i % 4}",
        "duration_ms": 10_000,
        "hashtags": [f"#tag{i % 4}"],
        "caption": f"video {i}",
        "created_at": now_ms() - 3_600_000,
    }


def eventually(what: str, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` held; fails the test past the deadline."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE_S:
            pytest.fail(f"not in force in the other process after {DEADLINE_S} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pair(tmp_path: Path, shared: tuple[str, str]) -> Iterator[tuple[Process, Process]]:
    store, log = shared
    a = Process(tmp_path / "a", store, log)
    try:
        b = Process(tmp_path / "b", store, log)
    except BaseException:
        a.close()
        raise
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def test_changes_made_through_a_are_in_force_in_b(pair: tuple[Process, Process]) -> None:
    a, b = pair
    health = b.ok("GET", "/healthz")
    assert health["changes_lag_s"] == 0.0, health

    # New videos (POST /v1/videos through A): in B's catalog and feeds.
    a.ok("POST", "/v1/videos", json={"videos": [video(i) for i in range(N_VIDEOS)]})
    eventually("new videos", lambda: len(b.engine.catalog) == N_VIDEOS)
    assert {i["video_id"] for i in b.feed("u-new", 10)} <= {f"v{i:03d}" for i in range(N_VIDEOS)}

    # A moderation decision: the video removed leaves B's feeds.
    shown = b.feed("u-mod", N_VIDEOS)
    target = shown[0]["video_id"]
    a.ok(
        "POST",
        "/v1/moderation",
        json={"video_id": target, "state": "removed", "reason": "test"},
    )
    row = b.engine.catalog.row_of[target]
    eventually("moderation", lambda: b.engine.catalog.states[row] is ModerationState.REMOVED)
    assert target not in {i["video_id"] for i in b.feed("u-mod-2", N_VIDEOS)}

    # A video updated through A (a new caption): B serves the new version.
    a.ok("POST", "/v1/videos", json={"videos": [{**video(1), "caption": "renamed"}]})
    eventually(
        "an updated video",
        lambda: b.engine.catalog.videos[b.engine.catalog.row_of["v001"]].caption == "renamed",
    )

    # A profile created through A, then controls: a creator muted through A is muted in
    # B's next feed.
    pid = b.engine.pseudonym("u1")
    a.ok("PUT", "/v1/users/u1", json={"language": "en"})
    eventually("a profile", lambda: pid in b.engine.users.profiles)
    assert b.engine.users.profiles[pid].language == "en"
    b.feed("u1", 10)
    a.ok("POST", "/v1/users/u1/controls", json={"mute_creators": ["c2"]})
    eventually("controls", lambda: b.engine.controls_of("u1").mute_creators == ("c2",))
    served = [int(i["video_id"][1:]) for i in b.feed("u1", 20)]
    assert served, "an empty feed shows nothing"
    assert all(i % 4 != 2 for i in served), served

    # A refresh asked through A: B forgets the user's personalisation (its learning
    # loop, woken by the notice, carries it out).
    a.ok(
        "POST",
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": f"e{i}",
                    "user_id": "u1",
                    "video_id": f"v{4 * i + 3:03d}",
                    "type": "like",
                    "ts": now_ms(),
                }
                for i in range(5)
            ]
        },
    )
    done = b.engine.state.refreshes_done
    a.ok("POST", "/v1/users/u1/controls", json={"refresh": True})
    eventually("refresh", lambda: b.engine.state.refreshes_done > done)
    assert b.engine.state.applied_offset >= 5  # (B folded A's events up to the mark)
    assert not b.engine.state.users[pid].creators, "personalisation kept"

    # An erasure through A: B holds nothing of the user, and serves the id anew.
    a.ok("DELETE", "/v1/users/u1")
    eventually(
        "erasure",
        lambda: (
            pid not in b.engine.users.profiles
            and pid not in b.engine.state.users
            and not b.engine.rights.erasing("u1")
        ),
    )
    assert b.engine.controls_of("u1").mute_creators == ()
    b.feed("u1", 5)

    # The stream: no pseudonym of the erased user, and B's health still current.
    url = changes_url(a.settings)
    assert url is not None
    stream = ChangeStream(url)
    try:
        notices = stream.read("0-0", block_ms=1, count=10_000)
    finally:
        stream.close()
    kinds = {n.kind for n in notices}
    assert kinds == {"video", "moderation", "user", "erasure"}, kinds
    users = [n.key for n in notices if n.kind == "user"]
    assert users and pid not in users  # (handles, deleted with the user)
    assert all(b.engine.user_store.user_of_handle(h) is None for h in users)
    assert b.ok("GET", "/healthz")["changes_lag_s"] == 0.0


def test_events_accepted_by_a_are_folded_by_b_unasked(pair: tuple[Process, Process]) -> None:
    """Events posted only through A reach B's state, and B's feeds, with no request to B
    and no change notice: B's tail of the log wakes its learning loop."""
    a, b = pair
    a.ok("POST", "/v1/videos", json={"videos": [video(i) for i in range(N_VIDEOS)]})
    eventually("new videos", lambda: len(b.engine.catalog) == N_VIDEOS)
    eventually("the notice's fold", lambda: b.engine.pending() == 0)
    watched = [f"v{i:03d}" for i in range(0, N_VIDEOS, 2)]
    events = [
        {
            "event_id": f"w-{vid}",
            "user_id": "w1",
            "video_id": vid,
            "type": "view",
            "ts": now_ms(),
            "watch_ms": 10_000,  # (the whole video: seen, and a long view)
        }
        for vid in watched
    ]
    a.ok("POST", "/v1/events", json={"events": events})
    end = a.engine.event_log.last_offset()
    eventually("A's events in B's state", lambda: b.engine.state.applied_offset >= end)
    served = {i["video_id"] for i in b.feed("w1", 10)}  # (20 unwatched to choose from)
    assert served, "an empty feed shows nothing"
    assert not served & set(watched), "B serves again what the user watched through A"


def test_a_change_whose_notice_was_lost_is_reconciled(pair: tuple[Process, Process]) -> None:
    """A writer killed between its commit and its notice: B's periodic reconcile finds
    the change in the stores (here the notice is simply not sent)."""
    a, b = pair
    a.ok("POST", "/v1/videos", json={"videos": [video(i) for i in range(4)]})
    eventually("new videos", lambda: len(b.engine.catalog) == 4)
    a.engine.changed = lambda kind, key: None  # (A dies before each notice)
    a.ok("POST", "/v1/videos", json={"videos": [video(9)]})
    a.ok("POST", "/v1/moderation", json={"video_id": "v000", "state": "removed", "reason": "t"})
    a.ok("PUT", "/v1/users/u7", json={})
    a.ok("POST", "/v1/users/u7/controls", json={"mute_hashtags": ["#tag1"]})
    time.sleep(0.3)
    assert len(b.engine.catalog) == 4  # (no notice: not yet)
    assert b.engine.reconcile_changes() == 3
    assert "v009" in b.engine.catalog.row_of
    assert b.engine.catalog.states[b.engine.catalog.row_of["v000"]] is ModerationState.REMOVED
    assert b.engine.controls_of("u7").mute_hashtags == ("#tag1",)
    assert b.engine.reconcile_changes() == 0  # (nothing left to change)


def test_a_follower_cut_off_from_redis_says_so_and_catches_up(
    pair: tuple[Process, Process],
) -> None:
    """B's tail connection broken: /healthz degrades while it cannot read, and once it
    reads again the change made meanwhile is in force."""
    a, b = pair
    a.ok("POST", "/v1/videos", json={"videos": [video(i) for i in range(4)]})
    eventually("new videos", lambda: len(b.engine.catalog) == 4)
    # Every process's tail cut off: the next reads fail, and each retries.
    from fyp.cluster import changes

    original = changes.ChangeStream.read

    def broken(self: changes.ChangeStream, *args: Any, **kw: Any) -> Any:
        raise redis.ConnectionError("cut off (the test)")

    changes.ChangeStream.read = broken  # type: ignore[method-assign]
    try:
        eventually("degraded health", lambda: "degraded" in b.ok("GET", "/healthz")["status"])
        assert b.ok("GET", "/healthz")["changes_lag_s"] > 0
        a.ok("POST", "/v1/videos", json={"videos": [video(7)]})  # (its notice: appended)
        time.sleep(0.3)
        assert "v007" not in b.engine.catalog.row_of
    finally:
        changes.ChangeStream.read = original  # type: ignore[method-assign]
    eventually("caught up", lambda: "v007" in b.engine.catalog.row_of)
    eventually("healthy", lambda: b.ok("GET", "/healthz")["status"] == "ok")


def test_a_follower_the_stream_was_trimmed_past_reconciles(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """B away while A made two changes and the stream was trimmed to the last notice:
    B's next read finds the stream no longer holds its last notice, and reconciles
    with the stores, so the change whose notice was trimmed is in force too."""
    store, log = shared
    a = Engine.open(_settings(tmp_path / "a", store, log))
    b = Engine.open(_settings(tmp_path / "b", store, log))
    url = changes_url(a.settings)
    assert url is not None
    writer, reader = ChangeFollower(a, ChangeStream(url)), ChangeFollower(b, ChangeStream(url))
    try:
        a.upsert_videos([Video("v1", "c1", duration_ms=10_000)])
        assert reader.step(block_ms=100) == 1
        assert "v1" in b.catalog.row_of and reader.gaps == 0
        a.upsert_videos([Video("v2", "c1", duration_ms=10_000)])
        a.upsert_videos([Video("v3", "c2", duration_ms=10_000)])
        client = redis.Redis.from_url(SHARED_URL)
        client.xtrim(reader.stream.key, maxlen=1, approximate=False)  # (only v3's kept)
        client.close()
        assert reader.step(block_ms=100) == 1  # (v3's notice)
        assert reader.gaps == 1
        assert "v2" in b.catalog.row_of and "v3" in b.catalog.row_of
    finally:
        writer.stop()
        reader.stop()
        b.close()
        a.close()


def _two_users_like_three_videos(a: Engine) -> None:
    """Through A: six videos, the users ``gone`` and ``kept`` registered, each liking
    three of them (what the erasure tests' B must learn and then drop for one)."""
    a.upsert_videos([Video(f"v{i}", f"c{i % 2}", duration_ms=10_000) for i in range(6)])
    a.register_users(["gone", "kept"])
    events = [
        {"event_id": f"{u}-{i}", "user_id": u, "video_id": f"v{i}", "type": "like", "ts": now_ms()}
        for u in ("gone", "kept")
        for i in range(3)
    ]
    assert a.ingest(events).accepted == 6


def test_a_process_away_for_a_whole_erasure_drops_the_user_when_back(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """B holds a user (learned state, profile, in its checkpoint too) and is down while
    A erases them from tombstone to completion: B, started again from its checkpoint,
    holds them until its follower's first reconcile, which finds their profile gone
    from the store (users are registered: only an erasure deletes a profile) and drops
    them; the checkpoint it rewrites holds them no more. Another user is kept."""
    store, log = shared
    a = Engine.open(_settings(tmp_path / "a", store, log, registered=True))
    b_settings = _settings(tmp_path / "b", store, log, registered=True)
    try:
        _two_users_like_three_videos(a)
        b = Engine.open(b_settings)  # (replays the log: holds both users)
        gone, kept = b.pseudonym("gone"), b.pseudonym("kept")
        assert {gone, kept} <= b.state.users.keys() and gone in b.users.profiles
        b.checkpoints.write()
        b.close()  # (down)

        a.rights.erase_user("gone", actor="test")  # (its notices: B reads none of them)

        b = Engine.open(b_settings)  # (back, from its checkpoint)
        assert gone in b.state.users, "the checkpoint held the user (else nothing to test)"
        url = changes_url(b.settings)
        assert url is not None
        follower = ChangeFollower(b, ChangeStream(url))
        try:
            follower.step(block_ms=10)  # (its first step reconciles)
        finally:
            follower.stop()
        assert gone not in b.state.users and gone not in b.users.profiles
        assert kept in b.state.users and kept in b.users.profiles
        b.close()
        b = Engine.open(b_settings)  # (from the checkpoint the drop rewrote)
        assert gone not in b.state.users and kept in b.state.users
        assert b.rights.drop_erased_elsewhere() == 0
        b.close()
    finally:
        a.close()


def test_an_erasure_notice_read_after_the_erasure_completed_drops_the_user(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """B's follower reads an erasure's notices only once the erasure has completed (it
    lagged, or was reconnecting): the tombstone is gone when it looks, so following the
    tombstones finds nothing; the notice still drops the user here at once (their profile
    is gone from the store), not at the next periodic reconcile."""
    store, log = shared
    a = Engine.open(_settings(tmp_path / "a", store, log, registered=True))
    b = Engine.open(_settings(tmp_path / "b", store, log, registered=True))
    try:
        _two_users_like_three_videos(a)
        b.reconcile_changes()
        b.learn()
        gone, kept = b.pseudonym("gone"), b.pseudonym("kept")
        assert {gone, kept} <= b.state.users.keys() and gone in b.users.profiles

        a.rights.erase_user("gone", actor="test")  # (B reads its notices only now)
        b.apply_change("erasure", a.pseudonyms.audit_ref("gone"))

        assert gone not in b.state.users and gone not in b.users.profiles
        assert kept in b.state.users and kept in b.users.profiles
    finally:
        b.close()
        a.close()


def test_a_process_cut_off_for_an_erasure_drops_the_user_created_again_since(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """B reads no notice while A erases a user and the same id is then created anew (a
    new profile, created later): B's reconcile finds a profile under the pseudonym, but
    not the one it holds. What B learned of the erased user goes; the new profile is in
    force."""
    store, log = shared
    a = Engine.open(_settings(tmp_path / "a", store, log, registered=True))
    b = Engine.open(_settings(tmp_path / "b", store, log, registered=True))
    try:
        _two_users_like_three_videos(a)
        b.reconcile_changes()
        b.learn()
        gone, kept = b.pseudonym("gone"), b.pseudonym("kept")
        assert b.state.users[gone].creators, "B learned the user's likes"
        born = b.users.profiles[gone].created_at

        a.rights.erase_user("gone", actor="test")  # (B reads none of its notices)
        time.sleep(0.005)  # (the new profile is created in a later ms)
        assert a.register_users(["gone"]) == 1  # (the id is free again: a new user)

        b.reconcile_changes()
        assert gone not in b.state.users or not b.state.users[gone].creators
        assert b.users.profiles[gone].created_at > born  # (the new user's profile)
        assert b.state.users[kept].creators and kept in b.users.profiles
    finally:
        b.close()
        a.close()


def test_a_follower_that_fails_to_start_leaves_no_thread_or_connection(
    kit: Any, shared: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: follow_changes raising in ``start`` (here the review lease's thread
    cannot start, as when the process is out of threads) left the follower's and the
    event tail's threads running, their Redis connections open, and the engine waiting
    for a review turn that never comes."""
    _, log = shared
    engine = kit.open_engine(kit.settings(event_log=log))
    name = f"fyp-test-follower-{uuid.uuid4().hex[:8]}"  # (its connections, in CLIENT LIST)
    named = engine.settings.model_copy(update={"event_log": f"{log}&client_name={name}"})

    def no_thread(self: ReviewLease) -> NoReturn:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(ReviewLease, "start", no_thread)

    def alive() -> Counter[str]:
        names = ("fyp-changes", "fyp-event-tail")
        return Counter(t.name for t in threading.enumerate() if t.name in names)

    before = alive()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        follow_changes(engine, named, lambda end: None)
    assert alive() == before
    assert engine.moderator.review_turn is None
    client = shared_redis(lambda why: pytest.fail(why))

    def connected() -> list[dict[str, Any]]:
        return [c for c in client.client_list() if c["name"] == name]

    try:
        deadline = time.monotonic() + 2.0  # (the server drops a closed client at its next loop)
        while connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert connected() == []
    finally:
        client.close()
