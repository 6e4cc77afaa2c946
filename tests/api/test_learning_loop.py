"""The server's learning loop: a training backlog does not hold back new events (what a
user just did reaches the state after a couple of training steps, not after all of
them), the backlog is still worked off once no events are waiting, the loop stops when
told, whatever it was doing, and a checkpoint a start made due is written before the
server serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fastapi.testclient import TestClient

from fyp.api.app import MIN_STEPS_PER_SLICE, LearningLoop, create_app
from fyp.config import load_settings
from fyp.engine import CHECKPOINT_FILE, Engine
from fyp.storage import checkpoint as checkpoint_module
from fyp.storage.checkpoint import CAN_FORK
from fyp.types import Video
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

NOW = 1_700_000_000_000
# A stop that takes this long hangs: it waits for the next wake, up to RETENTION_EVERY_S.
HANG_S = 30.0


def engine_with_models(data_dir: Path) -> Engine:
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "privacy": {"require_registered_users": False},
            "model": {"enabled": True, "min_count": 1, "retrieval_warmup": 2},
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    engine.upsert_videos([Video(f"v{i}", f"c{i % 9}", 20_000, created_at=NOW) for i in range(600)])
    return engine


def view(n: int, user: str, video: int) -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "video_id": f"v{video}",
        "type": "view",
        "ts": NOW - 60_000 + n,
        "watch_ms": 20_000,
    }


def test_new_events_cut_in_before_a_training_backlog(tmp_path: Path) -> None:
    engine = engine_with_models(tmp_path)
    models = engine.models
    assert models is not None
    steps_taken = 0
    step = models.step

    def counted() -> bool:
        nonlocal steps_taken
        did = step()
        steps_taken += did
        return did

    models.step = counted  # type: ignore[method-assign]

    async def scenario() -> tuple[int, int, int]:
        loop = LearningLoop(engine)
        try:
            return await run(loop)
        finally:
            async with asyncio.timeout(10):  # a hang fails the test rather than freezing it
                await loop.stop()

    async def run(loop: LearningLoop) -> tuple[int, int, int]:
        await asyncio.sleep(0.05)  # the start-up catch-up: nothing to do
        # A backlog of training (a whole-catalog index refresh: a step per chunk), and no
        # event: the loop, woken, works on it.
        models._refresh_rows = list(range(600)) * 40
        backlog = len(models._refresh_rows) // 512
        loop.wake()
        for _ in range(200):
            await asyncio.sleep(0)
            if steps_taken >= 3:
                break
        assert steps_taken >= 3, "the loop did not take up the training backlog"
        # An event arrives in the middle of it (as POST /v1/events wakes the loop).
        engine.ingest([view(0, "u1", 5)], now=NOW)
        loop.wake()
        at_ingest = steps_taken
        for _ in range(200):  # the loop yields after every step
            await asyncio.sleep(0)
            if engine.pending() == 0:
                break
        assert engine.pending() == 0
        applied_after = steps_taken - at_ingest
        for _ in range(5_000):  # then the rest of the backlog, with no further wake
            await asyncio.sleep(0)
            if not engine.training_due():
                break
        return backlog, applied_after, len(models._refresh_rows)

    try:
        backlog, applied_after, left = asyncio.run(scenario())
    finally:
        engine.close()
    # Applied (the log's end reached) after a couple of steps, not behind the backlog...
    assert applied_after <= MIN_STEPS_PER_SLICE + 1 < backlog / 10
    assert left == 0  # ...which still got done, without a further wake


def test_the_loop_stops_even_as_it_is_woken(tmp_path: Path) -> None:
    """A stop right after a wake: the loop's wait for its wake has just completed (the
    wake's task ran, the loop's has not resumed yet) when the cancel lands. On Python
    3.11 ``asyncio.wait_for`` returns the result then and swallows the cancel, so the
    loop went on to wait for the next wake (up to RETENTION_EVERY_S).

    Mutation it catches: the loop's wait through ``asyncio.wait_for(self._wake.wait(),
    idle_s)`` again. No wall-clock bound (one flaked on a loaded machine): the hang is
    told by the test's own deadline expiring, which a slow machine cannot reach (the hang
    is an hour; stop, with nothing to learn, returns at the loop's next resumption). That
    deadline's cancel reaches the loop's task through stop's await and ends it, and stop
    swallows the CancelledError: so stop returns either way, and what tells is whether
    the deadline expired, and whether the loop's task had ended on its own."""
    engine = engine_with_models(tmp_path)

    async def scenario() -> tuple[bool, bool]:
        loop = LearningLoop(engine)
        await asyncio.sleep(0.05)  # idle, waiting for a wake
        loop.wake()
        await asyncio.sleep(0)  # the wait's own task completes; the loop's is scheduled
        async with asyncio.timeout(HANG_S) as deadline:
            await loop.stop()
        return deadline.expired(), loop._task.done()

    try:
        expired, done = asyncio.run(scenario())
    finally:
        engine.close()
    assert not expired, f"stop() hung until the test's deadline ({HANG_S} s)"
    assert done


