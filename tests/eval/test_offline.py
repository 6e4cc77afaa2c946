"""The offline protocol end to end on the 2,000-row KuaiRand sample: the split, the
leakage guarantees, the JSON shape and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fyp.cli import app
from fyp.engine import Engine
from fyp.eval.engine_methods import EngineModel, make_engine_method
from fyp.eval.methods import BASELINES, Method, make_baseline
from fyp.eval.offline import default_methods, evaluate_kuairand, method_names, run_offline
from fyp.eval.protocol import (
    EvalData,
    Requests,
    Split,
    impression_sessions,
    load_eval_data,
    parse_day,
)

from .conftest import SMOKE, VIDEO_FEATURES, with_changed_outcomes

pytestmark = pytest.mark.kuairand

# The sample spans 2022-04-09 … 05-08.
SPLIT = Split(parse_day("2022-04-30"), parse_day("2022-05-01"))


def test_parse_day_and_split_validation() -> None:
    assert parse_day("2022-04-30") == parse_day("20220430")
    with pytest.raises(ValueError, match="not a day"):
        parse_day("30/04/2022")
    with pytest.raises(ValueError, match="must start after training ends"):
        Split(parse_day("2022-04-30"), parse_day("2022-04-30"))
    with pytest.raises(ValueError, match="before test_from"):
        Split(parse_day("2022-04-28"), parse_day("2022-04-30"), parse_day("2022-04-29"))


def test_the_split_keeps_outcomes_away_from_requests(smoke_dir: Path) -> None:
    data = load_eval_data(smoke_dir, SPLIT)
    p = data.protocol
    logs = pl.read_parquet(smoke_dir / SMOKE)
    # Rows of videos with no usable duration anywhere cannot be served: counted, not kept.
    assert (
        p["train_rows"] + p["train_rows_dropped_unknown_video"]
        == logs.filter(pl.col("date") <= 20220430).height
    )
    assert (
        p["test_rows"] + p["test_rows_dropped_unknown_video"]
        == logs.filter(pl.col("date") >= 20220501).height
    )
    assert data.train.time_ms.max() < data.requests.imp_time_ms.min()
    # Requests carry who, what and when; no field of theirs is an outcome.
    assert set(Requests.__dataclass_fields__) == {
        "users",
        "at_ms",
        "surface",
        "imp_user",
        "imp_row",
        "imp_time_ms",
        "imp_surface",
    }
    # Positives the user already had in training are not relevant; each ranking user
    # asks at their first test impression.
    for user, at, relevant in zip(
        data.requests.users, data.requests.at_ms, data.outcomes.relevant, strict=True
    ):
        assert relevant and not relevant & data.train.seen.get(user, set())
        mine = data.requests.imp_time_ms[data.requests.imp_user == user]
        assert at == mine.min()


def _with_changed_test_outcomes(smoke_dir: Path, target: Path) -> Path:
    """A copy of the sample whose test-period outcomes are all different."""
    return with_changed_outcomes(smoke_dir, target, pl.col("date") >= 20220501)


def _fitted_answers(
    data: EvalData, requests: Requests, data_dir: Path
) -> dict[str, tuple[list[list[int]] | None, dict[str, list[float]]]]:
    """Every method fitted on ``data``'s training side, answering the same ``requests``."""
    model = EngineModel(data_dir)
    methods: list[Method] = [make_baseline(n, 0) for n in BASELINES]
    methods += [make_engine_method(n, model) for n in ("fyp", "fyp_first_ranker", "fyp_two_tower")]
    out = {}
    try:
        for m in methods:
            m.fit(data.catalog, data.train)
            top = m.top_k(requests, 50)
            scores = m.score_impressions(requests)
            out[m.name] = (
                None if top is None else [t.tolist() for t in top],
                {k: v.tolist() for k, v in scores.items()},
            )
    finally:
        model.close()
    return out


def test_changing_test_outcomes_changes_no_trained_state_only_the_scores(
    smoke_dir: Path, tmp_path: Path
) -> None:
    changed_dir = _with_changed_test_outcomes(smoke_dir, tmp_path / "changed")
    original = load_eval_data(smoke_dir, SPLIT)
    changed = load_eval_data(changed_dir, SPLIT)
    assert original.train.frame.equals(changed.train.frame)
    # Same questions to both: the answers (rankings and impression scores of every
    # method, the engine included) are identical, so nothing of the test outcomes got in.
    ask = original.requests
    assert _fitted_answers(original, ask, smoke_dir) == _fitted_answers(changed, ask, changed_dir)
    # ... while the scorer, which reads them, sees different outcomes.
    before = run_offline(original, [make_baseline("popular", 0)], n_boot=20)
    after = run_offline(changed, [make_baseline("popular", 0)], n_boot=20)
    assert before["methods"]["popular"] != after["methods"]["popular"]


