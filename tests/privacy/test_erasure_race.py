"""Erasure cannot be outrun: from the moment it is accepted nothing new of the user is
stored or learned, whatever runs beside it (writers posting their events and asking
their feeds, the learning loop, checkpoints); answered, it leaves no byte of them in any
file; a kill at any step of it ends, after a restart, with it completed; and the id,
created again, is a new and empty user."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fyp.config import Settings, load_settings
from fyp.engine import CHECKPOINT_FILE, Engine
from fyp.privacy.residency import ResidencyError
from fyp.privacy.rights import RESUMED_ACTOR, ErasureInProgressError
from fyp.storage.checkpoint import CAN_FORK
from fyp.types import Impression, Video, now_ms
from fyp.users.controls import ControlsIn, ProfileIn
from server_process import Server

MODEL = {
    "enabled": True,
    "warmup_examples": 50,
    "retrieval_warmup": 20,
    "ranker_batch": 16,
    "retrieval_batch": 8,
    "min_count": 1,
}
# Distinctive ids, so that a byte scan cannot match anything else.
VICTIMS = [f"gone-{i:02d}-7f3a" for i in range(20)]
KEPT = ["kept-a-c2e1", "kept-b-91d4"]
OVER_HTTP = VICTIMS[:8]  # (a server process on a shared machine: fewer, same race)
N_VIDEOS = 60
VIEWS = 150  # of each user, where two are prepared
ONE, OTHER = "gone-one-3b9e", "kept-one-a7c0"
START = now_ms() - 3_600_000  # the first event's time: recent, so retention keeps it


def _settings(data: Path, **overrides: Any) -> Settings:
    return load_settings(
        overrides={"data_dir": data, "model": MODEL, "checkpoint_every_events": 50, **overrides},
        environ={},
    )


def _view(user: str, event_id: str, k: int) -> dict[str, object]:
    return {
        "event_id": event_id,
        "user_id": user,
        "video_id": f"v{k % N_VIDEOS}",
        "type": "view",
        "ts": START + k,
        "watch_ms": 20_000 if k % 3 else 500,
    }


def _prepare(data: Path, users: list[str], views: int = 30) -> Engine:
    """An engine that knows ``users`` (created here), has learned ``views`` views of each
    (their embedding rows hold learned vectors: the first ranker passes its examples on
    in micro-batches of 256, so at least that many in all) and served them feeds, with
    a checkpoint."""
    engine = Engine.open(_settings(data))
    engine.upsert_videos(
        [
            Video(f"v{i}", f"c{i % 6}", 20_000, hashtags=(f"t{i % 4}",), created_at=START)
            for i in range(N_VIDEOS)
        ]
    )
    for user in users:
        engine.put_user(user, ProfileIn(age_band="18+"))
    events = [
        _view(user, f"{user}-{k}", 7 * k + u) for k in range(views) for u, user in enumerate(users)
    ]
    assert engine.ingest(events).accepted == len(events)
    engine.learn()
    for user in users:
        assert engine.feed(user, 5).items
    engine.checkpoints.write()
    return engine


def _needles(engine: Engine, users: list[str], deployments: Any) -> list[str | bytes]:
    """What no file may hold once ``users`` are erased: their ids, their pseudonyms and
    the bytes of their learned embedding rows."""
    out: list[str | bytes] = []
    for user in users:
        pid = engine.pseudonym(user)
        vectors = deployments.vector_bytes(engine, pid)
        assert vectors, f"{user} has no learned row to look for"
        out += [user, pid, *vectors]
    return out


def _assert_new_and_empty(engine: Engine, user: str) -> None:
    """Created again, the id is a new user: nothing of the old one comes with it."""
    _, created = engine.put_user(user, ProfileIn())
    assert created
    doc = engine.rights.export_user(user, "test")
    assert doc["events"] == [] and doc["impressions"] == []
    assert doc["controls"]["mute_keywords"] == []
    assert doc["learned_vectors"]["ranker"] is None
    assert doc["learned_vectors"]["retrieval"] is None


def test_writers_beside_twenty_erasures_leave_nothing_of_the_users(
    tmp_path: Path, deployments: Any
) -> None:
    """Writers post one event per call for users being erased and ask their feeds, the
    learning step and background checkpoints run, and 20 users are erased meanwhile
    (four at a time): afterwards no file holds any of their ids, pseudonyms or learned
    vectors; every other user is intact.

    Mutation: ingesting without the tombstone check (or gate and append outside the
    lock the erasure takes), a feed that records impressions without the check under
    the engine's lock, or a learning step that learns a tombstoned user's events, each
    leave rows written during an erasure in events.db, impressions.db or the checkpoint
    (as the code before the tombstone did, for most of the 20 users)."""
    data = tmp_path / "data"
    engine = _prepare(data, VICTIMS + KEPT)
    needles = _needles(engine, VICTIMS, deployments)
    kept = [engine.pseudonym(u) for u in KEPT]
    stop = threading.Event()
    acked: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as err:
                errors.append(err)

        return run

    def writer(k: int) -> None:
        n = 0
        while not stop.is_set():
            for user in VICTIMS[k::4] + KEPT:
                n += 1
                result = engine.ingest([_view(user, f"w{k}-{n}", n)])
                acked[user] += result.accepted
                refused[user] += len(result.rejected)
                try:
                    engine.feed(user, 3)
                except (ErasureInProgressError, ResidencyError):
                    refused[user] += 1

    def learner() -> None:
        while not stop.is_set():
            engine.learn(max_events=100, train=False)
            engine.train_step()
            engine.checkpoints.poll()
            if engine.checkpoints.due():
                engine.checkpoints.start()

    erased: list[str] = []

    def eraser(k: int) -> None:
        for user in VICTIMS[k::4]:
            time.sleep(0.05)
            done = engine.rights.erase_user(user, "test")
            assert done.events > 0 and done.impressions > 0
            erased.append(user)

    background = [threading.Thread(target=guarded(lambda k=k: writer(k))) for k in range(4)]
    background.append(threading.Thread(target=guarded(learner)))
    erasers = [threading.Thread(target=guarded(lambda k=k: eraser(k))) for k in range(4)]
    for t in background:
        t.start()
    time.sleep(0.3)
    for t in erasers:
        t.start()
    for t in erasers:
        t.join(timeout=120)
    time.sleep(0.2)  # the writers go on after the last erasure answered
    stop.set()
    for t in background:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(erased) == sorted(VICTIMS)
    assert all(acked[u] > 0 and refused[u] > 0 for u in VICTIMS), (acked, refused)
    assert all(refused[u] == 0 for u in KEPT), refused

    # Each file while the engine runs, then after a clean stop (a last checkpoint).
    assert deployments.scan(data, needles) == {}
    engine.learn()
    engine.checkpoints.settle()
    engine.checkpoints.write()
    engine.close()
    assert deployments.scan(data, needles) == {}
    assert set(deployments.scan(data, kept)) == set(kept)

    again = Engine.open(_settings(data))
    try:
        for user in VICTIMS[:3]:
            _assert_new_and_empty(again, user)
        for user in KEPT:
            assert again.rights.export_user(user, "test")["events"]
    finally:
        again.close()


def test_every_user_request_is_refused_while_the_erasure_runs(tmp_path: Path) -> None:
    """Between the tombstone and the end of the erasure (here, while the checkpoint is
    rewritten), the user's events, feeds, profile, controls, why and export are refused,
    and an import's impressions and users of them are not stored.

    Mutation: dropping the tombstone check from any of ``Engine.ingest``'s gate,
    ``Engine.feed``, ``Engine.put_user``, ``Engine.home``, ``record_impressions`` or
    ``register_users`` fails this test."""
    engine = _prepare(tmp_path / "data", ["u1", "u2"], VIEWS)
    seen: list[str] = []

    def during(step: str) -> None:
        seen.append(step)
        if step != "rewritten":
            return
        assert engine.rights.erasing("u1") and not engine.rights.erasing("u2")
        result = engine.ingest([_view("u1", "late-1", 1), _view("u2", "late-2", 2)])
        assert result.accepted == 1
        assert [r.kind for r in result.rejected] == ["erasing"]
        assert "being erased" in result.rejected[0].reason
        engine.record_impressions(
            [Impression("imported-1", "u1", "v1", 0, "import", 0.0, "for_you", START)]
        )
        assert engine.register_users(["u1"]) == 0
        for call in (
            lambda: engine.feed("u1", 3),
            lambda: engine.put_user("u1", ProfileIn()),
            lambda: engine.set_controls("u1", ControlsIn(mute_keywords=["x"])),
            lambda: engine.why("u1", "v1"),
            lambda: engine.rights.export_user("u1", "test"),
            lambda: engine.rights.erase_user("u1", "test"),  # a second request, meanwhile
        ):
            with pytest.raises(ErasureInProgressError, match="u1"):
                call()
        assert engine.feed("u2", 3).items  # the others are served as ever

    engine.rights.erasure_step = during
    try:
        assert engine.rights.erase_user("u1", "test").checkpoint_rewritten
        assert "rewritten" in seen
        assert engine.event_log.for_user(engine.pseudonym("u1")) == []
        assert engine.impressions.for_user(engine.pseudonym("u1"), 100) == []
        actions = [(r.action, r.details) for r in engine.audit.records()]
        assert actions[-2][0] == "user.erase.requested"
        assert actions[-1][0] == "user.erase" and actions[-1][1]["events"] == VIEWS
        _assert_new_and_empty(engine, "u1")
    finally:
        engine.close()


def test_a_feed_that_waited_out_an_erasure_records_nothing_of_the_user(tmp_path: Path) -> None:
    """A feed request that passed the user's checks just before an erasure, then waited
    for the engine's lock through all of it, must not record impressions of the erased
    user once it gets the lock.

    Mutation: checking the user (``Engine.home``) before taking the lock in
    ``Engine.feed``, not under it, serves that feed and leaves its impressions."""
    engine = _prepare(tmp_path / "data", ["u1", "u2"], VIEWS)
    pid = engine.pseudonym("u1")
    lock = engine._lock
    main = threading.current_thread()
    waiting = threading.Event()

    class Watched:
        """The engine's lock, saying when another thread asks for it."""

        def __enter__(self) -> bool:
            if threading.current_thread() is not main:
                waiting.set()
            return lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            lock.__exit__(*exc)

    outcome: list[object] = []

    def feed() -> None:
        try:
            outcome.append(engine.feed("u1", 3))
        except (ErasureInProgressError, ResidencyError) as err:
            outcome.append(err)

    try:
        with lock:
            engine._lock = Watched()  # type: ignore[assignment]
            request = threading.Thread(target=feed)
            request.start()
            assert waiting.wait(30)  # past its checks (if any come first), at the lock
            engine.rights.erase_user("u1", "test")  # (this thread holds the lock: re-entered)
        request.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], ResidencyError), outcome
        assert engine.impressions.for_user(pid, 100) == []
        assert pid not in engine.state.users
    finally:
        engine._lock = lock
        engine.close()


