"""Trainer throughput: examples per second the learned models train on, and what training
costs the feed's latency, in process.

Setup: a synthetic catalog (100k videos) and history (10k users x 20 views plus likes,
shares, follows, comments, "not interested"; ``--quick``: 10k videos, 1k users) in a
fresh data dir, ingested (``Engine.ingest``, untimed) into an engine with the learned
models on (``[model] enabled = true``, default batch sizes and warm-ups).

1. **Whole path**: ``Engine.learn()`` over the whole log, i.e. ``LogState.apply`` with
   ``OnlineModels`` attached: the joiner (examples opened and closed, features taken),
   the first ranker's step, and both models' steps (plus the two-tower item index kept
   current). Examples = joined views (what the ranker trains on). The time inside each
   part is measured by wrapping the models' methods on the instance (a few function calls
   per micro-batch of overhead).
2. **MultiTaskRanker.learn alone**: the ``RankExample`` batches the whole path built
   (``ranker_batch`` each, captured as they were learned), replayed in order into a
   fresh ranker.
3. **TwoTower.learn alone**: the same for the ``RetrievalExample`` batches
   (``retrieval_batch`` each, the positives) into fresh towers, without the index.
4. **Feed latency with the models warm** (``Engine.feed(count=10)``, one caller, the
   request mix of ``bench/feed_latency.py``: 90% users with history, 10% new users):
   (a) idle; (b) while a background thread ingests a further synthetic stream at a steady
   rate (``--rates``, events/s, in ticks of 20 ms: ``Engine.ingest``, fsynced, outside the
   lock) and learns it as the server's learning loop does (``Engine.learn(max_events=256,
   train=False)`` slices, then the learned models' steps one ``Engine.train_step()`` at a
   time, each under the engine's one lock, yielding between them). Reports p50/p99
   both ways, their ratio, and the rate the thread achieved.

Unlike the server (one asyncio loop: a feed waits for at most the slice being learned),
here the learner is a thread, so it also competes with the feed for the GIL outside the
lock (torch releases it inside its kernels).

    python bench/train_throughput.py [--quick] [--profile] [--rates 1000,4000]

Prints tables and writes ``bench/results/train_throughput.json`` (``_quick`` for
``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    GcWatch,
    batches,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    ms,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from feed_latency import COUNT, bench_in_process, request_users
from fyp.api.app import MIN_STEPS_PER_SLICE
from fyp.config import ModelSettings, PrivacyConfig, Settings
from fyp.engine import Engine, serving_gc
from fyp.model.online import OnlineModels
from fyp.model.ranker import MultiTaskRanker, RankExample
from fyp.model.two_tower import RetrievalExample, TwoTower
from fyp.types import now_ms

TARGET_EXAMPLES_PER_S = 20_000.0
TARGET_P99_RATIO = 2.0  # feed p99 while training / p99 idle
TICK_S = 0.02
LEARN_SLICE = 256  # what the server's learning loop applies per slice (fyp.api.app)


class _Timer:
    """Accumulated wall time and calls of a wrapped method."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.max_s = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                self.seconds += dt
                self.calls += 1
                self.max_s = max(self.max_s, dt)

        return timed


def timer_snapshot(timers: dict[str, _Timer]) -> dict[str, tuple[float, int]]:
    return {k: (t.seconds, t.calls) for k, t in timers.items()}


def timer_delta(
    timers: dict[str, _Timer], before: dict[str, tuple[float, int]]
) -> dict[str, dict[str, float]]:
    """Seconds and calls of each wrapped part since ``before``, and the longest call ever."""
    return {
        k: {
            "seconds": t.seconds - before[k][0],
            "calls": t.calls - before[k][1],
            "longest_call_ms_so_far": t.max_s * 1e3,
        }
        for k, t in timers.items()
    }


