"""Offline metrics: hand-computed answers (arithmetic in the comments), the edge cases each
docstring promises, and properties over generated inputs, with AUC, GAUC, tie-averaged
NDCG and Gini cross-checked against brute-force definitions."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fyp.eval.metrics import (
    auc,
    auc_ci,
    bootstrap_ci,
    bootstrap_ci_grouped,
    coverage,
    distinct_per_slate,
    gauc,
    gauc_ci,
    gini,
    mean_age_days,
    ndcg_at_k,
    ndcg_per_group,
    ndcg_within_groups,
    recall_at_k,
)

LOG2_3 = math.log2(3)  # discount of position 2
DAY_MS = 86_400_000

# Few distinct ids, so that generated lists overlap the relevant set and repeat items.
item_ids = st.sampled_from("abcdefgh")
ranked_lists = st.lists(item_ids, max_size=12)
relevant_sets = st.sets(item_ids, min_size=1)


def pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    """AUC by definition: the share of (positive, negative) pairs the positive wins, a tie
    counting half. O(n²)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    won = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return won / (len(positives) * len(negatives))


# --- recall@k ----------------------------------------------------------------------------


def test_recall_counts_relevant_items_in_the_top_k() -> None:
    ranked = ["a", "b", "c", "d", "e"]
    relevant = {"b", "e", "x"}  # x is never ranked
    assert recall_at_k(ranked, relevant, 3) == pytest.approx(1 / 3)  # top 3 holds b
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)  # top 5 holds b, e


def test_recall_with_k_larger_than_the_list_uses_the_whole_list() -> None:
    assert recall_at_k(["a", "b"], {"b", "e", "x"}, 100) == pytest.approx(1 / 3)


def test_recall_counts_a_repeated_item_once_and_the_repeat_uses_a_slot() -> None:
    # top 2 positions are b, b: one relevant item of two, and c is pushed out of the top 2.
    assert recall_at_k(["b", "b", "c"], {"b", "c"}, 2) == pytest.approx(1 / 2)
    assert recall_at_k(["b", "b", "c"], {"b", "c"}, 3) == pytest.approx(1.0)


def test_recall_ignores_repeats_in_the_relevant_collection() -> None:
    assert recall_at_k(["a"], ["a", "a", "b"], 1) == pytest.approx(1 / 2)  # relevant = {a, b}


def test_recall_rejects_no_relevant_items_and_k_below_one() -> None:
    with pytest.raises(ValueError, match="no relevant items"):
        recall_at_k(["a"], set(), 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(["a"], {"a"}, 0)


@given(ranked_lists, relevant_sets)
def test_recall_is_in_unit_interval_and_non_decreasing_in_k(
    ranked: list[str], relevant: set[str]
) -> None:
    values = [recall_at_k(ranked, relevant, k) for k in range(1, len(ranked) + 3)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in itertools.pairwise(values))


# --- NDCG@k ------------------------------------------------------------------------------


def test_ndcg_known_answer() -> None:
    ranked = ["a", "b", "c", "d"]
    relevant = {"b", "d"}
    # k=4: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    #      IDCG (2 relevant) = 1/log2(2) + 1/log2(3) = 1.63093; NDCG = 0.65092
    assert ndcg_at_k(ranked, relevant, 4) == pytest.approx(0.6509209298)
    # k=2: DCG = 1/log2(3) = 0.63093; IDCG over min(2, 2) = 1.63093; NDCG = 0.38685
    assert ndcg_at_k(ranked, relevant, 2) == pytest.approx(0.3868528072)
    # k=1: a is not relevant
    assert ndcg_at_k(ranked, relevant, 1) == 0.0


def test_ndcg_ideal_is_over_min_of_k_and_relevant() -> None:
    # 3 relevant, k = 2: both positions hit, IDCG over 2 positions, so a perfect 1.
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, 2) == pytest.approx(1.0)
    # k larger than the list: DCG = 1 + 1/log2(3), IDCG over 3 = 1 + 1/log2(3) + 1/2
    expected = (1 + 1 / LOG2_3) / (1 + 1 / LOG2_3 + 0.5)
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, 10) == pytest.approx(expected)


