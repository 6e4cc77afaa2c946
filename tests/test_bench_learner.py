"""bench/learner.py's repeated phases: each round's request users are its own slice, and
the medians are of the rounds' p99s (one phase that caught a fork does not move them)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from bench_modules import import_bench


@pytest.fixture(scope="module")
def learner_bench() -> ModuleType:
    return import_bench("learner")


def _round(idle: float, learning: float) -> dict[str, Any]:
    return {
        "idle": {"latency_ms": {"p99": idle}},
        "learning": {"latency_ms": {"p99": learning}, "p99_ratio_vs_idle": learning / idle},
    }


def test_the_medians_ignore_one_round_that_caught_a_stall(learner_bench: ModuleType) -> None:
    rounds = [_round(10.0, 12.0), _round(11.0, 200.0), _round(9.0, 13.0)]
    m = learner_bench._medians(rounds)
    assert m["idle_p99_ms"] == 10.0
    assert m["learning_p99_ms"] == 13.0
    assert m["ratio"] == pytest.approx(1.3)
    assert m["ratio_of_rounds"] == pytest.approx(13.0 / 9.0)


def test_each_round_asks_for_other_users(learner_bench: ModuleType) -> None:
    users = [f"u{i}" for i in range(10)]
    assert learner_bench._slice(users, 0, 4) == ["u0", "u1", "u2", "u3"]
    assert learner_bench._slice(users, 1, 4) == ["u4", "u5", "u6", "u7"]
    assert learner_bench._slice(users, 2, 4) == ["u8", "u9", "u0", "u1"]  # wraps around
    assert learner_bench._slice(users, 3, 10) == users  # the whole list, from the start
