"""Feed latency: p50 / p95 / p99 of a feed request, in process and over HTTP.

For each catalog size (10k and 100k videos; ``--quick``: 10k only, fewer users) this

1. builds the state in process: videos through ``Engine.upsert_videos``, a synthetic
   history (10k users x 20 views plus likes, shares, follows, comments, "not
   interested") through ``Engine.ingest`` in batches of 5,000, then ``Engine.learn()``;
2. times ``Engine.feed(user, count=10)`` in a loop (one caller, no concurrency);
3. closes the engine, starts ``fyp serve`` on the same data dir in a subprocess (it
   replays the event log on start: the startup time is reported), and from a separate
   client process with 8 threads, each with its own keep-alive ``httpx.Client``, sends
   first ``GET /healthz`` (the HTTP floor under the same client setup), then
   ``GET /v1/feed?count=10``, closed loop.

Requests go to users with history (90%) and to new users (10%, each seen once). Latency
is measured by the client, from sending the request to reading the whole response; the
server's own mean (from its metrics middleware) and its CPU time per request are
reported beside it. Warm-up requests are sent first and not counted.

    python bench/feed_latency.py [--quick] [--profile]

Prints tables and writes ``bench/results/feed_latency.json`` (``feed_latency_quick``
for ``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    scrape_route_seconds,
    utc_now_iso,
    write_json,
)
from fyp.config import ModelSettings, ScorerConfig, Settings
from fyp.engine import Engine, serving_gc
from fyp.types import now_ms

COUNT = 10
CONCURRENCY = 8
TARGET_HTTP_P99_MS = 30.0  # at 100k videos, count=10, 8 concurrent clients
TARGET_INPROC_P99_MS = 10.0
NEW_USER_SHARE = 0.10


def request_users(n_users: int, n: int, seed: int, tag: str) -> list[str]:
    """``n`` user ids: 90% drawn uniformly from the users with history, 10% new users
    (a fresh id each time, so each is a cold start)."""
    rng = np.random.default_rng(seed)
    known = rng.integers(0, n_users, size=n)
    new = rng.random(n) < NEW_USER_SHARE
    return [f"new-{tag}-{i}" if new[i] else f"u{int(known[i]):06d}" for i in range(n)]


def build_state(
    data_dir: Path,
    n_videos: int,
    n_users: int,
    views_per_user: int,
    now: int,
    model: bool = False,
    scorer: bool = False,
) -> tuple[Engine, dict[str, Any]]:
    engine = Engine.open(
        Settings(
            data_dir=data_dir,
            model=ModelSettings(enabled=model),
            scorer=ScorerConfig(enabled=scorer),
        )
    )
    setup: dict[str, Any] = {"videos": n_videos, "users": n_users, "views_per_user": views_per_user}
    t0 = time.perf_counter()
    catalog = make_catalog(n_videos, now, seed=n_videos)
    history = make_history(catalog, n_users, views_per_user, now, seed=n_videos + 1)
    setup["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for chunk in batches(catalog.videos, 5_000):
        engine.upsert_videos(chunk)
    setup["upsert_videos_s"] = time.perf_counter() - t0

    register_users(engine, history)
    t0 = time.perf_counter()
    accepted = rejected = 0
    for chunk in batches(history, 5_000):
        result = engine.ingest(chunk, now=now)
        accepted += result.accepted
        rejected += len(result.rejected)
        if result.rejected:
            raise RuntimeError(f"synthetic events rejected: {result.rejected[:3]}")
    setup["ingest_s"] = time.perf_counter() - t0
    setup["events"] = accepted
    setup["view_events"] = n_users * views_per_user

    t0 = time.perf_counter()
    learned = engine.learn()
    setup["learn_s"] = time.perf_counter() - t0
    setup["learned_events"] = learned
    return engine, setup


def bench_in_process(engine: Engine, users: list[str], warmup: int) -> dict[str, Any]:
    for uid in users[:warmup]:
        engine.feed(uid, COUNT)
    timed = users[warmup:]
    lat: list[float] = []
    items = empty = 0
    with GcWatch() as gcw:
        t_start = time.perf_counter()
        for uid in timed:
            t0 = time.perf_counter()
            feed = engine.feed(uid, COUNT)
            lat.append((time.perf_counter() - t0) * 1000.0)
            items += len(feed.items)
            empty += not feed.items
        wall = time.perf_counter() - t_start
    return {
        "path": "in-process Engine.feed",
        "warmup": warmup,
        "latency_ms": percentiles(lat),
        "throughput_rps": len(timed) / wall,
        "wall_s": wall,
        "mean_items": items / max(len(timed), 1),
        "empty_feeds": empty,
        "gc_during_timed_loop": gcw.summary(),
    }


# The weights the page scorer chose on KuaiRand's validation split (docs/evaluation.md);
# what a request costs does not depend on their values, only on the scorer serving.
PAGE_SCORER_WEIGHTS = (1.0, 0.3, 4.0, 0.0, 1e-3)


def bench_page_scorer(engine: Engine, users: list[str], warmup: int) -> list[dict[str, Any]]:
    """``Engine.feed`` with the page scorer serving and without, request by request in
    turn on the same engine (a paired comparison: a busy machine slows both alike). The
    synthetic history has no day boundaries to train on, so the weights are set."""
    trainer = engine.page_scorer
    if trainer is None:
        raise RuntimeError("--page-scorer: the engine runs without the page scorer")
    weights = np.array(PAGE_SCORER_WEIGHTS)
    lat: dict[bool, list[float]] = {False: [], True: []}
    for i, uid in enumerate(users):
        on = i % 2 == 1
        trainer.scorer.weights = weights if on else None
        t0 = time.perf_counter()
        engine.feed(uid, COUNT)
        if i >= warmup:
            lat[on].append((time.perf_counter() - t0) * 1000.0)
    trainer.scorer.weights = None
    return [
        {
            "path": f"in-process Engine.feed, page scorer {'serving' if on else 'untrained'}",
            "warmup": warmup // 2,
            "latency_ms": percentiles(lat[on]),
            "throughput_rps": len(lat[on]) / (sum(lat[on]) / 1000.0),
        }
        for on in (False, True)
    ]


def profile_in_process(engine: Engine, users: list[str], top: int = 25) -> str:
    """cProfile over ``Engine.feed`` calls: the top functions by own time and by
    cumulative time (profiling slows calls down; the shares are what matter)."""
    prof = cProfile.Profile()
    prof.enable()
    for uid in users:
        engine.feed(uid, COUNT)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    out.write(f"cProfile of {len(users)} in-process Engine.feed(count={COUNT}) calls\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _http_row(
    name: str,
    res: LoadResult,
    warmup: int,
    server_cpu_s: float | None,
    server_route: tuple[float, float],
) -> dict[str, Any]:
    """One HTTP result. The server-side figures cover the whole phase, warm-up included
    (``server_cpu_s`` and the histogram difference are read around it), so they are
    divided by all requests of the phase."""
    sent = res.requests + warmup
    is_feed = name.endswith("feed")
    return {
        "path": name,
        "concurrency": CONCURRENCY,
        "warmup": warmup,
        "requests": res.requests,
        "ok": len(res.latencies_ms),
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "transport_errors": res.errors,
        "latency_ms": percentiles(res.latencies_ms),
        "throughput_rps": len(res.latencies_ms) / res.wall_s if res.wall_s else None,
        "wall_s": res.wall_s,
        "server_mean_ms": server_route[0] / server_route[1] * 1000.0 if server_route[1] else None,
        "server_cpu_ms_per_request": None if server_cpu_s is None else server_cpu_s / sent * 1e3,
        "client_cpu_ms_per_request": res.client_cpu_s / max(res.requests, 1) * 1000.0,
        # Share of one core the server spent (~1.0: the single event loop was saturated, so
        # latency is mostly waiting behind the other clients' requests).
        "server_cpu_utilisation": None
        if server_cpu_s is None or not res.wall_s
        else server_cpu_s / sent * len(res.latencies_ms) / res.wall_s,
        "mean_items": res.items / max(len(res.latencies_ms), 1) if is_feed else None,
        "empty_feeds": res.empty_feeds if is_feed else None,
    }


def bench_http(
    data_dir: Path,
    log_path: Path,
    users: list[str],
    warmup: int,
    healthz_requests: int,
    server_env: dict[str, str] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    feed_jobs = [Job("GET", f"/v1/feed?user_id={u}&count={COUNT}") for u in users]
    health = [Job("GET", "/healthz")] * (healthz_requests + warmup)
    rows: list[dict[str, Any]] = []
    with Server(data_dir, log_path, env=server_env) as server:
        startup = server.startup_s
        for name, jobs, route in (
            ("HTTP GET /healthz", health, "/healthz"),
            ("HTTP GET /v1/feed", feed_jobs, "/v1/feed"),
        ):
            before = scrape_route_seconds(server.base_url, route, "GET", server.headers)
            cpu0 = server.cpu_s()
            (res,) = run_clients(
                server.base_url,
                [(jobs[:warmup], jobs[warmup:], None)],
                CONCURRENCY,
                headers=server.headers,
            )
            cpu1 = server.cpu_s()
            after = scrape_route_seconds(server.base_url, route, "GET", server.headers)
            cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            route_delta = (after[0] - before[0], after[1] - before[1])
            rows.append(_http_row(name, res, warmup, cpu, route_delta))
    return startup, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process path")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dirs")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dirs afterwards")
    ap.add_argument(
        "--learned-models",
        action="store_true",
        help="serve with the learned models on ([model] enabled = true; off by default)",
    )
    ap.add_argument(
        "--page-scorer",
        action="store_true",
        help="also time the page scorer in process: requests alternate between the scorer "
        "with weights and without (it fails open to the ranker), on the same engine",
    )
    args = ap.parse_args()
    exit_on_sigterm()
    serving_gc()  # as `fyp serve` runs

    sizes: tuple[int, ...]
    if args.quick:
        sizes, n_users, views = (10_000,), 1_000, 20
        inproc_n, http_n, health_n, warmup = 500, 800, 800, 50
    else:
        sizes, n_users, views = (10_000, 100_000), 10_000, 20
        inproc_n, http_n, health_n, warmup = 3_000, 4_000, 4_000, 200

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-feed-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "feed_latency",
        "quick": args.quick,
        "learned_models": args.learned_models,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "count": COUNT,
            "concurrency": CONCURRENCY,
            "new_user_share": NEW_USER_SHARE,
            "in_process_requests": inproc_n,
            "http_requests": http_n,
            "healthz_requests": health_n,
            "warmup_requests": warmup,
            "users_with_history": n_users,
            "views_per_user": views,
        },
        "targets": {
            "http_p99_ms_at_100k": TARGET_HTTP_P99_MS,
            "in_process_p99_ms": TARGET_INPROC_P99_MS,
        },
        "catalogs": [],
    }
    profile_text = ""
    try:
        for n_videos in sizes:
            data_dir = root / f"videos-{n_videos}"
            console.print(
                f"[bold]{n_videos:,} videos[/]: building state "
                f"({n_users:,} users x {views} views) in {data_dir}"
            )
            now = now_ms()
            engine, setup = build_state(
                data_dir,
                n_videos,
                n_users,
                views,
                now,
                model=args.learned_models,
                scorer=args.page_scorer,
            )
            if engine.models is not None:
                setup["ranker"] = engine.pipeline.ranker.active()
            console.print(
                f"  {setup['events']:,} events; upsert {setup['upsert_videos_s']:.1f} s, "
                f"ingest {setup['ingest_s']:.1f} s, learn {setup['learn_s']:.1f} s"
            )
            try:
                users = request_users(n_users, inproc_n + warmup, seed=n_videos + 7, tag="ip")
                http_users = request_users(n_users, http_n + warmup, seed=n_videos + 8, tag="http")
                # The new users signed up (residency) before their first feed, untimed.
                new = [{"user_id": u} for u in users + http_users if u.startswith("new-")]
                register_users(engine, new)
                inproc = bench_in_process(engine, users, warmup)
                scored: list[dict[str, Any]] = []
                if args.page_scorer:
                    su = request_users(n_users, inproc_n + warmup, seed=n_videos + 10, tag="ps")
                    register_users(engine, [{"user_id": u} for u in su if u.startswith("new-")])
                    scored = bench_page_scorer(engine, su, warmup)
                g2 = inproc["gc_during_timed_loop"]["gen2"]
                console.print(
                    f"  in process: p99 {inproc['latency_ms']['p99']:.2f} ms; full GCs during "
                    f"the loop: {g2['collections']} (longest {g2['max_ms']:.0f} ms)"
                )
                if args.profile and n_videos == max(sizes):
                    prof_users = request_users(n_users, 1_000, seed=n_videos + 9, tag="prof")
                    register_users(engine, [{"user_id": u} for u in prof_users])
                    profile_text = profile_in_process(engine, prof_users)
            finally:
                engine.close()
            users = http_users
            server_env = None
            if args.learned_models:
                config = root / "learned-models.toml"
                config.write_text("[model]\nenabled = true\n")
                server_env = {"FYP_CONFIG": str(config)}
            startup, http_rows = bench_http(
                data_dir, root / f"server-{n_videos}.log", users, warmup, health_n, server_env
            )
            setup["server_startup_s"] = startup
            console.print(
                f"  server start (replays the log) {startup:.1f} s; HTTP feed p99 "
                f"{http_rows[-1]['latency_ms']['p99']:.2f} ms"
            )
            payload["catalogs"].append(
                {"videos": n_videos, "setup": setup, "results": [inproc, *scored, *http_rows]}
            )
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()

    _print(payload)
    name = (
        ("feed_latency_quick" if args.quick else "feed_latency")
        + ("_learned_models" if args.learned_models else "")
        + ("_page_scorer" if args.page_scorer else "")
    )
    if profile_text:
        payload["profile"] = profile_text
        console.print(profile_text.split("\n\n\n")[0].rstrip(), markup=False, highlight=False)
    path = write_json(name, payload)
    console.print(f"Wrote {path}")


def _target(row: dict[str, Any], videos: int) -> tuple[str, str]:
    p99 = row["latency_ms"].get("p99")
    if row["path"].startswith("in-process"):
        target = TARGET_INPROC_P99_MS
    elif row["path"].endswith("feed") and videos >= 100_000:
        target = TARGET_HTTP_P99_MS
    else:
        return "—", ""
    return f"≤ {target:g}", ("yes" if p99 is not None and p99 <= target else "no")


def _print(payload: dict[str, Any]) -> None:
    setup_rows = []
    for cat in payload["catalogs"]:
        s = cat["setup"]
        setup_rows.append(
            [
                f"{cat['videos']:,}",
                f"{s['users']:,}",
                f"{s['events']:,}",
                f"{s['generate_s']:.1f}",
                f"{s['upsert_videos_s']:.1f}",
                f"{s['ingest_s']:.1f}",
                f"{s['learn_s']:.1f}",
                f"{s['server_startup_s']:.1f}",
            ]
        )
    print_table(
        "Setup (seconds)",
        [
            "videos",
            "users",
            "events",
            "generate",
            "upsert videos",
            "ingest",
            "learn",
            "server start + replay",
        ],
        setup_rows,
    )
    rows = []
    for cat in payload["catalogs"]:
        for r in cat["results"]:
            lat = r["latency_ms"]
            target, met = _target(r, cat["videos"])
            rows.append(
                [
                    f"{cat['videos']:,}",
                    r["path"],
                    str(r.get("concurrency", 1)),
                    f"{lat['count']:,}",
                    ms(lat.get("p50")),
                    ms(lat.get("p95")),
                    ms(lat.get("p99")),
                    ms(lat.get("max")),
                    target,
                    met,
                    f"{r['throughput_rps']:.0f}" if r.get("throughput_rps") else "—",
                    ms(r.get("server_mean_ms")),
                    ms(r.get("server_cpu_ms_per_request")),
                    ms(r.get("client_cpu_ms_per_request")),
                ]
            )
    p = payload["params"]
    print_table(
        f"Feed latency, count={p['count']} (ms)",
        [
            "videos",
            "path",
            "conc",
            "requests",
            "p50",
            "p95",
            "p99",
            "max",
            "p99 target",
            "met",
            "req/s",
            "srv mean",
            "srv CPU/req",
            "cli CPU/req",
        ],
        rows,
        caption=(
            f"{p['users_with_history']:,} users with history, {p['new_user_share']:.0%} of "
            f"requests from new users; {p['warmup_requests']} warm-up requests not counted. "
            "HTTP: client-side latency, closed loop, client in its own process; server mean "
            "= the app's metrics middleware; CPU from /proc."
        ),
    )


if __name__ == "__main__":
    main()
