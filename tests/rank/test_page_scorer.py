"""The page scorer learns what it is shown (a known answer on planted pools), and the
ranker around it fails open until it is trained."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.config import ScorerConfig
from fyp.rank.page_scorer import PAGE_FEATURES, PageScorer

F64 = npt.NDArray[np.float64]
_COL = {name: i for i, name in enumerate(PAGE_FEATURES)}


def _ndcg_at(scores: F64, labels: F64, k: int) -> float:
    order = np.argsort(-scores, kind="stable")[:k]
    gains = labels[order] / np.log2(np.arange(2, len(order) + 2))
    ideal = np.sort(labels)[::-1][:k] / np.log2(np.arange(2, min(k, len(labels)) + 2))
    return float(gains.sum() / ideal.sum()) if ideal.sum() > 0 else 0.0


def _planted_pools(n_pools: int, size: int, seed: int) -> tuple[F64, F64, list[int]]:
    """Pools where what the user engages with next is popular *on the surface* and new
    to the app (few exposures), whatever its global popularity or the ranker's value:
    a rule no single feature orders by."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_pools * size, len(PAGE_FEATURES)))
    want = (
        2.0 * x[:, _COL["trending_surface"]]
        - 1.5 * x[:, _COL["exposures"]]
        + 1.0 * x[:, _COL["trending_surface"]] * (x[:, _COL["user_views"]] > 0)
    )
    y = np.zeros(len(x))
    for g in range(n_pools):
        lo = g * size
        block = want[lo : lo + size] + rng.gumbel(size=size)
        y[lo + np.argsort(-block)[:3]] = 1.0  # each user engages with three of the pool
    return x, y, [size] * n_pools


def test_a_scorer_trained_on_planted_pools_orders_held_out_pools_by_the_planted_rule() -> None:
    size = 60
    x, y, sizes = _planted_pools(300, size, seed=0)
    scorer = PageScorer()
    scorer.fit(x.astype(np.float32), y.astype(np.float32), sizes, ScorerConfig(trees=100), 0)
    assert scorer.trained and scorer.groups == 300
    hx, hy, hsizes = _planted_pools(200, size, seed=1)  # pools it never saw
    learned = scorer.predict(hx)
    ours, by_value, by_popularity = [], [], []
    for g in range(len(hsizes)):
        s = slice(g * size, (g + 1) * size)
        ours.append(_ndcg_at(learned[s], hy[s], 10))
        by_value.append(_ndcg_at(hx[s, _COL["value"]], hy[s], 10))
        by_popularity.append(_ndcg_at(hx[s, _COL["trending_surface"]], hy[s], 10))
    # The best single feature (surface popularity) gets part of the way; the scorer,
    # which also learned the exposures' and the interaction's part, further.
    assert np.mean(ours) > np.mean(by_popularity) + 0.05
    assert np.mean(by_popularity) > np.mean(by_value) + 0.1


def test_an_untrained_scorer_says_so() -> None:
    assert not PageScorer().trained
