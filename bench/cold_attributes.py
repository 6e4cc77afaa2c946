"""Do the attributes an app knows of a user tell what a user with no history will like?

On KuaiRand (``user_features_pure.csv``, imported as user attributes), for the test users
with no training rows: full ranking (the evaluation's protocol, ``fyp.eval.protocol``)
by time-decayed popularity over everyone (``popular_decayed``, the baseline to beat), and
by the same popularity among the training users who share the user's value of one
attribute, shrunk to the global one with ``--shrink`` pseudo-positives:

    score(v) = (segment_weight(v) + shrink * global_weight(v) / Σ global) / (Σ segment + shrink)

Recall@50 and NDCG@50 with 95% bootstrap intervals over users, and the paired difference
from the baseline (per user, then the interval over users). This is the check behind "use
the attributes in the first ranker only if they help cold users on the validation
split": run it on the validation split (the default: train to 04-28, test 04-29), never
to choose anything on the development test day.

    python bench/cold_attributes.py [--data ../shared/data/kuairand-pure] [--shrink 50]

Prints a table and writes ``bench/results/cold_attributes.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fyp.eval.kuairand import USER_ATTRIBUTE_COLUMNS, read_user_attributes
from fyp.eval.methods import PopularDecayed, top_rows
from fyp.eval.metrics import bootstrap_ci, ndcg_at_k, recall_at_k
from fyp.eval.protocol import Split, load_eval_data, parse_day

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, console, machine_info, print_table, utc_now_iso, write_json

K = 50
F64 = np.ndarray[Any, np.dtype[np.float64]]


def _per_user(
    users: list[str],
    relevant: list[set[int]],
    seen: dict[str, set[int]],
    scores_of: Any,
) -> tuple[F64, F64]:
    recall, ndcg = [], []
    for user, rel in zip(users, relevant, strict=True):
        ranked = top_rows(scores_of(user), seen.get(user, set()), K).tolist()
        recall.append(recall_at_k(ranked, rel, K))
        ndcg.append(ndcg_at_k(ranked, rel, K))
    return np.array(recall), np.array(ndcg)


def _interval(values: F64, n_boot: int) -> dict[str, float]:
    mean, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=0)
    return {"mean": mean, "lo": lo, "hi": hi}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/kuairand-pure")
    ap.add_argument("--train-until", default="2022-04-28")
    ap.add_argument("--test-from", default="2022-04-29")
    ap.add_argument("--test-until", default="2022-04-29")
    ap.add_argument("--shrink", type=float, default=50.0, help="pseudo-positives to global")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    split = Split(
        parse_day(args.train_until), parse_day(args.test_from), parse_day(args.test_until)
    )
    data = load_eval_data(args.data, split)
    train, requests = data.train, data.requests
    cold = [i for i, u in enumerate(requests.users) if u not in train.seen]
    users = [requests.users[i] for i in cold]
    relevant = [data.outcomes.relevant[i] for i in cold]
    attributes = {u: dict(a) for u, a in read_user_attributes(args.data)[0].items()}
    console.print(f"{len(users):,} of {len(requests.users):,} ranking users have no training rows")

    popular = PopularDecayed()
    popular.fit(data.catalog, train)
    glob = popular.weights
    base_recall, base_ndcg = _per_user(users, relevant, train.seen, lambda u: glob)
    # What each training positive weighs in popular_decayed, by row of the log.
    pos = np.flatnonzero(train.positive)
    weight = np.exp(-(train.end_ms - train.time_ms[pos]) / popular.scale_ms)
    results: list[dict[str, Any]] = [
        {
            "method": "popular_decayed",
            "recall@50": _interval(base_recall, args.bootstrap),
            "ndcg@50": _interval(base_ndcg, args.bootstrap),
        }
    ]
    for name in USER_ATTRIBUTE_COLUMNS:
        value_of = np.array([attributes.get(u, {}).get(name, "") for u in train.user[pos]])
        segments: dict[str, F64] = {}
        for value in np.unique(value_of):
            mine = value_of == value
            counts = np.bincount(train.row[pos[mine]], weights=weight[mine], minlength=len(glob))
            segments[str(value)] = (counts + args.shrink * glob / glob.sum()) / (
                counts.sum() + args.shrink
            )

        def scores(user: str, name: str = name, segments: dict[str, F64] = segments) -> F64:
            return segments.get(attributes.get(user, {}).get(name, ""), glob)

        recall, ndcg = _per_user(users, relevant, train.seen, scores)
        results.append(
            {
                "method": f"popular_in_segment:{name}",
                "segments": len(segments),
                "recall@50": _interval(recall, args.bootstrap),
                "ndcg@50": _interval(ndcg, args.bootstrap),
                "ndcg@50_minus_popular_decayed": _interval(ndcg - base_ndcg, args.bootstrap),
            }
        )
    path = write_json(
        "cold_attributes",
        {
            "benchmark": "cold_attributes",
            "started_at": utc_now_iso(),
            "machine": machine_info(),
            "protocol": {**data.protocol, "cold_users": len(users), "k": K},
            "shrink": args.shrink,
            "results": results,
        },
    )

    def fmt(x: dict[str, float], signed: bool = False) -> str:
        f = "+.4f" if signed else ".4f"
        return f"{x['mean']:{f}} [{x['lo']:{f}}, {x['hi']:{f}}]"

    print_table(
        "Cold users: popularity in the user's attribute segment vs over everyone",
        ["method", "Recall@50", "NDCG@50", "NDCG@50 − popular_decayed (paired)"],
        [
            [
                r["method"],
                fmt(r["recall@50"]),
                fmt(r["ndcg@50"]),
                fmt(r["ndcg@50_minus_popular_decayed"], True) if "segments" in r else "",
            ]
            for r in results
        ],
        caption=f"{len(users):,} users without training rows, 95% bootstrap intervals; {path}",
    )


if __name__ == "__main__":
    main()