def test_an_erasure_carries_out_the_refresh_the_user_asked_for_never(
    tmp_path: Path, deployments: Any
) -> None:
    """A refresh asked just before the erasure (its mark not yet carried out by the
    learning step) goes with the user: not in the state, the checkpoint or users.db.

    Mutation: removing the dropping of the user's refresh marks from
    ``LogState.erase_user`` (``state/updater.py``) leaves the mark, and with it the
    pseudonym, in the rewritten checkpoint, and fails this test."""
    data = tmp_path / "data"
    engine = _prepare(data, ["u1", "u2"], VIEWS)
    try:
        pid = engine.pseudonym("u1")
        engine.set_controls("u1", ControlsIn(refresh=True))
        assert engine.state.refresh_due()
        engine.rights.erase_user("u1", "test")
        assert deployments.scan(data, [pid]) == {}
        assert not engine.state.refresh_due()
        engine.learn()
        assert engine.state.refreshes_done == 0
    finally:
        engine.close()


# -- kill -9 at each step of the erasure ------------------------------------------------

_STEPS = ["requested", "tombstoned", "deleted", "rewriting", "rewritten", "scrubbed", "audited"]
# Run by one interpreter (fyp imported once), which forks a process per step: each opens
# the engine on its own copy of the data dir and erases the user, killed at that step.
_CRASH = """
import json, os, signal, sys
from pathlib import Path
from fyp.config import load_settings
from fyp.engine import Engine
import fyp.model.online

root, user, model = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
children = {}
for step in sys.argv[4:]:
    pid = os.fork()
    if pid == 0:
        engine = Engine.open(load_settings(overrides={
            "data_dir": root / step / "data", "model": model, "checkpoint_every_events": 50,
        }, environ={}))

        def crash(at: str, step: str = step) -> None:
            if at == step:
                os.kill(os.getpid(), signal.SIGKILL)

        engine.rights.erasure_step = crash
        engine.rights.erase_user(user, "test")
        os._exit(3)  # not reached: the kill comes first
    children[step] = pid
for step, pid in children.items():
    print(step, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.mark.skipif(not CAN_FORK, reason="the rewrite's step exists where checkpoints fork")
def test_kill_9_at_each_step_of_an_erasure_leaves_it_completed_after_a_restart(
    tmp_path: Path, deployments: Any
) -> None:
    """``fyp`` killed (SIGKILL) at each step of an erasure, then started again: an
    erasure that was accepted (its tombstone written) is completed by the start, one
    killed before is completed by asking again; either way no file holds the user's
    id, pseudonym or learned vectors, and the id created again is empty.

    Mutation: not resuming the tombstoned erasures in ``Engine.open``, or writing the
    tombstone after the rows are deleted, leaves the user's data after the restart."""
    base = tmp_path / "base"
    engine = _prepare(base / "data", [ONE, OTHER], VIEWS)
    needles = _needles(engine, [ONE], deployments)
    kept = engine.pseudonym(OTHER)
    engine.close()
    for step in _STEPS:  # each on a copy of the data dir
        subprocess.run(["cp", "-a", str(base), str(tmp_path / step)], check=True)
    run = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path), ONE, json.dumps(MODEL), *_STEPS],
        capture_output=True,
        timeout=300,
    )
    codes = dict(line.split() for line in run.stdout.decode().splitlines())
    assert codes == {step: str(-signal.SIGKILL) for step in _STEPS}, run.stderr.decode()[-3000:]

    for step in _STEPS:
        data = tmp_path / step / "data"
        again = Engine.open(_settings(data))
        try:
            if step == "requested":  # not accepted yet: asking again erases
                assert not again.rights.erasing(ONE) and again.knows_user(ONE)
                again.rights.erase_user(ONE, "test")
            assert not again.rights.erasing(ONE), step
            assert deployments.scan(data, needles) == {}, step
            assert kept in deployments.scan(data, [kept]), step
            # Requested, then completed (by the start, for an accepted one). Killed after
            # the request's record, it is asked (and recorded) again; after the
            # completion's, the start completes (and records) it once more.
            records = [(r.action, r.actor) for r in again.audit.records()]
            assert records[0] == ("user.erase.requested", "test"), (step, records)
            resumed = step != "requested"
            assert records[-1] == ("user.erase", RESUMED_ACTOR if resumed else "test"), step
            assert len(records) == (3 if step in ("requested", "audited") else 2), records
            _assert_new_and_empty(again, ONE)
        finally:
            again.close()