def test_a_start_that_replayed_past_a_checkpoint_writes_one_before_serving(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        overrides={
            "data_dir": tmp_path,
            "privacy": {"require_registered_users": False},
            "checkpoint_every_events": 5,
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    engine.upsert_videos([Video(f"v{i}", "c", 20_000, created_at=NOW) for i in range(20)])
    engine.ingest([view(n, f"u{n}", n) for n in range(8)], now=NOW)
    engine.learn()  # as a start's replay: 8 events applied, none checkpointed
    assert engine.checkpoints.due() and engine.checkpoints.offset == 0
    try:
        with TestClient(create_app(settings, engine)):
            # Written during start-up, before any request (not by the loop's first slice).
            assert engine.checkpoints.offset == engine.state.applied_offset
            assert (tmp_path / CHECKPOINT_FILE).is_file()
            assert not engine.checkpoints.due()
    finally:
        engine.close()


def _queue_peak(tmp_path: Path, max_queued_batches: int) -> tuple[int, int]:
    """The loop over a burst of 3,000 views with tiny batches (training far slower than
    the stream): the most examples ever queued after a slice, and how many are queued
    at the end (with everything learned)."""
    settings = load_settings(
        overrides={
            "data_dir": tmp_path,
            "privacy": {"require_registered_users": False},
            "model": {
                "enabled": True,
                "min_count": 1,
                "ranker_batch": 8,
                "retrieval_batch": 8,
                "max_queued_batches": max_queued_batches,
            },
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    engine.upsert_videos([Video(f"v{i}", f"c{i % 9}", 20_000, created_at=NOW) for i in range(600)])
    models = engine.models
    assert models is not None
    peak = 0
    learn = engine.learn

    def watched(*args: object, **kwargs: object) -> int:
        nonlocal peak
        done = learn(*args, **kwargs)  # type: ignore[arg-type]
        peak = max(peak, len(models._rank_queue), len(models._retrieval_queue))
        return done

    engine.learn = watched  # type: ignore[method-assign]
    burst = [
        {**view(n, f"u{n % 300}", (n * 7) % 600), "ts": NOW - 4 * 3_600_000 + n * 1_000}
        for n in range(3_000)
    ]
    assert not engine.ingest(burst, now=NOW).rejected

    async def scenario() -> None:
        loop = LearningLoop(engine)
        try:
            for _ in range(100_000):
                await asyncio.sleep(0)
                if engine.pending() == 0 and not engine.training_due():
                    return
            raise AssertionError("the loop did not learn the burst")
        finally:
            async with asyncio.timeout(10):
                await loop.stop()

    try:
        asyncio.run(scenario())
        return peak, len(models._rank_queue)
    finally:
        engine.close()


def test_a_training_backlog_holds_new_events_in_the_log_not_in_memory(tmp_path: Path) -> None:
    """A stream faster than training: with the bound, the examples queued stay within
    max_queued_batches batches (plus what one slice of events adds); without it they pile
    up. Either way every event is learned."""
    bounded, left = _queue_peak(tmp_path / "bounded", max_queued_batches=2)
    unbounded, _ = _queue_peak(tmp_path / "unbounded", max_queued_batches=10_000)
    assert bounded <= 2 * 8 + 256 < unbounded
    assert left < 8  # all trained but a remainder short of a batch


@pytest.mark.skipif(not CAN_FORK, reason="background checkpoints fork (Linux only)")
def test_healthz_reports_a_failed_checkpoint_until_one_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only until the next slice of events goes through: that says nothing about
    the checkpoint file (before, a slice cleared it within milliseconds)."""
    settings = load_settings(
        overrides={
            "data_dir": tmp_path,
            "privacy": {"require_registered_users": False},
            "checkpoint_every_events": 5,
            "auth": {"required": False},
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    engine.upsert_videos([Video(f"v{i}", "c", 20_000, created_at=NOW) for i in range(40)])

    def full_disk(path: Path, payload: dict[str, object]) -> int:
        raise OSError(28, "No space left on device")

    def status_becomes(client: TestClient, want: str) -> str:
        deadline = time.monotonic() + 20
        while not (status := client.get("/healthz").json()["status"]).startswith(want):
            assert time.monotonic() < deadline, status
            time.sleep(0.02)
        return status

    try:
        with TestClient(create_app(settings, engine)) as client:
            # The child's write fails (it runs the module's write_checkpoint).
            monkeypatch.setattr(checkpoint_module, "write_checkpoint", full_disk)
            events = [view(n, f"u{n}", n) for n in range(8)]
            assert client.post("/v1/events", json={"events": events}).status_code == 200
            assert "checkpoint" in status_becomes(client, "degraded: storage")
            # More events, learned: the checkpoint has still not been written.
            events = [view(n, f"u{n}", n) for n in range(8, 11)]
            assert client.post("/v1/events", json={"events": events}).status_code == 200
            deadline = time.monotonic() + 20
            while (health := client.get("/healthz").json())["learning_lag"]:
                assert time.monotonic() < deadline, health
                time.sleep(0.02)
            assert health["status"].startswith("degraded: storage")
            monkeypatch.undo()
            engine.checkpoints.retry_at = 0.0
            events = [view(n, f"u{n}", n) for n in range(11, 13)]
            assert client.post("/v1/events", json={"events": events}).status_code == 200
            status_becomes(client, "ok")
            assert engine.checkpoints.offset == engine.state.applied_offset
    finally:
        engine.close()


@pytest.fixture
def redis_log_engine(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[Engine]:
    """An engine whose event log is on the shared Redis (a prefix of its own)."""
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    settings = load_settings(
        overrides={
            "data_dir": tmp_path,
            "event_log": f"{SHARED_URL}?prefix={prefix}&durability=none",
            "privacy": {"require_registered_users": False},
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    try:
        yield engine
    finally:
        engine.close()
        delete_prefix(client, prefix)
        client.close()


def test_a_loop_on_a_redis_log_reads_it_once_a_wake_and_not_for_what_it_has_folded(
    redis_log_engine: Engine,
) -> None:
    """Regression: woken on a log on Redis, the loop asked for the log's end, read a
    slice (and the end again), then asked for the end once more: three worker-thread
    hops and four round trips a wake, and as many for a wake (the tail's, of its own
    batch) telling an end it had folded already. Now one read of a slice with its end,
    and none for such a wake."""
    engine = redis_log_engine
    log = engine.event_log
    asked: list[str] = []
    for name in ("last_offset", "read"):
        real = getattr(log, name)

        def counted(*args: object, _real: Any = real, _name: str = name) -> Any:
            asked.append(_name)
            return _real(*args)

        setattr(log, name, counted)  # (this instance's: the engine's log)

    async def scenario() -> tuple[list[str], list[str]]:
        loop = LearningLoop(engine)
        try:
            await until(lambda: engine.state.applied_offset == 0 and not loop._wake.is_set())
            await asyncio.sleep(0.05)
            engine.upsert_videos([Video("v1", "c1", 20_000, created_at=NOW)])
            result = engine.ingest([view(n, "u1", 1) for n in range(3)])
            assert result.accepted == 3 and result.log_end is not None
            end = result.log_end
            asked.clear()
            loop.wake()
            await until(lambda: engine.state.applied_offset >= end)
            await asyncio.sleep(0.1)  # (any check after the slice made too)
            woken = list(asked)
            asked.clear()
            loop.wake(end)  # the tail, telling the end of a batch folded already
            await asyncio.sleep(0.1)
            return woken, list(asked)
        finally:
            async with asyncio.timeout(10):
                await loop.stop()

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                await asyncio.sleep(0.005)

    woken, told = asyncio.run(scenario())
    assert woken == ["last_offset", "read"]  # one slice read, with its end
    assert told == []


def test_a_loop_on_a_redis_log_left_unwoken_reads_the_end_itself_when_it_wakes_idle(
    redis_log_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events another process appended, with no wake telling of them (a tail that
    stopped), are folded at the loop's next idle wake: the end it was last told is not
    trusted then."""
    from fyp.api import learning_loop

    monkeypatch.setattr(learning_loop, "RETENTION_EVERY_S", 0.3)
    engine = redis_log_engine

    async def scenario() -> int:
        loop = LearningLoop(engine)
        try:
            loop.wake(0)  # told: nothing in the log
            await asyncio.sleep(0.1)
            engine.upsert_videos([Video("v1", "c1", 20_000, created_at=NOW)])
            end = engine.ingest([view(n, "u1", 1) for n in range(3)]).log_end
            assert end is not None  # appended; no wake
            async with asyncio.timeout(10):
                while engine.state.applied_offset < end:
                    await asyncio.sleep(0.01)
            return engine.state.applied_offset
        finally:
            async with asyncio.timeout(10):
                await loop.stop()

    assert asyncio.run(scenario()) >= 3