def instrument(models: OnlineModels) -> tuple[dict[str, _Timer], list[Any], list[Any]]:
    """Wrap the models' entry points on the instances (timing them) and capture the
    batches each model learns from."""
    timers = {k: _Timer() for k in ("on_examples", "ranker.learn", "retrieval.learn", "index")}
    rank_batches: list[list[RankExample]] = []
    retr_batches: list[list[RetrievalExample]] = []
    ranker_learn = models.ranker.learn
    retrieval_learn = models.retrieval.learn

    def ranker_capture(batch: list[RankExample]) -> float:
        rank_batches.append(batch)
        return ranker_learn(batch)

    def retrieval_capture(batch: list[RetrievalExample]) -> float:
        retr_batches.append(batch)
        return retrieval_learn(batch)

    models.ranker.learn = timers["ranker.learn"].wrap(ranker_capture)  # type: ignore[method-assign]
    models.retrieval.learn = timers["retrieval.learn"].wrap(retrieval_capture)  # type: ignore[method-assign]
    models.refresh_index = timers["index"].wrap(models.refresh_index)  # type: ignore[method-assign]
    models.refresh_chunk = timers["index"].wrap(models.refresh_chunk)  # type: ignore[method-assign]
    listeners = models.state.example_listeners
    i = listeners.index(models.on_examples)
    listeners[i] = timers["on_examples"].wrap(models.on_examples)
    return timers, rank_batches, retr_batches


def bench_whole_path(engine: Engine) -> tuple[dict[str, Any], list[Any], list[Any]]:
    models = engine.models
    assert models is not None
    timers, rank_batches, retr_batches = instrument(models)
    events = engine.pending()
    with GcWatch() as gcw:
        t0 = time.perf_counter()
        engine.learn()
        wall = time.perf_counter() - t0
    examples = models.ranker.examples_seen
    positives = models.retrieval.positives_seen
    t = {k: v.seconds for k, v in timers.items()}
    # The hook only builds and queues the examples (RankExample / RetrievalExample: dense
    # features, labels); the models learn afterwards, in Engine.learn's drain of
    # OnlineModels.step. Everything else is the joiner and the first ranker.
    t["models.other"] = t["on_examples"]
    t["joiner+first ranker"] = (
        wall - t["on_examples"] - t["ranker.learn"] - t["retrieval.learn"] - t["index"]
    )
    return (
        {
            "timers": timers,
            "stage": "whole path: Engine.learn (LogState.apply + OnlineModels)",
            "events": events,
            "examples": examples,
            "positives": positives,
            "wall_s": wall,
            "events_per_s": events / wall,
            "examples_per_s": examples / wall,
            "seconds_by_part": t,
            "ranker_steps": timers["ranker.learn"].calls,
            "retrieval_steps": timers["retrieval.learn"].calls,
            "index_refreshes": timers["index"].calls,
            "ranker_warm": models.ranker.warm,
            "retrieval_warm": models.retrieval.warm,
            "gc": gcw.summary(),
        },
        rank_batches,
        retr_batches,
    )


def _time_steps(
    stage: str, learn: Callable[[Any], object], batches: list[Any], batch: int
) -> dict[str, Any]:
    """``learn`` on each batch in turn, timed: throughput and per-step percentiles."""
    n = sum(len(b) for b in batches)
    step_ms: list[float] = []
    t0 = time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        learn(b)
        step_ms.append((time.perf_counter() - s) * 1e3)
    wall = time.perf_counter() - t0
    return {
        "stage": stage,
        "examples": n,
        "batch": batch,
        "steps": len(batches),
        "wall_s": wall,
        "examples_per_s": n / wall if wall else None,
        "step_ms": percentiles(step_ms),
    }


def bench_ranker_alone(engine: Engine, rank_batches: list[Any]) -> dict[str, Any]:
    assert engine.models is not None
    # A fresh model of the engine's own configuration.
    ranker = MultiTaskRanker(
        engine.models.ranker.cfg, engine.settings.ranker.value_weights, engine.state.ranker
    )
    return _time_steps(
        "MultiTaskRanker.learn alone",
        ranker.learn,
        rank_batches,
        engine.settings.model.ranker_batch,
    )


def bench_two_tower_alone(engine: Engine, retr_batches: list[Any]) -> dict[str, Any]:
    assert engine.models is not None
    towers = TwoTower(engine.models.retrieval.cfg, engine.catalog)
    return _time_steps(
        "TwoTower.learn alone (no index)",
        towers.learn,
        retr_batches,
        engine.settings.model.retrieval_batch,
    )


