"""Feed latency over HTTP while the server learns: what a learning stream costs the feed
in the server's own path (``fyp serve``, one event loop that serves feeds and runs the
learning loop's slices and training steps in turn).

Setup (untimed): the state of ``bench/feed_latency.py`` with the learned models on (100k
videos, 10k users x 20 views; ``--quick``: 10k videos, 1k users), learned in process, so
both models are warm; a further synthetic stream of new users (their sign-ups made); a
checkpoint, so the server starts without a replay. Then ``fyp serve`` with ``[model]
enabled = true``, and from a separate client process 8 threads with keep-alive
connections send ``GET /v1/feed?count=10`` closed loop (90% users with history, 10% new
users, as in ``bench/feed_latency.py``):

1. *idle*: nothing else happens;
2. *learning R events/s* (``--rates``): meanwhile a thread of this process posts the stream
   to ``POST /v1/events`` at R events/s (a batch every 20 ms), which the server
   acknowledges (fsynced) and learns: joiner slices, the ranker's and two-tower's steps,
   the index refreshes.

Reports p50/p99 of each phase, the p99 ratio to idle (the target: within 2×), the rate
acknowledged, the rate learned (each phase starts caught up: acknowledged less the lag),
and the learning lag at the end (``/healthz``: events logged, not yet learned). The same
run gives both phases, so the ratio is within one run of one machine.

    python bench/serve_learning.py [--quick] [--rates 1000,4000]

Prints a table and writes ``bench/results/serve_learning.json`` (``_quick``). Nothing here
asserts on timings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from _common import (
    Job,
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    print_table,
    register_users,
    run_clients,
    utc_now_iso,
    write_json,
)
from feed_latency import CONCURRENCY, COUNT, _http_row, build_state, request_users
from fyp.types import now_ms

TARGET_P99_RATIO = 2.0
TICK_S = 0.02
STREAM_SECONDS = 120  # the most any phase can post at its rate


class Poster(threading.Thread):
    """Posts ``events`` at ``rate`` per second, a batch every ``TICK_S``, until stopped."""

    def __init__(self, server: Server, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.server, self.events, self.rate = server, events, rate
        self.stop_flag = threading.Event()
        self.acknowledged = 0
        self.failed = 0
        self.posted = 0
        self.wall_s = 0.0

    def run(self) -> None:
        with self.server.client(timeout_s=60.0) as client:
            t0 = time.perf_counter()
            tick = 0
            while not self.stop_flag.is_set() and self.posted < len(self.events):
                tick += 1
                # From the clock, not the tick count: a slow answer (the server busy)
                # makes the next batch larger, so the rate holds.
                elapsed = time.perf_counter() - t0
                due = min(int(self.rate * elapsed), len(self.events))
                batch = self.events[self.posted : due]
                self.posted = due
                if batch:
                    resp = client.post(
                        "/v1/events",
                        content=orjson.dumps({"events": batch}),
                        headers={"content-type": "application/json"},
                    )
                    if resp.status_code == 200:
                        self.acknowledged += int(resp.json()["accepted"])
                    else:
                        self.failed += len(batch)
                pause = t0 + tick * TICK_S - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:  # behind: the next tick from now
                    tick = int((time.perf_counter() - t0) / TICK_S)
            self.wall_s = time.perf_counter() - t0


def _feed_jobs(users: list[str]) -> list[Job]:
    return [Job("GET", f"/v1/feed?user_id={u}&count={COUNT}") for u in users]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    ap.add_argument("--rates", default="1000,4000", help="events/s posted while feeds run")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dir")
    args = ap.parse_args()
    exit_on_sigterm()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick:
        n_videos, n_users, feed_n, warmup = 10_000, 1_000, 800, 50
    else:
        n_videos, n_users, feed_n, warmup = 100_000, 10_000, 4_000, 200
    views = 20

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-serve-learning-", dir=args.data_root))
    data_dir = root / "data"
    payload: dict[str, Any] = {
        "benchmark": "serve_learning",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": n_videos,
            "users_with_history": n_users,
            "views_per_user": views,
            "count": COUNT,
            "concurrency": CONCURRENCY,
            "feed_requests_per_phase": feed_n,
            "warmup_requests": warmup,
            "rates": rates,
            "tick_s": TICK_S,
        },
        "targets": {"feed_p99_ratio_learning_vs_idle": TARGET_P99_RATIO},
    }
    try:
        now = now_ms()
        console.print(f"[bold]{n_videos:,} videos[/]: building the state (learned models on)")
        engine, setup = build_state(data_dir, n_videos, n_users, views, now, model=True)
        assert engine.models is not None
        setup["ranker_warm"] = engine.models.ranker.warm
        setup["retrieval_warm"] = engine.models.retrieval.warm
        # The stream: new users (fresh ids), enough for every rate's longest phase.
        stream_users = max(1, int(max(rates, default=0) * STREAM_SECONDS / (views * 1.1)))
        catalog = make_catalog(n_videos, now, seed=n_videos)
        stream = make_history(catalog, stream_users, views, now, seed=n_videos + 3, user_prefix="L")
        for e in stream:
            e["event_id"] = f"L-{e['event_id']}"
        del catalog
        phases = [("idle", 0.0), *[(f"learning {r:,.0f} events/s", r) for r in rates]]
        users = {
            name: request_users(n_users, feed_n + warmup, seed=n_videos + 10 + i, tag=f"p{i}")
            for i, (name, _) in enumerate(phases)
        }
        register_users(engine, stream)
        register_users(engine, [{"user_id": u} for us in users.values() for u in us])
        setup["checkpoint_bytes"] = engine.checkpoints.write()  # the server starts without a replay
        engine.close()
        console.print(
            f"  {setup['events']:,} events learned in {setup['learn_s']:.1f} s; ranker warm "
            f"{setup['ranker_warm']}, retrieval warm {setup['retrieval_warm']}"
        )

        config = root / "learned-models.toml"
        config.write_text("[model]\nenabled = true\n")
        rows: list[dict[str, Any]] = []
        offset = 0
        with Server(data_dir, root / "server.log", env={"FYP_CONFIG": str(config)}) as server:
            setup["server_startup_s"] = server.startup_s
            for name, rate in phases:
                jobs = _feed_jobs(users[name])
                poster = Poster(server, stream[offset:], rate) if rate else None
                if poster is not None:
                    poster.start()
                    time.sleep(1.0)  # the stream's steady state first
                (res,) = run_clients(
                    server.base_url,
                    [(jobs[:warmup], jobs[warmup:], None)],
                    CONCURRENCY,
                    headers=server.headers,
                )
                # The server's own figures are not read here (None).
                row = _http_row(name, res, warmup, None, (0.0, 0.0))
                if poster is not None:
                    poster.stop_flag.set()
                    poster.join()
                    offset += poster.posted
                    with server.client() as client:
                        lag = client.get("/healthz").json()["learning_lag"]
                    row["learning"] = {
                        "target_rate": rate,
                        "posted": poster.posted,
                        "acknowledged": poster.acknowledged,
                        "failed": poster.failed,
                        "achieved_rate": poster.acknowledged / poster.wall_s,
                        "learning_lag_at_end": lag,
                        # Each phase starts caught up: what it acknowledged less the lag.
                        "learned_rate": (poster.acknowledged - lag) / poster.wall_s,
                    }
                    # Let the server catch up before the next phase.
                    deadline = time.monotonic() + 300
                    with server.client() as client:
                        while client.get("/healthz").json()["learning_lag"] > 0:
                            if time.monotonic() > deadline:
                                break
                            time.sleep(0.2)
                rows.append(row)
                console.print(f"  {name}: p99 {row['latency_ms']['p99']:.1f} ms")
        idle = rows[0]["latency_ms"]
        for r in rows:
            r["p99_ratio_vs_idle"] = r["latency_ms"]["p99"] / idle["p99"]
            r["p50_ratio_vs_idle"] = r["latency_ms"]["p50"] / idle["p50"]
        payload["setup"] = setup
        payload["results"] = rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    path = write_json("serve_learning_quick" if args.quick else "serve_learning", payload)
    console.print(f"Wrote {path}")


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["results"]:
        lat, learning = r["latency_ms"], r.get("learning")
        ratio = r["p99_ratio_vs_idle"]
        rows.append(
            [
                r["path"],
                f"{r['ok']:,}",
                f"{lat['p50']:.1f}",
                f"{lat['p95']:.1f}",
                f"{lat['p99']:.1f}",
                f"{ratio:.2f}",
                "—" if learning is None else f"{learning['achieved_rate']:,.0f}",
                "—" if learning is None else f"{learning['learned_rate']:,.0f}",
                "—" if learning is None else f"{learning['learning_lag_at_end']:,}",
                "—" if learning is None else ("yes" if ratio <= TARGET_P99_RATIO else "no"),
            ]
        )
    p = payload["params"]
    print_table(
        "GET /v1/feed over HTTP while the server learns (ms)",
        [
            "phase",
            "ok",
            "p50",
            "p95",
            "p99",
            "p99 / idle",
            "events/s acked",
            "events/s learned",
            "lag at end",
            "≤ 2×",
        ],
        rows,
        caption=(
            f"{p['videos']:,} videos, learned models on and warm; {p['concurrency']} "
            "closed-loop feed clients in their own process; events posted by one thread "
            f"every {p['tick_s'] * 1000:.0f} ms."
        ),
    )


if __name__ == "__main__":
    main()
