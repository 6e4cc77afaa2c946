"""Would a gradient-boosted tree rank impressions better than the engine's rankers?

A check before building a tree ranker stage (issue 19): the engine is trained as
``bench/ranker_gauc.py`` trains it (the training rows replayed through its ingestion and
learning path), and while it learns, every training example is recorded as the first
ranker's learning step sees it — its features taken before the view changed anything
(point in time), its labels, its page, the video's and the user's views then, and the
first ranker's logits with the weights of that moment (before the example's own
micro-batch is learned). LightGBM is fitted on those rows (long view; finish) and scores
the test day's impressions with the features as of each user's first impression on each
page, as the ``first_ranker`` row of ``bench/ranker_gauc.py`` does. Rows:

* ``first_ranker``, ``mmoe``: the engine's two rankers' heads (the baselines);
* ``tree``: LightGBM over the first ranker's features (the per-label ones of the long
  view, finish, skip and like heads, the shared ones), the video's and the user's view
  counts, the first ranker's logits of those four heads and the page (categorical);
* ``tree_stale`` (``--stale``): the same features plus the learned ranker's logits
  (long view, finish), but trained on the impressions of the last training day scored
  by a second engine trained to the day before — features as stale as the test day's
  are (the state frozen at the end of training), a last stage over both rankers.

Each row: GAUC with the evaluation's intervals (:func:`fyp.eval.metrics.gauc_ci`) and
paired differences from ``first_ranker`` and ``mmoe`` (the same users resampled for
both). Then the cost per feed: the fitted tree's ``predict`` on 300 and 1,000 candidates'
feature rows (process CPU time; the model's size).

Choose on the validation split (the default: train to 04-28, test 04-29):

    PYTHONPATH=src python bench/tree_gauc.py [--data ../shared/data/kuairand-pure] \
        [--rounds 150 --leaves 7 --min-leaf 200 --lr 0.05] [--stale] [--name tree_gauc]

Needs ``lightgbm`` (a dev extra). Prints a table and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from fyp.engine import Engine
from fyp.eval.engine_methods import EngineModel, FypFirstRanker, FypMMoE
from fyp.eval.methods import _impression_groups
from fyp.eval.metrics import gauc_ci
from fyp.eval.protocol import EvalData, Split, load_eval_data, parse_day
from fyp.rank.first_ranker import FEATURES
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import Example
from fyp.types import DEFAULT_SURFACE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, console, machine_info, print_table, utc_now_iso, write_json
from ranker_gauc import paired_difference

F64 = np.ndarray[Any, np.dtype[np.float64]]
# The first ranker's features that differ by head, and the ones every head shares (the
# bias and the duration's square, which a tree does not need, left out).
PER_HEAD = [FEATURES.index(f) for f in ("video_rate", "user_lift", "surface")] + [
    FEATURES.index(f) for f in ("creator_rate", "hashtag_rate")
]
SHARED = [FEATURES.index(f) for f in ("creator", "sound", "hashtags", "follows", "fresh")] + [
    FEATURES.index("duration")
]
HEADS = [LABEL_INDEX[h] for h in ("long_view", "finish", "skip", "like")]
TARGETS = ("long_view", "finish")


class Rows:
    """Feature rows: the first ranker's (n, L, F) features, its logits (n, L), the
    video's and the user's views, the page, and (optionally) the learned ranker's logits."""

    def __init__(self) -> None:
        self.x: list[F64] = []
        self.z: list[F64] = []
        self.views: list[F64] = []
        self.surface: list[str] = []
        self.labels: list[F64] = []
        self.learned: list[F64] = []

    def matrix(self, pages: dict[str, int], learned: bool) -> F64:
        x, z = np.concatenate(self.x), np.concatenate(self.z)
        cols = [x[:, h, PER_HEAD] for h in HEADS]
        cols += [x[:, 0, SHARED], np.log1p(np.concatenate(self.views)), z[:, HEADS]]
        if learned:
            cols.append(np.concatenate(self.learned))
        cols.append(
            np.array([pages.setdefault(s, len(pages)) for s in self.surface], float)[:, None]
        )
        return np.hstack(cols)


def _logit(p: F64) -> F64:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: F64 = np.log(q / (1 - q))
    return out


