"""bench/feature_gauc.py's pieces on known answers: the regression recovers the weights
that generated its labels, and a group's rate is shrunk towards its prior by the
pseudo-views (0 for a group with no views)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import polars as pl
import pytest

from bench_modules import import_bench


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return import_bench("feature_gauc")


def test_logistic_regression_recovers_the_weights_behind_its_labels(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_000, 2))
    truth = np.array([1.5, -0.7, 0.3])  # two weights, then the bias
    p = 1 / (1 + np.exp(-(x @ truth[:2] + truth[2])))
    y = (rng.random(len(x)) < p).astype(np.float64)
    w = bench.fit_logistic(x, y)
    assert np.allclose(w, truth, atol=0.06)


def test_a_groups_rate_is_a_lift_over_its_prior_shrunk_by_pseudo_views(bench: ModuleType) -> None:
    frames = object.__new__(bench.Frames)
    # group "a": 30 views, 24 long; "b": 2 views, 0 long; "c" asked but never viewed
    frames.history = pl.DataFrame(
        {"k": ["a"] * 30 + ["b"] * 2, "y": [1.0] * 24 + [0.0] * 6 + [0.0, 0.0]}
    )
    frames.asked = pl.DataFrame({"k": ["a", "b", "c", "a"]})
    prior = np.array([0.5, 0.5, 0.5, 0.2])
    lift = frames.rate(["k"], prior)

    def logit(p: float) -> float:
        return float(np.log(p / (1 - p)))

    m = bench._PRIOR
    assert lift[0] == pytest.approx(logit((24 + m * 0.5) / (30 + m)))
    assert lift[1] == pytest.approx(logit((0 + m * 0.5) / (2 + m)))
    assert lift[2] == pytest.approx(0.0)  # no views: the prior itself
    assert lift[3] == pytest.approx(logit((24 + m * 0.2) / (30 + m)) - logit(0.2))
    assert lift[0] > lift[1]  # more long views, a higher rate, in the asked order