def test_ndcg_gains_a_repeated_item_only_at_its_first_position() -> None:
    # b, b, d against {b, d}: DCG = 1/log2(2) + 0 + 1/log2(4) = 1.5; IDCG = 1.63093
    assert ndcg_at_k(["b", "b", "d"], {"b", "d"}, 3) == pytest.approx(0.9197207891)
    # without the rule the repeat would push NDCG over 1
    assert ndcg_at_k(["b", "b", "b"], {"b"}, 3) == pytest.approx(1.0)


def test_ndcg_rejects_no_relevant_items_and_k_below_one() -> None:
    with pytest.raises(ValueError, match="no relevant items"):
        ndcg_at_k(["a"], [], 5)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(["a"], {"a"}, -1)


@given(ranked_lists, relevant_sets, st.integers(1, 15))
def test_ndcg_is_in_unit_interval(ranked: list[str], relevant: set[str], k: int) -> None:
    assert 0.0 <= ndcg_at_k(ranked, relevant, k) <= 1.0 + 1e-12


@given(st.permutations(list("abcdefgh")), relevant_sets, st.integers(1, 10))
def test_ndcg_is_one_when_the_relevant_items_come_first(
    catalog: list[str], relevant: set[str], k: int
) -> None:
    ranked = sorted(relevant) + [item for item in catalog if item not in relevant]
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(1.0)


# --- AUC ---------------------------------------------------------------------------------


def test_auc_known_answer() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4. 0.35 beats 0.1 only; 0.8 beats both: 3/4
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auc_counts_ties_as_half() -> None:
    # positives 0.5, 0.9; negatives 0.5, 0.2. 0.5 ties 0.5 (½) and beats 0.2 (1);
    # 0.9 beats both (2): (½ + 1 + 2) / 4 = 0.875.
    # By ranks: 0.2 → 1, the two 0.5 → 2.5, 0.9 → 4; positives 2.5 + 4 = 6.5;
    # (6.5 − 2·3/2) / (2·2) = 3.5 / 4.
    assert auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == pytest.approx(0.875)
    # constant scores: every pair ties
    assert auc([1.0, 1.0, 1.0], [1, 0, 1]) == pytest.approx(0.5)


def test_auc_rejects_one_class_nan_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="both classes"):
        auc([], [])
    with pytest.raises(ValueError, match="NaN"):
        auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="length"):
        auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="0/1"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="1-D"):
        auc([[0.1, 0.2]], [[0, 1]])


labelled_scores = st.lists(
    st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=40
).filter(lambda rows: len({y for _, y in rows}) == 2)


@given(labelled_scores)
def test_auc_matches_the_pairwise_count(rows: list[tuple[int, bool]]) -> None:
    scores = [float(s) for s, _ in rows]  # few distinct values: plenty of ties
    labels = [y for _, y in rows]
    assert auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))


@given(labelled_scores)
def test_auc_of_negated_scores_is_one_minus_auc(rows: list[tuple[int, bool]]) -> None:
    scores = np.array([s for s, _ in rows], dtype=np.float64)
    labels = [y for _, y in rows]
    assert auc(-scores, labels) == pytest.approx(1.0 - auc(scores, labels))


@given(labelled_scores, st.floats(0.0, 0.99))
def test_auc_is_one_when_scores_separate_the_classes(
    rows: list[tuple[int, bool]], jitter: float
) -> None:
    # every positive scores in [10, 11), every negative in [0, 1)
    scores = [10.0 * y + jitter * (s + 3) / 6 for s, y in rows]
    labels = [y for _, y in rows]
    assert auc(scores, labels) == 1.0
    assert auc([-s for s in scores], labels) == 0.0


# --- GAUC --------------------------------------------------------------------------------


def test_gauc_weights_users_by_impressions_and_skips_single_class_users() -> None:
    users = ["a", "a", "a", "b", "b", "c", "c"]
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7]
    labels = [1, 0, 0, 1, 0, 0, 0]
    # a: positive 0.9 beats 0.1 and 0.5 → AUC 1, 3 impressions
    # b: positive 0.2 loses to 0.8 → AUC 0, 2 impressions
    # c: no positive → skipped
    # GAUC = (3·1 + 2·0) / (3 + 2) = 0.6 over 2 users
    value, users_counted = gauc(users, scores, labels)
    assert value == pytest.approx(0.6)
    assert users_counted == 2