def _recorder(rows: Rows) -> Any:
    """Subscribes to a new engine's learning step: each micro-batch's logits before it is
    learned, then (the example listener, right after) the examples themselves."""

    def on_open(engine: Engine) -> None:
        state = engine.state
        ranker = state.ranker
        learn = ranker.learn
        before: list[F64] = []

        def learn_and_keep(features: F64, labels: F64) -> None:
            before.append(ranker.logits(features))
            learn(features, labels)

        def listen(batch: list[Example]) -> None:
            z = before.pop()
            keep = [i for i, e in enumerate(batch) if not e.late]  # a late copy repeats a row
            rows.x.append(np.stack([batch[i].features for i in keep]))  # type: ignore[misc]
            rows.z.append(z[keep])
            rows.views.append(np.array([[batch[i].video_views, batch[i].user_views] for i in keep]))
            rows.surface += [batch[i].surface for i in keep]
            rows.labels.append(np.stack([batch[i].labels for i in keep]))

        ranker.learn = learn_and_keep  # type: ignore[method-assign]
        state.example_listeners.insert(0, listen)

    return on_open


def _test_rows(data: EvalData, model: EngineModel, learned: bool) -> Rows:
    """The test impressions' rows as of each user's first impression on each page."""
    engine = model.engine
    assert engine is not None
    requests = data.requests
    n = len(requests.imp_row)
    x: F64 | None = None
    z, views = np.zeros((n, len(LABEL_INDEX))), np.zeros((n, 2))
    surface = [""] * n
    for user, page, idx in _impression_groups(requests, by_surface=True):
        at = int(requests.imp_time_ms[idx].min())
        state = engine.state.user(engine.pseudonym(user))
        rows = model.to_engine[requests.imp_row[idx]]
        f = engine.state.ranker.features(state, rows.tolist(), at, page or DEFAULT_SURFACE)
        if x is None:
            x = np.zeros((n, *f.shape[1:]))
        x[idx], z[idx] = f, engine.state.ranker.logits(f)
        views[idx, 0], views[idx, 1] = engine.state.stats.views[rows], state.views
        for i in idx.tolist():
            surface[i] = page or DEFAULT_SURFACE
    out = Rows()
    out.x, out.z, out.views, out.surface = [np.asarray(x)], [z], [views], surface
    if learned:
        mmoe = FypMMoE(model)
        mmoe.fit(data.catalog, data.train)
        m = mmoe.score_impressions(requests)
        out.learned = [np.stack([_logit(m[t]) for t in TARGETS], axis=1)]
    out.labels = [np.stack([data.outcomes.labels[t].astype(np.float64) for t in TARGETS], axis=1)]
    return out


def _fit(x: F64, y: F64, args: argparse.Namespace) -> tuple[lgb.Booster, float]:
    params = {
        "objective": "binary",
        "learning_rate": args.lr,
        "num_leaves": args.leaves,
        "min_data_in_leaf": args.min_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
        "verbose": -1,
    }
    cpu = time.process_time()
    booster = lgb.train(
        params, lgb.Dataset(x, y, categorical_feature=[x.shape[1] - 1]), args.rounds
    )
    return booster, time.process_time() - cpu


