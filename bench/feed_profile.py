"""Where a feed's CPU goes in ``fyp serve``: the server's CPU per feed split by thread and,
from py-spy's samples of the thread holding the GIL, by part of the request path (HTTP
and ASGI, authentication, the pipeline's sources and rankers, the learned ranker, the
response's write, the impression log, the model sync, the log fold).

Setup (untimed): the state of ``bench/learner.py`` (``--videos`` videos, ``--users`` users
with 20 views each, the learned models warm) and, for ``--post-rate``, a stream of new
users' events. Per mode (``process``: a learner process and a serving replica, what
``fyp serve`` runs with the models on; ``in_process``: the models trained in the server;
``off``: the first ranker), ``fyp serve`` on a copy of the data, ``GET /v1/feed?count=10``
open loop at ``--rate`` feeds/s (and the stream posted at ``--post-rate`` events/s
beside it) while ``py-spy record --gil`` samples the server. ``--src DIR`` runs the server
with the ``fyp`` package of ``DIR`` (an earlier commit's, from ``git archive``).

The shares are of samples in which a thread of the server held the GIL: Python work and
the C it calls without releasing it (numpy on small arrays), not waiting, fsync or
socket reads. The ms per feed beside them is that share of the process's CPU per feed.

    python bench/feed_profile.py [--quick] [--modes process,off] [--post-rate 2000]

Needs ``py-spy`` (``pip install py-spy``; it attaches to the server by pid, which needs
ptrace permission). Prints tables and writes ``bench/results/feed_profile.json``
(``_quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    open_loop,
    print_table,
    register_users,
    utc_now_iso,
    write_json,
)
from feed_latency import build_state, request_users
from fyp.engine import LEARNER_CHECKPOINT_FILE
from fyp.storage.checkpoint import write_checkpoint
from fyp.types import now_ms
from learner import wait_caught_up
from serve_learning import Poster


def _has(*names: str) -> Callable[[list[str]], bool]:
    return lambda frames: any(n in f for f in frames for n in names)


# Each sample goes to the first part whose frames it holds (the order matters: the
# learned ranker runs inside the rank stage, which runs inside the pipeline...).
PARTS: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("impression log write (its thread)", _has("events/impressions.py")),
    ("model sync: applying published updates", _has("model_sync.py", "ModelReplica.")),
    ("log fold (the learning loop)", _has("learning_loop.py")),
    ("POST /v1/events: parse, validate, append", _has("post_events", "read_json")),
    ("learned ranker", _has("rank_predict", "ReplicaRanker.predict")),
    ("two-tower retrieval", _has("TwoTowerSource")),
    ("other sources", _has("FeedPipeline._retrieve", "FeedPipeline.candidates")),
    ("first ranker (the rank stage)", _has("FeedPipeline._rank")),
    ("filters, re-ranking, reasons", _has("FeedPipeline.run")),
    ("response write (socket)", _has("Response.__call__")),
    ("authentication", _has("api/security.py")),
    # (Before the router split the route was a closure of create_app.)
    (
        "the feed route's own work (parameters, JSON body)",
        _has("api/routes/feed.py", "create_app.<locals>.feed"),
    ),
    ("FastAPI parameters and dependencies", _has("solve_dependencies", "get_request_handler")),
    ("ASGI, middleware, uvicorn", _has("httptools_impl", "run_asgi")),
    ("event loop, other", lambda frames: True),
]


def split_samples(raw: Path) -> dict[str, int]:
    """py-spy's raw (collapsed stacks) output -> samples per part."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        part = next(name for name, holds in PARTS if holds(frames))
        counts[part] += int(n)
    return {name: counts[name] for name, _ in PARTS}


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # (ended meanwhile)
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def run_mode(
    mode: str, base: Path, root: Path, users: list[str], stream: list[dict[str, Any]], args: Any
) -> dict[str, Any]:
    label = mode if args.src is None else f"{mode}@{args.src}"
    data = root / mode
    shutil.copytree(base, data)
    shutil.copy(base.with_name("base.secret"), data.with_name(f"{mode}.secret"))
    if mode == "process":
        (data / "checkpoint.pkl").unlink()  # (the server folds the log: without the models)
    config = root / f"{mode}.toml"
    enabled = "false" if mode == "off" else "true"
    learner = "process" if mode == "process" else "in_process"
    config.write_text(f'[model]\nenabled = {enabled}\nlearner = "{learner}"\n')
    env = {"FYP_CONFIG": str(config)}
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src)
    out: dict[str, Any] = {"mode": label}
    with Server(data, root / f"server-{mode}.log", env=env) as server:
        assert server.proc is not None
        pid = server.proc.pid
        wait_caught_up(server, data, mode == "process", 600)
        time.sleep(3.0)
        open_loop(server, [(args.rate, users[:200])])  # warm-up
        poster = None
        if args.post_rate:
            poster = Poster(server, stream, args.post_rate)
            poster.start()
            time.sleep(1.0)
        n = int(args.rate * args.seconds)
        raw = root / f"{mode}.raw"
        spy = subprocess.Popen(
            [
                *(args.py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds))),
                *("--rate", "200", "--gil", "--format", "raw", "--output", str(raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threads0 = thread_cpu_s(pid)
        (row,) = open_loop(server, [(args.rate, users[200 : 200 + n])])
        threads1 = thread_cpu_s(pid)
        _, spy_err = spy.communicate(timeout=120)
        if poster is not None:
            poster.stop_flag.set()
            poster.join()
            out["posted_per_s"] = poster.acknowledged / poster.wall_s
    per_thread = {t: (threads1[t] - threads0.get(t, 0.0)) / n * 1e3 for t in threads1}
    cpu = sum(per_thread.values())
    out["cpu_ms_per_feed"] = cpu
    out["threads_ms_per_feed"] = {
        "main (event loop)": per_thread.get(pid, 0.0),
        "others": sorted((v for t, v in per_thread.items() if t != pid), reverse=True)[:4],
    }
    out["latency_ms"] = row["latency_ms"]
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote nothing: {spy_err.decode()[-500:]}")
    samples = split_samples(raw)
    total = max(sum(samples.values()), 1)
    out["samples"] = total
    out["parts"] = {
        name: {"share": s / total, "ms_per_feed": s / total * cpu} for name, s in samples.items()
    }
    shutil.rmtree(data, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k videos, 1,500 users")
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--rate", type=float, default=50.0, help="feeds/s, open loop")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--post-rate", type=float, default=0.0, help="events/s posted beside")
    ap.add_argument("--modes", default="process,in_process,off")
    ap.add_argument("--src", type=Path, default=None, help="the fyp package's src/ to serve")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--data-root", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.videos, args.users = 10_000, 1_500
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-profile-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "feed_profile",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("py_spy", "data_root")
        },
    }
    try:
        now = now_ms()
        base = root / "base"
        console.print(f"[bold]{args.videos:,} videos[/]: building the state (learned models on)")
        engine, _ = build_state(base, args.videos, args.users, 20, now, model=True)
        users = request_users(args.users, int(args.rate * args.seconds) + 200, 7, "p")
        register_users(engine, [{"user_id": u} for u in users])
        stream: list[dict[str, Any]] = []
        if args.post_rate:
            catalog = make_catalog(args.videos, now, seed=args.videos)
            n_users = int(args.post_rate * (args.seconds + 5) / 20) + 1
            stream = make_history(catalog, n_users, 20, now, seed=3, user_prefix="L")
            for e in stream:
                e["event_id"] = f"L-{e['event_id']}"
            register_users(engine, stream)
        engine.checkpoints.write()
        write_checkpoint(base / LEARNER_CHECKPOINT_FILE, engine._payload())
        engine.close()
        results = []
        for mode in [m for m in args.modes.split(",") if m]:
            results.append(run_mode(mode, base, root, users, stream, args))
            console.print(f"  {mode}: {results[-1]['cpu_ms_per_feed']:.2f} ms of CPU per feed")
        payload["results"] = results
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    path = write_json("feed_profile_quick" if args.quick else "feed_profile", payload)
    console.print(f"Wrote {path}")


def _print(payload: dict[str, Any]) -> None:
    results = payload["results"]
    rows = [
        [name]
        + [
            f"{r['parts'][name]['ms_per_feed']:.2f} ({r['parts'][name]['share']:.0%})"
            for r in results
        ]
        for name, _ in PARTS
    ]
    rows.append(
        ["all (the process's CPU per feed)"] + [f"{r['cpu_ms_per_feed']:.2f}" for r in results]
    )
    rows.append(
        ["  of which the event loop's thread"]
        + [f"{r['threads_ms_per_feed']['main (event loop)']:.2f}" for r in results]
    )
    rows.append(
        ["  the busiest other thread"]
        + [f"{max(r['threads_ms_per_feed']['others'], default=0.0):.2f}" for r in results]
    )
    p = payload["params"]
    print_table(
        f"A feed's server CPU, ms (share of GIL-held samples): {p['videos']:,} videos, "
        f"{p['rate']:.0f} feeds/s, {p['post_rate']:,.0f} events/s posted",
        ["part"] + [r["mode"] for r in results],
        rows,
    )


if __name__ == "__main__":
    main()