def test_gauc_accepts_integer_user_ids_in_any_row_order() -> None:
    # the same data as above, shuffled, ids as integers
    users = [2, 1, 3, 1, 2, 3, 1]
    scores = [0.8, 0.9, 0.3, 0.1, 0.2, 0.7, 0.5]
    labels = [0, 1, 0, 0, 1, 0, 0]
    value, users_counted = gauc(users, scores, labels)
    assert value == pytest.approx(0.6)
    assert users_counted == 2


def test_gauc_rejects_data_where_no_user_has_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        gauc(["a", "b"], [0.1, 0.2], [1, 0])
    with pytest.raises(ValueError, match="one entry per row"):
        gauc(["a"], [0.1, 0.2], [1, 0])


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-2, 2), st.booleans()), max_size=40))
def test_gauc_matches_per_user_auc_weighted_by_impressions(
    rows: list[tuple[int, int, bool]],
) -> None:
    per_user: dict[int, list[tuple[float, bool]]] = {}
    for user, score, label in rows:
        per_user.setdefault(user, []).append((float(score), label))
    counted = {u: r for u, r in per_user.items() if len({y for _, y in r}) == 2}
    users, scores, labels = zip(*rows, strict=True) if rows else ((), (), ())
    if not counted:
        with pytest.raises(ValueError):
            gauc(users, scores, labels)
        return
    weighted = sum(
        len(r) * pairwise_auc([s for s, _ in r], [y for _, y in r]) for r in counted.values()
    )
    expected = weighted / sum(len(r) for r in counted.values())
    value, users_counted = gauc(users, scores, labels)
    assert value == pytest.approx(expected)
    assert users_counted == len(counted)


# --- NDCG within groups ------------------------------------------------------------------


def test_ndcg_within_groups_known_answer() -> None:
    groups = ["g1", "g1", "g1", "g2", "g2", "g3"]
    scores = [3.0, 2.0, 1.0, 1.0, 2.0, 5.0]
    gains = [0.0, 1.0, 2.0, 0.5, 0.0, 0.0]
    # g1 in score order has gains 0, 1, 2: DCG = 0 + 1/log2(3) + 2/log2(4) = 1.63093;
    #    ideal 2, 1, 0: IDCG = 2 + 1/log2(3) = 2.63093; NDCG = 0.61991
    # g2 in score order has gains 0, 0.5: DCG = 0.5/log2(3) = 0.31546; IDCG = 0.5; 0.63093
    # g3 has zero gain: skipped. Mean = (0.61991 + 0.63093) / 2 = 0.62542
    assert ndcg_within_groups(groups, scores, gains) == pytest.approx(0.6254179934)


def test_ndcg_within_groups_averages_over_tied_scores() -> None:
    # one tie of two items with gains 1 and 0: either order is equally likely, so
    # NDCG = mean(1, 1/log2(3)) = (1 + 0.63093) / 2 = 0.81546, whatever the input order
    assert ndcg_within_groups([7, 7], [1.0, 1.0], [1.0, 0.0]) == pytest.approx(0.8154648768)
    assert ndcg_within_groups([7, 7], [1.0, 1.0], [0.0, 1.0]) == pytest.approx(0.8154648768)


def test_ndcg_within_groups_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="zero gain"):
        ndcg_within_groups(["a", "b"], [1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_within_groups(["a"], [1.0], [-1.0])
    with pytest.raises(ValueError, match="length"):
        ndcg_within_groups(["a"], [1.0], [1.0, 2.0])


def brute_force_group_ndcg(scores: list[int], gains: list[float]) -> float:
    """Mean NDCG over every ordering of the items consistent with descending score (ties
    in any order), one group."""
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains, reverse=True)))
    dcgs = [
        sum(gains[j] / math.log2(i + 2) for i, j in enumerate(order))
        for order in itertools.permutations(range(len(scores)))
        if all(scores[a] >= scores[b] for a, b in itertools.pairwise(order))
    ]
    return sum(dcgs) / len(dcgs) / ideal


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        min_size=1,
        max_size=12,
    ).filter(lambda rows: max(Counter(g for g, _, _ in rows).values()) <= 5)
)
def test_ndcg_within_groups_matches_the_mean_over_tie_orderings(
    rows: list[tuple[int, int, float]],
) -> None:
    per_group: dict[int, list[tuple[int, float]]] = {}
    for group, score, gain in rows:
        per_group.setdefault(group, []).append((score, gain))
    expected = [
        brute_force_group_ndcg([s for s, _ in r], [g for _, g in r])
        for r in per_group.values()
        if any(g > 0 for _, g in r)
    ]
    groups, scores, gains = zip(*rows, strict=True)
    if not expected:
        with pytest.raises(ValueError):
            ndcg_within_groups(groups, scores, gains)
        return
    value = ndcg_within_groups(groups, scores, gains)
    assert value == pytest.approx(sum(expected) / len(expected))
    assert 0.0 <= value <= 1.0 + 1e-12