# -- through a real server ----------------------------------------------------------------


def test_an_erasure_over_http_is_not_outrun_by_a_writer(tmp_path: Path, deployments: Any) -> None:
    """The issue's reproduction against ``fyp serve``: for each of 8 users a client
    posts one event per request in a loop (and asks the user's feed); the user's DELETE
    comes 0.3 s into it. Every DELETE answers ``erased: true``; after a clean stop no
    file holds any of their ids, pseudonyms or learned vectors, and a user created
    again exports no events and no impressions."""
    data = tmp_path / "data"
    engine = _prepare(data, OVER_HTTP + KEPT, 40)
    needles = _needles(engine, OVER_HTTP, deployments)
    pseudonyms = {u: engine.pseudonym(u) for u in OVER_HTTP}
    engine.close()
    config = tmp_path / "fyp.toml"
    config.write_text(
        "checkpoint_every_events = 50\n[model]\n"
        + "".join(f"{k} = {str(v).lower()}\n" for k, v in MODEL.items())
    )
    server = Server(data, tmp_path / "server.log", config=config, registered_users=True)
    stop = threading.Event()
    statuses: Counter[str] = Counter()
    answers: dict[str, Any] = {}

    def write(user: str) -> None:
        with server.client() as c:
            n = 0
            while not stop.is_set():
                n += 1
                r = c.post("/v1/events", json={"events": [_view(user, f"{user}-h{n}", n)]})
                statuses[f"event {r.status_code}"] += 1
                statuses[f"feed {c.get('/v1/feed', params={'user_id': user}).status_code}"] += 1

    def erase(user: str) -> None:
        time.sleep(0.3)
        with server.client(120.0) as c:
            answers[user] = c.delete(f"/v1/users/{user}")

    try:
        server.wait_ready()
        threads = [threading.Thread(target=write, args=(u,)) for u in OVER_HTTP]
        erasers = [threading.Thread(target=erase, args=(u,)) for u in OVER_HTTP]
        for t in threads + erasers:
            t.start()
        for t in erasers:
            t.join(timeout=120)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        for user, r in answers.items():
            assert r.status_code == 200 and r.json()["erased"], (user, r.text)
        assert statuses["event 200"] > 0 and statuses["event 421"] > 0, statuses
        codes = (200, 409, 421, 422, 429)
        assert set(statuses) <= {f"{w} {s}" for w in ("event", "feed") for s in codes}
        assert deployments.scan(data, needles) == {}
        with server.client() as c:  # (their pseudonyms come back with them)
            for user in OVER_HTTP[:2]:
                assert c.put(f"/v1/users/{user}", json={}).status_code == 201
                doc = c.get(f"/v1/users/{user}/export").json()
                assert doc["events"] == [] and doc["impressions"] == [], user
    finally:
        stop.set()
        server.stop()
    back = {u for u in OVER_HTTP[:2]} | {pseudonyms[u] for u in OVER_HTTP[:2]}
    assert deployments.scan(data, [n for n in needles if n not in back]) == {}
    assert (data / CHECKPOINT_FILE).exists()
