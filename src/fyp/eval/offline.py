"""The offline evaluation: fit every method on the training side, ask each the same
questions about the test side, score the answers against the test outcomes.

The result is a JSON-able dict other tools can read::

    {"protocol": {dates, row counts, users, seeds, ...},
     "methods": {"<method>": {"<metric>": {"mean": x, "ci95": [lo, hi]}, ...}},
     "curves": {"<method>": {"recall": {"<k>": x}}},
     "calibration": {"<method>": {"<label>": {"predicted": [...], "observed": [...], "n": [...]}}},
     "timings_s": {"<method>": {"fit": s, "rank": s, "impressions": s}}}

Metric names: ``recall@K`` and ``ndcg@K`` (K = 10, 50, 100) on full ranking;
``auc_<label>`` and ``gauc_<label>`` for long_view, finish, like and click,
``gauc_session_long_view`` (GAUC over a user's sessions instead of their whole day:
:func:`fyp.eval.protocol.impression_sessions`) and ``ndcg_watch`` (within each user's
impressions, watch ratio as gain) on impressions;
``coverage``, ``creator_gini``, ``distinct_creators@10``, ``distinct_tags@10`` and
``freshness_days`` on the top 10 of each ranking user. Intervals: percentile bootstrap
over users (``n_boot`` resamples, ``seed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fyp.eval.methods import FloatArray, IntArray, Method
from fyp.eval.metrics import (
    auc_ci,
    bootstrap_ci,
    bootstrap_ci_grouped,
    gauc_ci,
    gini,
    ndcg_at_k,
    ndcg_per_group,
    recall_at_k,
)
from fyp.eval.protocol import (
    IMPRESSION_LABELS,
    EvalData,
    Split,
    impression_sessions,
    load_eval_data,
)
from fyp.types import DAY_MS

__all__ = [
    "CURVE_KS",
    "KS",
    "Answers",
    "ask",
    "default_methods",
    "evaluate_kuairand",
    "evaluate_method",
    "method_names",
    "run_offline",
    "score_answers",
]

KS: tuple[int, ...] = (10, 50, 100)
CURVE_KS: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 50, 75, 100)
SESSION_LABEL = "long_view"  # the label GAUC is also taken over sessions for
BEYOND_K = 10  # beyond-accuracy metrics describe the first page a user would see
CALIBRATION_BINS = 10

Metric = dict[str, float | list[float]]
Step = Callable[[str], None]


def _ci(mean: float, lo: float, hi: float) -> Metric:
    return {"mean": mean, "ci95": [lo, hi]}


@dataclass
class _Tops:
    """Each ranking user's top rows (at most max(KS)), as a padded matrix for the
    beyond-accuracy resamples (-1 pads a list shorter than BEYOND_K)."""

    lists: list[IntArray]

    def first(self, k: int) -> IntArray:
        out = np.full((len(self.lists), k), -1, dtype=np.int64)
        for i, rows in enumerate(self.lists):
            out[i, : min(k, len(rows))] = rows[:k]
        return out


def _ranking_metrics(data: EvalData, tops: _Tops, n_boot: int, seed: int) -> dict[str, Metric]:
    relevant = data.outcomes.relevant
    out: dict[str, Metric] = {}
    for k in KS:
        recalls = [
            recall_at_k(r.tolist(), rel, k) for r, rel in zip(tops.lists, relevant, strict=True)
        ]
        ndcgs = [ndcg_at_k(r.tolist(), rel, k) for r, rel in zip(tops.lists, relevant, strict=True)]
        out[f"recall@{k}"] = _ci(*bootstrap_ci(recalls, n_boot=n_boot, seed=seed))
        out[f"ndcg@{k}"] = _ci(*bootstrap_ci(ndcgs, n_boot=n_boot, seed=seed))
    out.update(_beyond_accuracy(data, tops, n_boot, seed))
    return out


def _recall_curve(data: EvalData, tops: _Tops) -> dict[str, float]:
    relevant = data.outcomes.relevant
    return {
        str(k): float(
            np.mean(
                [
                    recall_at_k(r.tolist(), rel, k)
                    for r, rel in zip(tops.lists, relevant, strict=True)
                ]
            )
        )
        for k in CURVE_KS
    }


def _beyond_accuracy(data: EvalData, tops: _Tops, n_boot: int, seed: int) -> dict[str, Metric]:
    catalog = data.catalog
    page = tops.first(BEYOND_K)
    users = np.arange(len(page))
    full = (page >= 0).all(axis=1)
    creators, creator_code = np.unique(catalog.creator, return_inverse=True)

    def coverage_of(rows: IntArray) -> float:
        shown = page[rows]
        # Distinct rows by counting, not sorting: a thousand resamples of every user's page.
        counts = np.bincount(shown[shown >= 0], minlength=len(catalog))
        return int(np.count_nonzero(counts)) / len(catalog)

    def creator_gini_of(rows: IntArray) -> float:
        shown = page[rows]
        counts = np.bincount(creator_code[shown[shown >= 0]], minlength=len(creators))
        return gini(counts)  # over every creator in the catalog, the unshown as zeros

    tags = [v.hashtags for v in catalog.videos]
    distinct_creators = [len(set(catalog.creator[r[r >= 0]].tolist())) for r in page[full]]
    distinct_tags = [len({t for row in r.tolist() for t in tags[row]}) for r in page[full]]
    created = catalog.created_at
    ages = [
        float(np.mean(np.maximum(at - created[r[(r >= 0) & (created[r] >= 0)]], 0) / DAY_MS))
        for r, at in zip(page, data.requests.at_ms.tolist(), strict=True)
        if ((r >= 0) & (created[np.maximum(r, 0)] >= 0)).any()
    ]
    out = {
        "coverage": _ci(
            *bootstrap_ci_grouped(users, coverage_of, n_boot=n_boot, seed=seed, bias_corrected=True)
        ),
        "creator_gini": _ci(
            *bootstrap_ci_grouped(
                users, creator_gini_of, n_boot=n_boot, seed=seed, bias_corrected=True
            )
        ),
    }
    if distinct_creators:
        out[f"distinct_creators@{BEYOND_K}"] = _ci(
            *bootstrap_ci(distinct_creators, n_boot=n_boot, seed=seed)
        )
        out[f"distinct_tags@{BEYOND_K}"] = _ci(
            *bootstrap_ci(distinct_tags, n_boot=n_boot, seed=seed)
        )
    if ages:
        out["freshness_days"] = _ci(*bootstrap_ci(ages, n_boot=n_boot, seed=seed))
    return out


def _impression_metrics(
    data: EvalData, scores: dict[str, FloatArray], n_boot: int, seed: int
) -> tuple[dict[str, Metric], dict[str, int]]:
    users = data.requests.imp_user
    out: dict[str, Metric] = {}
    counted: dict[str, int] = {}
    for label in IMPRESSION_LABELS:
        y = data.outcomes.labels[label]
        s = scores[label]
        if y.all() or not y.any():
            continue  # one class only (a tiny sample): AUC undefined
        try:
            out[f"auc_{label}"] = _ci(*auc_ci(users, s, y, n_boot=n_boot, seed=seed))
        except ValueError:
            continue  # one class in most resamples (a day of a small sample): no AUC
        try:
            mean, lo, hi, n_users = gauc_ci(users, s, y, n_boot=n_boot, seed=seed)
        except ValueError:
            continue  # too few users with both classes (a small sample): no GAUC
        out[f"gauc_{label}"] = _ci(mean, lo, hi)
        counted[f"gauc_{label}"] = n_users
        if label == SESSION_LABEL:
            # Groups whose scores all come from one state of the user, even for a model
            # that learns online between sessions: the fair GAUC for those
            # (``fyp.eval.prequential``); intervals resample sessions.
            sessions = impression_sessions(users, data.requests.imp_time_ms)
            try:
                mean, lo, hi, n_sessions = gauc_ci(sessions, s, y, n_boot=n_boot, seed=seed)
            except ValueError:
                continue
            out[f"gauc_session_{label}"] = _ci(mean, lo, hi)
            counted[f"gauc_session_{label}"] = n_sessions
    gains = data.outcomes.watch_ratio
    if (gains > 0).any():
        # Ranked by the value score where the method has one: watch ratio is no one head.
        per_user = ndcg_per_group(users, scores["long_view"], gains)
        out["ndcg_watch"] = _ci(*bootstrap_ci(per_user, n_boot=n_boot, seed=seed))
    return out, counted


def _calibration(
    data: EvalData, scores: dict[str, FloatArray], used: dict[str, str]
) -> dict[str, dict[str, list[float]]]:
    """Mean predicted vs observed rate in deciles of the prediction, for the labels a
    method scores with a probability."""
    out: dict[str, dict[str, list[float]]] = {}
    for label in IMPRESSION_LABELS:
        if not used.get(label, "").startswith("P("):
            continue
        p, y = scores[label], data.outcomes.labels[label].astype(np.float64)
        if len(p) < CALIBRATION_BINS:
            continue
        edges = np.quantile(p, np.linspace(0, 1, CALIBRATION_BINS + 1))
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, CALIBRATION_BINS - 1)
        n = np.bincount(bins, minlength=CALIBRATION_BINS)
        keep = n > 0
        predicted = np.bincount(bins, weights=p, minlength=CALIBRATION_BINS)[keep] / n[keep]
        observed = np.bincount(bins, weights=y, minlength=CALIBRATION_BINS)[keep] / n[keep]
        out[label] = {
            "predicted": predicted.tolist(),
            "observed": observed.tolist(),
            "n": n[keep].astype(float).tolist(),
        }
    return out


@dataclass
class Answers:
    """What one method answered about one :class:`EvalData`'s requests: each ranking
    user's top rows (None for a method that cannot rank the catalog), a score per
    impression and label, which output scored each label, and the seconds it took."""

    tops: list[IntArray] | None
    scores: dict[str, FloatArray]
    used: dict[str, str]
    timings: dict[str, float]


def ask(method: Method, data: EvalData, *, step: Step | None = None) -> Answers:
    """Fit ``method`` on ``data``'s training side, then ask it ``data``'s requests."""
    note = step or (lambda _: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    note(f"{method.name}: fit")
    method.fit(data.catalog, data.train)
    timings["fit"] = time.perf_counter() - start

    tops: list[IntArray] | None = None
    if data.requests.users:
        start = time.perf_counter()
        note(f"{method.name}: rank the catalog for {len(data.requests.users):,} users")
        tops = method.top_k(data.requests, max(KS))
        timings["rank"] = time.perf_counter() - start

    start = time.perf_counter()
    note(f"{method.name}: score {len(data.requests.imp_row):,} impressions")
    scores = method.score_impressions(data.requests)
    timings["impressions"] = time.perf_counter() - start
    return Answers(tops, scores, method.scores_used(), timings)


def score_answers(data: EvalData, answers: Answers, *, n_boot: int, seed: int) -> dict[str, Any]:
    """``answers`` scored against ``data``'s outcomes: the metrics, recall curve,
    calibration, timings and which users the GAUCs counted."""
    metrics: dict[str, Metric] = {}
    curve: dict[str, float] = {}
    if answers.tops is not None:
        tops = _Tops(answers.tops)
        metrics.update(_ranking_metrics(data, tops, n_boot, seed))
        curve = _recall_curve(data, tops)
    impression_metrics, gauc_users = _impression_metrics(data, answers.scores, n_boot, seed)
    metrics.update(impression_metrics)
    return {
        "metrics": metrics,
        "recall_curve": curve,
        "calibration": _calibration(data, answers.scores, answers.used),
        "timings_s": answers.timings,
        "scores_used": answers.used,
        "gauc_users": gauc_users,
    }


def evaluate_method(
    method: Method, data: EvalData, *, n_boot: int, seed: int, step: Step | None = None
) -> dict[str, Any]:
    """Fit ``method`` on the training side, then score its answers. Returns the method's
    metrics, recall curve, calibration and timings."""
    return score_answers(data, ask(method, data, step=step), n_boot=n_boot, seed=seed)


def run_offline(
    data: EvalData,
    methods: Sequence[Method],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    step: Step | None = None,
    done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every method on the same data; the result dict described in the module docstring."""
    result: dict[str, Any] = {
        "protocol": {
            **data.protocol,
            "bootstrap_resamples": n_boot,
            "seed": seed,
            "positive": "long_view or like or follow or comment or share",
            "ranking": (
                "each test user with a positive on a video not in their training rows ranks "
                "every catalog video except their training videos, as of their first test "
                "impression"
            ),
        },
        "methods": {},
        "curves": {},
        "calibration": {},
        "timings_s": {},
        "scores_used": {},
    }
    for method in methods:
        got = evaluate_method(method, data, n_boot=n_boot, seed=seed, step=step)
        result["methods"][method.name] = got["metrics"]
        if got["recall_curve"]:
            result["curves"][method.name] = {"recall": got["recall_curve"]}
        if got["calibration"]:
            result["calibration"][method.name] = got["calibration"]
        result["timings_s"][method.name] = got["timings_s"]
        result["scores_used"][method.name] = got["scores_used"]
        result["protocol"].setdefault("gauc_users", got["gauc_users"])
        if done is not None:
            done(method.name)
    return result