# --- coverage, gini, distinct per slate, age ---------------------------------------------


def test_coverage_counts_distinct_items_over_all_lists() -> None:
    # {a, b, c} of a catalog of 10
    assert coverage([["a", "b"], ["b", "c"], []], catalog_size=10) == pytest.approx(0.3)
    assert coverage([], catalog_size=5) == 0.0


def test_coverage_rejects_an_impossible_catalog_size() -> None:
    with pytest.raises(ValueError, match="catalog of 2"):
        coverage([["a", "b", "c"]], catalog_size=2)
    with pytest.raises(ValueError, match="at least 1"):
        coverage([], catalog_size=0)


def test_gini_known_answers() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    # one item of four gets everything: sorted 0, 0, 0, 4; Σ i·x = 4·4 = 16;
    # 2·16 / (4·4) − 5/4 = 0.75 = (n − 1)/n
    assert gini([0, 4, 0, 0]) == pytest.approx(0.75)
    # 1, 2, 3: Σ i·x = 1 + 4 + 9 = 14; 2·14 / (3·6) − 4/3 = 0.22222
    # pairwise: |1−2| + |1−3| + |2−3| = 4, twice over ordered pairs = 8; 8 / (2·9·2) = 0.2222
    assert gini(np.array([3, 1, 2])) == pytest.approx(2 / 9)


def test_gini_counts_the_zeros_the_caller_passes() -> None:
    # two items shown equally: equal; add two never shown: 0, 0, 1, 1 → 2·(3+4)/(4·2) − 5/4
    assert gini([1, 1]) == pytest.approx(0.0)
    assert gini([1, 1, 0, 0]) == pytest.approx(0.5)


def test_gini_rejects_empty_negative_and_all_zero_counts() -> None:
    for bad in ([], [1, -1], [0, 0], [1, float("inf")]):
        with pytest.raises(ValueError):
            gini(bad)


@given(st.floats(0.001, 1e6), st.integers(1, 200))
def test_gini_of_equal_counts_is_zero(count: float, n: int) -> None:
    assert gini([count] * n) == pytest.approx(0.0, abs=1e-9)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30).filter(lambda c: sum(c) > 0))
def test_gini_matches_the_mean_absolute_difference(counts: list[int]) -> None:
    n = len(counts)
    mean_abs_diff = sum(abs(a - b) for a in counts for b in counts) / n**2
    expected = mean_abs_diff / (2 * sum(counts) / n)
    assert gini(counts) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= gini(counts) <= (n - 1) / n + 1e-12


CREATOR = {"a": "x", "b": "x", "c": "y", "d": "z", "e": "x", "f": "y", "g": "y"}


def test_distinct_per_slate_counts_values_per_window_and_drops_short_tails() -> None:
    # per 2: slate 1 → [a, b] {x} = 1, [c, d] {y, z} = 2;
    #        slate 2 → [e, f] {x, y} = 2, [g] is a short tail, dropped. Mean 5/3
    slates = [["a", "b", "c", "d"], ["e", "f", "g"]]
    assert distinct_per_slate(slates, CREATOR, per=2) == pytest.approx(5 / 3)
    # per 4: only slate 1 has a full window: {x, y, z} = 3
    assert distinct_per_slate(slates, CREATOR, per=4) == pytest.approx(3.0)


def test_distinct_per_slate_counts_every_value_of_a_multi_valued_attribute() -> None:
    tags: dict[str, str | list[str]] = {"a": ["1", "2"], "b": ["2", "3"], "c": [], "d": "4"}
    # [a, b] → {1, 2, 3} = 3; [c, d] → {4} = 1; mean 2
    assert distinct_per_slate([["a", "b", "c", "d"]], tags, per=2) == pytest.approx(2.0)