class Learner(threading.Thread):
    """Ingests ``events`` at ``rate`` per second (ticks of ``TICK_S``) and learns them in
    ``LEARN_SLICE`` slices, each under the engine's lock, until stopped or out of events."""

    def __init__(self, engine: Engine, events: list[dict[str, object]], rate: float) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.events = events
        self.rate = rate
        self.stop_flag = threading.Event()
        self.ingested = 0
        self.learned = 0
        self.slice_ms: list[float] = []
        self.wall_s = 0.0
        self.ran_out = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _run(self) -> None:
        engine = self.engine
        t0 = time.perf_counter()
        tick = 0
        while not self.stop_flag.is_set():
            tick += 1
            due = min(int(self.rate * TICK_S * tick), len(self.events))
            if due > self.ingested:
                engine.ingest(self.events[self.ingested : due])
                self.ingested = due
            elif due >= len(self.events):
                self.ran_out = True
            while (engine.pending() > 0 or engine.training_due()) and not self.stop_flag.is_set():
                if engine.pending() > 0:
                    s = time.perf_counter()
                    self.learned += engine.learn(max_events=LEARN_SLICE, train=False)
                    self.slice_ms.append((time.perf_counter() - s) * 1e3)
                    time.sleep(0)  # let a waiting feed take the lock (the server awaits here)
                # The learned models' steps one at a time, as the server's loop does
                # (new events cut in after MIN_STEPS_PER_SLICE of them).
                steps = 0
                while not self.stop_flag.is_set():
                    s = time.perf_counter()
                    if not engine.train_step():
                        break
                    self.slice_ms.append((time.perf_counter() - s) * 1e3)
                    steps += 1
                    time.sleep(0)
                    if steps >= MIN_STEPS_PER_SLICE and engine.pending() > 0:
                        break
            pause = t0 + tick * TICK_S - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        self.wall_s = time.perf_counter() - t0


def bench_feed_under_learning(
    engine: Engine,
    users: list[str],
    warmup: int,
    rate: float,
    events: list[dict[str, object]],
    timers: dict[str, _Timer],
) -> dict[str, Any]:
    before = timer_snapshot(timers)
    learner = Learner(engine, events, rate)
    learner.start()
    time.sleep(0.5)  # let the stream reach its steady state
    res = bench_in_process(engine, users, warmup)
    learner.stop_flag.set()
    learner.join()
    if learner.error is not None:
        raise RuntimeError(f"the learner thread failed: {learner.error!r}")
    lag = engine.pending()
    res["path"] = f"in-process Engine.feed, learning {rate:,.0f} events/s"
    res["learning"] = {
        "target_rate": rate,
        "ingested": learner.ingested,
        "learned": learner.learned,
        "wall_s": learner.wall_s,
        "achieved_ingest_rate": learner.ingested / learner.wall_s,
        "achieved_learn_rate": learner.learned / learner.wall_s,
        "lag_at_end": lag,
        "ran_out_of_events": learner.ran_out,
        "slice_ms": percentiles(learner.slice_ms),
        "model_parts": timer_delta(timers, before),
    }
    engine.learn()  # catch up before the next phase
    return res