def test_shifting_the_split_moves_rows_between_train_and_test(smoke_dir: Path) -> None:
    late = load_eval_data(smoke_dir, SPLIT)
    early = load_eval_data(smoke_dir, Split(parse_day("2022-04-20"), parse_day("2022-05-01")))
    gap = load_eval_data(smoke_dir, Split(parse_day("2022-04-20"), parse_day("2022-04-21")))
    assert early.protocol["train_rows"] < late.protocol["train_rows"]
    # Same test days, less history: at least as many ranking users lack training rows.
    assert early.protocol["test_rows"] == late.protocol["test_rows"]
    without = "ranking_users_without_training"
    assert early.protocol[without] >= late.protocol[without]
    # Test from the day after an earlier training end: test rows now include days that
    # were training rows before, and popularity counts fewer positives.
    assert gap.protocol["test_rows"] > late.protocol["test_rows"]
    pop_late, pop_early = make_baseline("popular", 0), make_baseline("popular", 0)
    pop_late.fit(late.catalog, late.train)
    pop_early.fit(early.catalog, early.train)
    assert pop_early.counts.sum() < pop_late.counts.sum()  # type: ignore[attr-defined]


def test_quick_run_on_the_sample_has_every_method_and_the_json_shape(smoke_dir: Path) -> None:
    result = evaluate_kuairand(smoke_dir, SPLIT, quick=True, n_boot=50)
    assert set(result["methods"]) == set(default_methods())
    assert set(method_names()) - set(default_methods()) == {
        "fyp_no_explore",
        "fyp_no_spacing",
        "fyp_no_explore_no_spacing",
        "fyp_no_scorer",
    }
    assert {"train_until", "test_from", "train_rows", "test_rows", "seed"} <= set(
        result["protocol"]
    )
    for name, metrics in result["methods"].items():
        assert "auc_long_view" in metrics and "gauc_long_view" in metrics, name
        assert "gauc_session_long_view" in metrics, name
        if name != "lr":
            assert {"recall@10", "recall@50", "ndcg@50", "recall@100", "coverage"} <= set(metrics)
        for metric, value in metrics.items():
            lo, hi = value["ci95"]
            assert np.isfinite([value["mean"], lo, hi]).all(), (name, metric)
            assert lo <= hi
    # Random cannot rank: near-chance AUC; recall grows with K for every ranking method.
    assert 0.3 < result["methods"]["random"]["auc_long_view"]["mean"] < 0.7
    for curve in result["curves"].values():
        values = list(curve["recall"].values())
        assert values == sorted(values)
    json.dumps(result)  # JSON-able as is


