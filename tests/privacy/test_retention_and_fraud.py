"""Retention (old events and impressions deleted) and the fraud guard in the learning
step (a burst of likes is logged but not trained on), on the engine itself."""

from __future__ import annotations

from typing import Any

from fyp.state.feedback import LABEL_INDEX
from fyp.types import Impression


def test_events_and_impressions_past_retention_are_deleted(kit: Any) -> None:
    engine = kit.open_engine(
        kit.settings(privacy={"require_registered_users": False, "retention_days": 1}),
        kit.catalog(),
    )
    old, new = kit.NOW - 2 * kit.DAY_MS, kit.NOW - kit.HOUR_MS
    kit.run(engine, [kit.view("u1", "c0-v0", ts=old), kit.view("u1", "c0-v1", ts=new)])
    engine.record_impressions(
        [
            Impression("r-old", "u1", "c0-v0", 0, "trending", 1.0, "for_you", old),
            Impression("r-new", "u1", "c0-v1", 0, "trending", 1.0, "for_you", new),
        ]
    )
    end = engine.event_log.last_offset()
    assert engine.expire() == (1, 1)
    pid = engine.pseudonym("u1")
    assert [e.event.ts for e in engine.event_log.for_user(pid)] == [new]
    assert [i.ts for i in engine.impressions.for_user(pid, 10)] == [new]
    assert engine.event_log.last_offset() == end  # offsets are never reused
    assert engine.expire() == (0, 0)


def test_retention_zero_keeps_everything(kit: Any) -> None:
    engine = kit.open_engine(
        kit.settings(privacy={"require_registered_users": False, "retention_days": 0}),
        kit.catalog(),
    )
    kit.run(engine, [kit.view("u1", "c0-v0", ts=kit.NOW - 900 * kit.DAY_MS)])
    assert engine.expire() == (0, 0)
    assert engine.event_log.count() == 1


def test_a_burst_of_likes_is_logged_but_not_trained_on(kit: Any, engine: Any) -> None:
    limit = engine.settings.privacy.max_actions_per_minute
    start = kit.NOW - kit.HOUR_MS
    videos = [f"c{c}-v{i}" for c in range(4) for i in range(10)]
    events = [kit.act("bot", v, "like", ts=start + 100 * n) for n, v in enumerate(videos)]
    events += [kit.act("fan", v, "like", ts=start + 3_000 * n) for n, v in enumerate(videos)]
    kit.run(engine, events)
    assert engine.event_log.count() == 2 * len(videos)  # every event stored
    likes = LABEL_INDEX["like"]
    assert kit.state_of(engine, "bot").label_counts[likes] == limit
    # 40 likes over two minutes at 20 a minute: all of them count.
    assert kit.state_of(engine, "fan").label_counts[likes] == len(videos)
    assert engine.state.fraud.throttled == len(videos) - limit


def test_erasing_the_unlearned_end_of_the_log_leaves_learning_caught_up(kit: Any) -> None:
    engine = kit.open_engine(kit.settings(), kit.catalog())
    kit.run(engine, [kit.view("bob", "c0-v0")])
    assert not engine.ingest([kit.view("alice", f"c1-v{i}") for i in range(3)]).rejected
    engine.rights.erase_user("alice", "test")  # before the learning step saw her events
    engine.learn()
    assert engine.pending() == 0 and not engine.learning_due()
    assert engine.pseudonym("alice") not in engine.state.users
    # The same for the retention deleting the newest events.
    assert not engine.ingest([kit.view("carol", "c2-v0", ts=kit.NOW - 900 * kit.DAY_MS)]).rejected
    old = engine.settings.privacy.model_copy(update={"retention_days": 30.0})
    engine.settings = engine.settings.model_copy(update={"privacy": old})
    assert engine.expire() == (1, 0)
    engine.learn()
    assert engine.pending() == 0 and not engine.learning_due()