def _predict_cost(booster: lgb.Booster, x: F64, n: int, reps: int = 100) -> float:
    """Process CPU ms of one ``predict`` over ``n`` candidates' rows."""
    rows = x[np.resize(np.arange(len(x)), n)]
    booster.predict(rows, num_threads=1)
    cpu = time.process_time()
    for _ in range(reps):
        booster.predict(rows, num_threads=1)
    return (time.process_time() - cpu) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/kuairand-pure")
    parser.add_argument("--train-until", default="2022-04-28")
    parser.add_argument("--test-from", default="2022-04-29")
    parser.add_argument("--test-until", default="2022-04-29", help="last test day")
    parser.add_argument("--config", type=Path, default=None, help="engine settings (TOML)")
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--leaves", type=int, default=7)
    parser.add_argument("--min-leaf", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--stale", action="store_true", help="also the tree_stale row")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name", default="tree_gauc", help="results file name")
    args = parser.parse_args()
    split = Split(
        parse_day(args.train_until), parse_day(args.test_from), parse_day(args.test_until)
    )
    started, cpu0 = time.perf_counter(), time.process_time()
    data = load_eval_data(args.data, split)
    train = Rows()
    model = EngineModel(args.data, config=args.config, on_open=_recorder(train))
    try:
        model.fit(data.catalog, data.train)
        fit_s = time.perf_counter() - started
        first = FypFirstRanker(model)
        first.fit(data.catalog, data.train)
        mmoe = FypMMoE(model)
        mmoe.fit(data.catalog, data.train)
        scores = {"first_ranker": first.score_impressions(data.requests)}
        scores["mmoe"] = mmoe.score_impressions(data.requests)
        test = _test_rows(data, model, learned=args.stale)
    finally:
        model.close()
    pages: dict[str, int] = {}
    x_train, y_train = train.matrix(pages, False), np.concatenate(train.labels)
    x_test = test.matrix(pages, False)
    fits: dict[str, float] = {}
    boosters: dict[str, lgb.Booster] = {}
    scores["tree"] = {}
    for t in TARGETS:
        booster, fits[f"tree_{t}"] = _fit(x_train, y_train[:, LABEL_INDEX[t]], args)
        scores["tree"][t] = booster.predict(x_test, num_threads=1)
        boosters[t] = booster
    if args.stale:
        # The last training day's impressions, scored by an engine trained to the day
        # before: rows as stale as the test day's.
        day = parse_day(args.train_until)
        earlier = Split(day - timedelta(days=1), day, day)
        data_before = load_eval_data(args.data, earlier)
        model_before = EngineModel(args.data, config=args.config)
        try:
            model_before.fit(data_before.catalog, data_before.train)
            stale = _test_rows(data_before, model_before, learned=True)
        finally:
            model_before.close()
        x_stale, y_stale = stale.matrix(pages, True), np.concatenate(stale.labels)
        x_test_learned = test.matrix(pages, True)
        scores["tree_stale"] = {}
        for i, t in enumerate(TARGETS):
            booster, fits[f"tree_stale_{t}"] = _fit(x_stale, y_stale[:, i], args)
            scores["tree_stale"][t] = booster.predict(x_test_learned, num_threads=1)
    users = data.requests.imp_user
    y = {t: data.outcomes.labels[t].astype(np.float64) for t in TARGETS}
    results: dict[str, dict[str, Any]] = {}
    table = []
    for name, s in scores.items():
        out: dict[str, Any] = {}
        for t in TARGETS:
            g, lo, hi, n_users = gauc_ci(users, s[t], y[t], n_boot=args.bootstrap)
            out[f"gauc_{t}"] = {"mean": g, "ci95": [lo, hi], "users": n_users}
        lv = out["gauc_long_view"]
        cells = [name, f"{lv['mean']:.4f} ({lv['ci95'][0]:.3f}–{lv['ci95'][1]:.3f})"]
        for other in ("first_ranker", "mmoe"):
            d, dlo, dhi = paired_difference(
                users, s["long_view"], scores[other]["long_view"], y["long_view"], args.bootstrap
            )
            out[f"gauc_long_view_minus_{other}"] = {"mean": d, "ci95": [dlo, dhi]}
            cells.append("—" if other == name else f"{d:+.4f} ({dlo:+.4f}…{dhi:+.4f})")
        cells.append(f"{out['gauc_finish']['mean']:.4f}")
        results[name] = out
        table.append(cells)
    print_table(
        f"GAUC on impressions: train ≤ {args.train_until}, test {args.test_from}…{args.test_until}",
        ["row", "GAUC long view (95%)", "− first ranker (paired)", "− mmoe (paired)", "GAUC fin"],
        table,
    )
    cost = {
        f"predict_{n}_cpu_ms": _predict_cost(boosters["long_view"], x_test, n) for n in (300, 1000)
    }
    model_bytes = len(boosters["long_view"].model_to_string())
    console.print(
        f"tree: {len(x_train)} training rows × {x_train.shape[1]} features, fit "
        + ", ".join(f"{k} {v:.1f} s CPU" for k, v in fits.items())
        + f"; predict 300 rows {cost['predict_300_cpu_ms']:.2f} ms CPU, 1000 rows "
        f"{cost['predict_1000_cpu_ms']:.2f} ms CPU; model {model_bytes / 1e3:.0f} kB"
    )
    wall = time.perf_counter() - started
    console.print(
        f"engine fit {fit_s:.0f} s · total {wall:.0f} s wall, "
        f"{time.process_time() - cpu0:.0f} s CPU"
    )
    path = write_json(
        args.name,
        {
            "bench": "tree_gauc",
            "at": utc_now_iso(),
            "machine": machine_info(),
            "split": split.as_dict(),
            "config": None if args.config is None else str(args.config),
            "tree": {
                "rounds": args.rounds,
                "leaves": args.leaves,
                "min_leaf": args.min_leaf,
                "lr": args.lr,
                "training_rows": len(x_train),
                "features": int(x_train.shape[1]),
                "fit_cpu_s": fits,
                "model_bytes": model_bytes,
                **cost,
            },
            "test_impressions": len(users),
            "bootstrap_resamples": args.bootstrap,
            "wall_s": wall,
            "rows": results,
        },
    )
    console.print(f"JSON: {path}")


if __name__ == "__main__":
    main()