def profile_learning(engine: Engine, events: list[dict[str, object]], top: int = 30) -> str:
    """cProfile of ``Engine.learn`` over ``events`` (ingested first, untimed)."""
    for chunk in batches(events, 5_000):
        engine.ingest(chunk)
    prof = cProfile.Profile()
    prof.enable()
    n = engine.learn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    out.write(f"cProfile of Engine.learn over {n:,} events (models on)\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--profile", action="store_true", help="cProfile the learning step")
    ap.add_argument(
        "--rates",
        default="1000,4000",
        help="events/s the background learner ingests and learns (comma-separated)",
    )
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dir")
    args = ap.parse_args()
    exit_on_sigterm()
    serving_gc()  # as `fyp serve` runs
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    if args.quick:
        n_videos, n_users, views, feed_n, warmup = 10_000, 1_000, 20, 500, 50
    else:
        n_videos, n_users, views, feed_n, warmup = 100_000, 10_000, 20, 3_000, 200

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-train-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "train_throughput",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": n_videos,
            "users_with_history": n_users,
            "views_per_user": views,
            "count": COUNT,
            "feed_requests": feed_n,
            "warmup_requests": warmup,
            "learner_rates": rates,
            "learner_tick_s": TICK_S,
            "learn_slice": LEARN_SLICE,
        },
        "targets": {
            "examples_per_s": TARGET_EXAMPLES_PER_S,
            "feed_p99_ratio_training_vs_idle": TARGET_P99_RATIO,
        },
    }
    profile_text = ""
    try:
        now = now_ms()
        console.print(
            f"[bold]{n_videos:,} videos[/]: ingesting {n_users:,} users x {views} views "
            "(learned models on)"
        )
        engine, setup = _build(root / "data", n_videos, n_users, views, now)
        payload["setup"] = setup
        try:
            whole, rank_batches, retr_batches = bench_whole_path(engine)
            timers = whole.pop("timers")
            # As Engine.open does after its replay: the long-lived state out of the
            # collector's way (else full collections pause feeds for hundreds of ms).
            gc.collect()
            gc.freeze()
            console.print(
                f"  whole path: {whole['events']:,} events, {whole['examples']:,} examples in "
                f"{whole['wall_s']:.1f} s ({whole['examples_per_s']:,.0f} examples/s)"
            )
            ranker_alone = bench_ranker_alone(engine, rank_batches)
            towers_alone = bench_two_tower_alone(engine, retr_batches)
            del rank_batches, retr_batches
            payload["training"] = [whole, ranker_alone, towers_alone]
            console.print(
                f"  ranker alone {ranker_alone['examples_per_s']:,.0f} examples/s; two-tower "
                f"alone {towers_alone['examples_per_s']:,.0f} examples/s"
            )

            # A further stream for the background learner (fresh users, fresh ids).
            stream_users = max(n_users, int(max(rates, default=0) * 30 * len(rates) / 22))
            cat = make_catalog(n_videos, now, seed=n_videos)
            stream = make_history(cat, stream_users, views, now, seed=n_videos + 3, user_prefix="L")
            for e in stream:
                e["event_id"] = f"L-{e['event_id']}"
            del cat

            users = request_users(n_users, feed_n + warmup, seed=n_videos + 7, tag="idle")
            idle = bench_in_process(engine, users, warmup)
            idle["path"] = "in-process Engine.feed, idle"
            feeds = [idle]
            console.print(f"  feed idle: p99 {idle['latency_ms']['p99']:.2f} ms")
            offset = 0
            for i, rate in enumerate(rates):
                users = request_users(n_users, feed_n + warmup, seed=n_videos + 8 + i, tag=f"l{i}")
                part = stream[offset:]
                res = bench_feed_under_learning(engine, users, warmup, rate, part, timers)
                offset += res["learning"]["ingested"]
                feeds.append(res)
                console.print(
                    f"  feed while learning {rate:,.0f} events/s: p99 "
                    f"{res['latency_ms']['p99']:.2f} ms (learned "
                    f"{res['learning']['achieved_learn_rate']:,.0f} events/s)"
                )
            for r in feeds:
                r["p99_ratio_vs_idle"] = r["latency_ms"]["p99"] / idle["latency_ms"]["p99"]
                r["p50_ratio_vs_idle"] = r["latency_ms"]["p50"] / idle["latency_ms"]["p50"]
            payload["feed"] = feeds
            if args.profile:
                profile_text = profile_learning(engine, stream[offset : offset + 40_000])
        finally:
            engine.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    if profile_text:
        payload["profile"] = profile_text
        console.print(profile_text.split("\n\n\n")[0].rstrip(), markup=False, highlight=False)
    path = write_json("train_throughput_quick" if args.quick else "train_throughput", payload)
    console.print(f"Wrote {path}")


def _build(
    data_dir: Path, n_videos: int, n_users: int, views: int, now: int
) -> tuple[Engine, dict[str, Any]]:
    """What ``feed_latency.build_state`` does with the models on, minus its final learn."""
    # The synthetic users are this deployment's: no sign-up step in a training benchmark.
    engine = Engine.open(
        Settings(
            data_dir=data_dir,
            model=ModelSettings(enabled=True),
            privacy=PrivacyConfig(require_registered_users=False),
        )
    )
    setup: dict[str, Any] = {"videos": n_videos, "users": n_users, "views_per_user": views}
    t0 = time.perf_counter()
    catalog = make_catalog(n_videos, now, seed=n_videos)
    history = make_history(catalog, n_users, views, now, seed=n_videos + 1)
    setup["generate_s"] = time.perf_counter() - t0
    for chunk in batches(catalog.videos, 5_000):
        engine.upsert_videos(chunk)
    t0 = time.perf_counter()
    accepted = 0
    for chunk in batches(history, 5_000):
        result = engine.ingest(chunk, now=now)
        if result.rejected:
            raise RuntimeError(f"synthetic events rejected: {result.rejected[:3]}")
        accepted += result.accepted
    setup.update(events=accepted, ingest_s=time.perf_counter() - t0)
    return engine, setup


