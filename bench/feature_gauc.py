"""Would a new statistic lift the first ranker's GAUC? A screen before building one.

Issue 19 asks for GAUC of long view ≥ .65 from the ranker that serves, and
``bench/tree_gauc.py`` found that a tree over the first ranker's own features does no
better than the ranker: the features limit it. This screens candidate features without
building each into the fold. The engine is trained as ``bench/ranker_gauc.py`` trains it,
twice: to the day before ``--train-until`` and to ``--train-until``. Each engine's first
ranker gives its long-view head's features for the next day's impressions as that bench
scores them (the state frozen at the end of training, one request per user and page, at
the group's first impression: :func:`tree_gauc._test_rows`). A logistic regression on
those features is fitted on the first engine's day (rows as stale as the test day's) and
scores the test day: the ``refit`` row, the baseline every candidate is paired with.
Each candidate is one more column, computed from the same training log rows the engine
learned from (label counts of long views per group, shrunk by 20 pseudo-views towards
what the base statistics already predict, as a log-odds lift, 0 for a group with no
views), and the regression is fitted again with it. Rows:

* ``first_ranker``: the engine's own long-view head (its online weights);
* ``refit``: the regression on the head's features (no candidate);
* ``+<candidate>``: with one candidate column:

  - ``video_surface``, ``creator_surface``, ``hashtag_surface``, ``user_surface``: the
    rate of the video (its creator, its first hashtag, the user) on the page the
    impression is on, over the rate of the video (...) everywhere and the page's lift;
  - ``user_duration``: the user's rate on videos of the candidate's length band (under
    15 s, 30 s, 1 min, 2 min, 5 min, longer) over the user's rate;
  - ``attribute_hashtag``, ``attribute_creator``, ``attribute_video``: the mean, over the
    user's attributes (``user_features_pure.csv``), of the rate of the group (attribute
    value × the video's first hashtag, its creator, the video) over the rate of the
    hashtag (creator, video);
  - ``hour``: the rate at the hour of day (UTC+8, KuaiRand's) of the request over the
    global rate (one hour per user and page, as the rankers are asked);
  - ``age``: log(1 + the video's age in days) at the request.

Beside each: the paired difference from ``refit`` on GAUC of long view (the same users
resampled for both: :func:`ranker_gauc.paired_difference`). Choose on the validation
split only (the default: train to 04-28, test 04-29):

    PYTHONPATH=src python bench/feature_gauc.py [--data ../shared/data/kuairand-pure] \
        [--train-until 2022-04-28 --test-from 2022-04-29 --test-until 2022-04-29] \
        [--name feature_gauc]

Prints a table and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fyp.eval.engine_methods import EngineModel
from fyp.eval.kuairand import read_user_attributes
from fyp.eval.metrics import gauc_ci
from fyp.eval.protocol import EvalData, Split, load_eval_data, parse_day
from fyp.rank.first_ranker import FEATURES
from fyp.state.feedback import LABEL_INDEX

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, console, machine_info, print_table, utc_now_iso, write_json
from ranker_gauc import paired_difference
from tree_gauc import _test_rows

F64 = np.ndarray[Any, np.dtype[np.float64]]
_LV = LABEL_INDEX["long_view"]
_COLUMNS = [i for i, name in enumerate(FEATURES) if name != "bias"]
_PRIOR = 20.0  # pseudo-views behind each group's rate (the ranker's prior_strength)
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_LOCAL_HOURS = 8  # KuaiRand's logs are Beijing time
_BANDS_MS = [15_000, 30_000, 60_000, 120_000, 300_000]


def _logit(p: F64) -> F64:
    q = np.clip(p, 1e-4, 1 - 1e-4)
    out: F64 = np.log(q / (1 - q))
    return out


def _sigmoid(z: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-z))
    return out


def fit_logistic(x: F64, y: F64, l2: float = 1e-3, steps: int = 30) -> F64:
    """Weights (with the bias last) of an L2-regularised logistic regression, by Newton's
    method (the bias is regularised too: it is small next to the data here)."""
    x1 = np.c_[x, np.ones(len(x))]
    w = np.zeros(x1.shape[1])
    ridge = l2 * np.eye(len(w))
    for _ in range(steps):
        p = _sigmoid(x1 @ w)
        hessian = x1.T @ (x1 * (p * (1 - p))[:, None]) + ridge
        w -= np.linalg.solve(hessian, x1.T @ (p - y) + ridge @ w)
    return w


def _apply(w: F64, x: F64) -> F64:
    out: F64 = np.c_[x, np.ones(len(x))] @ w
    return out


class Frames:
    """The training log rows (``history``) and the impressions to score (``asked``) as
    frames of the keys the candidates group by."""

    def __init__(self, data: EvalData, attributes: dict[str, tuple[tuple[str, str], ...]]):
        catalog, train, requests = data.catalog, data.train, data.requests
        videos = catalog.videos
        first_tag = np.array([v.hashtags[0] if v.hashtags else "" for v in videos])
        band = np.searchsorted(_BANDS_MS, np.array([v.duration_ms for v in videos]))
        tab = train.frame["tab"].to_list()
        self.history = self._keys(
            train.user,
            train.row,
            [("" if t is None else f"tab{t}") for t in tab],
            train.time_ms,
            catalog.creator,
            first_tag,
            band,
        ).with_columns(pl.Series("y", train.long_view.astype(np.float64)))
        # Each impression as the rankers are asked: at its user and page's first time.
        at = np.array(requests.imp_time_ms, dtype=np.int64)
        group = pl.DataFrame(
            {"u": requests.imp_user, "s": requests.imp_surface, "t": at}
        ).with_columns(pl.col("t").min().over("u", "s"))
        self.asked = self._keys(
            requests.imp_user,
            requests.imp_row,
            requests.imp_surface,
            group["t"].to_numpy(),
            catalog.creator,
            first_tag,
            band,
        )
        created = catalog.created_at[requests.imp_row]
        age_days = np.maximum(group["t"].to_numpy() - created, 0) / _DAY_MS
        self.age: F64 = np.where(created > 0, np.log1p(age_days), 0.0)
        self.attributes = attributes

    @staticmethod
    def _keys(
        users: Any, rows: Any, surfaces: Any, times: Any, creator: Any, tag: Any, band: Any
    ) -> pl.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        hours = ((np.asarray(times, dtype=np.int64) // _HOUR_MS) + _LOCAL_HOURS) % 24
        return pl.DataFrame(
            {
                "user": np.asarray(users).astype(str),
                "video": rows,
                "surface": list(surfaces),
                "hour": hours,
                "creator": creator[rows].astype(str),
                "tag": tag[rows].astype(str),
                "band": band[rows].astype(np.int64),
            }
        )

    def rate(
        self,
        keys: list[str],
        prior: F64,
        history: pl.DataFrame | None = None,
        asked: pl.DataFrame | None = None,
    ) -> F64:
        """Each asked row's group (``keys``) long-view rate as a logit, shrunk towards
        the rates ``prior`` (per asked row) by the pseudo-views, minus the prior's logit."""
        history = self.history if history is None else history
        asked = self.asked if asked is None else asked
        counts = history.group_by(keys).agg(pl.col("y").sum().alias("c"), pl.len().alias("n"))
        joined = asked.select(keys).join(counts, on=keys, how="left", maintain_order="left")
        c = joined["c"].fill_null(0).to_numpy().astype(np.float64)
        n = joined["n"].fill_null(0).to_numpy().astype(np.float64)
        return _logit((c + _PRIOR * prior) / (n + _PRIOR)) - _logit(prior)

    def candidates(self) -> dict[str, F64]:
        g = float(self.history["y"].mean())  # type: ignore[arg-type]
        everyone = np.full(self.asked.height, g)

        def level(keys: list[str], prior: F64 = everyone) -> F64:
            out: F64 = self.rate(keys, prior) + _logit(prior)
            return out

        surface = level(["surface"]) - _logit(everyone)
        out: dict[str, F64] = {}
        for name, key in (
            ("video_surface", "video"),
            ("creator_surface", "creator"),
            ("hashtag_surface", "tag"),
            ("user_surface", "user"),
        ):
            out[name] = self.rate([key, "surface"], _sigmoid(level([key]) + surface))
        user = _sigmoid(level(["user"]))
        out["user_duration"] = self.rate(["user", "band"], user)
        out.update(self._attribute_rates(level))
        out["hour"] = self.rate(["hour"], everyone)
        out["age"] = self.age
        return out

    def _attribute_rates(self, level: Callable[[list[str]], F64]) -> dict[str, F64]:
        names = sorted({name for attrs in self.attributes.values() for name, _ in attrs})

        def values(users: pl.Series) -> pl.DataFrame:
            table = {u: dict(self.attributes.get(u, ())) for u in set(users.to_list())}
            return pl.DataFrame({n: [table[u].get(n, "") for u in users.to_list()] for n in names})

        history = self.history.hstack(values(self.history["user"]))
        asked = self.asked.hstack(values(self.asked["user"]))
        out: dict[str, F64] = {}
        for name, key in (
            ("attribute_hashtag", "tag"),
            ("attribute_creator", "creator"),
            ("attribute_video", "video"),
        ):
            base = _sigmoid(level([key]))
            total = np.zeros(self.asked.height)
            for n in names:
                total += self.rate([n, key], base, history, asked)
            out[name] = total / max(len(names), 1)
        return out


