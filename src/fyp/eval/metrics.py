"""Offline metrics: small pure functions over ranked lists, scores and exposure counts.

Three families, as the evaluation harness uses them:

* **Full ranking** (a method's top K over all eligible videos): :func:`recall_at_k`,
  :func:`ndcg_at_k` with binary gain.
* **Ranking on logged impressions** (a method scores the impressions a user actually
  received): :func:`auc`, :func:`gauc`, :func:`ndcg_within_groups` with graded gain.
* **Beyond accuracy**: :func:`coverage`, :func:`gini`, :func:`distinct_per_slate`,
  :func:`mean_age_days`.

And confidence intervals by bootstrap over users: :func:`bootstrap_ci` for metrics that are
a mean of per-user values, :func:`bootstrap_ci_grouped` for metrics computed over the rows
of a resample of users (AUC, GAUC).

Every function validates its input and raises ``ValueError`` where the metric is undefined
(no relevant items, one class only, an empty input) rather than returning NaN: the caller
decides whether to skip such a user. Discounts are ``log2(position + 1)`` with 1-based
positions. Times are Unix milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fyp.types import DAY_MS

__all__ = [
    "ages_ms",
    "auc",
    "auc_ci",
    "bootstrap_ci",
    "bootstrap_ci_grouped",
    "coverage",
    "distinct_per_slate",
    "gauc",
    "gauc_ci",
    "gini",
    "mean_age_days",
    "ndcg_at_k",
    "ndcg_per_group",
    "ndcg_within_groups",
    "recall_at_k",
]


Item = TypeVar("Item", bound=Hashable)

# --- full ranking ------------------------------------------------------------------------


def recall_at_k(ranked: Sequence[Item], relevant: Collection[Item], k: int) -> float:
    """Share of the relevant items found in the first ``k`` positions of ``ranked``.

    ``recall@k = |set(ranked[:k]) ∩ relevant| / |relevant|``, in [0, 1].

    The top k is the first k *positions*: an item repeated in ``ranked`` counts once and
    its repeats still use up positions (a feed that shows a video twice wastes a slot).
    ``k`` larger than the list means the whole list. Raises ``ValueError`` when
    ``relevant`` is empty (recall is undefined; callers skip such users) or ``k < 1``.
    """
    relevant_set = _relevant_set(relevant, k)
    return len(set(ranked[:k]) & relevant_set) / len(relevant_set)


def ndcg_at_k(ranked: Sequence[Item], relevant: Collection[Item], k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` positions, binary gain.

    ``DCG@k = Σ_{i=1..k} rel_i / log2(i + 1)`` with ``rel_i = 1`` when the item at
    1-based position ``i`` is relevant; ``IDCG@k = Σ_{i=1..min(k, |relevant|)} 1 /
    log2(i + 1)``; ``NDCG@k = DCG@k / IDCG@k``, in [0, 1].

    A relevant item repeated in ``ranked`` gains only at its first position (so NDCG
    never exceeds 1). ``k`` larger than the list means the whole list. Raises
    ``ValueError`` when ``relevant`` is empty or ``k < 1``.
    """
    relevant_set = _relevant_set(relevant, k)
    seen: set[Item] = set()
    dcg = 0.0
    for position, item in enumerate(ranked[:k], start=1):
        if item in relevant_set and item not in seen:
            seen.add(item)
            dcg += 1.0 / math.log2(position + 1)
    ideal = sum(1.0 / math.log2(p + 1) for p in range(1, min(k, len(relevant_set)) + 1))
    return dcg / ideal


def _relevant_set(relevant: Collection[Item], k: int) -> set[Item]:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevant_set = set(relevant)
    if not relevant_set:
        raise ValueError("no relevant items: the metric is undefined for this user")
    return relevant_set


