"""GAUC of the engine's rankers on the next day's impressions, without full ranking.

The evaluation's impression metrics (``fyp eval kuairand``: per-user AUC, impression
weighted, over users with both classes; 95% bootstrap intervals over users) for the
rankers alone: the engine is trained by replaying the rows up to ``--train-until``
through its own ingestion and learning path (as ``fyp eval kuairand`` does), then scores
the logged impressions of the test days as of each user's first impression on each page
(:mod:`fyp.eval.engine_methods`). Full ranking of the catalog, which is most of the
evaluation's time, is skipped. Rows:

* ``first_ranker``: the first ranker's head per label;
* ``mmoe``: the learned ranker's head per label (the residual on the first ranker's logit);
* ``blend_<a>``: first ranker's logit + a × (learned logit − first ranker's logit), for
  each ``--blend`` weight (1 is the learned ranker, 0 the first ranker);
* ``mmoe_if_<n>``: the learned ranker for users with at least ``n`` training views,
  the first ranker for the rest (``--history``), as a cascade gated by history would;
* ``first_value``: the first ranker's value score (Σ weight × P(label)), what orders the
  page where the learned models are off (the default) — one score for every label;
* ``cascade``: the value score (Σ weight × P(label)) of the pipeline's ranker, the
  learned cascade once warm — one score for every label;
* ``served``: the score that orders the served page (the page scorer's, once it has
  trained, over the cascade's).

Beside each row, the paired difference from ``first_ranker`` on GAUC of long view (the
same users resampled for both). Old code against new in one run: run the old source with
``--save-scores old.npz`` (``PYTHONPATH=<old checkout>/src``), then the new with
``--baseline-scores old.npz``, which adds each row's paired difference from the same row
of the old run (the same split and impressions).

Choose on the validation split (the default: train to 04-28, test 04-29), report on the
development split (``--train-until 2022-04-29 --test-from 2022-04-30 --test-until
2022-04-30``) once:

    PYTHONPATH=src python bench/ranker_gauc.py [--data ../shared/data/kuairand-pure] \
        [--config engine.toml] [--blend 0.5,1] [--history 20] [--name ranker_gauc]

Prints a table and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fyp.eval.engine_methods import EngineModel, FypFirstRanker, FypMMoE, FypPipeline
from fyp.eval.metrics import auc_ci, gauc_ci
from fyp.eval.protocol import IMPRESSION_LABELS, EvalData, Split, load_eval_data, parse_day

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, console, machine_info, print_table, utc_now_iso, write_json

F64 = np.ndarray[Any, np.dtype[np.float64]]


def _logit(p: F64) -> F64:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: F64 = np.log(q / (1 - q))
    return out


def _per_user_auc(users: F64, scores: F64, labels: F64) -> tuple[F64, F64]:
    """Each user's AUC of ``scores`` for ``labels`` (ties count half) and weight (their
    impressions; 0 for a user without both classes), users in ``np.unique`` order."""
    _, index = np.unique(users, return_inverse=True)
    n_users = int(index.max()) + 1
    aucs, weights = np.zeros(n_users), np.zeros(n_users)
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n_users + 1))
    for u in range(n_users):
        idx = order[bounds[u] : bounds[u + 1]]
        y = labels[idx]
        n_pos = int(y.sum())
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        s = scores[idx]
        ranks = _average_ranks(s)
        aucs[u] = (ranks[y > 0].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        weights[u] = len(y)
    return aucs, weights


def _average_ranks(s: F64) -> F64:
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def paired_difference(
    users: F64, a: F64, b: F64, labels: F64, n_boot: int, seed: int = 0
) -> tuple[float, float, float]:
    """GAUC(a) − GAUC(b) with a bootstrap interval over users, both on each resample."""
    auc_a, w = _per_user_auc(users, a, labels)
    auc_b, _ = _per_user_auc(users, b, labels)

    def diff(counts: F64) -> float:
        weight = counts * w
        total = float(weight.sum())
        return math.nan if total == 0 else float((weight * (auc_a - auc_b)).sum() / total)

    rng = np.random.default_rng(seed)
    n = len(w)
    draws = np.array(
        [diff(np.bincount(rng.integers(0, n, n), minlength=n).astype(float)) for _ in range(n_boot)]
    )
    draws = draws[np.isfinite(draws)]
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return diff(np.ones(n)), float(lo), float(hi)


def _rows(
    data: EvalData, model: EngineModel, blends: list[float], history: list[int]
) -> dict[str, dict[str, F64]]:
    requests = data.requests
    first = FypFirstRanker(model)
    first.fit(data.catalog, data.train)
    mmoe = FypMMoE(model)
    mmoe.fit(data.catalog, data.train)
    served = FypPipeline(model)
    served.fit(data.catalog, data.train)
    f = first.score_impressions(requests)
    m = mmoe.score_impressions(requests)
    rows: dict[str, dict[str, F64]] = {"first_ranker": f, "mmoe": m}
    # What serves where the learned models are off (the default): one score for all.
    rows["first_value"] = first._score_impressions(requests, per_label=False, by_surface=True)
    for a in blends:
        rows[f"blend_{a:g}"] = {
            label: _logit(f[label]) + a * (_logit(m[label]) - _logit(f[label]))
            for label in IMPRESSION_LABELS
        }
    views = data.train.frame.group_by("user_id").len()
    seen = dict(zip(views["user_id"].cast(str).to_list(), views["len"].to_list(), strict=True))
    user_views = np.array([seen.get(str(u), 0) for u in requests.imp_user.tolist()])
    for n in history:
        use = user_views >= n
        rows[f"mmoe_if_{n}"] = {
            label: np.where(use, _logit(m[label]), _logit(f[label])) for label in IMPRESSION_LABELS
        }
    cascade = FypPipeline(model, scorer=False)
    cascade.fit(data.catalog, data.train)
    rows["cascade"] = cascade.score_impressions(requests)
    rows["served"] = served.score_impressions(requests)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/kuairand-pure")
    parser.add_argument("--train-until", default="2022-04-28")
    parser.add_argument("--test-from", default="2022-04-29")
    parser.add_argument("--test-until", default="2022-04-29", help="last test day")
    parser.add_argument("--config", type=Path, default=None, help="engine settings (TOML)")
    parser.add_argument("--blend", default="0.5", help="learned-logit weights, comma-separated")
    parser.add_argument("--history", default="", help="training views gating the learned ranker")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name", default="ranker_gauc", help="results file name")
    parser.add_argument("--save-scores", type=Path, default=None, help="write long-view scores")
    parser.add_argument(
        "--baseline-scores", type=Path, default=None, help="a --save-scores file to compare to"
    )
    args = parser.parse_args()
    split = Split(
        parse_day(args.train_until),
        parse_day(args.test_from),
        parse_day(args.test_until),
    )
    blends = [float(b) for b in args.blend.split(",") if b.strip()]
    history = [int(h) for h in args.history.split(",") if h.strip()]
    started = time.perf_counter()
    cpu0 = time.process_time()
    data = load_eval_data(args.data, split)
    model = EngineModel(args.data, config=args.config)
    try:
        model.fit(data.catalog, data.train)
        fit_s = time.perf_counter() - started
        rows = _rows(data, model, blends, history)
    finally:
        model.close()
    users = data.requests.imp_user
    if args.save_scores is not None:
        np.savez(
            args.save_scores,
            users=users,
            rows=data.requests.imp_row,
            **{f"row_{name}": scores["long_view"] for name, scores in rows.items()},
        )
    baseline: dict[str, F64] = {}
    if args.baseline_scores is not None:
        with np.load(args.baseline_scores) as saved:
            if not (
                np.array_equal(saved["users"], users)
                and np.array_equal(saved["rows"], data.requests.imp_row)
            ):
                raise SystemExit("--baseline-scores: another split or other impressions")
            baseline = {k[4:]: saved[k] for k in saved.files if k.startswith("row_")}
    results: dict[str, dict[str, Any]] = {}
    table = []
    base = rows["first_ranker"]["long_view"]
    y_long = data.outcomes.labels["long_view"].astype(np.float64)
    for name, scores in rows.items():
        out: dict[str, Any] = {}
        for label in IMPRESSION_LABELS:
            y = data.outcomes.labels[label]
            g, lo, hi, n_users = gauc_ci(users, scores[label], y, n_boot=args.bootstrap)
            out[f"gauc_{label}"] = {"mean": g, "ci95": [lo, hi], "users": n_users}
        a, alo, ahi = auc_ci(users, scores["long_view"], y_long, n_boot=args.bootstrap)
        out["auc_long_view"] = {"mean": a, "ci95": [alo, ahi]}
        d, dlo, dhi = paired_difference(
            users, scores["long_view"], base, y_long, n_boot=args.bootstrap
        )
        out["gauc_long_view_minus_first_ranker"] = {"mean": d, "ci95": [dlo, dhi]}
        versus = "—"
        if name in baseline:
            b, blo, bhi = paired_difference(
                users, scores["long_view"], baseline[name], y_long, n_boot=args.bootstrap
            )
            out["gauc_long_view_minus_baseline"] = {"mean": b, "ci95": [blo, bhi]}
            versus = f"{b:+.4f} ({blo:+.4f}…{bhi:+.4f})"
        results[name] = out
        lv = out["gauc_long_view"]
        table.append(
            [
                name,
                f"{lv['mean']:.4f} ({lv['ci95'][0]:.3f}–{lv['ci95'][1]:.3f})",
                f"{d:+.4f} ({dlo:+.4f}…{dhi:+.4f})",
                versus,
                f"{a:.4f}",
                f"{out['gauc_finish']['mean']:.4f}",
                f"{out['gauc_click']['mean']:.4f}",
            ]
        )
    print_table(
        f"GAUC on impressions: train ≤ {args.train_until}, test {args.test_from}…{args.test_until}",
        [
            "row",
            "GAUC long view (95%)",
            "− first ranker (paired 95%)",
            "− baseline's row (paired 95%)",
            "AUC LV",
            "GAUC fin",
            "GAUC click",
        ],
        table,
    )
    wall = time.perf_counter() - started
    console.print(
        f"fit {fit_s:.0f} s · total {wall:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU"
    )
    path = write_json(
        args.name,
        {
            "bench": "ranker_gauc",
            "at": utc_now_iso(),
            "machine": machine_info(),
            "split": split.as_dict(),
            "config": None if args.config is None else str(args.config),
            "baseline_scores": None if args.baseline_scores is None else str(args.baseline_scores),
            "test_impressions": len(users),
            "bootstrap_resamples": args.bootstrap,
            "wall_s": wall,
            "rows": results,
        },
    )
    console.print(f"JSON: {path}")


if __name__ == "__main__":
    main()
