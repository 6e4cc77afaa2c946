"""Checkpoints: restart = the last checkpoint + the rest of the log, and that learns every
event exactly once — the state equals a replay of the whole log from the start, also
after ``kill -9`` in the middle of ingestion and training."""

from __future__ import annotations

import heapq
import os
import pickle
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from fyp.config import Settings, load_settings
from fyp.engine import CHECKPOINT_FILE, Engine
from fyp.state.updater import Example
from fyp.storage import checkpoint as checkpoint_module
from fyp.storage.checkpoint import CAN_FORK, read_checkpoint
from fyp.types import Video
from server_process import Server

NOW = 1_700_000_000_000
MODEL = {
    "enabled": True,
    "warmup_examples": 500,
    "retrieval_warmup": 100,
    "ranker_batch": 64,
    "retrieval_batch": 32,
    "min_count": 1,
}


def _settings(data: Path) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data,
            "model": MODEL,
            "privacy": {"require_registered_users": False},
        },
        environ={},
    )


def _videos() -> list[Video]:
    return [
        Video(f"v{i}", f"c{i % 15}", 20_000, hashtags=(f"t{i % 6}",), created_at=NOW - 86_400_000)
        for i in range(300)
    ]


def _events(start: int, n: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    out: list[dict[str, object]] = []
    for k in range(start, start + n):
        u, v = int(rng.integers(0, 50)), int(rng.integers(0, 300))
        out.append(
            {
                "event_id": f"e{k}",
                "user_id": f"u{u}",
                "video_id": f"v{v}",
                "type": "view",
                "ts": NOW - 7_200_000 + k * 1_000,
                "watch_ms": 20_000 if (v % 15) % 2 == u % 2 else 400,
            }
        )
        if (v % 15) % 2 == u % 2 and rng.random() < 0.2:
            out.append({**out[-1], "event_id": f"e{k}-like", "type": "like"})
            del out[-1]["watch_ms"]
    return out


def _learned(settings: Settings, n: int, seed: int) -> Engine:
    """An engine on ``settings`` that has learned ``n`` views of the test catalog."""
    engine = Engine.open(settings, clock=lambda: NOW)
    engine.upsert_videos(_videos())
    assert not engine.ingest(_events(0, n, seed=seed), now=NOW).rejected
    engine.learn()
    return engine


def _full_disk(path: Path, payload: dict[str, object]) -> int:
    """A write_checkpoint for a disk with no space left."""
    raise OSError(28, "No space left on device")


def _fingerprint(engine: Engine) -> dict[str, object]:
    """What learning produced: the log offset, the first ranker, the learned models."""
    models = engine.models
    assert models is not None
    return {
        "offset": engine.state.applied_offset,
        "first_ranker": engine.state.ranker.weights.tolist(),
        "first_examples": engine.state.ranker.examples_seen,
        "users": sorted(engine.state.users),
        "views": engine.state.stats.views[: len(engine.catalog)].tolist(),
        "creators_and_hashtags": [  # every counted row, by code
            {code: row for code, row in enumerate(table.counts.tolist()) if any(row)}
            for table in (engine.state.groups.creators, engine.state.groups.hashtags)
        ],
        "ranker_examples": models.ranker.examples_seen,
        "ranker_net": [p.detach().numpy().tolist() for p in models.ranker.net.parameters()],
        "ranker_users": sorted(models.ranker.tables["user"].ids()),
        "retrieval_positives": models.retrieval.positives_seen,
        "retrieval_tower": [
            p.detach().numpy().tolist() for p in models.retrieval.item_tower.parameters()
        ],
    }


def test_restart_from_a_checkpoint_equals_a_full_replay(tmp_path: Path) -> None:
    engine = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    assert not engine.ingest(_events(0, 2_000, seed=1), now=NOW).rejected
    engine.learn()
    assert engine.checkpoints.write() > 0
    assert engine.checkpoints.offset == engine.state.applied_offset
    # More events after the checkpoint, learned by the live engine too.
    engine.ingest(_events(2_000, 1_500, seed=2), now=NOW)
    engine.learn()
    live = _fingerprint(engine)
    groups = engine.state.groups
    assert groups.creators.counts.any() and groups.hashtags.counts.any()  # compared below
    engine.close()

    restored = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    replayed = Engine.open(_settings(tmp_path), clock=lambda: NOW, from_checkpoint=False)
    try:
        assert restored.checkpoints.offset > 0 and replayed.checkpoints.offset == 0
        assert restored.models is not None and restored.models.ranker.warm
        assert _fingerprint(restored) == _fingerprint(replayed) == live
        # The index is rebuilt from the restored towers, and it serves.
        assert len(restored.models.index) == 300
        assert len(restored.feed("u1", count=10, now=NOW).items) == 10
    finally:
        restored.close()
        replayed.close()


# Late actions: a like or share arrives DELAYS_S seconds after its view (as many log
# positions later, one view a second): at once; within the label window; after it, when
# the example has closed and a corrected copy is learned; past the late window, when the
# action opens an example of its own (never learned: it has no view).
LATE_RANKER = {"label_window_s": 60.0, "late_window_s": 300.0}
DELAYS_S = (0, 20, 120, 400)


def _late_settings(data: Path) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data,
            "model": MODEL,
            "ranker": LATE_RANKER,
            "privacy": {"require_registered_users": False},
        },
        environ={},
    )