# --- ranking on logged impressions -------------------------------------------------------


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counted as half.

    ``AUC = (Σ rank(positive) − n₊(n₊ + 1)/2) / (n₊ · n₋)`` with 1-based ascending ranks of
    the scores, tied scores sharing their mean rank; O(n log n). ``labels`` are 0/1 or
    booleans. Raises ``ValueError`` when only one class is present, on NaN scores, or
    when the inputs are not 1-D arrays of one length.
    """
    score_array, label_array = _scores_and_labels(scores, labels)
    group_index = np.zeros(len(score_array), dtype=np.intp)
    per_group, n_positive, n_negative = _auc_per_group(group_index, 1, score_array, label_array)
    if n_positive[0] == 0 or n_negative[0] == 0:
        raise ValueError("AUC needs both classes; the labels hold only one")
    return float(per_group[0])


def gauc(user_ids: ArrayLike, scores: ArrayLike, labels: ArrayLike) -> tuple[float, int]:
    """Group AUC: per-user AUC averaged with each user weighted by their impressions.

    ``GAUC = Σ_u n_u · AUC_u / Σ_u n_u`` over the users ``u`` who have both classes, with
    ``n_u`` the user's number of rows (impressions); users with one class only are skipped
    (their AUC is undefined). This is the definition the KuaiRand reference figures use.
    Returns ``(gauc, number of users counted)``. Raises ``ValueError`` when no user has
    both classes, or on the input errors of :func:`auc`.
    """
    score_array, label_array = _scores_and_labels(scores, labels)
    group_index, n_groups = _group_index(user_ids, len(score_array), "user_ids")
    per_user, n_positive, n_negative = _auc_per_group(
        group_index, n_groups, score_array, label_array
    )
    counted = (n_positive > 0) & (n_negative > 0)
    if not counted.any():
        raise ValueError("GAUC needs at least one user with both classes")
    impressions = (n_positive + n_negative)[counted]
    value = float(np.sum(per_user[counted] * impressions) / np.sum(impressions))
    return value, int(counted.sum())


def ndcg_per_group(
    group_ids: ArrayLike, scores: ArrayLike, gains: ArrayLike
) -> NDArray[np.float64]:
    """The NDCG of each group's items ordered by score, graded gain, one value per group
    with a positive gain (in the order of the sorted group ids); their unweighted mean is
    :func:`ndcg_within_groups`. Bootstrap these per-group values (``bootstrap_ci``), not
    the rows: a group drawn twice would otherwise be scored as one group with every item
    doubled.

    Within a group (e.g. one user's logged impressions), items are ordered by descending
    score over the full length of the group: ``DCG = Σ_i gain_i / log2(i + 1)``; ``IDCG``
    is the DCG of the same gains sorted descending; ``NDCG = DCG / IDCG``. Gains are
    linear (e.g. watch ratio) and must be non-negative. Tied scores are tie-averaged:
    each tied item gets the mean gain of its tie, which equals the expected DCG over
    random orderings of the tie (so constant scores are not rewarded for the input
    order). Groups whose gains are all zero are skipped. Raises ``ValueError`` when no
    group has a positive gain, on negative or NaN gains, on NaN scores, or on
    mismatched lengths.
    """
    score_array = _as_1d_float(scores, "scores")
    gain_array = _as_1d_float(gains, "gains")
    if len(gain_array) != len(score_array):
        raise ValueError(
            f"scores and gains differ in length: {len(score_array)} != {len(gain_array)}"
        )
    if (gain_array < 0).any():
        raise ValueError("gains must be non-negative")
    group_index, n_groups = _group_index(group_ids, len(score_array), "group_ids")

    # Ordered by score: tie-averaged gain times the discounts of the tie's positions.
    ordered = _GroupedOrder(group_index, -score_array)
    discount = 1.0 / np.log2(ordered.position_in_group + 2.0)
    ordered_gain = gain_array[ordered.order]
    n_ties = int(ordered.tie_id[-1]) + 1 if len(ordered.tie_id) else 0
    tie_size = _sum_by_group(ordered.tie_id, np.ones(len(ordered_gain)), n_ties)
    tie_mean_gain = _sum_by_group(ordered.tie_id, ordered_gain, n_ties) / tie_size
    dcg = _sum_by_group(ordered.group, tie_mean_gain[ordered.tie_id] * discount, n_groups)

    # Ideal order: gains descending (ties among equal gains do not change the sum).
    ideal = _GroupedOrder(group_index, -gain_array)
    ideal_discount = 1.0 / np.log2(ideal.position_in_group + 2.0)
    idcg = _sum_by_group(ideal.group, gain_array[ideal.order] * ideal_discount, n_groups)

    counted = idcg > 0
    if not counted.any():
        raise ValueError("every group has zero gain: NDCG is undefined")
    return dcg[counted] / idcg[counted]


def ndcg_within_groups(group_ids: ArrayLike, scores: ArrayLike, gains: ArrayLike) -> float:
    """The mean of :func:`ndcg_per_group`: see there."""
    return float(np.mean(ndcg_per_group(group_ids, scores, gains)))


def _scores_and_labels(
    scores: ArrayLike, labels: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    score_array = _as_1d_float(scores, "scores")
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {label_array.shape}")
    if len(label_array) != len(score_array):
        raise ValueError(
            f"scores and labels differ in length: {len(score_array)} != {len(label_array)}"
        )
    if label_array.dtype != np.bool_:
        if label_array.dtype.kind not in "iuf" or not np.isin(label_array, (0, 1)).all():
            raise ValueError("labels must be 0/1 or booleans")
        label_array = label_array.astype(np.bool_)
    return score_array, label_array


def _auc_per_group(
    group_index: NDArray[np.intp],
    n_groups: int,
    scores: NDArray[np.float64],
    labels: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-group AUC by the rank-sum formula (NaN where a group has one class), with the
    per-group counts of positives and negatives."""
    ordered = _GroupedOrder(group_index, scores)
    # Mid-rank of a tie: its first 1-based position plus half of the rest of the tie.
    tie_size = np.bincount(ordered.tie_id)[ordered.tie_id]
    mid_rank = ordered.tie_start_in_group + (tie_size + 1) / 2.0
    positive = labels[ordered.order].astype(np.float64)
    rank_sum = _sum_by_group(ordered.group, mid_rank * positive, n_groups)
    n_positive = _sum_by_group(ordered.group, positive, n_groups)
    n_negative = _sum_by_group(ordered.group, 1.0 - positive, n_groups)
    pairs = n_positive * n_negative
    both = pairs > 0
    per_group = np.full(n_groups, np.nan)
    # The positives' rank sum less n₊(n₊ + 1)/2 (their ranks among themselves) counts the
    # (positive, negative) pairs the positive wins, a tie counting half.
    pairs_won = rank_sum[both] - n_positive[both] * (n_positive[both] + 1) / 2.0
    per_group[both] = pairs_won / pairs[both]
    return per_group, n_positive, n_negative


def _sum_by_group(
    group: NDArray[np.intp], weights: NDArray[np.float64], n_groups: int
) -> NDArray[np.float64]:
    return np.asarray(np.bincount(group, weights=weights, minlength=n_groups), dtype=np.float64)


class _GroupedOrder:
    """Rows sorted by group, then by ``key`` ascending, with where each row sits: its
    0-based position within its group, and its tie (same group and same key)."""

    def __init__(self, group_index: NDArray[np.intp], key: NDArray[np.float64]) -> None:
        n = len(key)
        self.order: NDArray[np.intp] = np.lexsort((key, group_index))
        self.group: NDArray[np.intp] = group_index[self.order]
        sorted_key = key[self.order]
        starts_group = np.ones(n, dtype=np.bool_)
        starts_group[1:] = self.group[1:] != self.group[:-1]
        starts_tie = starts_group.copy()
        starts_tie[1:] |= sorted_key[1:] != sorted_key[:-1]
        position = np.arange(n)
        group_start = np.maximum.accumulate(np.where(starts_group, position, 0))
        tie_start = np.maximum.accumulate(np.where(starts_tie, position, 0))
        self.position_in_group: NDArray[np.intp] = position - group_start
        self.tie_start_in_group: NDArray[np.intp] = tie_start - group_start
        self.tie_id: NDArray[np.intp] = np.cumsum(starts_tie) - 1


# --- beyond accuracy ---------------------------------------------------------------------


def coverage(recommended: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Catalog coverage: distinct items recommended across all lists / catalog size, in
    [0, 1]. Raises ``ValueError`` when ``catalog_size < 1`` or when more distinct items
    were recommended than the catalog holds (the caller counted the catalog wrong)."""
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be at least 1, got {catalog_size}")
    distinct: set[str] = set()
    for items in recommended:
        distinct.update(items)
    if len(distinct) > catalog_size:
        raise ValueError(
            f"{len(distinct)} distinct items recommended from a catalog of {catalog_size}"
        )
    return len(distinct) / catalog_size


def gini(counts: ArrayLike) -> float:
    """Gini coefficient of exposure counts (impressions per item or per creator).

    With counts sorted ascending ``x_1 ≤ … ≤ x_n``:
    ``G = 2 Σ_i i·x_i / (n Σ_i x_i) − (n + 1) / n``, equal to the mean absolute difference
    over all ordered pairs divided by twice the mean. 0 when every item is shown equally,
    up to ``(n − 1) / n`` (→ 1) when one item gets everything. Items never shown count
    only if the caller passes their zeros. Raises ``ValueError`` on an empty input,
    negative, infinite or NaN counts, or counts that sum to zero.
    """
    values = np.sort(_as_1d_float(counts, "counts"))
    if len(values) == 0:
        raise ValueError("gini of no counts is undefined")
    if values[0] < 0 or not np.isfinite(values[-1]):
        raise ValueError("counts must be finite and non-negative")
    total = float(values.sum())
    if total <= 0:
        raise ValueError("counts sum to zero: gini is undefined")
    n = len(values)
    weighted = float(np.sum(np.arange(1, n + 1) * values))
    # Rounding can leave a hair below zero for equal counts; the coefficient cannot be.
    return max(0.0, 2.0 * weighted / (n * total) - (n + 1) / n)


def distinct_per_slate(
    slates: Iterable[Sequence[str]],
    attribute: Mapping[str, str | Sequence[str]],
    per: int = 10,
) -> float:
    """Mean number of distinct attribute values per window of ``per`` consecutive items.

    Each slate (a ranked list or a session's feed) is cut into consecutive windows of
    ``per`` items; a trailing window shorter than ``per`` is dropped (a short window
    would look less diverse only because it is short). A window's value is the number of
    distinct values among its items' attributes: ``attribute[item]`` is one value (e.g.
    the creator) or a sequence of values (e.g. tags, all counted). The result is the mean
    over all windows of all slates. Raises ``ValueError`` when ``per < 1`` or no slate has
    ``per`` items, and ``KeyError`` for an item missing from ``attribute``.
    """
    if per < 1:
        raise ValueError(f"per must be at least 1, got {per}")
    distinct_counts: list[int] = []
    for slate in slates:
        for start in range(0, len(slate) - per + 1, per):
            values: set[str] = set()
            for item in slate[start : start + per]:
                value = attribute[item]
                if isinstance(value, str):
                    values.add(value)
                else:
                    values.update(value)
            distinct_counts.append(len(values))
    if not distinct_counts:
        raise ValueError(f"no slate has {per} items")
    return sum(distinct_counts) / len(distinct_counts)


def mean_age_days(item_created_ms: ArrayLike, at_ms: ArrayLike) -> float:
    """Mean age, in days, of the recommended items at the time they were recommended.

    ``mean_i (at_ms[i] − item_created_ms[i]) / 86 400 000``, both Unix ms, one pair per
    recommended item. Raises ``ValueError`` on empty or mismatched inputs, and when an
    item was recommended before it was created (a sign of leaked future data or of
    mixed time units).
    """
    age_ms = ages_ms(item_created_ms, at_ms, "item_created_ms and at_ms", "recommended", "created")
    return float(np.mean(age_ms / DAY_MS))


def ages_ms(
    created_ms: ArrayLike,
    shown_ms: ArrayLike,
    names: str,
    shown: str,
    created: str,
    items: str = "items",
) -> NDArray[np.int64]:
    """``shown_ms − created_ms`` per item, checked: 1-D, of one length, not empty, and
    never shown before created (a sign of leaked future data or of mixed time units).
    ``names``, ``shown``, ``created``, ``items``: the words of the error messages."""
    c = np.asarray(created_ms, dtype=np.int64)
    s = np.asarray(shown_ms, dtype=np.int64)
    if c.ndim != 1 or s.ndim != 1 or len(c) != len(s):
        raise ValueError(f"{names} must be 1-D and of one length")
    if len(c) == 0:
        raise ValueError(f"the age of no {items} is undefined")
    age: NDArray[np.int64] = s - c
    if (age < 0).any():
        raise ValueError(f"an item was {shown} before it was {created}")
    return age


# --- confidence intervals ----------------------------------------------------------------


def bootstrap_ci(
    per_user_values: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Mean of per-user values with a percentile bootstrap interval over users.

    Draws ``n_boot`` resamples of the users with replacement (each as many users as the
    input), takes each resample's mean, and returns ``(mean, lo, hi)`` with ``lo`` and
    ``hi`` the ``alpha/2`` and ``1 − alpha/2`` quantiles of those means (a 95% interval
    for the default ``alpha``). The same ``seed`` gives the same interval; it is the same
    computation as :func:`bootstrap_ci_grouped` with one row per group. Raises
    ``ValueError`` on an empty input, NaN values, ``n_boot < 1`` or ``alpha`` outside
    (0, 1).
    """
    values = _as_1d_float(per_user_values, "per_user_values")
    return bootstrap_ci_grouped(
        np.arange(len(values)),
        lambda rows: float(np.mean(values[rows])),
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    )


def bootstrap_ci_grouped(
    groups: ArrayLike,
    metric: Callable[[NDArray[np.intp]], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    bias_corrected: bool = False,
) -> tuple[float, float, float]:
    """A metric over rows, with a percentile bootstrap interval over groups of rows.

    ``groups`` gives each row's group (e.g. the user of each impression). ``metric``
    receives row indices and returns the metric over those rows; the point estimate is
    ``metric(all rows)``. Each of the ``n_boot`` resamples draws as many groups as there
    are, with replacement, and passes the rows of every drawn group (repeated as often
    as the group was drawn). Returns ``(metric(all rows), lo, hi)`` with ``lo`` and ``hi``
    the ``alpha/2`` and ``1 − alpha/2`` quantiles of the resampled values.

    A group drawn twice arrives as its rows twice; a metric that groups rows by id again
    sees one group with every row doubled. For impression-weighted GAUC this is the same
    as counting the user twice (same AUC, twice the weight). For metrics over the *set*
    of rows (catalog coverage, concentration), a resample's repeats make it smaller than
    the sample, so every resample sits below the point: ``bias_corrected`` shifts the
    interval by ``metric(all rows) − mean(resampled)``, keeping its width (the sampling
    spread) around the point estimate. Errors the metric raises on
    a resample (e.g. one class only) propagate. Raises ``ValueError`` on an empty
    ``groups``, a non-finite metric value, ``n_boot < 1`` or ``alpha`` outside (0, 1).
    """
    _check_boot(n_boot, alpha)
    group_array = np.asarray(groups)
    if group_array.ndim != 1 or len(group_array) == 0:
        raise ValueError("groups must be a non-empty 1-D array")
    group_index, n_groups = _group_index(group_array, len(group_array), "groups")

    # Rows sorted by group: group g owns rows_by_group[start[g] : start[g] + size[g]].
    rows_by_group = np.argsort(group_index, kind="stable")
    size = np.bincount(group_index, minlength=n_groups)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))

    point = metric(np.arange(len(group_array)))
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        drawn = rng.integers(0, n_groups, size=n_groups)
        lengths = size[drawn]
        # Index into rows_by_group: each drawn group's start, then counting up its rows.
        offsets = np.repeat(start[drawn] - (np.cumsum(lengths) - lengths), lengths)
        rows = rows_by_group[offsets + np.arange(int(lengths.sum()))]
        resampled[b] = metric(rows)
    if not (math.isfinite(point) and np.isfinite(resampled).all()):
        raise ValueError("the metric returned a non-finite value")
    lo, hi = np.quantile(resampled, [alpha / 2.0, 1.0 - alpha / 2.0])
    if bias_corrected:
        shift = point - float(np.mean(resampled))
        lo, hi = lo + shift, hi + shift
    return float(point), float(lo), float(hi)


def auc_ci(
    groups: ArrayLike,
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """:func:`auc` over all rows, with a bootstrap interval over groups (users).

    The same resamples as :func:`bootstrap_ci_grouped` with the same ``seed`` and the
    same values it would give for ``metric = auc of the rows``, computed without
    re-sorting: a resample is the rows weighted by how often their group was drawn, and
    the AUC of rows repeated ``w`` times is the weighted rank-sum over ties of the one
    sort. A resample with one class only raises ``ValueError``.
    """
    score_array, label_array = _scores_and_labels(scores, labels)
    group_index, n_groups = _group_index(groups, len(score_array), "groups")
    _check_boot(n_boot, alpha)
    order = np.argsort(score_array, kind="stable")
    sorted_scores = score_array[order]
    starts_tie = np.ones(len(order), dtype=np.bool_)
    starts_tie[1:] = sorted_scores[1:] != sorted_scores[:-1]
    tie_id = np.cumsum(starts_tie) - 1
    n_ties = int(tie_id[-1]) + 1 if len(tie_id) else 0
    positive = label_array[order]
    row_group = group_index[order]

    def weighted_auc(group_weight: NDArray[np.float64]) -> float:
        w = group_weight[row_group]
        pos = _sum_by_group(tie_id, w * positive, n_ties)
        neg = _sum_by_group(tie_id, w * ~positive, n_ties)
        total_pos, total_neg = float(pos.sum()), float(neg.sum())
        if total_pos == 0 or total_neg == 0:
            return math.nan  # one class only in this resample
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))

    return _weighted_bootstrap(weighted_auc, n_groups, n_boot, seed, alpha)