def test_cli_writes_json_and_html_report(smoke_dir: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "kuairand",
            "--data",
            str(smoke_dir),
            "--train-until",
            "2022-04-30",
            "--test-from",
            "2022-05-01",
            "--methods",
            "random,popular",
            "--methods",
            "fyp",
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
    assert list(written["methods"]) == ["random", "popular", "fyp"]
    assert written["protocol"]["bootstrap_resamples"] == 20
    page = report.read_text()
    assert "Gao et al." in page and "CC BY-SA 4.0" in page
    assert page.count("data:image/png;base64,") >= 2


def test_cli_refuses_bad_days_and_unknown_methods(smoke_dir: Path) -> None:
    base = ["eval", "kuairand", "--data", str(smoke_dir), "--test-from", "2022-05-01"]
    bad_day = CliRunner().invoke(app, [*base, "--train-until", "April"])
    assert bad_day.exit_code == 2 and "not a day" in bad_day.output
    unknown = CliRunner().invoke(app, [*base, "--train-until", "2022-04-30", "--methods", "knn"])
    assert unknown.exit_code == 2 and "unknown methods" in unknown.output


def test_the_original_csv_layout_gives_the_same_split(smoke_dir: Path, tmp_path: Path) -> None:
    """KuaiRand-Pure's own log_standard_*.csv files lack watch_ratio and finish: they are
    derived from play and video durations, and agree with the parquet extract's."""
    original_columns = [
        "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
        "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
        "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
        "is_rand", "tab",
    ]  # fmt: skip
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    pl.read_parquet(smoke_dir / SMOKE).select(original_columns).write_csv(
        csv_dir / "log_standard_4_08_to_5_08_pure.csv"
    )
    (csv_dir / VIDEO_FEATURES).symlink_to(smoke_dir / VIDEO_FEATURES)
    from_csv = load_eval_data(csv_dir, SPLIT)
    from_parquet = load_eval_data(smoke_dir, SPLIT)
    assert from_csv.protocol["test_rows"] == from_parquet.protocol["test_rows"]
    assert from_csv.requests.users == from_parquet.requests.users
    for label in ("long_view", "like", "click"):
        assert (from_csv.outcomes.labels[label] == from_parquet.outcomes.labels[label]).all()
    # Derived finish agrees with the extract's own flag on (nearly) every row.
    agree = from_csv.outcomes.labels["finish"] == from_parquet.outcomes.labels["finish"]
    assert agree.mean() > 0.95
    ratio_csv, ratio_parquet = from_csv.outcomes.watch_ratio, from_parquet.outcomes.watch_ratio
    assert np.median(np.abs(ratio_csv - ratio_parquet)) < 1e-6


def test_prequential_scores_each_window_before_learning_from_it(smoke_dir: Path) -> None:
    from fyp.eval.prequential import ONLINE_ROWS, prequential_scores

    data = load_eval_data(smoke_dir, SPLIT)
    scores = []
    for window_ms in (10**13, 60_000):  # one window (no learning before scoring), minutes
        model = EngineModel(smoke_dir)
        try:
            scores.append(prequential_scores(data, model, window_ms=window_ms))
        finally:
            model.close()
    frozen, online = scores
    times = data.requests.imp_time_ms
    first_window = times < times.min() + 60_000
    later = ~first_window
    assert first_window.any() and later.any()
    for row in ONLINE_ROWS:
        a, b = frozen[row]["long_view"], online[row]["long_view"]
        # The first minute is scored before anything of the test day was learned (up to
        # float32 rounding: a batch of another size sums in another order)...
        np.testing.assert_allclose(a[first_window], b[first_window], rtol=1e-5)
        # ... and later minutes by an engine that has learned from the earlier ones.
        assert not np.array_equal(a[later], b[later])
    # A user's first test session is scored with their state as training left it; later
    # sessions with what their earlier sessions taught.
    sessions = impression_sessions(data.requests.imp_user, times)
    first_session = np.zeros(len(times), dtype=bool)
    for user in np.unique(data.requests.imp_user):
        mine = data.requests.imp_user == user
        first_session |= mine & (sessions == sessions[mine].min())
    assert first_session.any() and not first_session.all()
    held = online["fyp_first_ranker_online_own_state_frozen"]["long_view"]
    by_session = online["fyp_first_ranker_online_session_state"]["long_view"]
    np.testing.assert_allclose(by_session[first_session], held[first_session])
    assert not np.allclose(by_session[~first_session], held[~first_session])


def test_impression_sessions_split_each_users_time_at_gaps() -> None:
    users = np.array(["b", "a", "a", "b", "a", "a"], dtype=np.str_)
    minute = 60_000
    times = np.array([0, 50, 0, 31, 20, 100], dtype=np.int64) * minute
    sessions = impression_sessions(users, times, gap_ms=30 * minute)
    # a at 0, 20, 50: gaps of 20 and exactly 30 minutes, one session; at 100 a new one
    assert sessions[2] == sessions[4] == sessions[1] != sessions[5]
    assert sessions[0] != sessions[3]  # b at 0 and 31: 31 minutes apart
    assert len({sessions[1], sessions[0]}) == 2  # users never share a session
    assert sorted(set(sessions.tolist())) == [0, 1, 2, 3]


def test_the_two_tower_row_ranks_as_the_engines_own_retrieval_does(smoke_dir: Path) -> None:
    """``fyp_two_tower`` scores every video exactly; the engine's source asks its index
    (exact at this size) for the same user vector: the same videos come back, in the
    same order, once mapped between the evaluation's catalog rows and the engine's."""
    data = load_eval_data(smoke_dir, SPLIT)
    model = EngineModel(smoke_dir)
    try:
        method = make_engine_method("fyp_two_tower", model)
        method.fit(data.catalog, data.train)
        engine = model.engine
        assert engine is not None and engine.models is not None
        models = engine.models
        # The sample is too small to warm retrieval up (the index stays empty): fill it.
        models.refresh_index(range(len(engine.catalog)))
        models.index.settle()
        assert len(models.index) == len(model.to_engine) and not models.index.is_approximate
        top = method.top_k(data.requests, 20)
        asked = zip(data.requests.users, data.requests.at_ms.tolist(), strict=True)
        for i, (user, at) in enumerate(asked):
            pid = engine.pseudonym(user)
            query = models.retrieval.user_vector(pid, engine.state.user(pid).history, int(at))
            ids, _ = models.index.search(query, len(models.index))
            seen = data.train.seen.get(user, set())
            rows = [data.catalog.row_of[v] for v in ids[0]]
            assert top[i].tolist() == [r for r in rows if r not in seen][:20], user
        scores = method.score_impressions(data.requests)
        assert set(scores) == {"long_view", "finish", "like", "click"}
        assert np.isfinite(scores["long_view"]).all()
    finally:
        model.close()


def test_a_subscriber_of_the_engine_model_sees_every_training_example(smoke_dir: Path) -> None:
    """``on_open`` gets the engine before it reads a training row: a listener it adds to
    the learning step is told of the training examples (and of no test row's)."""
    data = load_eval_data(smoke_dir, SPLIT)
    seen: list[int] = []
    offsets: list[int] = []

    def subscribe(engine: Engine) -> None:
        offsets.append(engine.state.applied_offset)
        engine.state.example_listeners.append(lambda batch: seen.extend(e.ts for e in batch))

    model = EngineModel(smoke_dir, on_open=subscribe)
    try:
        model.fit(data.catalog, data.train)
    finally:
        model.close()
    assert offsets == [0]
    assert len(seen) > 0.5 * len(data.train.frame)  # views close into examples as they go
    assert max(seen) <= data.train.end_ms
