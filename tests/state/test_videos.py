"""Per-video statistics and regional trending (time-decayed engagement)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.videos import Trending, VideoStats

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HALF_LIFE_MS = 24 * HOUR_MS
T0 = 1_750_000_000_000
N_ROWS = 20


# -- VideoStats -----------------------------------------------------------------------------


def test_ensure_grows_the_arrays_and_keeps_the_counts() -> None:
    stats = VideoStats()
    stats.ensure(3)
    stats.views[2] = 7
    stats.label_counts[2, 0] = 3
    stats.exposures[2] = 11
    stats.ensure(5_000)
    assert len(stats.views) >= 5_000
    assert stats.label_counts.shape[1] == len(LABELS)
    assert (stats.views[2], stats.label_counts[2, 0], stats.exposures[2]) == (7, 3, 11)
    assert stats.views[3:5_000].sum() == 0


def test_global_rates_are_never_zero_or_one() -> None:
    stats = VideoStats()
    assert np.allclose(stats.global_rates(), 0.5)  # nothing known
    stats.total_views = 100.0
    stats.total_labels[LABEL_INDEX["long_view"]] = 100.0
    rates = stats.global_rates()
    assert rates.min() > 0 and rates.max() < 1
    assert rates[LABEL_INDEX["long_view"]] > 0.99
    assert rates[LABEL_INDEX["like"]] < 0.01


def test_smoothed_rates_shrink_a_video_with_few_views_towards_the_global_rate() -> None:
    stats = VideoStats()
    stats.ensure(3)
    lv = LABEL_INDEX["long_view"]
    stats.total_views, stats.total_labels[lv] = 1_000.0, 300.0
    stats.views[1], stats.label_counts[1, lv] = 1.0, 1.0  # one view, a long one
    stats.views[2], stats.label_counts[2, lv] = 1_000.0, 1_000.0  # a thousand, all long
    g = stats.global_rates()[lv]
    rates = stats.smoothed_rates(np.array([0, 1, 2]), prior_strength=20.0)[:, lv]
    assert math.isclose(rates[0], g)  # unseen: exactly the global rate
    assert g < rates[1] < 0.4  # one view barely moves it
    assert rates[2] > 0.95  # many views: the video's own rate


# -- Trending -----------------------------------------------------------------------------


def reference_scores(events: list[tuple[int, int, float]]) -> dict[int, float]:
    """Σ weight × 2^((ts - T0) / half-life): the decayed score, up to a common factor."""
    out: dict[int, float] = {}
    for row, ts, weight in events:
        out[row] = out.get(row, 0.0) + weight * 2.0 ** ((ts - T0) / HALF_LIFE_MS)
    return out


engagement = st.lists(
    st.tuples(
        st.integers(0, N_ROWS - 1),
        st.integers(T0, T0 + 30 * DAY_MS),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events=engagement, k=st.integers(0, N_ROWS + 5))
def test_top_is_the_k_best_scores_best_first_and_only_positive_ones(
    events: list[tuple[int, int, float]], k: int
) -> None:
    trending = Trending(HALF_LIFE_MS)
    for row, ts, weight in events:  # in arrival order, which need not be time order
        trending.add("local", row, weight, ts, N_ROWS)
    ref = reference_scores(events)
    top = trending.top("local", k)

    assert len(top) == len(set(top)) == min(k, len(ref))
    assert set(top) <= set(ref)  # never a video without engagement
    scores = [ref[r] for r in top]
    assert all(a >= b * (1 - 1e-9) for a, b in itertools.pairwise(scores))
    left_out = set(ref) - set(top)
    if top and left_out:
        assert min(scores) >= max(ref[r] for r in left_out) * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    stamps=st.lists(st.integers(T0, T0 + 60 * DAY_MS), min_size=2, max_size=N_ROWS, unique=True),
    order=st.randoms(use_true_random=False),
)
def test_of_equal_engagement_the_newer_ranks_above_the_older(
    stamps: list[int], order: random.Random
) -> None:
    trending = Trending(HALF_LIFE_MS)
    arrivals = list(enumerate(stamps))  # video row i engaged once, at stamps[i]
    order.shuffle(arrivals)
    for row, ts in arrivals:
        trending.add("local", row, 1.0, ts, N_ROWS)
    newest_first = sorted(range(len(stamps)), key=lambda r: -stamps[r])
    assert trending.top("local", N_ROWS) == newest_first


def test_an_older_heavier_engagement_loses_to_a_newer_one_after_enough_half_lives() -> None:
    trending = Trending(HALF_LIFE_MS)
    trending.add("local", 0, 3.0, T0, N_ROWS)  # 3 units now
    trending.add("local", 1, 1.0, T0 + 1 * DAY_MS, N_ROWS)  # 1 unit a half-life later
    assert trending.top("local", 2) == [0, 1]  # 3 > 2
    trending.add("local", 2, 1.0, T0 + 2 * DAY_MS, N_ROWS)  # worth 4 units at T0's scale
    assert trending.top("local", 3) == [2, 0, 1]


def test_scores_stay_finite_and_ordered_over_a_long_stream() -> None:
    # A year of daily engagement forces the renormalisation that keeps exp() finite.
    trending = Trending(HALF_LIFE_MS)
    for day in range(400):
        trending.add("local", day % N_ROWS, 1.0, T0 + day * DAY_MS, N_ROWS)
    scores = trending.scores["local"]
    assert np.isfinite(scores).all()
    last_days = [(399 - d) % N_ROWS for d in range(N_ROWS)]  # engaged most recently first
    assert trending.top("local", N_ROWS) == last_days


def test_regions_are_kept_apart() -> None:
    trending = Trending(HALF_LIFE_MS)
    trending.add("br", 1, 1.0, T0, N_ROWS)
    trending.add("pt", 2, 1.0, T0, N_ROWS)
    assert trending.top("br", 5) == [1]
    assert trending.top("pt", 5) == [2]
    assert trending.top("local", 5) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("add"),
                st.integers(0, N_ROWS - 1),
                st.integers(1, 5),
                st.integers(0, 30 * 24),  # hours after T0
            ),
            st.tuples(st.just("top"), st.integers(1, 8), st.just(0), st.just(0)),
        ),
        max_size=60,
    )
)
def test_top_reads_between_adds_always_match_a_full_sort(
    ops: list[tuple[str, int, int, int]],
) -> None:
    """The kept leaders are never stale: whatever was read before, each read equals
    sorting every score afresh (a regression guard for the incremental top list)."""
    trending = Trending(HALF_LIFE_MS)
    hours = 0
    for op, a, b, c in ops:
        if op == "add":
            hours = max(hours, c)  # the log's clock does not run backwards
            trending.add("local", a, float(b), T0 + hours * HOUR_MS, N_ROWS)
        else:
            scores = trending.scores.get("local")
            got = trending.top("local", a)
            if scores is None:
                assert got == []
                continue
            want = [int(r) for r in np.argsort(-scores, kind="stable") if scores[r] > 0][:a]
            assert [scores[r] for r in got] == [scores[r] for r in want]


def test_rows_beyond_the_first_allocation_are_kept() -> None:
    trending = Trending(HALF_LIFE_MS)
    trending.add("local", 3, 1.0, T0, 10)
    trending.add("local", 5_000, 2.0, T0, 5_001)
    assert trending.top("local", 5) == [5_000, 3]