QUICK_USERS = 500  # --quick: a sample of the test users
QUICK_BOOTSTRAP = 200


def method_names() -> tuple[str, ...]:
    """Every method ``--methods`` may name."""
    from fyp.eval.engine_methods import ENGINE_METHODS
    from fyp.eval.methods import BASELINES

    return (*BASELINES, *ENGINE_METHODS)


def default_methods() -> tuple[str, ...]:
    """The methods run when none are named: all but the ablations of the served page
    (``fyp_no_explore`` ...), each as costly as ``fyp`` itself; name them to see what
    exploration and spacing cost."""
    from fyp.eval.engine_methods import ABLATIONS

    return tuple(n for n in method_names() if n not in ABLATIONS)


def evaluate_kuairand(
    data_dir: Path,
    split: Split,
    methods: Sequence[str] | None = None,
    *,
    quick: bool = False,
    max_users: int | None = None,
    seed: int = 0,
    n_boot: int | None = None,
    config: Path | None = None,
    online: bool = False,
    walk: str | None = None,
    step: Step | None = None,
    import_progress: Callable[[int, int], None] | None = None,
    done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole offline run on KuaiRand logs in ``data_dir``: load and split, fit and ask
    every method in ``methods`` (default: :func:`default_methods`), score. ``quick`` samples
    ``QUICK_USERS`` test users (or ``max_users``) and uses fewer bootstrap resamples.
    ``online`` adds the prequential rows of :data:`fyp.eval.prequential.ONLINE_ROWS`: the
    engine's rankers learning during the test day, each impression scored before its
    outcome is learned. ``walk="daily"``: the daily walk instead of one split
    (:mod:`fyp.eval.walk`)."""
    from fyp.eval.engine_methods import ENGINE_METHODS, EngineModel, make_engine_method
    from fyp.eval.methods import make_baseline

    names = list(methods if methods else default_methods())
    unknown = [n for n in names if n not in method_names()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(method_names())}")
    users = max_users if max_users is not None else (QUICK_USERS if quick else None)
    boots = n_boot if n_boot is not None else (QUICK_BOOTSTRAP if quick else 1000)
    if walk is not None:
        return _walk_kuairand(
            data_dir,
            split,
            names,
            walk=walk,
            online=online,
            max_users=users,
            seed=seed,
            n_boot=boots,
            config=config,
            step=step,
            import_progress=import_progress,
            done=done,
        )
    if step is not None:
        step("reading and splitting the logs")
    data = load_eval_data(data_dir, split, max_users=users, seed=seed)
    model = EngineModel(data_dir, config=config, progress=import_progress)
    try:
        built = [
            make_engine_method(n, model) if n in ENGINE_METHODS else make_baseline(n, seed)
            for n in names
        ]
        result = run_offline(data, built, n_boot=boots, seed=seed, step=step, done=done)
        if online:
            from fyp.eval.prequential import WINDOW_MS, prequential_scores

            if step is not None:
                step("online: score each minute of the test day, then learn from it")
            # The engine the frozen rows were scored with goes on to learn the test day.
            scores = prequential_scores(data, model, progress=import_progress)
            for row, per_label in scores.items():
                metrics, _ = _impression_metrics(data, per_label, boots, seed)
                result["methods"][row] = metrics
            result["protocol"]["online"] = (
                f"prequential: test impressions in windows of {WINDOW_MS // 1000} s, each "
                "scored before the engine learns from its window's log rows"
            )
        if model.scorer_retrains:
            result["protocol"]["page_scorer_retrains"] = model.scorer_retrains
            result["protocol"]["page_scorer_checkpoint_bytes"] = model.scorer_bytes
        if model.summary is not None:
            result["protocol"]["engine_import"] = {
                "rows": model.summary.rows,
                "events_accepted": model.summary.events_accepted,
                "events_duplicate": model.summary.events_duplicate,
                "events_rejected": model.summary.events_rejected,
            }
        return result
    finally:
        model.close()


def _walk_kuairand(
    data_dir: Path,
    split: Split,
    names: Sequence[str],
    *,
    walk: str,
    online: bool,
    max_users: int | None,
    seed: int,
    n_boot: int,
    config: Path | None,
    step: Step | None,
    import_progress: Callable[[int, int], None] | None,
    done: Callable[[str], None] | None,
) -> dict[str, Any]:
    from fyp.eval.protocol import load_walk_data
    from fyp.eval.walk import WALKS, evaluate_walk

    if walk not in WALKS:
        raise ValueError(f"unknown walk {walk!r}; known: {', '.join(WALKS)}")
    if online:
        raise ValueError(
            "--online scores within one test day; the daily walk learns between days: "
            "use one or the other"
        )
    if step is not None:
        step("reading and splitting the logs")
    days = load_walk_data(data_dir, split, max_users=max_users, seed=seed)
    result = evaluate_walk(
        data_dir,
        days,
        names,
        config=config,
        n_boot=n_boot,
        seed=seed,
        step=step,
        import_progress=import_progress,
        done=done,
    )
    first = days[0].data.protocol
    per_day = [d.data.protocol for d in days]

    def total(key: str) -> int:
        return sum(int(str(p[key])) for p in per_day)

    protocol: dict[str, Any] = {
        **split.as_dict(),
        "walk": walk,
        "days": [d.day.isoformat() for d in days],
        "data": str(data_dir),
        "train_rows": first["train_rows"],
        "train_rows_dropped_unknown_video": first["train_rows_dropped_unknown_video"],
        "train_users": first["train_users"],
        # Over the walk's days: rows, user-days and ranking user-days.
        "test_rows": total("test_rows"),
        "test_rows_dropped_unknown_video": total("test_rows_dropped_unknown_video"),
        "test_users": total("test_users"),
        "ranking_users": total("ranking_users"),
        "ranking_users_without_training": total("ranking_users_without_training"),
        "catalog_videos": first["catalog_videos"],
        "sample_seed": seed,
        "bootstrap_resamples": n_boot,
        "seed": seed,
        "positive": "long_view or like or follow or comment or share",
        "ranking": (
            "each user with a positive on a day, on a video they did not have before the "
            "day, ranks every catalog video except those, as of their first impression "
            "of the day"
        ),
        "learning": (
            "each day answered with what each method knew at the day's start; then the "
            "engine learns the day's rows through its ingestion and learning path, and "
            "each baseline is refitted on every row up to the day's end"
        ),
        "pooled": "user-days as units; intervals resample user-days",
        "gauc_users": result.pop("gauc_users"),
    }
    if max_users is not None:
        protocol["max_users"] = max_users
    if "engine_import" in result:
        protocol["engine_import"] = result.pop("engine_import")
    return {"protocol": protocol, **result}