def _late_stream(n: int, seed: int) -> list[dict[str, object]]:
    """``n`` views of 50 users, and likes and shares arriving after their views (see
    DELAYS_S), in log order."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, object]] = []
    later: list[tuple[int, int, dict[str, object]]] = []  # (log position, tiebreak, event)
    for k in range(n):
        u, v = int(rng.integers(0, 50)), int(rng.integers(0, 300))
        ts = NOW - 7_200_000 + k * 1_000
        liked = (v % 15) % 2 == u % 2
        out.append(
            {
                "event_id": f"e{k}",
                "user_id": f"u{u}",
                "video_id": f"v{v}",
                "type": "view",
                "ts": ts,
                "watch_ms": 20_000 if liked else 400,
            }
        )
        if liked and rng.random() < 0.5:
            delay = int(rng.choice(DELAYS_S))
            action = str(rng.choice(["like", "share"]))
            late = {
                **out[-1],
                "event_id": f"e{k}-{action}",
                "type": action,
                "ts": ts + delay * 1_000,
            }
            del late["watch_ms"]
            heapq.heappush(later, (k + delay, k, late))
        while later and later[0][0] <= k:
            out.append(heapq.heappop(later)[2])
    out.extend(e for _, _, e in sorted(later))
    return out


def _plain(value: object) -> object:
    """Tensors, arrays and containers of them as lists and dicts, to compare with ==."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _example(e: Example) -> tuple[object, ...]:
    return (e.user_id, e.row, e.ts, e.seq, e.labels.tolist(), e.viewed, e.late)


def _whole(engine: Engine) -> dict[str, object]:
    """Everything learning and serving keep in memory, to compare a restart with a full
    replay: the state, the examples open, closed and queued, the models' parameters,
    optimizers and queues, the exposures and what each user was served."""
    state, models = engine.state, engine.models
    assert models is not None
    return {
        **_fingerprint(engine),
        "late_corrections": state.late_corrections,
        "pending": sorted((u, *_example(e)) for u, e in state._pending.items()),
        "closed": [(u, *_example(e)) for u, e in state._closed.items()],
        "examples": [_example(e) for e in state._examples],
        "rank_queue": [
            (x.user_id, x.video_id, x.ts, x.labels.tolist()) for x in models._rank_queue
        ],
        "retrieval_queue": [(x.user_id, x.row, x.ts) for x in models._retrieval_queue],
        "ranker": _plain(models.ranker.state_dict()),
        "retrieval": _plain(models.retrieval.state_dict()),
        "exposures": state.stats.exposures[: len(engine.catalog)].tolist(),
        "served": {u: list(user.served) for u, user in sorted(state.users.items())},
    }


