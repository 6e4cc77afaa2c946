"""The daily walk: the evaluation run the way the engine lives, a day at a time.

After training to ``--train-until`` (:func:`fyp.eval.protocol.load_walk_data`), for each
test day in turn every method first answers that day's requests with what it knew at the
day's start, and only then learns the day:

* the engine through its own ingestion and learning path, online, as it does when it
  serves: the day's log rows replayed as the training rows were
  (:func:`fyp.eval.kuairand.import_kuairand`: impressions recorded, events ingested,
  learned, in time order), then its page scorer's work at the day's midnight (label
  the day's pools, retrain, take the next day's), as at the end of training. One engine
  answers for every ``fyp*`` row;
* each baseline refitted on every row up to the day's end, as a batch system retrained
  nightly would be.

The engine's main rows also run frozen (``<row>_frozen``): the engine as training left
it, answering every test day. Its first day is the online row's first day (nothing has
been learned yet: the same answers); its later days are asked before the walk learns
anything. So "online beats frozen" is measured on full ranking across days. A frozen
pipeline does not know what each user was shown since training, and the protocol rules
those videos out of every list: it is asked for as many more (``FypPipeline.extra``).

Scored per day exactly as the single split (``fyp.eval.offline``), and pooled over the
days: each (user, day) is one unit, a user active on two days counts twice, and the
intervals resample user-days; impression AUC pools every day's impressions, GAUC groups
them by user-day (each group scored with one state of the method).

Nothing of day ``d`` reaches a method before it has answered day ``d``: baselines are
fitted on :class:`~fyp.eval.protocol.Train` rows dated before it, and the engine learns
a day's rows only after every row has answered it (``tests/eval/test_walk.py`` changes
every outcome of a day and checks that day's answers stay the same and the next day's
do not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fyp.eval.engine_methods import ENGINE_METHODS, EngineModel, FypPipeline, make_engine_method
from fyp.eval.kuairand import import_kuairand
from fyp.eval.methods import Method, make_baseline
from fyp.eval.offline import Answers, Step, ask, score_answers
from fyp.eval.protocol import EvalData, Outcomes, Requests, WalkDay, end_of_local_day

__all__ = [
    "FROZEN",
    "FROZEN_SUFFIX",
    "WALKS",
    "evaluate_walk",
    "pooled",
    "run_walk",
    "score_walk",
    "walk_rows",
]

WALKS: tuple[str, ...] = ("daily",)
FROZEN_SUFFIX = "_frozen"
# The engine rows that also run frozen (the price-of-a-responsible-feed rows are the
# pipeline's variants, compared with it online).
FROZEN: tuple[str, ...] = ("fyp", "fyp_first_ranker", "fyp_mmoe", "fyp_two_tower")


def walk_rows(names: Sequence[str]) -> list[str]:
    """The rows a walk over ``names`` reports, each frozen row after its online one."""
    rows: list[str] = []
    for name in names:
        rows.append(name)
        if name in FROZEN:
            rows.append(name + FROZEN_SUFFIX)
    return rows


def _method(name: str, model: EngineModel, seed: int) -> Method:
    # A fresh instance each day: nothing cached from an earlier day's engine (the
    # two-tower row keeps its item vectors, the pipeline its request-id counter).
    return make_engine_method(name, model) if name in ENGINE_METHODS else make_baseline(name, seed)


def _new_since(day: WalkDay, first: WalkDay) -> dict[str, int]:
    """Per user asked on ``day``, the videos they had between the end of training and
    the day's start (what a frozen engine never learned they saw)."""
    then = first.data.train.seen
    now = day.data.train.seen
    return {u: len(now.get(u, set()) - then.get(u, set())) for u in day.data.requests.users}


def run_walk(
    days: Sequence[WalkDay],
    names: Sequence[str],
    model: EngineModel,
    *,
    seed: int = 0,
    step: Step | None = None,
) -> dict[str, list[Answers]]:
    """Every method's answers to every day, in ``walk_rows(names)`` order: for each row,
    one :class:`Answers` per day. ``model``: an engine not yet trained (it is trained on
    the first day's training rows here, then learns each day after answering it)."""
    note = step or (lambda _: None)
    answers: dict[str, list[Answers]] = {row: [] for row in walk_rows(names)}
    engine_rows = [n for n in names if n in ENGINE_METHODS]
    first = days[0]
    engine = None
    if engine_rows:
        note("engine: replay the training rows")
        engine = model.fit(first.data.catalog, first.data.train)
    # Frozen, days after the first: asked before the engine learns anything.
    for name in (n for n in names if n in FROZEN):
        for day in days[1:]:
            method = _method(name, model, seed)
            if isinstance(method, FypPipeline):
                method.extra = _new_since(day, first)
            note(f"{day.day}: {name} frozen")
            answers[name + FROZEN_SUFFIX].append(ask(method, day.data))
    for i, day in enumerate(days):
        for name in names:
            note(f"{day.day}: {name}")
            got = ask(_method(name, model, seed), day.data)
            answers[name].append(got)
            if i == 0 and name in FROZEN:
                # Nothing learned yet: the frozen engine is this engine (its timings are
                # the online row's: the frozen row's count only what it cost besides).
                answers[name + FROZEN_SUFFIX].insert(0, dataclasses.replace(got, timings={}))
        if engine is not None and i + 1 < len(days):
            note(f"{day.day}: the engine learns the day ({day.rows.height:,} rows)")
            import_kuairand(
                engine, model.kuairand_dir, logs=day.rows, videos=[], progress=model.progress
            )
            # The day's midnight: the page scorer's nightly work (label the day's pools,
            # retrain, take tomorrow's), which in service the first event after midnight
            # would set off; the walk reads no row of the next day before answering it.
            engine.train_page_scorer(end_of_local_day(int(day.rows["time_ms"].to_numpy().max())))
    return answers


