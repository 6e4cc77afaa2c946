"""The page scorer trains from the engine's own log at each boundary (pools of one day,
labelled with what their users engaged with the next), serves once trained, and leaves
the pipeline's rules whole: eligibility, mutes, spacing, exploration slots."""

from __future__ import annotations

import itertools
from typing import Any

from fyp.engine import Engine
from fyp.rank.page_scorer import PageScoredRanker

DAY_MS = 86_400_000
USERS = [f"u{i}" for i in range(12)]


def _scorer_settings(kit: Any) -> Any:
    return kit.settings(
        scorer={
            "enabled": True,
            "min_groups": 1,
            "pool_count": 5,
            "negatives_per_group": 20,
        }
    )


def _two_days(kit: Any, engine: Engine) -> int:
    """Day one: every user long-views three of c0's videos. Day two (after midnight
    UTC): each likes one of c3's. Returns the midnight after day two."""
    day = (kit.NOW // DAY_MS - 2) * DAY_MS
    first = [
        kit.view(u, f"c0-v{j}", ts=day + 3_600_000 + 60_000 * (3 * i + j))
        for i, u in enumerate(USERS)
        for j in range(3)
    ]
    kit.run(engine, first)
    second = []
    for i, u in enumerate(USERS):
        ts = day + DAY_MS + 3_600_000 + 60_000 * i
        second += [
            kit.view(u, f"c3-v{i % 10}", ts=ts),
            kit.act(u, f"c3-v{i % 10}", "like", ts=ts + 1),
        ]
    kit.run(engine, second)  # the first of these reaches the boundary: pools are taken
    return day + 2 * DAY_MS


def test_the_scorer_trains_at_the_boundary_after_a_labelled_day_and_then_serves(kit: Any) -> None:
    engine = kit.open_engine(_scorer_settings(kit), videos=kit.catalog())
    assert engine.pipeline.ranker.active() == "first_ranker"  # untrained: fails open
    before = kit.feed_ids(engine, "someone")
    midnight = _two_days(kit, engine)
    trainer = engine.page_scorer
    assert trainer is not None
    assert [r.trained_groups for r in trainer.retrains] == [0]  # pools taken, none labelled
    assert trainer.retrains[0].snapshot_users == len(USERS)
    done = engine.train_page_scorer(midnight)
    assert done is not None
    # Every user engaged with a video of their pool (c3's were unseen at the boundary).
    assert done.labelled_pools == len(USERS)
    assert done.trained_groups == len(USERS)
    assert engine.pipeline.ranker.active() == "page_scorer"
    assert engine.train_page_scorer(midnight + 1) is None  # not due again before a day
    after = kit.feed_ids(engine, "someone")
    assert len(after) == len(before) == 10


def test_pools_of_an_erased_user_are_dropped(kit: Any) -> None:
    engine = kit.open_engine(_scorer_settings(kit), videos=kit.catalog())
    _two_days(kit, engine)
    trainer = engine.page_scorer
    assert trainer is not None
    pid = engine.pseudonym("u3")
    assert pid in trainer.pending
    engine.rights.erase_user("u3", actor="test")
    assert pid not in trainer.pending


def test_with_the_scorer_serving_the_rules_still_hold(kit: Any) -> None:
    fresh = kit.video("new-upload", "c9", created_at=kit.NOW - 3_600_000)
    banned = kit.video("banned", "c2", labels=("removed",))
    # Eight creators: the cap of two per page can hold on pages of ten.
    videos = [*kit.catalog(n_creators=8), fresh, banned]
    engine = kit.open_engine(_scorer_settings(kit), videos=videos)
    midnight = _two_days(kit, engine)
    engine.train_page_scorer(midnight)
    assert isinstance(engine.pipeline.ranker, PageScoredRanker)
    assert engine.pipeline.ranker.active() == "page_scorer"
    kit.run(engine, [kit.view("u0", "c1-v0", watch_ms=500, ts=kit.NOW - 60_000)])
    kit.run(engine, [kit.act("u0", "c1-v0", "not_interested", ts=kit.NOW - 50_000)])
    creators: list[str] = []
    served: list[str] = []
    sources: list[str] = []
    for _ in range(3):
        feed = engine.feed("u0", count=10, now=kit.NOW)
        served += [i.video_id for i in feed.items]
        sources += [i.source for i in feed.items]
        page = [kit.creator_of(i.video_id) for i in feed.items]
        assert all(a != b for a, b in itertools.pairwise(page)), page  # spacing
        assert max(page.count(c) for c in set(page)) <= 2, page  # the creator cap
        creators += page
    assert "banned" not in served  # eligibility
    assert "c1" not in creators  # not interested in the creator
    assert "new-upload" in served and "fresh" in sources  # the exploration slot
