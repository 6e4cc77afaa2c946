"""The engine end to end, on known-answer data: events in through ``ingest``, state
through ``learn``, feeds out; and a restart rebuilds what was there."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import threading
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from fyp.engine import CHECKPOINT_FILE, Engine
from fyp.storage import backends
from fyp.types import Impression


def sources_of(engine: Engine, kit: Any, user_id: str, count: int = 10) -> dict[str, str]:
    """video_id -> the source credited, for one feed request."""
    feed = engine.feed(user_id, count=count, now=kit.NOW)
    return {item.video_id: item.source for item in feed.items}


# -- known answers -------------------------------------------------------------------------


def test_a_followed_creators_new_video_comes_from_followed(kit: Any, engine: Engine) -> None:
    kit.run(engine, [kit.view("u", "c2-v0"), kit.act("u", "c2-v0", "follow")])
    engine.upsert_videos(
        [
            kit.video(
                "c2-new",
                "c2",
                sound_id="snd-c2-0",
                hashtags=("tag-c2",),
                created_at=kit.NOW - 60_000,
            )
        ]
    )
    first = sources_of(engine, kit, "u")
    assert "followed" in first.values()
    assert first.get("c2-new") == "followed"


def test_a_video_often_enjoyed_together_with_one_the_user_liked_comes_from_co_engagement(
    kit: Any, engine: Engine
) -> None:
    events = []
    for u in range(8):
        events += [kit.act(f"fan{u}", "c3-v1", "like"), kit.act(f"fan{u}", "c3-v7", "like")]
    events.append(kit.act("newbie", "c3-v1", "like"))
    kit.run(engine, events)
    assert sources_of(engine, kit, "newbie").get("c3-v7") == "co_engagement"


def test_a_brand_new_user_sees_fresh_uploads_until_their_exposure_budget_is_spent(
    kit: Any,
) -> None:
    settings = kit.settings(sources={"fresh_exposure_budget": 3, "budget_ms": 10_000.0})
    fresh = [
        kit.video(f"new-{i}", f"newcomer-creator-{i}", created_at=kit.NOW - kit.HOUR_MS)
        for i in range(3)
    ]
    engine = kit.open_engine(settings, videos=[*kit.catalog(), *fresh])
    rng = random.Random(7)  # older videos have an audience already
    kit.run(
        engine,
        [
            kit.view(
                f"bg{u}", f"c{rng.randrange(4)}-v{rng.randrange(10)}", rng.choice([500, 20_000])
            )
            for u in range(10)
            for _ in range(10)
        ],
    )
    fresh_ids = {v.video_id for v in fresh}
    shown: dict[str, int] = dict.fromkeys(fresh_ids, 0)
    k = 0
    while True:  # cold-start users, until the new uploads' budgets are spent
        got = sources_of(engine, kit, f"cold-{k}")
        k += 1
        fresh_now = [v for v, source in got.items() if source == "fresh"]
        if not fresh_now:
            break
        assert set(fresh_now) <= fresh_ids
        for v in fresh_now:
            shown[v] += 1
        assert k < 20
    # Each new upload got exactly its promised first audience: 3 impressions, no more.
    assert shown == dict.fromkeys(fresh_ids, 3)
    assert engine.impressions.exposure_counts()["new-0"] == 3

    engine.close()  # the spent budget is remembered across a restart
    reopened = kit.open_engine(settings)
    assert "fresh" not in sources_of(reopened, kit, "cold-4").values()


def test_upserted_videos_are_servable_at_once_and_a_takedown_stops_them(
    kit: Any, engine: Engine
) -> None:
    engine.upsert_videos([kit.video("late", "c9")])
    assert "late" in kit.feed_ids(engine, "u1", count=41)
    engine.upsert_videos([kit.video("late", "c9", labels=("removed",))])
    assert "late" not in kit.feed_ids(engine, "u2", count=41)


def test_the_default_page_size_comes_from_config(kit: Any) -> None:
    engine = kit.open_engine(kit.settings(feed={"default_count": 4}), videos=kit.catalog())
    assert len(engine.feed("u1", now=kit.NOW).items) == 4


# -- the learning loop ---------------------------------------------------------------------


def test_learn_applies_what_was_ingested_in_chunks(kit: Any, engine: Engine) -> None:
    result = engine.ingest([kit.view("u", f"c0-v{i}") for i in range(10)])
    assert result.accepted == 10
    assert engine.pending() == 10
    assert engine.learn(max_events=4) == 4
    assert engine.pending() == 6
    assert engine.learn(chunk=4) == 6
    assert engine.pending() == 0
    assert engine.state.stats.total_views == 10
    assert engine.learn() == 0


def test_ingesting_a_batch_twice_changes_nothing_the_second_time(kit: Any, engine: Engine) -> None:
    batch = [kit.view("u", "c0-v1"), kit.act("u", "c0-v1", "like"), {"nonsense": True}]
    first = engine.ingest(batch)
    engine.learn()
    views = engine.state.stats.total_views
    second = engine.ingest(batch)
    engine.learn()
    assert (first.accepted, first.duplicates, len(first.rejected)) == (2, 0, 1)
    assert (second.accepted, second.duplicates, len(second.rejected)) == (0, 2, 1)
    assert engine.event_log.count() == 2
    assert engine.state.stats.total_views == views == 1


def test_imported_impressions_count_as_served(kit: Any, engine: Engine) -> None:
    engine.record_impressions(
        [
            Impression("imported", "u", f"c1-v{i}", i, "import", 0.0, "for_you", kit.NOW - 1_000)
            for i in range(10)
        ]
        + [Impression("imported", "u", "not-in-catalog", 10, "import", 0.0, "for_you", kit.NOW)]
    )
    assert engine.state.stats.exposures[engine.catalog.row_of["c1-v0"]] == 1
    ids = kit.feed_ids(engine, "u", count=30)
    assert not [v for v in ids if v.startswith("c1-")]


# -- restart -------------------------------------------------------------------------------


def some_history(kit: Any, rng: random.Random, n: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(n):
        user, video = f"u{rng.randrange(4)}", f"c{rng.randrange(4)}-v{rng.randrange(10)}"
        events.append(kit.view(user, video, rng.choice([300, 8_000, 20_000])))
        if rng.random() < 0.3:
            events.append(kit.act(user, video, rng.choice(["like", "share", "follow"])))
    return events


def ranking_of(engine: Engine, kit: Any, user_id: str) -> np.ndarray:
    rows = list(range(len(engine.catalog)))
    return engine.state.ranker.score(
        engine.state.users[engine.pseudonym(user_id)], rows, kit.NOW
    ).values


def test_a_restart_rebuilds_the_state_from_the_log(kit: Any, engine: Engine) -> None:
    kit.run(engine, some_history(kit, random.Random(1), 60))
    before = ranking_of(engine, kit, "u0")
    weights = engine.state.ranker.weights.copy()
    offset = engine.state.applied_offset
    follows = set(engine.state.users[engine.pseudonym("u0")].follows)
    engine.close()

    reopened = kit.open_engine()
    assert reopened.state.applied_offset == offset
    assert reopened.state.users[reopened.pseudonym("u0")].follows == follows
    np.testing.assert_allclose(reopened.state.ranker.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(ranking_of(reopened, kit, "u0"), before, rtol=1e-12)


def test_a_restart_after_several_learning_steps_ranks_as_before(kit: Any, engine: Engine) -> None:
    rng = random.Random(0)
    for _ in range(3):  # three API batches, each learned as it came
        kit.run(engine, some_history(kit, rng, 25))
    before = ranking_of(engine, kit, "u0")
    engine.close()
    reopened = kit.open_engine()
    np.testing.assert_allclose(ranking_of(reopened, kit, "u0"), before, rtol=1e-9)


def test_served_memory_and_exposures_survive_a_restart(kit: Any, engine: Engine) -> None:
    first = kit.feed_ids(engine, "u", count=15)
    exposures = engine.state.stats.exposures.copy()
    engine.close()

    reopened = kit.open_engine()
    np.testing.assert_array_equal(reopened.state.stats.exposures[: len(exposures)], exposures)
    second = kit.feed_ids(reopened, "u", count=15)
    assert len(second) == 15
    assert not set(first) & set(second)


def test_open_without_replay_leaves_the_log_pending(kit: Any, engine: Engine) -> None:
    kit.run(engine, [kit.view("u", "c0-v0"), kit.view("u", "c0-v1")])
    engine.close()
    cold = Engine.open(kit.settings(), clock=lambda: kit.NOW, replay=False)
    try:
        assert cold.pending() == 2
        assert cold.state.stats.total_views == 0
        assert len(cold.catalog) == 40
    finally:
        cold.close()


def test_a_non_personalised_page_counts_each_video_served_once(kit: Any, engine: Engine) -> None:
    """Served by a blank state on the person's behalf: both remember the page, but each
    video was shown once (its exposures drive the fresh budget and strike caps), and a
    restart, which counts the impressions, agrees."""
    from fyp.users.controls import ControlsIn

    engine.set_controls("u", ControlsIn(personalized=False))
    ids = kit.feed_ids(engine, "u", count=10)
    assert ids
    rows = [engine.catalog.row_of[v] for v in ids]
    assert engine.state.stats.exposures[rows].tolist() == [1] * len(rows)
    exposures = engine.state.stats.exposures.copy()
    engine.close()
    reopened = kit.open_engine()
    np.testing.assert_array_equal(reopened.state.stats.exposures[: len(exposures)], exposures)


# -- a fold read without the lock (the serving loop's, on a Redis log) ----------------------


def test_a_fold_read_without_the_lock_applies_as_learn_does(kit: Any, engine: Engine) -> None:
    events = [kit.view("u", "c1-v0"), kit.act("u", "c1-v0", "like"), kit.view("w", "c2-v1")]
    assert engine.ingest(events).rejected == []
    fold = engine.read_fold(2)
    assert len(fold.batch) == 2 and fold.start == 0
    assert engine.apply_fold(fold) == 2 and engine.state.applied_offset == fold.batch[-1].offset
    assert engine.apply_fold(fold) == -1  # (the state has moved on since: read again)
    assert engine.apply_fold(engine.read_fold(10)) == 1
    assert engine.apply_fold(engine.read_fold(10)) is None  # the log's end
    assert engine.pending() == 0 and kit.state_of(engine, "u").recent_positives


def test_a_fold_read_before_an_erasure_is_not_applied_after_it(kit: Any, engine: Engine) -> None:
    """Events read, then the user erased (the events deleted, the user dropped) before
    they are applied: applied, they would bring the user back. They are read again."""
    kit.run(engine, [kit.view("gone", "c1-v0")])
    assert engine.ingest([kit.view("gone", "c1-v1"), kit.view("kept", "c2-v0")]).rejected == []
    fold = engine.read_fold(10)
    assert len(fold.batch) == 2
    engine.rights.erase_user("gone", "test")
    assert engine.pseudonym("gone") not in engine.state.users
    assert engine.apply_fold(fold) == -1
    engine.learn()
    assert engine.pseudonym("gone") not in engine.state.users
    assert engine.pseudonym("kept") in engine.state.users


def files_open_under(directory: Path) -> list[str]:
    """The files under ``directory`` this process holds open (its SQLite connections,
    its audit log), read from /proc/self/fd."""
    root = str(directory.resolve())
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own fd, closed since)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(root + os.sep):
                held.append(target)
    return sorted(held)


def writer_threads() -> int:
    """Impression logs' writer threads alive (one per open SQLite impression log)."""
    return sum(1 for t in threading.enumerate() if t.name == "impressions")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_an_open_that_fails_on_a_bad_checkpoint_leaves_nothing_open(kit: Any) -> None:
    """Regression: Engine.open raising after its stores opened (here on a checkpoint
    that cannot be read) left them open: their files, and the impression log's writer
    thread, held for the life of the process."""
    settings = kit.settings()
    kit.open_engine(settings, videos=kit.catalog())
    kit.close()
    (settings.data_dir / CHECKPOINT_FILE).write_bytes(b"not a pickle")
    threads = writer_threads()
    with pytest.raises(pickle.UnpicklingError):
        Engine.open(settings, clock=lambda: kit.NOW)
    assert files_open_under(settings.data_dir) == []
    assert writer_threads() == threads
    # (the data dir is whole: opened without the checkpoint, it has its catalog)
    engine = Engine.open(settings, clock=lambda: kit.NOW, from_checkpoint=False)
    try:
        assert len(engine.catalog) == kit.N_CREATORS * kit.PER_CREATOR
    finally:
        engine.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_store_that_fails_to_open_closes_the_ones_opened_before_it(
    kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the embedded stores open one after another; the audit log (the last)
    failing to open left the four before it open."""

    def full_disk(*args: object, **kwargs: object) -> NoReturn:
        raise OSError(28, "No space left on device")

    settings = kit.settings()
    kit.open_engine(settings, videos=kit.catalog())
    kit.close()
    monkeypatch.setattr(backends, "AuditLog", full_disk)
    threads = writer_threads()
    with pytest.raises(OSError, match="No space left"):
        Engine.open(settings, clock=lambda: kit.NOW)
    assert files_open_under(settings.data_dir) == []
    assert writer_threads() == threads
