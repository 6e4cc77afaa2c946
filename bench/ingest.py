"""Ingest: events per second durably acknowledged, over HTTP and in process.

Setup: a catalog of 10k synthetic videos, stored in two fresh data dirs; a synthetic
event stream (views plus likes, shares, follows, comments, "not interested"; unique
event ids; ``ts`` in the past; ``watch_ms`` at most 10x the duration), cut into batches
of 500 and serialised to JSON bodies before any timing.

1. In process: ``Engine.ingest`` on each batch (validation plus one fsynced SQLite
   commit per batch), one caller. Then, for context, ``Engine.learn()`` over the same
   events: the learning loop's own rate.
2. Over HTTP: ``fyp serve`` in a subprocess; a client process with 4 threads, each with
   its own keep-alive ``httpx.Client``, posts the bodies to ``POST /v1/events`` (closed
   loop) for up to ``--seconds`` or until the bodies run out. Only events of 200
   responses count, by the ``accepted`` field of each response. The learning loop runs in
   the server's event loop at the same time; at the end ``/healthz`` is polled until
   ``learning_lag`` is 0, to show whether learning kept up. A trivial baseline (posting
   an empty batch) gives the HTTP floor per request.

    python bench/ingest.py [--quick]

Prints tables and writes ``bench/results/ingest.json`` (``ingest_quick`` for
``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _common import (
    GcWatch,
    Job,
    LoadResult,
    Server,
    batches,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    ms,
    percentiles,
    print_table,
    register_users,
    run_clients,
    utc_now_iso,
    write_json,
)
from fyp.config import Settings
from fyp.engine import Engine
from fyp.types import now_ms

BATCH = 500
CONCURRENCY = 4
N_VIDEOS = 10_000
TARGET_EVENTS_PER_S = 20_000.0  # durably acknowledged, over HTTP


def make_events(n_videos: int, n_events: int, now: int, seed: int, prefix: str) -> list[Any]:
    """About ``n_events`` events (whole users of 20 views each, plus their actions)."""
    catalog = make_catalog(n_videos, now, seed=0)
    n_users = max(n_events // 22, 1)  # ~1.1 events per view
    events = make_history(catalog, n_users, 20, now, seed=seed, user_prefix=prefix)
    for e in events:
        e["event_id"] = f"{prefix}-{e['event_id']}"
    return events[:n_events]


def setup_data_dir(data_dir: Path, now: int, events: list[Any]) -> float:
    """The catalog, and the users of ``events`` signed up (residency)."""
    t0 = time.perf_counter()
    engine = Engine.open(Settings(data_dir=data_dir))
    try:
        for chunk in batches(make_catalog(N_VIDEOS, now, seed=0).videos, 5_000):
            engine.upsert_videos(chunk)
        register_users(engine, events)
    finally:
        engine.close()
    return time.perf_counter() - t0


def bench_in_process(data_dir: Path, events: list[Any], now: int) -> list[dict[str, Any]]:
    engine = Engine.open(Settings(data_dir=data_dir))
    try:
        lat: list[float] = []
        accepted = 0
        with GcWatch() as gcw:
            t_start = time.perf_counter()
            for chunk in batches(events, BATCH):
                t0 = time.perf_counter()
                result = engine.ingest(chunk, now=now)
                lat.append((time.perf_counter() - t0) * 1000.0)
                accepted += result.accepted
            wall = time.perf_counter() - t_start
        ingest_row = {
            "path": "in-process Engine.ingest",
            "batch": BATCH,
            "concurrency": 1,
            "batches": len(lat),
            "events_acknowledged": accepted,
            "wall_s": wall,
            "events_per_s": accepted / wall,
            "batch_latency_ms": percentiles(lat),
            "gc_during_loop": gcw.summary(),
        }
        t0 = time.perf_counter()
        learned = engine.learn()
        learn_s = time.perf_counter() - t0
        learn_row = {
            "path": "in-process Engine.learn (context)",
            "events_learned": learned,
            "wall_s": learn_s,
            "events_per_s": learned / learn_s if learn_s else None,
        }
    finally:
        engine.close()
    return [ingest_row, learn_row]


def _lag(client: httpx.Client) -> int:
    return int(client.get("/healthz").json()["learning_lag"])


def bench_http(
    data_dir: Path,
    log_path: Path,
    bodies: list[bytes],
    warmup_bodies: list[bytes],
    seconds: float,
    floor_requests: int,
) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    post = [Job("POST", "/v1/events", b) for b in bodies]
    warm = [Job("POST", "/v1/events", b) for b in warmup_bodies]
    empty = [Job("POST", "/v1/events", b'{"events":[]}')] * floor_requests
    rows: list[dict[str, Any]] = []
    with (
        Server(data_dir, log_path) as server,
        server.client(30) as probe,
    ):
        startup = server.startup_s
        # The HTTP floor: a POST that stores nothing.
        cpu0 = server.cpu_s()
        (floor,) = run_clients(
            server.base_url, [(empty[:100], empty[100:], None)], CONCURRENCY, headers=server.headers
        )
        cpu1 = server.cpu_s()
        rows.append(_row("HTTP POST /v1/events, empty batch (floor)", floor, 0, cpu0, cpu1))

        # Warm up (and let the learning loop absorb the warm-up events) before timing.
        run_clients(server.base_url, [([], warm, None)], CONCURRENCY, headers=server.headers)
        while _lag(probe) > 0:
            time.sleep(0.1)

        cpu0 = server.cpu_s()
        (res,) = run_clients(
            server.base_url, [([], post, seconds)], CONCURRENCY, headers=server.headers
        )
        cpu1 = server.cpu_s()
        t_end = time.perf_counter()
        row = _row(f"HTTP POST /v1/events, {BATCH}/batch", res, BATCH, cpu0, cpu1)
        rows.append(row)

        lag_at_end = _lag(probe)
        lag_trace = [(0.0, lag_at_end)]
        while lag_trace[-1][1] > 0 and time.perf_counter() - t_end < 600:
            time.sleep(0.2)
            lag_trace.append((time.perf_counter() - t_end, _lag(probe)))
        caught_up = lag_trace[-1][1] == 0
        cpu_end = server.cpu_s()
        learning = {
            # Server CPU per event over the load and the catch-up after it: ingestion
            # and learning together, whichever share of the learning ran during the load.
            "server_cpu_us_per_event_incl_catch_up": (
                (cpu_end - cpu0) / res.accepted * 1e6
                if caught_up and cpu_end is not None and cpu0 is not None and res.accepted
                else None
            ),
            "learning_lag_at_end_of_load": lag_at_end,
            "events_learned_during_load": res.accepted - lag_at_end,
            "seconds_until_lag_0_after_load": lag_trace[-1][0] if caught_up else None,
            "caught_up": caught_up,
            "implied_learning_events_per_s_after_load": (
                lag_at_end / lag_trace[-1][0] if caught_up and lag_trace[-1][0] > 0 else None
            ),
            "lag_trace": lag_trace[:: max(len(lag_trace) // 50, 1)],
        }
    return startup, rows, learning


def _row(
    name: str, res: LoadResult, batch: int, cpu0: float | None, cpu1: float | None
) -> dict[str, Any]:
    ok = len(res.latencies_ms)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "path": name,
        "batch": batch,
        "concurrency": CONCURRENCY,
        "batches": res.requests,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "transport_errors": res.errors,
        "events_acknowledged": res.accepted,
        "wall_s": res.wall_s,
        "stopped_by_time": res.stopped_by_time,
        "events_per_s": res.accepted / res.wall_s if batch else None,
        "requests_per_s": ok / res.wall_s if res.wall_s else None,
        "batch_latency_ms": percentiles(res.latencies_ms),
        "server_cpu_s": cpu,
        "server_cpu_us_per_event": cpu / res.accepted * 1e6 if cpu and res.accepted else None,
        "server_cpu_ms_per_request": cpu / res.requests * 1e3 if cpu and res.requests else None,
        "client_cpu_ms_per_request": res.client_cpu_s / max(res.requests, 1) * 1e3,
        "server_cpu_utilisation": cpu / res.wall_s if cpu is not None and res.wall_s else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--seconds", type=float, default=None, help="HTTP load duration cap")
    ap.add_argument("--events", type=int, default=None, help="events to post (at most)")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dirs")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dirs afterwards")
    args = ap.parse_args()
    exit_on_sigterm()
    n_events = args.events or (50_000 if args.quick else 400_000)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    n_warmup = 10 * BATCH
    floor_requests = 1_000 if args.quick else 3_000

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-ingest-", dir=args.data_root))
    now = now_ms()
    payload: dict[str, Any] = {
        "benchmark": "ingest",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "batch": BATCH,
            "concurrency_http": CONCURRENCY,
            "catalog_videos": N_VIDEOS,
            "events_prepared": n_events,
            "http_max_seconds": seconds,
            "warmup_events_http": n_warmup,
            "durability": "SQLite WAL, synchronous=FULL: fsynced before each batch is acked",
        },
        "targets": {"http_events_per_s": TARGET_EVENTS_PER_S},
    }
    try:
        t0 = time.perf_counter()
        events = make_events(N_VIDEOS, n_events, now, seed=11, prefix="b")
        warmup = make_events(N_VIDEOS, n_warmup, now, seed=12, prefix="w")
        bodies = [orjson.dumps({"events": list(c)}) for c in batches(events, BATCH)]
        warm_bodies = [orjson.dumps({"events": list(c)}) for c in batches(warmup, BATCH)]
        payload["setup"] = {
            "generate_s": time.perf_counter() - t0,
            "events": len(events),
            "mean_body_bytes": sum(map(len, bodies)) / len(bodies),
        }
        console.print(
            f"{len(events):,} events in {len(bodies)} bodies of {BATCH} "
            f"(~{payload['setup']['mean_body_bytes'] / 1024:.0f} KiB each); data in {root}"
        )
        payload["setup"]["catalog_s"] = setup_data_dir(root / "in-process", now, events)
        setup_data_dir(root / "http", now, events + warmup)

        console.print("in process: Engine.ingest, then Engine.learn")
        inproc = bench_in_process(root / "in-process", events, now)
        console.print(f"  {inproc[0]['events_per_s']:,.0f} events/s acknowledged")

        console.print(f"HTTP: up to {seconds:g} s of POST /v1/events, {CONCURRENCY} connections")
        startup, http_rows, learning = bench_http(
            root / "http", root / "server.log", bodies, warm_bodies, seconds, floor_requests
        )
        payload["setup"]["server_startup_s"] = startup
        payload["results"] = [*inproc, *http_rows]
        payload["learning_loop"] = learning
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    path = write_json("ingest_quick" if args.quick else "ingest", payload)
    console.print(f"Wrote {path}")


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["results"]:
        lat = r.get("batch_latency_ms", {})
        eps = r.get("events_per_s")
        is_http_batch = r["path"].startswith("HTTP") and r.get("batch")
        target = f"≥ {TARGET_EVENTS_PER_S:,.0f}" if is_http_batch else "—"
        met = ("yes" if eps >= TARGET_EVENTS_PER_S else "no") if is_http_batch and eps else ""
        n = r.get("events_acknowledged", r.get("events_learned"))
        rows.append(
            [
                r["path"],
                str(r.get("concurrency", 1)),
                f"{r['batches']:,}" if "batches" in r else "—",
                f"{n:,}" if n is not None else "—",
                f"{r['wall_s']:.1f}",
                f"{eps:,.0f}" if eps else "—",
                target,
                met,
                f"{r['requests_per_s']:,.0f}" if r.get("requests_per_s") else "—",
                ms(lat.get("p50")),
                ms(lat.get("p99")),
                ms(r.get("server_cpu_us_per_event"), 1),
                ms(r.get("server_cpu_ms_per_request")),
                ms(r.get("client_cpu_ms_per_request")),
            ]
        )
    print_table(
        "Ingest: events durably acknowledged",
        [
            "path",
            "conc",
            "requests",
            "events",
            "seconds",
            "events/s",
            "target",
            "met",
            "req/s",
            "p50 ms",
            "p99 ms",
            "srv CPU µs/event",
            "srv CPU ms/req",
            "cli CPU ms/req",
        ],
        rows,
        caption=(
            f"{payload['params']['catalog_videos']:,} videos; {payload['params']['durability']}. "
            f"Data on {payload['machine'].get('data_root_fs')}. Latencies are per batch "
            "request. Only events in 200 responses count."
        ),
    )
    lr = payload["learning_loop"]
    after = lr["seconds_until_lag_0_after_load"]
    console.print(
        f"Learning loop (in the server, during the HTTP load): lag at the end of the load "
        f"{lr['learning_lag_at_end_of_load']:,} events; "
        + (f"caught up {after:.1f} s later." if after is not None else "did not catch up.")
        + f" Server start: {payload['setup']['server_startup_s']:.1f} s."
    )


if __name__ == "__main__":
    main()
