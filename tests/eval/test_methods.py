"""The baselines on tiny hand-made logs, where the right answer can be worked out."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from fyp.eval.methods import (
    ALS,
    BASELINES,
    ItemKNN,
    LogisticRegression,
    Popular,
    PopularDecayed,
    RandomMethod,
    make_baseline,
    top_rows,
)
from fyp.eval.metrics import auc
from fyp.eval.protocol import Catalog, Requests, Train
from fyp.types import DAY_MS, Video

T0 = 1_650_000_000_000


def _catalog(n: int = 5) -> Catalog:
    return Catalog.of(
        [Video(str(i), f"c{i % 2}", 10_000 * (i + 1), created_at=T0 - DAY_MS) for i in range(n)]
    )


def _train(rows: list[tuple[str, int, int, bool]], catalog: Catalog) -> Train:
    """(user, video row, time offset ms, positive) → Train; long view = positive."""
    frame = pl.DataFrame(
        {
            "user_id": [int(u) for u, _, _, _ in rows],
            "video_id": [int(catalog.videos[r].video_id) for _, r, _, _ in rows],
            "time_ms": [T0 + t for _, _, t, _ in rows],
            "positive": [p for _, _, _, p in rows],
            "long_view": [int(p) for _, _, _, p in rows],
            "finish": [p for _, _, _, p in rows],
            "is_like": [0 for _ in rows],
            "is_click": [1 for _ in rows],
        }
    )
    return Train.of(frame, catalog)


def _requests(users: list[str], at: int, imps: list[tuple[str, int]] | None = None) -> Requests:
    imps = imps or []
    return Requests(
        users=users,
        at_ms=np.full(len(users), at, dtype=np.int64),
        surface=["for_you"] * len(users),
        imp_user=np.array([u for u, _ in imps], dtype=np.str_),
        imp_row=np.array([r for _, r in imps], dtype=np.int64),
        imp_time_ms=np.full(len(imps), at, dtype=np.int64),
        imp_surface=["for_you"] * len(imps),
    )


def test_top_rows_orders_by_score_then_row_and_skips_excluded() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert top_rows(scores, set(), 3).tolist() == [1, 4, 0]
    assert top_rows(scores, {1}, 3).tolist() == [4, 0, 2]
    assert top_rows(scores, {0, 1, 2, 3, 4}, 3).tolist() == []
    assert top_rows(scores, set(), 10).tolist() == [1, 4, 0, 2, 3]


def test_popular_counts_training_positives_and_excludes_the_users_own() -> None:
    catalog = _catalog()
    train = _train(
        [("1", 2, 0, True), ("2", 2, 1, True), ("3", 4, 2, True), ("1", 0, 3, False)],
        catalog,
    )
    method = Popular()
    method.fit(catalog, train)
    assert method.counts.tolist() == [0, 0, 2, 0, 1]
    top = method.top_k(_requests(["1", "9"], T0 + DAY_MS), 2)
    assert top is not None
    assert top[0].tolist() == [4, 1]  # user 1 had rows 0 and 2 in training
    assert top[1].tolist() == [2, 4]


def test_decayed_popularity_weights_each_positive_by_its_age_at_the_end_of_training() -> None:
    catalog = _catalog()
    # Row 1: two positives a day before the end; row 3: one at the end.
    train = _train([("1", 1, 0, True), ("2", 1, 0, True), ("3", 3, DAY_MS, True)], catalog)
    method = PopularDecayed()
    method.fit(catalog, train)
    assert method.weights[1] == pytest.approx(2 * math.exp(-1))
    assert method.weights[3] == pytest.approx(1.0)


def test_item_knn_scores_by_cosine_similarity_to_the_users_positives() -> None:
    catalog = _catalog()
    # Users 1 and 2 both liked rows 0 and 1; user 3 liked rows 0 and 2.
    train = _train(
        [
            ("1", 0, 0, True),
            ("1", 1, 1, True),
            ("2", 0, 2, True),
            ("2", 1, 3, True),
            ("3", 0, 4, True),
            ("3", 2, 5, True),
            ("4", 0, 6, True),
        ],
        catalog,
    )
    method = ItemKNN()
    method.fit(catalog, train)
    sim = method.sim.toarray()
    # co(0,1) = 2, |0| = 4 users, |1| = 2 users: 2 / sqrt(4·2)
    assert sim[0, 1] == pytest.approx(2 / math.sqrt(8))
    assert sim[0, 2] == pytest.approx(1 / math.sqrt(4))
    assert sim[0, 0] == 0.0
    # User 4 liked only row 0: row 1 (0.707) before row 2 (0.5).
    top = method.top_k(_requests(["4"], T0 + DAY_MS), 2)
    assert top is not None and top[0].tolist() == [1, 2]
    # A user with no history gets popularity order through the tie-break.
    cold = method.top_k(_requests(["99"], T0 + DAY_MS), 1)
    assert cold is not None and cold[0].tolist() == [0]


def test_decayed_popularity_prefers_the_recent_single_positive() -> None:
    # 2·e^-1 = 0.74 < 1: one positive at the end outweighs two a day older.
    catalog = _catalog()
    train = _train([("1", 1, 0, True), ("2", 1, 0, True), ("3", 3, DAY_MS, True)], catalog)
    method = PopularDecayed()
    method.fit(catalog, train)
    top = method.top_k(_requests(["9"], T0 + 2 * DAY_MS), 2)
    assert top is not None and top[0].tolist() == [3, 1]


def test_als_puts_a_users_co_watched_video_first() -> None:
    # Two taste groups; a user of group A who saw one A video should get the other A
    # videos before any B video.
    catalog = _catalog(6)
    rows = []
    for u in range(20):
        group = (0, 1, 2) if u % 2 == 0 else (3, 4, 5)
        rows += [(str(u), r, u * 10 + r, True) for r in group]
    rows.append(("100", 0, 1_000, True))
    train = _train(rows, catalog)
    method = ALS(factors=4, regularization=0.1, iterations=20)
    method.fit(catalog, train)
    top = method.top_k(_requests(["100"], T0 + DAY_MS), 2)
    assert top is not None and sorted(top[0].tolist()) == [1, 2]


def test_logistic_regression_learns_the_video_rate_signal() -> None:
    rng = np.random.default_rng(0)
    catalog = _catalog(20)
    quality = np.linspace(0.05, 0.95, 20)
    rows = []
    for i in range(4_000):
        r = int(rng.integers(0, 20))
        rows.append((str(int(rng.integers(0, 300))), r, i, bool(rng.random() < quality[r])))
    train = _train(rows, catalog)
    method = LogisticRegression()
    method.fit(catalog, train)
    assert method.top_k(_requests(["1"], T0), 10) is None
    test_rows = rng.integers(0, 20, 2_000)
    labels = rng.random(2_000) < quality[test_rows]
    req = _requests([], T0 + 10_000, [(str(i % 50), int(r)) for i, r in enumerate(test_rows)])
    scores = method.score_impressions(req)
    assert set(scores) == {"long_view", "finish", "like", "click"}
    assert auc(scores["long_view"], labels) > 0.7
    assert ((scores["long_view"] > 0) & (scores["long_view"] < 1)).all()


def test_random_is_reproducible_per_user_and_seed() -> None:
    catalog = _catalog(50)
    train = _train([("1", 0, 0, True)], catalog)
    a, b, c = RandomMethod(1), RandomMethod(1), RandomMethod(2)
    for m in (a, b, c):
        m.fit(catalog, train)
    req = _requests(["7"], T0)
    ta, tb, tc = a.top_k(req, 10), b.top_k(req, 10), c.top_k(req, 10)
    assert ta is not None and tb is not None and tc is not None
    assert ta[0].tolist() == tb[0].tolist() != tc[0].tolist()


def test_make_baseline_knows_every_name_and_refuses_others() -> None:
    for name in BASELINES:
        assert make_baseline(name, 0).name == name
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("nope", 0)
