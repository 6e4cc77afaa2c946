"""Where serving processes take turns sending reported videos to review (a lease:
fyp.cluster.review_lease), a process decides only while its turn lasts: one whose turn
ends while it reads the store for the last holder's decision leaves the video due."""

from __future__ import annotations

from typing import Any

import pytest

from fyp.engine import Engine
from fyp.safety.moderator import REPORTS_ACTOR
from fyp.types import ModerationAction


def _automatic(engine: Engine, video_id: str) -> int:
    return sum(a.actor == REPORTS_ACTOR for a in engine.moderation_store.history(video_id))


def _report(engine: Engine, kit: Any) -> None:
    """Enough reports of ``v000`` to send it to review."""
    reports = [
        {"event_id": f"r{i}", "user_id": f"reporter-{i}", "video_id": "v000"}
        | {"type": "report", "ts": kit.NOW}
        for i in range(50)
    ]
    assert engine.ingest(reports).rejected == []


def test_a_turn_that_ends_while_the_store_is_read_decides_nothing(
    engine: Engine, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.upsert_videos([kit.video("v000", "c0")])
    turn = [True]
    engine.moderator.review_turn = lambda: turn[0]
    store = engine.moderator.store
    read = store.history

    def slow_history(video_id: str | None = None) -> list[ModerationAction]:
        turn[0] = False  # the lease lapsed while the store answered (a stalled read)
        return read(video_id)

    monkeypatch.setattr(store, "history", slow_history)
    _report(engine, kit)
    engine.learn()
    assert _automatic(engine, "v000") == 0, "decided after its turn had ended"
    assert engine.state.reports.due == [engine.catalog.row_of["v000"]]

    monkeypatch.setattr(store, "history", read)
    turn[0] = True
    engine.learn()  # (nothing new to fold: what is due is reviewed)
    assert _automatic(engine, "v000") == 1
    assert engine.state.reports.due == []


def test_a_failed_read_of_the_store_leaves_the_video_due(
    engine: Engine, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store read for the last holder's decision fails (PostgreSQL unreachable for a
    moment): the video is due again at the next learning step, as after a failed write."""
    engine.upsert_videos([kit.video("v000", "c0")])
    engine.moderator.review_turn = lambda: True
    store = engine.moderator.store
    read = store.history

    def unreachable(video_id: str | None = None) -> list[ModerationAction]:
        raise OSError("the moderation store is unreachable")

    monkeypatch.setattr(store, "history", unreachable)
    _report(engine, kit)
    with pytest.raises(OSError):
        engine.learn()
    assert engine.state.reports.due == [engine.catalog.row_of["v000"]]

    monkeypatch.setattr(store, "history", read)
    engine.learn()
    assert _automatic(engine, "v000") == 1
