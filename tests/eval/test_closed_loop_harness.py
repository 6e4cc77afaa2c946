"""Tests for the closed-loop evaluation harness (``fyp.eval.closed_loop``): its metric
functions on hand-computed cases, the local methods' rules, the report's JSON shape, and
the ordering of the methods on a small world."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from rich.progress import Progress

from fyp.eval.closed_loop import (
    DEFAULT_NOW_MS,
    HOUR_MS,
    METRICS,
    _OracleMethod,
    _PopularMethod,
    _RandomMethod,
    _run_method,
    _schedule,
    _View,
    closed_loop_table,
    distinct_per_window,
    first_hour_share,
    run_closed_loop,
    topic_entropy,
)
from fyp.eval.metrics import distinct_per_slate
from fyp.eval.simulate import DAY_MS, Reaction, build_world

SMALL = {"users": 50, "sessions_per_user": 4, "videos": 1500, "creators": 100, "n_boot": 200}


# --------------------------------------------------------------------------- metrics


def test_topic_entropy_hand_cases() -> None:
    assert topic_entropy([3, 3, 3, 3]) == 0.0
    assert topic_entropy([0, 0, 1, 1]) == pytest.approx(1.0)
    assert topic_entropy([0, 1, 2, 3]) == pytest.approx(2.0)
    assert topic_entropy(np.array([5, 9, 9, 9])) == pytest.approx(
        -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    )  # 0.811...
    assert topic_entropy([7]) == 0.0
    with pytest.raises(ValueError, match="no impressions"):
        topic_entropy([])


def test_first_hour_share_hand_cases() -> None:
    created = [1_000, 1_000, 1_000, 1_000]
    shown = [1_000, 1_000 + HOUR_MS - 1, 1_000 + HOUR_MS, 1_000 + 5 * HOUR_MS]
    assert first_hour_share(created, shown) == 0.5
    assert first_hour_share(created, shown, window_ms=10 * HOUR_MS) == 1.0
    assert first_hour_share([0], [DAY_MS]) == 0.0
    with pytest.raises(ValueError, match="before it was uploaded"):
        first_hour_share([2_000], [1_000])
    with pytest.raises(ValueError, match="one length"):
        first_hour_share([1, 2], [3])
    with pytest.raises(ValueError, match="no impressions"):
        first_hour_share([], [])


def test_distinct_per_window_counts_like_distinct_per_slate() -> None:
    items = [0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8]
    assert distinct_per_window(items, per=5) == [3, 5]  # the trailing 3 items dropped
    assert distinct_per_window(items, per=1) == [1] * len(items)
    assert distinct_per_window(items[:4], per=5) == []
    ids = [f"v{i}" for i in range(len(items))]
    creator = {v: f"c{c}" for v, c in zip(ids, items, strict=True)}
    assert np.mean(distinct_per_window(items, per=5)) == distinct_per_slate([ids], creator, per=5)
    with pytest.raises(ValueError):
        distinct_per_window(items, per=0)


# --------------------------------------------------------------------------- methods


def _world() -> Any:
    return build_world(seed=3, n_videos=200, n_creators=20, n_users=4, now_ms=DEFAULT_NOW_MS)


def test_local_methods_serve_only_uploaded_unserved_videos() -> None:
    world = _world()
    user = world.users[0]
    for method in (_RandomMethod(world, 0), _PopularMethod(world, 0), _OracleMethod(world)):
        method.upload(list(range(50)), DEFAULT_NOW_MS)
        served: list[int] = []
        for _ in range(5):
            _, rows = method.serve(user, 10, DEFAULT_NOW_MS)
            served.extend(rows)
        assert sorted(served) == list(range(50)), method.name  # all, once each
        assert method.serve(user, 10, DEFAULT_NOW_MS)[1] == []  # nothing left
        assert len(method.serve(world.users[1], 10, DEFAULT_NOW_MS)[1]) == 10  # per user


def test_popular_ranks_by_watched_views_and_oracle_by_expected_ratio() -> None:
    world = _world()
    popular = _PopularMethod(world, 0)
    popular.upload(list(range(len(world.videos))), DEFAULT_NOW_MS)
    watched = Reaction(watch_ms=10_000, watch_ratio=1.0)
    skipped = Reaction(watch_ms=500, watch_ratio=0.05, skipped=True)
    views = [_View(7, watched, 0), _View(7, watched, 0), _View(3, watched, 0)]
    views += [_View(9, skipped, 0)] * 5  # skips do not count
    popular.observe(world.users[0], None, views, DEFAULT_NOW_MS)
    assert popular.serve(world.users[1], 2, DEFAULT_NOW_MS)[1] == [7, 3]

    oracle = _OracleMethod(world)
    oracle.upload(list(range(len(world.videos))), DEFAULT_NOW_MS)
    user = world.users[2]
    expected = world.expected_watch_ratios(user)
    rows = oracle.serve(user, 5, DEFAULT_NOW_MS)[1]
    assert [float(expected[r]) for r in rows] == sorted(expected.tolist(), reverse=True)[:5]


def test_sessions_are_scheduled_once_a_day_per_user() -> None:
    world = _world()
    start = DEFAULT_NOW_MS - 3 * DAY_MS
    sessions = _schedule(world, 3, start, seed=1)
    assert len(sessions) == 12
    assert [s.start_ms for s in sessions] == sorted(s.start_ms for s in sessions)
    for s in sessions:
        assert start + s.index * DAY_MS <= s.start_ms < start + (s.index + 1) * DAY_MS
    again = _schedule(world, 3, start, seed=1)
    assert [(s.user.row, s.index, s.start_ms) for s in again] == [
        (s.user.row, s.index, s.start_ms) for s in sessions
    ]


def test_the_loop_respects_uploads_session_length_and_never_repeats() -> None:
    world = build_world(seed=2, n_videos=600, n_creators=40, n_users=10, now_ms=DEFAULT_NOW_MS)
    start = DEFAULT_NOW_MS - 3 * DAY_MS
    created = np.array([v.created_at for v in world.videos])
    assert int((created > start).sum()) > 0  # some uploads happen during the run
    for name in ("random", "popular", "oracle"):
        log = _run_method(
            name,
            world,
            _schedule(world, 3, start, seed=0),
            seed=0,
            start_ms=start,
            session_length=2,
            count=5,
            on_session=lambda done: None,
        )
        assert len(log.ses_user) == 30
        assert all(1 <= len(served) <= 10 for served in log.ses_served)  # <= 2 pages of 5
        pairs = [
            (u, r) for u, served in zip(log.ses_user, log.ses_served, strict=True) for r in served
        ]
        assert len(pairs) == len(set(pairs))
        shown = np.array(log.imp_shown)
        assert (shown >= created[np.array(log.imp_row)]).all()
        assert shown.min() >= start and shown.max() < DEFAULT_NOW_MS + DAY_MS
        assert sum(log.ses_viewed) == len(log.imp_row)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        run_closed_loop(["tiktok"], users=2, sessions_per_user=1)
    with pytest.raises(ValueError, match="twice"):
        run_closed_loop(["random", "random"], users=2, sessions_per_user=1)
    with pytest.raises(ValueError, match="users"):
        run_closed_loop(["random"], users=0)
    with pytest.raises(ValueError, match="below 30"):
        run_closed_loop(["random"], users=2, sessions_per_user=30)
    with pytest.raises(ValueError, match="no methods"):
        run_closed_loop([], users=2)


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def small_run_and_progress() -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    calls: list[tuple[str, int, int]] = []
    result = run_closed_loop(
        ["fyp", "random", "popular", "oracle"],
        session_length=3,
        count=10,
        seed=0,
        progress=lambda method, done, total: calls.append((method, done, total)),
        **SMALL,
    )
    return result, calls


@pytest.fixture
def small_run(
    small_run_and_progress: tuple[dict[str, Any], list[tuple[str, int, int]]],
) -> dict[str, Any]:
    return small_run_and_progress[0]


@pytest.mark.slow
def test_closed_loop_ordering(small_run: dict[str, Any]) -> None:
    m = small_run["methods"]
    wt = {name: m[name]["watch_time_per_session_s"] for name in m}
    print("\n" + _render(closed_loop_table(small_run)))
    # fyp beats random clearly (the intervals do not overlap), the oracle bounds fyp.
    assert wt["fyp"]["ci95"][0] > wt["random"]["ci95"][1]
    assert wt["fyp"]["mean"] > 1.5 * wt["random"]["mean"]
    assert wt["oracle"]["mean"] >= wt["fyp"]["mean"]
    assert m["fyp"]["watch_ratio"]["mean"] > m["random"]["watch_ratio"]["mean"]
    assert m["oracle"]["watch_ratio"]["mean"] >= m["fyp"]["watch_ratio"]["mean"]
    assert m["fyp"]["like_rate"]["mean"] > m["random"]["like_rate"]["mean"]
    # Random order is the most diverse and the least concentrated on creators.
    assert m["random"]["topic_entropy"]["mean"] > m["fyp"]["topic_entropy"]["mean"]
    assert m["random"]["creator_gini"]["mean"] < m["popular"]["creator_gini"]["mean"]
    topics = {name: m[name]["distinct_topics_per_10"]["mean"] for name in m}
    assert topics["random"] > topics["oracle"]


@pytest.mark.slow
def test_closed_loop_report_shape(
    small_run_and_progress: tuple[dict[str, Any], list[tuple[str, int, int]]],
) -> None:
    small_run, calls = small_run_and_progress
    assert json.loads(json.dumps(small_run)) == small_run  # JSON-able as it is
    p = small_run["protocol"]
    assert {k: p[k] for k in ("users", "sessions_per_user", "session_length", "count", "seed")} == {
        "users": 50,
        "sessions_per_user": 4,
        "session_length": 3,
        "count": 10,
        "seed": 0,
    }
    assert p["world"]["videos"] == 1500 and p["world"]["creators"] == 100
    assert 0 < p["world"]["initial_videos"] < 1500
    assert list(small_run["methods"]) == ["fyp", "random", "popular", "oracle"]
    for name, report in small_run["methods"].items():
        for key, _, _ in METRICS:
            metric = report[key]
            assert set(metric) == {"mean", "ci95"}, (name, key)
            lo, hi = metric["ci95"]
            assert lo <= metric["mean"] <= hi or math.isclose(lo, hi), (name, key, metric)
        assert 0 <= report["first_hour_share"]["mean"] <= 1
        assert 0 <= report["creator_gini"]["mean"] < 1
        assert 1 <= report["distinct_creators_per_10"]["mean"] <= 10
        by_session = report["topic_entropy_by_session"]
        assert len(by_session) == 4 == len(report["topic_entropy_by_session_ci95"])
        assert all(0 <= x <= math.log2(30) for x in by_session)
        totals = report["totals"]
        assert totals["sessions"] == 200
        assert totals["sessions"] <= totals["requests"] <= 3 * totals["sessions"]
        assert totals["impressions"] <= totals["served"] <= 10 * totals["requests"]
        assert (name, 200, 200) in calls
    text = _render(closed_loop_table(small_run))
    assert all(name in text for name in small_run["methods"])
    assert "watch s/session" in text and "topic entropy, session 4" in text


@pytest.mark.slow
def test_engine_directly_and_through_http_agree() -> None:
    """The ``fyp`` method (Engine calls) and ``fyp-http`` (the HTTP app in-process, with
    its learning loop) serve the same pages and so report the same figures."""
    progress = Progress(disable=True)
    result = run_closed_loop(
        ["fyp", "fyp-http"],
        users=15,
        sessions_per_user=2,
        session_length=2,
        count=8,
        seed=4,
        videos=600,
        creators=50,
        n_boot=50,
        progress=progress,
    )
    direct, http = result["methods"]["fyp"], result["methods"]["fyp-http"]
    direct.pop("elapsed_s")
    http.pop("elapsed_s")
    assert direct == http
    assert direct["totals"]["impressions"] > 0
    assert [t.completed for t in progress.tasks] == [30, 30]


def test_local_methods_are_reproducible() -> None:
    kwargs: dict[str, Any] = {
        "users": 10,
        "sessions_per_user": 2,
        "session_length": 2,
        "videos": 400,
        "creators": 30,
        "n_boot": 20,
        "seed": 5,
    }
    a = run_closed_loop(["random", "popular", "oracle"], **kwargs)
    b = run_closed_loop(["random", "popular", "oracle"], **kwargs)
    for report in (*a["methods"].values(), *b["methods"].values()):
        report.pop("elapsed_s")
    assert a == b
    c = run_closed_loop(["random"], **{**kwargs, "seed": 6})
    c["methods"]["random"].pop("elapsed_s")
    assert c["methods"]["random"] != a["methods"]["random"]


def _render(table: object) -> str:
    console = Console(record=True, width=240)
    console.print(table)
    return console.export_text()