def gauc_ci(
    user_ids: ArrayLike,
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float, int]:
    """:func:`gauc` with a bootstrap interval over users: ``(gauc, lo, hi, users
    counted)``. A drawn user counts with the weight of their impressions times the times
    they were drawn, as :func:`bootstrap_ci_grouped` would count them."""
    score_array, label_array = _scores_and_labels(scores, labels)
    group_index, n_groups = _group_index(user_ids, len(score_array), "user_ids")
    _check_boot(n_boot, alpha)
    per_user, n_positive, n_negative = _auc_per_group(
        group_index, n_groups, score_array, label_array
    )
    counted = (n_positive > 0) & (n_negative > 0)
    if not counted.any():
        raise ValueError("GAUC needs at least one user with both classes")
    impressions = np.where(counted, n_positive + n_negative, 0.0)
    auc_or_zero = np.where(counted, per_user, 0.0)

    def weighted_gauc(user_weight: NDArray[np.float64]) -> float:
        w = user_weight * impressions
        total = float(w.sum())
        if total == 0:
            return math.nan  # no user with both classes in this resample
        return float(np.sum(w * auc_or_zero) / total)

    point, lo, hi = _weighted_bootstrap(weighted_gauc, n_groups, n_boot, seed, alpha)
    return point, lo, hi, int(counted.sum())


