"""The learned models on, trained in the server's own process (``model.learner =
"in_process"``, the old way) against a learner process of its own (``"process"``, what
``fyp serve`` runs by default): both measured in the same run, on the same data.

Setup (untimed): the state of ``bench/feed_latency.py`` with the learned models on
(``--videos`` videos, ``--users`` users with 20 views each), learned in process, so both
models are warm; its checkpoint as the in-process server's and as the learner's (the
split server folds the log itself at its start: its fold has no models); a synthetic
stream of new users for the learning phases. Each mode gets a copy of the data dir.

Per mode, ``fyp serve`` in a subprocess and, from a separate client process, feeds
``GET /v1/feed?count=10`` *open loop*: requests sent on a schedule at a fixed rate,
latency counted from the scheduled time (so a server that falls behind shows it):

1. *idle*: ``--base-rate`` feeds/s (100);
2. *learning*: as many while a thread posts the stream at ``--learn-rate`` events/s
   (the learner trains flat out); the learner's examples/s and its lag at the end;
   ``--repeats N`` alternates 1 and 2 N times (each idle phase after the learner has
   caught up) and reports each round and the median p99s: one 10-second phase may
   catch a checkpoint's fork or a collection, and its ratio swings with it;
3. *ladder*: feeds at rising rates, no stream: the highest rate whose p99 is <= 30 ms;
4. *keep up*: ``--keep-up-rate`` events/s posted beside the base rate of feeds; the learning lag
   at the end, and how long it takes to catch up after.

``--modes`` may also name ``off`` (the learned models off: the first ranker serves), and
``--baseline-src DIR`` runs each mode twice, first with the ``fyp`` package of ``DIR``
(``git archive <commit> src | tar -x -C /tmp/before``: an earlier commit's) and then with
this checkout's, so that a change is measured against what it changed in one run.

Also the memory (RSS) of the server and of the learner. Prints a table and writes
``bench/results/learner.json`` (``_quick``). Nothing here asserts on timings; the machine
is shared, so compare the two modes of one run only.

    python bench/learner.py [--quick] [--videos 100000 --users 2000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    SLO_P99_MS,
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    open_loop,
    percentiles,
    print_table,
    proc_cpu_s,
    register_users,
    utc_now_iso,
    write_json,
)
from feed_latency import COUNT, build_state, request_users
from fyp.engine import LEARNER_CHECKPOINT_FILE, Engine
from fyp.storage.checkpoint import write_checkpoint
from fyp.types import now_ms
from serve_learning import Poster

# --------------------------------------------------------------------------- the server


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _per(after: float | None, before: float | None, n: int) -> float:
    return float("nan") if after is None or before is None else (after - before) / n


def learner_progress(data_dir: Path) -> tuple[float, float] | None:
    """(examples the learner's ranker has learned from, its CPU seconds so far)."""
    status = learner_status(data_dir)
    cpu = None if status is None else proc_cpu_s(int(status["pid"]))
    return None if status is None or cpu is None else (float(status["examples"]), cpu)


def _gauge(server: Server, name: str) -> float | None:
    with server.client() as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


_SETTLE_S = 3.0  # after catching up, before the idle phase


def health(server: Server) -> dict[str, Any]:
    with server.client() as client:
        body: dict[str, Any] = client.get("/healthz").json()
    return body


def learner_status(data_dir: Path) -> dict[str, Any] | None:
    import json

    try:
        status: dict[str, Any] = json.loads((data_dir / "learner-status.json").read_text())
    except (OSError, ValueError):
        return None
    return status


def wait_caught_up(server: Server, data_dir: Path, split: bool, timeout_s: float) -> float:
    """Until everything logged is learned (the learner's, where it runs apart); seconds."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        h = health(server)
        lag = h["learning_lag"]
        if split:
            models = h["learned_models"] or {}
            lag += models.get("learner_lag", 1) + (models.get("learner") != "up")
        if lag == 0:
            break
        time.sleep(0.2)
    return time.perf_counter() - t0


def run_mode(
    mode: str,
    data_dir: Path,
    root: Path,
    users: dict[str, list[str]],
    stream: list[dict[str, Any]],
    args: argparse.Namespace,
    src: Path | None = None,
) -> dict[str, Any]:
    """One mode: "in_process", "process" or "off" (the learned models off); with ``src``,
    the server runs the ``fyp`` package found there (an earlier commit's, for a baseline)."""
    split = mode == "process"
    label = mode if src is None else f"{mode}@baseline"
    config = root / f"{label}.toml"
    if mode == "off":
        config.write_text("[model]\nenabled = false\n")
    else:
        config.write_text(f'[model]\nenabled = true\nlearner = "{mode}"\n')
    out: dict[str, Any] = {"mode": label, "src": None if src is None else str(src)}
    offset = 0
    env = {"FYP_CONFIG": str(config)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with Server(data_dir, root / f"server-{label}.log", env=env) as server:
        out["server_startup_s"] = server.startup_s
        if split:  # the learner's start: its checkpoint read, a snapshot published
            t0 = time.perf_counter()
            while (health(server)["learned_models"] or {}).get("version", 0) == 0:
                time.sleep(0.1)
            out["learner_ready_s"] = time.perf_counter() - t0
        rounds = []
        # Each round posts from its own share of the stream, so that a round whose phase
        # ran long (a loaded machine) leaves the next rounds theirs.
        share = _learning_share(args)
        for r in range(args.repeats):
            part = stream[r * share : (r + 1) * share]
            idle, learning, posted = _idle_then_learning(
                server, data_dir, split, users, part, args, r, label
            )
            learning["stream_exhausted"] = posted >= len(part)
            if learning["stream_exhausted"]:
                console.print(f"  {label}, round {r + 1}: its share of the stream ran out")
            rounds.append({"idle": idle, "learning": learning})
        offset = args.repeats * share
        out["rounds"] = rounds
        # The first round's phases as before (what earlier results hold), and the medians.
        out["idle"], out["learning"] = rounds[0]["idle"], rounds[0]["learning"]
        out["caught_up_before_idle_s"] = rounds[0]["idle"]["caught_up_before_s"]
        out["median"] = _medians(rounds)
        out["rss_mb_while_learning"] = {
            "server": rss_mb(server.proc.pid if server.proc else None),
            "learner": rss_mb((learner_status(data_dir) or {}).get("pid")) if split else None,
        }
        if args.repeats > 1:
            m = out["median"]
            console.print(
                f"  {label}: median of {args.repeats}: p99 idle {m['idle_p99_ms']:.1f} ms, "
                f"learning {m['learning_p99_ms']:.1f} ms ({m['ratio']:.2f}x; the median "
                f"of the rounds' ratios {m['ratio_of_rounds']:.2f}x)"
            )
        out["catch_up_after_learning_s"] = wait_caught_up(server, data_dir, split, 600)

        ladder = []
        for rate in args.ladder:
            m = int(rate * args.seconds)
            (row,) = open_loop(server, [(rate, users["ladder"][:m])])
            ladder.append(row)
            console.print(f"  {label}: {rate:,.0f} feeds/s: p99 {row['latency_ms']['p99']:.1f} ms")
            if row["latency_ms"]["p99"] > 4 * SLO_P99_MS:
                break  # (far past it: higher rates only queue more)
        out["ladder"] = ladder
        within = [r["rate"] for r in ladder if r["latency_ms"]["p99"] <= SLO_P99_MS]
        out["max_rate_at_slo"] = max(within, default=0.0)

        if args.keep_up_rate:
            poster = Poster(server, stream[offset:], args.keep_up_rate)
            poster.start()
            n = int(args.base_rate * args.seconds)
            (keep,) = open_loop(server, [(args.base_rate, users["keep"][:n])])
            poster.stop_flag.set()
            poster.join()
            offset += poster.posted
            h = health(server)
            keep["posted_per_s"] = poster.acknowledged / poster.wall_s
            keep["server_lag_at_end"] = h["learning_lag"]
            keep["learner_lag_at_end"] = (h["learned_models"] or {}).get("learner_lag")
            keep["catch_up_s"] = wait_caught_up(server, data_dir, split, 600)
            out["keep_up"] = keep
        out["rss_mb_end"] = {
            "server": rss_mb(server.proc.pid if server.proc else None),
            "learner": rss_mb((learner_status(data_dir) or {}).get("pid")) if split else None,
        }
    return out


def _slice(users: list[str], r: int, n: int) -> list[str]:
    """Round ``r``'s ``n`` request users: the next slice of the list (from the start
    again past its end), so that a new user of one round is new in it."""
    start = (r * n) % max(len(users), 1)
    out = users[start : start + n]
    return out + users[: n - len(out)]


def _idle_then_learning(
    server: Server,
    data_dir: Path,
    split: bool,
    users: dict[str, list[str]],
    stream: list[dict[str, Any]],
    args: argparse.Namespace,
    r: int,
    label: str,
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """One round: an idle phase, then a learning phase; their results and the events
    the learning phase posted."""
    # The idle phase is with learning idle: everything logged learned (by the learner,
    # where it runs apart: its start replays what its checkpoint lacks), then a pause
    # for what follows a catch-up (a publish, an index re-clustering) to pass.
    idle_wait = wait_caught_up(server, data_dir, split, 600)
    time.sleep(_SETTLE_S)
    n = int(args.base_rate * args.seconds)
    cpu0 = server.cpu_s()
    (idle,) = open_loop(server, [(args.base_rate, _slice(users["idle"], r, n))])
    idle["server_cpu_ms_per_feed"] = _per(server.cpu_s(), cpu0, n) * 1e3
    idle["caught_up_before_s"] = idle_wait
    p99 = idle["latency_ms"]["p99"]
    console.print(f"  {label}, round {r + 1}: idle {args.base_rate:.0f}/s: p99 {p99:.1f} ms")

    poster = Poster(server, stream, args.learn_rate)
    poster.start()
    time.sleep(1.0)
    samples: list[float] = []
    sampler_stop = threading.Event()

    def sample() -> None:
        while not sampler_stop.wait(1.0):
            status = learner_status(data_dir) if split else None
            if status is not None:
                samples.append(float(status["examples_per_s"]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    learner0 = learner_progress(data_dir) if split else None
    cpu0 = server.cpu_s()
    (learning,) = open_loop(server, [(args.base_rate, _slice(users["learning"], r, n))])
    learning["server_cpu_ms_per_feed"] = _per(server.cpu_s(), cpu0, n) * 1e3
    learner1 = learner_progress(data_dir) if split else None
    if learner0 is not None and learner1 is not None:
        # Per CPU-second of the learner: what it does with a core of its own (the
        # machine is shared, so its wall-clock rate says more about the neighbours).
        learning["learner_examples_per_cpu_s"] = _per(learner1[0], learner0[0], 1) / max(
            learner1[1] - learner0[1], 1e-9
        )
    poster.stop_flag.set()
    poster.join()
    sampler_stop.set()
    h = health(server)
    learning["posted_per_s"] = poster.acknowledged / poster.wall_s
    learning["server_lag_at_end"] = h["learning_lag"]
    learning["learner_lag_at_end"] = (h["learned_models"] or {}).get("learner_lag")
    learning["learner_examples_per_s"] = samples
    learning["p99_ratio_vs_idle"] = learning["latency_ms"]["p99"] / idle["latency_ms"]["p99"]
    if split:
        learning["publish_to_apply_p95_s"] = _gauge(
            server, "fyp_model_publish_to_apply_p95_seconds"
        )
    console.print(
        f"  {label}, round {r + 1}: learning {args.learn_rate:,.0f} events/s: p99 "
        f"{learning['latency_ms']['p99']:.1f} ms ({learning['p99_ratio_vs_idle']:.2f}x idle)"
    )
    return idle, learning, poster.posted


def _learning_share(args: argparse.Namespace) -> int:
    """The events of the stream each learning phase may post: its planned length, and
    as much again."""
    return int(2 * args.learn_rate * (args.seconds + 3))


def _medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The median p99 of the idle phases and of the learning phases, their ratio, and the
    median of the rounds' own ratios."""
    idle = [r["idle"]["latency_ms"]["p99"] for r in rounds]
    learning = [r["learning"]["latency_ms"]["p99"] for r in rounds]
    return {
        "idle_p99_ms": statistics.median(idle),
        "learning_p99_ms": statistics.median(learning),
        "ratio": statistics.median(learning) / statistics.median(idle),
        "ratio_of_rounds": statistics.median(r["learning"]["p99_ratio_vs_idle"] for r in rounds),
    }


def measure_fold(data_dir: Path) -> dict[str, dict[str, float]]:
    """What folding the log costs a server without the models (what it does instead of
    reading the first ranker's and sources' state from the learner), against the whole
    path with the models (what the learner does): a replay of the whole log each, timed
    (wall and this thread's CPU) per event."""
    from fyp.config import ModelSettings, Settings

    out = {}
    paths = {
        "fold": ModelSettings(enabled=False),
        "whole_path": ModelSettings(enabled=True, learner="in_process"),
    }
    for name, model in paths.items():
        engine = Engine.open(
            Settings(data_dir=data_dir, model=model), from_checkpoint=False, replay=False
        )
        t0, cpu0 = time.perf_counter(), time.thread_time()
        events = engine.learn()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        engine.close()
        n = max(events, 1)
        out[name] = {
            "events": events,
            "wall_s": wall,
            "us_per_event": wall / n * 1e6,
            "cpu_us_per_event": cpu / n * 1e6,
        }
    return out


def serving_cost(data_dir: Path, users: list[str]) -> dict[str, Any]:
    """A feed's cost in process (no HTTP), models trained in the server (role "all")
    against a replica of the same models (role "serving"), on the same state: the CPU
    time of this process per feed (what the neighbours on a shared machine do not change
    much; all its threads, as a server's is counted over HTTP: a BLAS pool's helper
    threads spin on their own) and the wall-clock percentiles."""
    from fyp.api.model_sync import ModelSync
    from fyp.config import ModelSettings, Settings
    from fyp.engine import serving_gc
    from fyp.model.channel import FileModelChannel
    from fyp.model.publisher import Publisher

    serving_gc()
    out: dict[str, Any] = {}
    settings = Settings(data_dir=data_dir, model=ModelSettings(enabled=True))
    in_process = ModelSettings(enabled=True, learner="in_process")
    full = Engine.open(settings.model_copy(update={"model": in_process}))
    channel = FileModelChannel(data_dir.parent / "serving-cost-models")
    assert full.models is not None
    Publisher(full.models, channel).publish(full.state.applied_offset)
    out["all"] = _feeds(full, users)
    full.close()
    replica = Engine.open(settings, role="serving")
    ModelSync(replica, channel).catch_up()
    out["serving"] = _feeds(replica, users)
    replica.close()
    return out


def _feeds(engine: Any, users: list[str]) -> dict[str, Any]:
    for u in users[:50]:  # warm-up
        engine.feed(u, count=COUNT)
    wall: list[float] = []
    cpu0 = time.process_time()
    for u in users[50:]:
        t0 = time.perf_counter()
        engine.feed(u, count=COUNT)
        wall.append((time.perf_counter() - t0) * 1000)
    cpu = time.process_time() - cpu0
    return {
        "ranker": engine.pipeline.ranker.active(),
        "cpu_ms_per_feed": cpu / len(wall) * 1000,
        "latency_ms": percentiles(wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k videos, 1,500 users, short phases")
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="each open-loop phase")
    ap.add_argument("--base-rate", type=float, default=100.0, help="feeds/s beside learning")
    ap.add_argument("--learn-rate", type=float, default=2_000.0)
    ap.add_argument("--keep-up-rate", type=float, default=5_000.0)
    ap.add_argument("--ladder", default="200,300,400,500,600,800")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="idle and learning phases, alternating, this many times each (their medians)",
    )
    ap.add_argument(
        "--modes", default="in_process,process", help="of in_process, process, off (models off)"
    )
    ap.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run each mode with the fyp package of this src/ directory (an earlier "
        "commit's, from git archive), just before the current code's run",
    )
    ap.add_argument("--data-root", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.videos, args.users, args.seconds = 10_000, 1_500, 5.0
    args.ladder = [float(r) for r in args.ladder.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    views = 20
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-learner-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "learner",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": args.videos,
            "users_with_history": args.users,
            "views_per_user": views,
            "count": COUNT,
            "phase_s": args.seconds,
            "base_rate": args.base_rate,
            "learn_rate": args.learn_rate,
            "keep_up_rate": args.keep_up_rate,
            "ladder": args.ladder,
            "repeats": args.repeats,
            "slo_p99_ms": SLO_P99_MS,
        },
    }
    try:
        now = now_ms()
        base = root / "base"
        console.print(f"[bold]{args.videos:,} videos[/]: building the state (learned models on)")
        engine, setup = build_state(base, args.videos, args.users, views, now, model=True)
        # (each user's history holds at least ``views`` events)
        stream_users = int(
            (args.repeats * _learning_share(args) + args.keep_up_rate * (args.seconds + 3)) / views
        )
        catalog = make_catalog(args.videos, now, seed=args.videos)
        stream = make_history(
            catalog, stream_users, views, now, seed=args.videos + 3, user_prefix="L"
        )
        for e in stream:
            e["event_id"] = f"L-{e['event_id']}"
        del catalog
        n = int(max(args.ladder) * args.seconds)
        users = {
            name: request_users(args.users, n, seed=args.videos + 10 + i, tag=f"p{i}")
            for i, name in enumerate(("idle", "learning", "ladder", "keep"))
        }
        register_users(engine, stream)
        register_users(engine, [{"user_id": u} for us in users.values() for u in us])
        setup["checkpoint_bytes"] = engine.checkpoints.write()
        # The same state as the learner's checkpoint (what the learner process restores).
        write_checkpoint(base / LEARNER_CHECKPOINT_FILE, engine._payload())
        engine.close()
        setup["fold"] = measure_fold(base)
        for name, row in setup["fold"].items():
            console.print(
                f"  replay, {name}: {row['cpu_us_per_event']:.0f} µs CPU per event "
                f"({row['events']:,} events)"
            )
        setup["serving_cost"] = serving_cost(base, users["idle"][:600])
        for role, row in setup["serving_cost"].items():
            console.print(
                f"  in process, {role}: {row['cpu_ms_per_feed']:.2f} ms CPU per feed "
                f"({row['ranker']}), p99 {row['latency_ms']['p99']:.1f} ms"
            )
        payload["setup"] = setup
        results = []
        srcs = ([args.baseline_src] if args.baseline_src else []) + [None]
        runs = [(m, src) for m in modes for src in srcs]
        for mode, src in runs:
            data = root / (mode if src is None else f"{mode}-baseline")
            shutil.copytree(base, data)
            shutil.copy(base.with_name("base.secret"), data.with_name(f"{data.name}.secret"))
            if mode == "process":
                (data / "checkpoint.pkl").unlink()  # (the server's fold: without the models)
            results.append(run_mode(mode, data, root, users, stream, args, src))
            shutil.rmtree(data, ignore_errors=True)
        payload["results"] = results
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    path = write_json("learner_quick" if args.quick else "learner", payload)
    console.print(f"Wrote {path}")


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["results"]:
        keep = r.get("keep_up", {})
        rounds = r.get("rounds", [r])
        ex = [x for rr in rounds for x in rr["learning"]["learner_examples_per_s"]]
        m = r.get("median") or _medians(rounds)
        lag = keep.get("learner_lag_at_end")
        lag = keep.get("server_lag_at_end") if lag is None else lag
        rows.append(
            [
                r["mode"],
                _f(r["idle"]["server_cpu_ms_per_feed"], 2),
                _f(m["idle_p99_ms"]),
                _f(m["learning_p99_ms"]),
                _f(m["ratio"], 2),
                _f(r["max_rate_at_slo"], 0),
                _f(max(ex) if ex else None, 0),
                _f(r["learning"].get("learner_examples_per_cpu_s"), 0),
                _f(keep.get("posted_per_s"), 0),
                "-" if lag is None else f"{lag:,}",
                _f(keep.get("catch_up_s")),
                _f(r["rss_mb_end"]["server"], 0),
                _f(r["rss_mb_end"]["learner"], 0),
            ]
        )
    p = payload["params"]
    print_table(
        f"Learned models on: in the server's process vs a learner process "
        f"({p['videos']:,} videos, {p['users_with_history']:,} users; shared machine)",
        [
            "mode",
            "server CPU ms/feed",
            "p99 idle ms (median)",
            f"p99 learning {p['learn_rate']:,.0f}/s ms (median)",
            "ratio (medians)",
            "max feeds/s at p99<=30ms",
            "learner examples/s (max)",
            "learner examples/CPU-s",
            "keep-up posted/s",
            "lag at end",
            "catch-up s",
            "server RSS MB",
            "learner RSS MB",
        ],
        rows,
    )
    if p.get("repeats", 1) > 1:
        print_table(
            "Each round: the idle phase, then the learning phase",
            ["mode", "round", "p99 idle ms", "p99 learning ms", "ratio"],
            [
                [
                    r["mode"],
                    str(i + 1),
                    _f(rr["idle"]["latency_ms"]["p99"]),
                    _f(rr["learning"]["latency_ms"]["p99"]),
                    _f(rr["learning"]["p99_ratio_vs_idle"], 2),
                ]
                for r in payload["results"]
                for i, rr in enumerate(r["rounds"])
            ],
        )


if __name__ == "__main__":
    main()