def _print(payload: dict[str, Any]) -> None:
    whole, ranker_alone, towers_alone = payload["training"]
    target = TARGET_EXAMPLES_PER_S
    rows = []
    for r in (whole, ranker_alone, towers_alone):
        eps = r["examples_per_s"]
        rows.append(
            [
                r["stage"],
                f"{r['examples']:,}",
                f"{r['wall_s']:.2f}",
                f"{eps:,.0f}",
                f"{r['events_per_s']:,.0f}" if "events_per_s" in r else "—",
                ms(r["step_ms"]["p50"]) if "step_ms" in r else "—",
                f"≥ {target:,.0f}",
                "yes" if eps >= target else "no",
            ]
        )
    p = payload["params"]
    print_table(
        "Trainer throughput (in process)",
        ["stage", "examples", "seconds", "examples/s", "events/s", "step p50 ms", "target", "met"],
        rows,
        caption=(
            f"{p['videos']:,} videos, {p['users_with_history']:,} users x "
            f"{p['views_per_user']} views; examples = joined views (ranker), positives "
            "(two-tower). Ranker/two-tower alone: the whole path's own batches replayed "
            "into fresh models."
        ),
    )
    parts = whole["seconds_by_part"]
    print_table(
        "Where the whole path's time goes",
        ["part", "seconds", "share"],
        [
            [k, f"{parts[k]:.2f}", f"{parts[k] / whole['wall_s']:.0%}"]
            for k in (
                "joiner+first ranker",
                "ranker.learn",
                "retrieval.learn",
                "index",
                "models.other",
            )
        ],
        caption=(
            f"{whole['ranker_steps']} ranker steps, {whole['retrieval_steps']} two-tower "
            f"steps, {whole['index_refreshes']} index refreshes; models.other = building "
            "and queueing the examples in OnlineModels.on_examples"
        ),
    )
    rows = []
    for r in payload["feed"]:
        lat = r["latency_ms"]
        learning = r.get("learning")
        rows.append(
            [
                r["path"],
                f"{lat['count']:,}",
                ms(lat["p50"]),
                ms(lat["p95"]),
                ms(lat["p99"]),
                ms(lat["max"]),
                f"{r['p99_ratio_vs_idle']:.2f}",
                f"{learning['achieved_learn_rate']:,.0f}" if learning else "—",
                f"{learning['lag_at_end']:,}" if learning else "—",
                ms(learning["slice_ms"].get("p99")) if learning else "—",
                "—" if not learning else ("yes" if r["p99_ratio_vs_idle"] <= 2.0 else "no"),
            ]
        )
    print_table(
        f"Feed latency with the learned models warm, count={p['count']} (ms)",
        [
            "path",
            "requests",
            "p50",
            "p95",
            "p99",
            "max",
            "p99 / idle",
            "learned ev/s",
            "lag at end",
            "slice p99",
            "≤ 2×",
        ],
        rows,
        caption=(
            "One caller, closed loop; 10% new users. Learner: a thread ingesting (fsync) "
            f"every {TICK_S * 1e3:.0f} ms and learning {LEARN_SLICE}-event slices under the "
            "engine lock (slice = one Engine.learn call: reading the log, waiting for the "
            "lock, applying)."
        ),
    )
    for r in payload["feed"]:
        g2 = r["gc_during_timed_loop"]["gen2"]
        line = (
            f"  {r['path']}: {g2['collections']} full GCs ({g2['total_ms']:.0f} ms, longest "
            f"{g2['max_ms']:.0f} ms)"
        )
        learning = r.get("learning")
        if learning:
            parts = learning["model_parts"]
            sl = learning["slice_ms"]
            busy = sl.get("mean", 0.0) * sl["count"] / 1e3 / learning["wall_s"]
            line += (
                f"; longest slice {sl.get('max', 0):.0f} ms; index refreshes "
                f"{parts['index']['calls']:.0f} ({parts['index']['seconds']:.2f} s); in "
                f"Engine.learn (lock waits included) {busy:.0%} of the time"
            )
        console.print(line, markup=False, highlight=False)


if __name__ == "__main__":
    main()
