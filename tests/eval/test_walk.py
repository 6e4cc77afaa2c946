"""The daily walk on the 2,000-row KuaiRand sample: what each day may know (leakage both
ways), how the days pool, the price-of-a-responsible-feed rows and the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fyp.cli import app
from fyp.eval.engine_methods import EngineModel, _NoSlots, _Unspaced
from fyp.eval.offline import Answers, score_answers
from fyp.eval.protocol import Split, WalkDay, end_of_local_day, load_walk_data, parse_day
from fyp.eval.walk import pooled, run_walk, walk_rows
from fyp.types import Candidate

from .conftest import with_changed_outcomes

pytestmark = pytest.mark.kuairand

# The sample spans 2022-04-09 … 05-08: train to 04-30, walk 05-01 and 05-02.
SPLIT = Split(parse_day("2022-04-30"), parse_day("2022-05-01"), parse_day("2022-05-02"))
FIRST, SECOND = 20220501, 20220502
METHODS = ("popular", "itemknn", "fyp", "fyp_first_ranker")


def _with_changed_day(smoke_dir: Path, target: Path, day: int) -> Path:
    """A copy of the sample in which every outcome of ``day`` is different."""
    return with_changed_outcomes(smoke_dir, target, pl.col("date") == day)


def _walk(
    data_dir: Path, asking: list[WalkDay] | None = None
) -> tuple[list[WalkDay], dict[str, list[Answers]]]:
    """The walk over ``data_dir``; ``asking``: another walk's days whose questions to ask
    instead (which users rank the catalog is chosen by the day's outcomes: two worlds
    whose outcomes differ are asked the same questions to compare their answers)."""
    days = load_walk_data(data_dir, SPLIT)
    if asking is not None:
        days = [
            dataclasses.replace(d, data=dataclasses.replace(d.data, requests=a.data.requests))
            for d, a in zip(days, asking, strict=True)
        ]
    model = EngineModel(data_dir)
    try:
        return days, run_walk(days, METHODS, model)
    finally:
        model.close()


@pytest.fixture(scope="module")
def walked(smoke_dir: Path) -> tuple[list[WalkDay], dict[str, list[Answers]]]:
    return _walk(smoke_dir)


def _same(a: Answers, b: Answers) -> bool:
    tops_a = None if a.tops is None else [t.tolist() for t in a.tops]
    tops_b = None if b.tops is None else [t.tolist() for t in b.tops]
    return tops_a == tops_b and all(np.array_equal(a.scores[k], b.scores[k]) for k in a.scores)


def test_a_days_outcomes_reach_no_answer_that_day_and_every_online_answer_the_next(
    smoke_dir: Path, tmp_path: Path, walked: tuple[list[WalkDay], dict[str, list[Answers]]]
) -> None:
    days, answers = walked
    changed_dir = _with_changed_day(smoke_dir, tmp_path / "changed", FIRST)
    assert [d.day for d in days] == [parse_day("2022-05-01"), parse_day("2022-05-02")]
    # Day 2's questions do not depend on day 1's outcomes (who was shown what, when).
    second = load_walk_data(changed_dir, SPLIT)[1].data.requests
    assert second.users == days[1].data.requests.users
    assert np.array_equal(second.imp_row, days[1].data.requests.imp_row)
    changed_days, changed = _walk(changed_dir, asking=days)
    assert changed_days[0].data.train.frame.equals(days[0].data.train.frame)
    assert not changed_days[1].data.train.frame.equals(days[1].data.train.frame)
    assert set(answers) == set(walk_rows(METHODS))
    for row in answers:
        # Day 1 is answered before anything of it is learned: the same answers...
        assert _same(answers[row][0], changed[row][0]), row
        # ... and day 2 after: every method that learns has learned something else.
        if row.endswith("_frozen"):
            assert _same(answers[row][1], changed[row][1]), row  # never learns
        else:
            assert not _same(answers[row][1], changed[row][1]), row


def test_each_day_trains_on_every_row_before_it_and_asks_of_that_day_only(
    smoke_dir: Path,
) -> None:
    days = load_walk_data(smoke_dir, SPLIT)
    first, second = days
    assert first.data.train.frame["day"].max() == 20220430
    assert second.data.train.frame.height == first.data.train.frame.height + first.rows.height
    assert second.data.train.frame["day"].max() == FIRST
    for day, number in ((first, FIRST), (second, SECOND)):
        assert set(day.rows["day"].to_list()) == {number}
        assert (day.data.requests.imp_time_ms > day.data.train.time_ms.max()).all()
        # Relevant: the day's positives on videos the user had not had before the day.
        for user, relevant in zip(day.data.requests.users, day.data.outcomes.relevant, strict=True):
            assert relevant and not relevant & day.data.train.seen.get(user, set())
    # One catalog for the whole walk.
    assert first.data.catalog is second.data.catalog
    # A sample asks some users, on every day they have rows; everyone's rows are learned.
    sampled = load_walk_data(smoke_dir, SPLIT, max_users=20, seed=1)
    asked = set().union(*(set(d.data.requests.imp_user.tolist()) for d in sampled))
    assert len(asked) == 20
    assert [d.rows.height for d in sampled] == [d.rows.height for d in days]


def test_pooling_weighs_every_user_day_once(
    walked: tuple[list[WalkDay], dict[str, list[Answers]]],
) -> None:
    days, answers = walked
    per_day = [
        score_answers(d.data, a, n_boot=20, seed=0)["metrics"]
        for d, a in zip(days, answers["popular"], strict=True)
    ]
    data, together = pooled(days, answers["popular"])
    both = score_answers(data, together, n_boot=20, seed=0)["metrics"]
    n = [len(d.data.requests.users) for d in days]
    assert len(data.requests.users) == sum(n) == len(set(data.requests.users))
    for metric in ("recall@50", "ndcg@50"):
        expected = sum(m[metric]["mean"] * k for m, k in zip(per_day, n, strict=True)) / sum(n)
        assert both[metric]["mean"] == pytest.approx(expected)
    assert len(data.requests.imp_row) == sum(len(d.data.requests.imp_row) for d in days)


def _candidates(creators: list[str]) -> list[Candidate]:
    return [
        Candidate(i, f"v{i}", "trending" if i % 3 else "fresh", "") for i in range(len(creators))
    ]


def test_without_slots_and_spacing_the_page_is_the_ranked_pool_in_order(smoke_dir: Path) -> None:
    ranked = _candidates(["a"] * 12)
    assert _NoSlots().prioritise(ranked, 5, "r1", ("discover", 0.5)) == ranked
    model = EngineModel(smoke_dir)
    try:
        days = load_walk_data(smoke_dir, SPLIT)
        engine = model.fit(days[0].data.catalog, days[0].data.train)
        spacing = engine.pipeline.spacing
        unspaced = _Unspaced(spacing.catalog, spacing.max_per_creator)
        pool = [Candidate(r, engine.catalog.videos[r].video_id, "trending", "") for r in range(30)]
        assert unspaced.arrange(pool, 10) == pool[:10]
        # The sequence rules' guard still holds: a row it refuses is passed over.
        assert unspaced.arrange(pool, 10, lambda page, row: row % 2 == 0) == pool[0:20:2]
    finally:
        model.close()


def test_the_cli_walks_days_with_quick_and_writes_per_day_and_pooled_rows(
    smoke_dir: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "walk.json", tmp_path / "walk.html"
    base = [
        "eval", "kuairand", "--data", str(smoke_dir), "--train-until", "2022-04-30",
        "--test-from", "2022-05-01", "--test-until", "2022-05-02",
    ]  # fmt: skip
    result = CliRunner().invoke(
        app,
        [
            *base,
            "--walk",
            "daily",
            "--methods",
            "popular,fyp,fyp_no_explore_no_spacing",
            "--quick",
            "--bootstrap",
            "20",
            "--json",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    rows = ["popular", "fyp", "fyp_frozen", "fyp_no_explore_no_spacing"]
    assert list(written["methods"]) == rows
    assert written["protocol"]["walk"] == "daily"
    assert written["protocol"]["days"] == ["2022-05-01", "2022-05-02"]
    assert list(written["days"]) == ["2022-05-01", "2022-05-02"]
    for of_day in written["days"].values():
        assert list(of_day["methods"]) == rows
        assert "recall@50" in of_day["methods"]["fyp_frozen"]
    assert (
        "recall@50" in written["methods"]["fyp"]
        and "ci95" in written["methods"]["fyp"]["recall@50"]
    )
    assert "Pooled over the walk" in result.output
    page = report.read_text()
    assert "2022-05-02 (walk day)" in page and "Pooled over the walk" in page

    refused = CliRunner().invoke(app, [*base, "--walk", "weekly"])
    assert refused.exit_code == 2 and "unknown walk" in refused.output
    both = CliRunner().invoke(app, [*base, "--walk", "daily", "--online"])
    assert both.exit_code == 2 and "one or the other" in both.output


def test_a_frozen_page_is_topped_up_past_what_it_never_learned_was_seen(
    walked: tuple[list[WalkDay], dict[str, list[Answers]]],
) -> None:
    days, answers = walked
    second = days[1]
    for row in ("fyp", "fyp_frozen"):
        tops = answers[row][1].tops
        assert tops is not None
        for user, top in zip(second.data.requests.users, tops, strict=True):
            assert len(top) == 100, (row, user)
            assert not set(top.tolist()) & second.data.train.seen.get(user, set())


def test_the_page_scorer_does_its_nightly_work_at_each_walked_days_midnight(
    smoke_dir: Path,
) -> None:
    """Regression (issue 19): the walk learned a day's rows but nothing crossed that
    day's midnight (no row of the next day is read before it is answered), so the next
    day was served by the scorer of the night before: its pools never labelled with the
    walked day, never retrained."""
    days = load_walk_data(smoke_dir, SPLIT)
    model = EngineModel(smoke_dir)
    try:
        run_walk(days, ("fyp",), model)
        assert model.engine is not None and model.engine.page_scorer is not None
        boundaries = [r.at_ms for r in model.engine.page_scorer.retrains]
        first_day_end = end_of_local_day(int(days[0].rows["time_ms"].to_numpy().max()))
        training_end = end_of_local_day(days[0].data.train.end_ms)
        assert training_end in boundaries
        assert first_day_end in boundaries
        assert first_day_end > training_end
    finally:
        model.close()