def _keys(users: Sequence[str] | np.ndarray[Any, Any], day: WalkDay) -> np.ndarray[Any, Any]:
    return np.array([f"{u}@{day.day.isoformat()}" for u in users], dtype=np.str_)


def pooled(days: Sequence[WalkDay], per_day: Sequence[Answers]) -> tuple[EvalData, Answers]:
    """The walk's days as one :class:`EvalData` and one method's answers to it: every
    user-day a user (``"<user>@<day>"``), so that the single split's scoring pools them."""
    datas = [d.data for d in days]
    requests = Requests(
        users=[k for d in days for k in _keys(d.data.requests.users, d).tolist()],
        at_ms=np.concatenate([d.requests.at_ms for d in datas]),
        surface=[s for d in datas for s in d.requests.surface],
        imp_user=np.concatenate([_keys(d.data.requests.imp_user, d) for d in days]),
        imp_row=np.concatenate([d.requests.imp_row for d in datas]),
        imp_time_ms=np.concatenate([d.requests.imp_time_ms for d in datas]),
        imp_surface=[s for d in datas for s in d.requests.imp_surface],
    )
    outcomes = Outcomes(
        relevant=[r for d in datas for r in d.outcomes.relevant],
        labels={
            label: np.concatenate([d.outcomes.labels[label] for d in datas])
            for label in datas[0].outcomes.labels
        },
        watch_ratio=np.concatenate([d.outcomes.watch_ratio for d in datas]),
        frame=datas[0].outcomes.frame.clear(),  # read by no scorer
    )
    data = dataclasses.replace(datas[0], requests=requests, outcomes=outcomes)
    tops = None if per_day[0].tops is None else [t for a in per_day for t in a.tops or []]
    scores = {
        label: np.concatenate([a.scores[label] for a in per_day]) for label in per_day[0].scores
    }
    timings = {
        what: sum(a.timings.get(what, 0.0) for a in per_day)
        for what in dict.fromkeys(w for a in per_day for w in a.timings)
    }
    return data, Answers(tops, scores, per_day[0].used, timings)


def score_walk(
    days: Sequence[WalkDay],
    answers: dict[str, list[Answers]],
    *,
    n_boot: int,
    seed: int,
    done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The walk's result: the single split's JSON shape for the days pooled (``methods``,
    ``curves``, ``calibration``, ``timings_s``, ``scores_used``), and under ``days`` each
    day's ``protocol`` and ``methods``."""
    result: dict[str, Any] = {
        "methods": {},
        "curves": {},
        "calibration": {},
        "timings_s": {},
        "scores_used": {},
        "days": {
            d.day.isoformat(): {"protocol": dict(d.data.protocol), "methods": {}} for d in days
        },
    }
    gauc_users: dict[str, int] | None = None
    for row, per_day in answers.items():
        for day, got in zip(days, per_day, strict=True):
            scored = score_answers(day.data, got, n_boot=n_boot, seed=seed)
            result["days"][day.day.isoformat()]["methods"][row] = scored["metrics"]
        data, together = pooled(days, per_day)
        scored = score_answers(data, together, n_boot=n_boot, seed=seed)
        result["methods"][row] = scored["metrics"]
        if scored["recall_curve"]:
            result["curves"][row] = {"recall": scored["recall_curve"]}
        if scored["calibration"]:
            result["calibration"][row] = scored["calibration"]
        result["timings_s"][row] = scored["timings_s"]
        result["scores_used"][row] = scored["scores_used"]
        if gauc_users is None:
            gauc_users = scored["gauc_users"]
        if done is not None:
            done(row)
    result["gauc_users"] = gauc_users or {}
    return result


def evaluate_walk(
    data_dir: Path,
    days: Sequence[WalkDay],
    names: Sequence[str],
    *,
    config: Path | None = None,
    n_boot: int,
    seed: int,
    step: Step | None = None,
    import_progress: Callable[[int, int], None] | None = None,
    done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`run_walk` then :func:`score_walk`, with a fresh engine for ``data_dir``."""
    model = EngineModel(data_dir, config=config, progress=import_progress)
    try:
        answers = run_walk(days, names, model, seed=seed, step=step)
        result = score_walk(days, answers, n_boot=n_boot, seed=seed, done=done)
        if model.summary is not None:
            result["engine_import"] = {
                "rows": model.summary.rows,
                "events_accepted": model.summary.events_accepted,
                "events_duplicate": model.summary.events_duplicate,
                "events_rejected": model.summary.events_rejected,
            }
        return result
    finally:
        model.close()