def test_distinct_per_slate_rejects_short_slates_and_unknown_items() -> None:
    with pytest.raises(ValueError, match="no slate has 10 items"):
        distinct_per_slate([["a", "b"]], CREATOR)
    with pytest.raises(ValueError, match="per must be"):
        distinct_per_slate([["a"]], CREATOR, per=0)
    with pytest.raises(KeyError):
        distinct_per_slate([["a", "unknown"]], CREATOR, per=2)


def test_mean_age_days_known_answer() -> None:
    # ages 2 days and 1 day (the same moment, items created a day apart): mean 1.5 days
    created = [0, DAY_MS]
    shown = [2 * DAY_MS, 2 * DAY_MS]
    assert mean_age_days(created, shown) == pytest.approx(1.5)
    # 12 hours old
    assert mean_age_days(np.array([DAY_MS]), np.array([DAY_MS + DAY_MS // 2])) == 0.5


def test_mean_age_days_rejects_items_shown_before_they_exist() -> None:
    with pytest.raises(ValueError, match="before it was created"):
        mean_age_days([DAY_MS], [0])
    with pytest.raises(ValueError, match="no items"):
        mean_age_days([], [])
    with pytest.raises(ValueError, match="one length"):
        mean_age_days([0, 1], [2])


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_ci_known_answer() -> None:
    # two users, 0 and 1: a resample's mean is 0 (¼), ½ (½) or 1 (¼), so with 1000
    # resamples the 2.5% and 97.5% quantiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
    # no variation, no interval
    assert bootstrap_ci([0.25] * 7) == (0.25, 0.25, 0.25)


def test_bootstrap_ci_is_reproducible_with_a_seed_and_varies_with_it() -> None:
    values = np.linspace(0.0, 1.0, 50) ** 2
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    mean, lo, hi = bootstrap_ci(values, alpha=0.5)
    _, wide_lo, wide_hi = bootstrap_ci(values, alpha=0.01)
    assert wide_lo < lo < mean < hi < wide_hi  # a 99% interval is wider than a 50% one


def test_bootstrap_ci_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0], alpha=1.0)


@settings(max_examples=50)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.integers(0, 2**32 - 1))
def test_bootstrap_interval_contains_the_mean_and_repeats_with_its_seed(
    values: list[float], seed: int
) -> None:
    mean, lo, hi = bootstrap_ci(values, n_boot=200, seed=seed)
    assert mean == pytest.approx(float(np.mean(values)))
    assert lo - 1e-12 <= mean <= hi + 1e-12
    assert bootstrap_ci(values, n_boot=200, seed=seed) == (mean, lo, hi)


def test_bootstrap_ci_is_the_grouped_bootstrap_with_one_row_per_group() -> None:
    values = np.array([0.1, 0.9, 0.4, 0.4, 0.0, 1.0])
    grouped = bootstrap_ci_grouped(
        np.arange(len(values)), lambda rows: float(np.mean(values[rows])), seed=11
    )
    assert bootstrap_ci(values, seed=11) == grouped


def test_grouped_bootstrap_resamples_whole_groups() -> None:
    groups = np.array(["u", "v", "u", "w", "w", "w"])  # u: rows 0, 2; v: 1; w: 3, 4, 5
    resamples: list[NDArray[np.intp]] = []

    def record(rows: NDArray[np.intp]) -> float:
        resamples.append(rows.copy())
        return float(len(rows))

    point, lo, hi = bootstrap_ci_grouped(groups, record, n_boot=200, seed=1)
    assert point == 6.0  # the point estimate sees every row once
    assert sorted(resamples[0].tolist()) == [0, 1, 2, 3, 4, 5]
    assert len(resamples) == 1 + 200
    for rows in resamples[1:]:
        times = Counter(rows.tolist())
        drawn = {"u": times[0], "v": times[1], "w": times[3]}
        assert times[2] == drawn["u"] and times[4] == times[5] == drawn["w"]  # whole groups
        assert sum(drawn.values()) == 3  # as many groups drawn as there are
    # sizes range from 3 (v, v, v) to 9 (w, w, w); the interval lies inside that range
    assert 3.0 <= lo <= hi <= 9.0


