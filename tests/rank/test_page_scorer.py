"""The page scorer learns what it is shown (a known answer on planted pools), and the
ranker around it fails open until it is trained."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.rank.page_scorer import PAGE_FEATURES, PageScorer, mean_ndcg

F64 = npt.NDArray[np.float64]
_COL = {name: i for i, name in enumerate(PAGE_FEATURES)}


def _planted_pools(n_pools: int, size: int, seed: int) -> tuple[F64, F64, list[int]]:
    """Pools where what the user engages with next is popular on the surface *and* close
    to their taste (the two-tower cosine), whatever its popularity in the region or the
    ranker's value: surface popularity alone gets part of the way."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_pools * size, len(PAGE_FEATURES)))
    want = x[:, _COL["trending_surface"]] + 2.0 * x[:, _COL["two_tower"]]
    y = np.zeros(len(x))
    for g in range(n_pools):
        lo = g * size
        block = want[lo : lo + size] + rng.gumbel(size=size)
        y[lo + np.argsort(-block)[:3]] = 1.0  # each user engages with three of the pool
    return x, y, [size] * n_pools


def test_a_scorer_trained_on_planted_pools_finds_the_planted_weights() -> None:
    size = 60
    x, y, sizes = _planted_pools(300, size, seed=0)
    scorer = PageScorer()
    scorer.fit(x.astype(np.float32), y.astype(np.float32), sizes, 0)
    assert scorer.trained and scorer.groups == 300 and scorer.examples == len(y)
    w = scorer.weights
    assert w is not None
    assert w[_COL["trending_surface"]] == 1.0 and w[_COL["two_tower"]] == 2.0
    # (the noise features get nothing, or the grid's smallest step)
    assert w[_COL["trending_region"]] == 0.0 and w[_COL["value"]] <= 0.1
    hx, hy, hsizes = _planted_pools(200, size, seed=1)  # pools it never saw
    shape = (len(hsizes), size)
    ours = mean_ndcg(scorer.predict(hx).reshape(shape), hy.reshape(shape))
    by_popularity = mean_ndcg(hx[:, _COL["trending_surface"]].reshape(shape), hy.reshape(shape))
    by_value = mean_ndcg(hx[:, _COL["value"]].reshape(shape), hy.reshape(shape))
    assert ours > by_popularity + 0.05
    assert by_popularity > by_value + 0.05


def test_a_deployment_whose_users_follow_the_ranker_gets_the_rankers_order() -> None:
    """Where the ranker's value is what predicts engagement (a feed of personal tastes),
    the search puts its weight there, not on popularity."""
    rng = np.random.default_rng(2)
    size, n = 50, 200
    x = rng.normal(size=(n * size, len(PAGE_FEATURES)))
    y = np.zeros(len(x))
    for g in range(n):
        lo = g * size
        y[lo + np.argsort(-(3.0 * x[lo : lo + size, _COL["value"]]))[:2]] = 1.0
    scorer = PageScorer()
    scorer.fit(x.astype(np.float32), y.astype(np.float32), [size] * n, 0)
    w = scorer.weights
    assert w is not None and w[_COL["value"]] > 0
    assert w[_COL["trending_surface"]] == 0.0


def test_mean_ndcg_of_known_orders() -> None:
    gains = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    perfect = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert mean_ndcg(perfect, gains) == 1.0  # the group without a positive is left out
    worst = -perfect
    assert abs(mean_ndcg(worst, gains) - 0.5) < 1e-12  # third place: 1 / log2(4)


def test_an_untrained_scorer_says_so() -> None:
    assert not PageScorer().trained