def test_restart_mid_queue_with_late_actions_equals_a_full_replay(tmp_path: Path) -> None:
    """The checkpoint is taken with the models' batches queued, examples open and closed
    ones remembered, and late likes and shares after it correct examples closed before
    it; feeds are served before and after it. Restarting from it and replaying the rest
    must give what a replay of the whole log gives.

    Mutations it catches (each passes every other checkpoint test): ``Engine._restore`` clearing
    the closed-example memory (``state._closed.clear()``: the late corrections after the
    checkpoint are lost), or not rebuilding the exposures from the impressions (dropping
    its ``_restore_serving_memory()``: what was served before the restart is forgotten).
    It found a defect: a late correction set its label on the closed example itself, which
    a full replay had not learned yet where the live engine had (see LogState)."""
    stream = _late_stream(2_400, seed=7)
    cut = len(stream) // 2
    engine = Engine.open(_late_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    assert not engine.ingest(stream[:cut], now=NOW).rejected
    engine.learn(train=False)  # the models' batches stay queued, as the server leaves them
    for u in range(0, 50, 5):
        assert engine.feed(f"u{u}", count=10, now=NOW).items
    models = engine.models
    assert models is not None and len(models._rank_queue) >= MODEL["ranker_batch"]
    assert engine.state._pending and engine.state._closed
    corrections_before = engine.state.late_corrections
    assert engine.checkpoints.write() > 0
    assert not engine.ingest(stream[cut:], now=NOW).rejected
    engine.learn()
    for u in range(2, 50, 5):
        assert engine.feed(f"u{u}", count=10, now=NOW).items
    # Late corrections after the checkpoint, of examples closed before it.
    assert engine.state.late_corrections > corrections_before
    live = _whole(engine)
    engine.close()

    restored = Engine.open(_late_settings(tmp_path), clock=lambda: NOW)
    replayed = Engine.open(_late_settings(tmp_path), clock=lambda: NOW, from_checkpoint=False)
    try:
        assert restored.checkpoints.offset > 0 and replayed.checkpoints.offset == 0
        whole = _whole(restored)
        assert whole == _whole(replayed)
        assert whole == live
    finally:
        restored.close()
        replayed.close()


def test_a_checkpoint_of_other_settings_is_not_used(tmp_path: Path) -> None:
    engine = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    engine.ingest(_events(0, 500, seed=3), now=NOW)
    engine.learn()
    engine.checkpoints.write()
    engine.close()
    other = load_settings(
        overrides={"data_dir": tmp_path, "model": {**MODEL, "ranker_batch": 32}}, environ={}
    )
    reopened = Engine.open(other, clock=lambda: NOW)
    try:
        assert reopened.checkpoints.offset == 0  # replayed from the start instead
        assert reopened.state.applied_offset == engine.state.applied_offset
    finally:
        reopened.close()


@pytest.mark.slow
def test_kill_9_mid_training_then_restart_learns_every_event_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fyp.toml"
    model = "\n".join(f"{k} = {str(v).lower()}" for k, v in MODEL.items())
    # The server that trains in process (a learner process's kill -9:
    # tests/learning/test_learner.py).
    config.write_text(
        f"checkpoint_every_events = 700\n[model]\n{model}\nlearner = 'in_process'\n"
        "[privacy]\nrequire_registered_users = false\n"
    )
    engine = Engine.open(load_settings(config, {"data_dir": data}, environ={}))
    engine.upsert_videos(_videos())
    engine.close()

    server = Server(data, tmp_path / "server.log", config=config)
    try:
        server.wait_ready()
        sent = 0
        acknowledged = 0
        stop = threading.Event()

        def post_forever() -> None:
            nonlocal sent, acknowledged
            with server.client(10.0) as client:
                while not stop.is_set():
                    batch = _events(sent, 100, seed=sent)
                    sent += 100
                    try:
                        resp = client.post("/v1/events", json={"events": batch})
                    except httpx.TransportError:
                        return
                    if resp.status_code == 200:
                        acknowledged += resp.json()["accepted"]

        poster = threading.Thread(target=post_forever, daemon=True)
        poster.start()
        deadline = time.monotonic() + 60
        while not (data / CHECKPOINT_FILE).is_file() or acknowledged < 4_000:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        server.kill9()  # mid-ingestion and mid-training
        stop.set()
        poster.join(timeout=10)
    finally:
        server.stop()

    # The restarted engine: the last checkpoint that survived, plus the rest of the log.
    settings = load_settings(config, {"data_dir": data}, environ={})
    restarted = Engine.open(settings)
    from_scratch = Engine.open(settings, from_checkpoint=False)
    try:
        assert restarted.checkpoints.offset > 0
        assert restarted.state.applied_offset == restarted.event_log.last_offset()
        assert restarted.event_log.count() >= acknowledged
        assert _fingerprint(restarted) == _fingerprint(from_scratch)
    finally:
        restarted.close()
        from_scratch.close()


def test_the_fast_pickles_of_videos_and_affinities_keep_every_field() -> None:
    """Video and Affinity pickle by their fields (a checkpoint holds hundreds of
    thousands): every field comes back, and a field added later cannot be forgotten."""
    import dataclasses
    import pickle

    from fyp.state.users import Affinity
    from fyp.types import Video

    video = Video(
        "v1", "c1", 12_000, "s1", ("#a", "#b"), "caption", "en", ("eu",), 1_700_000_000_000,
        ("mature",),
    )  # fmt: skip
    affinity = Affinity(3.5, 1.25, 1_700_000_000_123)
    for obj in (video, affinity):
        back = pickle.loads(pickle.dumps(obj, protocol=5))
        assert back == obj and type(back) is type(obj)
        assert len(obj.__reduce__()[1]) == len(dataclasses.fields(obj))


def test_a_videos_prepared_text_survives_a_pickle() -> None:
    import pickle

    from fyp.safety.text import VideoText

    text = VideoText("Crème brûlée, at home!", ("#Food", "#cooking"))
    back = pickle.loads(pickle.dumps(text, protocol=5))
    assert (back.caption, back.tags) == (text.caption, text.tags)
    assert back.matches_keyword("creme brulee") and back.matches_keyword("food")


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_background_checkpoint_holds_the_state_as_of_its_start(tmp_path: Path) -> None:
    engine = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    assert not engine.ingest(_events(0, 2_000, seed=1), now=NOW).rejected
    engine.learn()
    at_fork = engine.state.applied_offset
    assert engine.checkpoints.start()
    assert engine.checkpoints.writing and not engine.checkpoints.start()  # one at a time
    # The engine goes on learning while the child writes; none of that is in the file.
    engine.ingest(_events(2_000, 1_500, seed=2), now=NOW)
    engine.learn()
    assert engine.state.applied_offset > at_fork
    engine.checkpoints.settle()
    assert not engine.checkpoints.writing and engine.checkpoints.offset == at_fork
    assert engine.checkpoints.poll() is None  # nothing left to reap
    live = _fingerprint(engine)
    engine.close()

    restored = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    replayed = Engine.open(_settings(tmp_path), clock=lambda: NOW, from_checkpoint=False)
    try:
        assert restored.checkpoints.offset == at_fork  # restored from it, then replayed
        assert _fingerprint(restored) == _fingerprint(replayed) == live
    finally:
        restored.close()
        replayed.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_failed_background_checkpoint_keeps_the_old_one_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path).model_copy(update={"checkpoint_every_events": 100})
    engine = _learned(settings, 500, 3)
    try:
        engine.checkpoints.write()
        first = engine.checkpoints.offset
        engine.ingest(_events(500, 500, seed=4), now=NOW)
        engine.learn()

        # The child's write fails (it runs the module's write_checkpoint).
        monkeypatch.setattr(checkpoint_module, "write_checkpoint", _full_disk)
        assert engine.checkpoints.start()
        assert engine.checkpoints.poll(wait=True) is False
        assert engine.checkpoints.offset == first  # the old checkpoint stands
        assert read_checkpoint(tmp_path / CHECKPOINT_FILE)["offset"] == first  # type: ignore[index]
        assert not engine.checkpoints.due()  # not at once again: a short wait first
        monkeypatch.setattr(engine.checkpoints, "retry_at", 0.0)
        assert engine.checkpoints.due()
        monkeypatch.undo()
        assert engine.checkpoints.start() and engine.checkpoints.poll(wait=True) is True
        assert engine.checkpoints.offset == engine.state.applied_offset > first
    finally:
        engine.close()