def _weighted_bootstrap(
    metric: Callable[[NDArray[np.float64]], float],
    n_groups: int,
    n_boot: int,
    seed: int,
    alpha: float,
) -> tuple[float, float, float]:
    """``metric(weights per group)`` at weight 1, and the quantiles over resamples whose
    weights are how often each group was drawn (the draws of bootstrap_ci_grouped).

    A resample where the metric is undefined (NaN: one class only, on a small sample) is
    left out of the quantiles; more than half of them undefined raises ``ValueError``,
    as does an undefined point estimate."""
    point = metric(np.ones(n_groups))
    if not math.isfinite(point):
        raise ValueError("the metric is undefined on this sample")
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        drawn = rng.integers(0, n_groups, size=n_groups)
        resampled[b] = metric(np.bincount(drawn, minlength=n_groups).astype(np.float64))
    resampled = resampled[np.isfinite(resampled)]
    if len(resampled) * 2 < n_boot:
        raise ValueError("the metric is undefined on most resamples: too little data")
    lo, hi = np.quantile(resampled, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(point), float(lo), float(hi)


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


# --- input checks ------------------------------------------------------------------------


def _as_1d_float(values: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def _group_index(ids: ArrayLike, n_rows: int, name: str) -> tuple[NDArray[np.intp], int]:
    """Each row's group as an index 0..n_groups-1, and n_groups."""
    id_array = np.asarray(ids)
    if id_array.ndim != 1 or len(id_array) != n_rows:
        raise ValueError(f"{name} must be 1-D with one entry per row ({n_rows})")
    unique_ids, index = np.unique(id_array, return_inverse=True)
    return index.astype(np.intp).reshape(-1), len(unique_ids)