def test_grouped_bootstrap_of_gauc_counts_a_user_drawn_twice_twice() -> None:
    users = np.array(["a", "a", "a", "b", "b"])
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    labels = np.array([1, 0, 0, 1, 0])
    # rows of a twice, b once: GAUC = (2·3·1 + 2·0) / (6 + 2) = 0.75, the same as a
    # copy of a under another id
    rows = np.array([0, 1, 2, 0, 1, 2, 3, 4])
    doubled, _ = gauc(users[rows], scores[rows], labels[rows])
    renamed = np.array(["a", "a", "a", "a2", "a2", "a2", "b", "b"])
    as_two_users, _ = gauc(renamed, scores[rows], labels[rows])
    assert doubled == pytest.approx(0.75) == as_two_users

    point, lo, hi = bootstrap_ci_grouped(
        users, lambda r: gauc(users[r], scores[r], labels[r])[0], n_boot=100, seed=0
    )
    assert point == pytest.approx(0.6)
    assert 0.0 <= lo <= point <= hi <= 1.0


def test_grouped_bootstrap_rejects_non_finite_metric_values() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci_grouped([1, 2], lambda rows: float("nan"), n_boot=5)


# --- intervals without re-sorting ----------------------------------------------------------


def _toy_impressions(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, 300)
    scores = rng.integers(0, 8, 300).astype(float)  # many ties
    labels = rng.random(300) < 0.35
    return users, scores, labels


def test_auc_ci_matches_the_generic_grouped_bootstrap() -> None:
    users, scores, labels = _toy_impressions(1)
    fast = auc_ci(users, scores, labels, n_boot=150, seed=4)
    slow = bootstrap_ci_grouped(
        users, lambda rows: auc(scores[rows], labels[rows]), n_boot=150, seed=4
    )
    assert fast == pytest.approx(slow)
    assert fast[0] == pytest.approx(auc(scores, labels))


def test_gauc_ci_matches_the_generic_grouped_bootstrap_and_counts_users() -> None:
    users, scores, labels = _toy_impressions(2)
    mean, lo, hi, counted = gauc_ci(users, scores, labels, n_boot=150, seed=5)
    slow = bootstrap_ci_grouped(
        users, lambda rows: gauc(users[rows], scores[rows], labels[rows])[0], n_boot=150, seed=5
    )
    assert (mean, lo, hi) == pytest.approx(slow)
    assert (mean, counted) == pytest.approx(gauc(users, scores, labels))


def test_auc_ci_hand_computed_point() -> None:
    # Positives score 3 and 1, negatives 2 and 1: pairs won 1 + 0 + 0.5 (tie) + 1 = 2.5 / 4.
    mean, lo, hi = auc_ci([0, 0, 1, 1], [3.0, 2.0, 1.0, 1.0], [1, 0, 1, 0], n_boot=50)
    assert mean == pytest.approx(0.625)
    assert lo <= hi


def test_bias_corrected_interval_is_centred_on_a_set_metric() -> None:
    # Coverage-like: distinct groups drawn / all groups. Every resample is below the
    # point (repeats), so the plain interval misses it and the corrected one holds it.
    groups = np.arange(200)

    def distinct(rows: np.ndarray) -> float:
        return len(np.unique(groups[rows])) / len(groups)

    point, lo, hi = bootstrap_ci_grouped(groups, distinct, n_boot=200, seed=0)
    assert point == 1.0 and hi < 1.0
    point, lo, hi = bootstrap_ci_grouped(groups, distinct, n_boot=200, seed=0, bias_corrected=True)
    assert lo < point < hi


def test_ndcg_per_group_gives_each_groups_value_and_their_mean_is_the_metric() -> None:
    # Group a: best item first (NDCG 1); group b: its only gain last of two.
    groups = ["a", "a", "b", "b", "c"]
    scores = [2.0, 1.0, 2.0, 1.0, 5.0]
    gains = [1.0, 0.0, 0.0, 1.0, 0.0]  # c has no gain: skipped
    values = ndcg_per_group(groups, scores, gains)
    assert values.tolist() == pytest.approx([1.0, 1.0 / LOG2_3])
    assert ndcg_within_groups(groups, scores, gains) == pytest.approx(values.mean())