def test_a_synchronous_checkpoint_waits_for_a_background_one(tmp_path: Path) -> None:
    """Else the child's older snapshot could land after the newer one (an erasure's)."""
    engine = _learned(_settings(tmp_path), 500, 5)
    try:
        engine.checkpoints.start()
        engine.ingest(_events(500, 300, seed=6), now=NOW)
        engine.learn()
        engine.checkpoints.write()
        assert not engine.checkpoints.writing
        on_disk = read_checkpoint(tmp_path / CHECKPOINT_FILE)
        assert on_disk is not None and on_disk["offset"] == engine.state.applied_offset
    finally:
        engine.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_checkpoint_child_reaped_elsewhere_counts_as_failed(tmp_path: Path) -> None:
    """A SIGCHLD handler that reaps it leaves nothing to wait for: the writer is let go
    (else no checkpoint would ever start again) and the next one retries."""
    engine = _learned(_settings(tmp_path), 300, 7)
    try:
        assert engine.checkpoints.start()
        assert engine.checkpoints.writer_pid is not None
        os.waitpid(engine.checkpoints.writer_pid, 0)  # someone else reaps it
        assert engine.checkpoints.poll() is False
        assert not engine.checkpoints.writing and engine.checkpoints.offset == 0
    finally:
        engine.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_fork_that_fails_is_retried_later_not_at_every_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path).model_copy(update={"checkpoint_every_events": 100})
    engine = _learned(settings, 300, 8)
    try:

        def no_memory() -> int:
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(os, "fork", no_memory)
        assert engine.checkpoints.due()
        assert engine.checkpoints.start() is False  # reported, not raised into the loop
        assert not engine.checkpoints.writing and not engine.checkpoints.due()  # backs off
        monkeypatch.undo()
        monkeypatch.setattr(engine.checkpoints, "retry_at", 0.0)
        assert engine.checkpoints.due() and engine.checkpoints.start()
        assert engine.checkpoints.poll(wait=True) is True
    finally:
        engine.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_checkpoint_child_past_its_time_is_killed_and_its_partial_file_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that hangs (say on a lock another thread held at the fork) must not keep
    an erasure, which waits for it, or every later checkpoint waiting forever; nor leave
    its half-written snapshot of the users on disk."""
    settings = _settings(tmp_path).model_copy(update={"checkpoint_timeout_s": 0.5})
    engine = _learned(settings, 500, 9)
    partial = tmp_path / (CHECKPOINT_FILE + ".tmp")
    try:

        def hangs(path: Path, payload: dict[str, object]) -> int:
            partial.write_bytes(b"half a snapshot of u1's tastes")
            time.sleep(60)  # killed long before: else the test fails below, late
            return 0

        monkeypatch.setattr(checkpoint_module, "write_checkpoint", hangs)
        assert engine.checkpoints.start()
        assert engine.checkpoints.poll() is None  # running, within its time
        for _ in range(100):  # the child has begun writing
            if partial.exists():
                break
            time.sleep(0.01)
        assert partial.exists()
        assert engine.checkpoints.poll(wait=True) is False  # killed at its deadline
        assert not engine.checkpoints.writing and engine.checkpoints.offset == 0
        assert engine.checkpoints.error is not None and "killed" in engine.checkpoints.error
        assert not partial.exists()
        monkeypatch.undo()
        # The next ones work, and an erasure goes through.
        monkeypatch.setattr(engine.checkpoints, "retry_at", 0.0)
        assert engine.checkpoints.start() and engine.checkpoints.poll(wait=True) is True
        assert engine.checkpoints.error is None
        assert engine.rights.erase_user("u1", "test").checkpoint_rewritten
    finally:
        engine.close()


def test_open_removes_a_partial_checkpoint_a_killed_writer_left(tmp_path: Path) -> None:
    engine = _learned(_settings(tmp_path), 300, 10)
    engine.checkpoints.write()
    offset = engine.checkpoints.offset
    engine.close()
    partial = tmp_path / (CHECKPOINT_FILE + ".tmp")
    partial.write_bytes(b"a snapshot that never landed")
    reopened = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    try:
        assert not partial.exists()
        assert reopened.checkpoints.offset == offset  # the landed one is used
    finally:
        reopened.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_feeds_are_served_while_an_erasure_rewrites_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite is written by a forked child from the state without the user, not
    pickled under the engine's lock (which stopped every feed for the whole rewrite);
    the erasure still answers only once the rewritten checkpoint has landed."""
    engine = _learned(_settings(tmp_path), 800, 11)
    engine.checkpoints.write()
    gone = engine.pseudonym("u3")
    assert gone in read_checkpoint(tmp_path / CHECKPOINT_FILE)["state"].users  # type: ignore[index]
    release = tmp_path / "release"
    write = checkpoint_module.write_checkpoint

    def held(path: Path, payload: dict[str, object]) -> int:
        while not release.exists():  # the child writes once the test says so
            time.sleep(0.01)
        return write(path, payload)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", held)
    erasure = threading.Thread(target=engine.rights.erase_user, args=("u3", "test"))
    try:
        erasure.start()
        while not engine.checkpoints.writing:  # the child is forked: the rewrite is on
            assert erasure.is_alive()
            time.sleep(0.01)
        # A feed is served now, while the erasure waits for its checkpoint.
        assert len(engine.feed("u1", count=5, now=NOW).items) == 5
        assert erasure.is_alive()
        release.touch()
        erasure.join(timeout=60)
        assert not erasure.is_alive()
        on_disk = read_checkpoint(tmp_path / CHECKPOINT_FILE)
        assert on_disk is not None and gone not in on_disk["state"].users
        assert not engine.checkpoints.writing and engine.checkpoints.error is None
    finally:
        release.touch()
        erasure.join(timeout=60)
        engine.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_an_erasure_whose_rewrite_fails_deletes_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _learned(_settings(tmp_path), 500, 12)
    engine.checkpoints.write()

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", _full_disk)
    try:
        with pytest.raises(OSError, match="could not be written"):
            engine.rights.erase_user("u3", "test")
        # The old checkpoint held the user: gone, and a restart replays the log instead.
        assert not (tmp_path / CHECKPOINT_FILE).exists() and engine.checkpoints.offset == 0
        monkeypatch.undo()
        # Asked again, it goes through (nothing left to rewrite).
        assert not engine.rights.erase_user("u3", "test").checkpoint_rewritten
    finally:
        engine.close()


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_a_checkpoint_child_holds_none_of_the_servers_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else a client connection the server closes stays open (no FIN) until the child
    has finished writing."""
    engine = _learned(_settings(tmp_path), 300, 13)
    listing = tmp_path / "child-fds"
    write = checkpoint_module.write_checkpoint

    def listed(path: Path, payload: dict[str, object]) -> int:
        listing.write_text(" ".join(os.listdir("/proc/self/fd")))
        return write(path, payload)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", listed)
    with socket.create_server(("127.0.0.1", 0)) as server:
        try:
            assert engine.checkpoints.start() and engine.checkpoints.poll(wait=True) is True
            # The listing's own descriptor and the one write_text opened are all it had.
            in_child = {int(fd) for fd in listing.read_text().split()}
            assert server.fileno() not in in_child
            assert len(in_child - {0, 1, 2}) <= 2, in_child
            assert server.fileno() in {int(fd) for fd in os.listdir("/proc/self/fd")}
        finally:
            engine.close()


def test_a_checkpoint_written_by_newer_code_is_replayed_not_loaded(tmp_path: Path) -> None:
    """Newer code's checkpoint (a later format, classes this code lacks) reads as an
    unknown format: the engine replays the log, where unpickling it would fail at every
    restart."""
    engine = _learned(_settings(tmp_path), 500, seed=3)
    engine.checkpoints.write()
    engine.close()
    path = tmp_path / CHECKPOINT_FILE
    with path.open("wb") as f:
        pickle.dump({checkpoint_module._HEADER_KEY: checkpoint_module.FORMAT + 1}, f, protocol=2)
        f.write(b"\x80\x02cfyp.nowhere\nStateOfTheFuture\nq\x00)\x81q\x01.")
    reopened = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    try:
        assert reopened.checkpoints.offset == 0  # replayed from the start instead
        assert _fingerprint(reopened) == _fingerprint(engine)
    finally:
        reopened.close()