def _engine_rows(args: argparse.Namespace, split: Split) -> tuple[EvalData, F64, F64]:
    """The split's data, and its test impressions' long-view head features (n, F - 1)
    and logits (n,) from an engine trained to the split's end of training."""
    data = load_eval_data(args.data, split)
    model = EngineModel(args.data, config=args.config)
    try:
        model.fit(data.catalog, data.train)
        rows = _test_rows(data, model, learned=False)
    finally:
        model.close()
    x = np.concatenate(rows.x)[:, _LV, _COLUMNS]
    z = np.concatenate(rows.z)[:, _LV]
    return data, x, z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/kuairand-pure")
    parser.add_argument("--train-until", default="2022-04-28")
    parser.add_argument("--test-from", default="2022-04-29")
    parser.add_argument("--test-until", default="2022-04-29", help="last test day")
    parser.add_argument("--config", type=Path, default=None, help="engine settings (TOML)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name", default="feature_gauc", help="results file name")
    args = parser.parse_args()
    started, cpu0 = time.perf_counter(), time.process_time()
    day = parse_day(args.train_until)
    split = Split(day, parse_day(args.test_from), parse_day(args.test_until))
    fitting = Split(day - timedelta(days=1), day, day)
    attributes, _ = read_user_attributes(args.data)
    data_fit, x_fit, _ = _engine_rows(args, fitting)
    data, x_test, z_test = _engine_rows(args, split)
    y_fit = data_fit.outcomes.labels["long_view"].astype(np.float64)
    y = data.outcomes.labels["long_view"].astype(np.float64)
    users = data.requests.imp_user
    c_fit = Frames(data_fit, attributes).candidates()
    c_test = Frames(data, attributes).candidates()
    w = fit_logistic(x_fit, y_fit)
    refit = _apply(w, x_test)
    scores: dict[str, F64] = {"first_ranker": z_test, "refit": refit}
    weights: dict[str, list[float]] = {"refit": w.tolist()}
    for name in c_fit:
        wc = fit_logistic(np.c_[x_fit, c_fit[name]], y_fit)
        scores[f"+{name}"] = _apply(wc, np.c_[x_test, c_test[name]])
        weights[f"+{name}"] = wc.tolist()
    results: dict[str, dict[str, Any]] = {}
    table = []
    for name, s in scores.items():
        g, lo, hi, n_users = gauc_ci(users, s, y, n_boot=args.bootstrap)
        d, dlo, dhi = paired_difference(users, s, refit, y, n_boot=args.bootstrap)
        results[name] = {
            "gauc_long_view": {"mean": g, "ci95": [lo, hi], "users": n_users},
            "minus_refit": {"mean": d, "ci95": [dlo, dhi]},
            "candidate_weight": weights[name][-2] if name.startswith("+") else None,
        }
        table.append(
            [
                name,
                f"{g:.4f} ({lo:.3f}–{hi:.3f})",
                "—" if name == "refit" else f"{d:+.4f} ({dlo:+.4f}…{dhi:+.4f})",
                "" if not name.startswith("+") else f"{weights[name][-2]:+.3f}",
            ]
        )
    print_table(
        f"Candidates: fitted on {fitting.test_from}, test {args.test_from}…{args.test_until}",
        ["row", "GAUC long view (95%)", "− refit (paired 95%)", "weight"],
        table,
    )
    wall = time.perf_counter() - started
    console.print(f"total {wall:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
    path = write_json(
        args.name,
        {
            "bench": "feature_gauc",
            "at": utc_now_iso(),
            "machine": machine_info(),
            "split": split.as_dict(),
            "fitted_on": fitting.as_dict(),
            "config": None if args.config is None else str(args.config),
            "test_impressions": len(users),
            "fitting_impressions": len(y_fit),
            "bootstrap_resamples": args.bootstrap,
            "refit_weights": dict(
                zip([FEATURES[i] for i in _COLUMNS] + ["bias"], w.tolist(), strict=True)
            ),
            "wall_s": wall,
            "rows": results,
        },
    )
    console.print(f"JSON: {path}")


if __name__ == "__main__":
    main()
