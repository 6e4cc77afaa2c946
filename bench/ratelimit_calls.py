"""What one rate-limit check costs the server's event loop, in the process against on
Redis: one ``take`` (a feed request's per-user limit, a key's limit), and a batch of
events' per-user limits taken one by one (each event counts one, as before) against at
once (``take_each``: one script, one round trip).

Setup: limiters of the ``[auth]`` defaults (20/s per user, a burst of 200); the Redis
ones on ``--redis`` under a prefix of their own, deleted after. Each case is timed
``--repeats`` times; the table gives the median and the fastest (a shared machine's
load shows in the median). The buckets stay within their burst throughout. The calls are
awaited on an event loop, as the API makes them (the Redis limiter's are coroutines on
an asyncio client: the time is what the request waits, not what the loop is blocked).

    python bench/ratelimit_calls.py [--quick] [--redis redis://127.0.0.1:6379/0]
        [--baseline-src DIR]

Then what the server's event loop can do while the checks wait: ``--tasks`` coroutines
(requests in flight), each taking ``--takes`` tokens one after another on Redis, while a
ticker task asks for a 1 ms sleep again and again: takes per second, CPU ms per take,
and how late the ticker woke (the loop's stalls: what every other request on it waits).
With ``--baseline-src DIR``, the Redis limiter of an earlier commit's ``src`` (its
blocking client) is run the same way, alternating with this one's, in the same run.

Prints a table and writes ``bench/results/ratelimit_calls.json`` (``_quick``). Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from _common import console, machine_info, print_table, utc_now_iso, write_json
from fyp.config import AuthConfig
from fyp.privacy.ratelimit import InProcessLimiter, Limiter, RateLimiter
from fyp.privacy.redis_ratelimit import RedisRateLimiter


async def timed(f: Callable[[], Awaitable[object]], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await f()
        samples.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples)}


async def in_flight(
    take: Callable[[str], Any], tasks: int, takes: int, tag: str
) -> dict[str, float]:
    """``tasks`` coroutines taking ``takes`` tokens each (awaited when ``take`` returns
    an awaitable), a 1 ms ticker beside them: takes/s, CPU ms per take, the ticker's
    lateness (p50, p99, max)."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = loop.time()
            await asyncio.sleep(0.001)
            late.append((loop.time() - t0 - 0.001) * 1000)

    async def request(i: int) -> None:
        for j in range(takes):
            wait = take(f"{tag}-{i}-{j}")
            if inspect.isawaitable(wait):
                await wait
            await asyncio.sleep(0)  # (a request's other steps yield to the loop too)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(request(i) for i in range(tasks)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done.set()
    await tick
    n = tasks * takes
    return {
        "takes_per_s": n / wall,
        "cpu_ms_per_take": cpu / n * 1000,
        "loop_late_p50_ms": float(np.percentile(late, 50)),
        "loop_late_p99_ms": float(np.percentile(late, 99)),
        "loop_late_max_ms": max(late),
    }


def baseline_limiter(src: Path) -> Any:
    """The Redis limiter module of an earlier commit's ``src`` (loaded beside this one:
    it builds on this one's in-process RateLimiter, unchanged in between)."""
    spec = importlib.util.spec_from_file_location(
        "baseline_redis_ratelimit", src / "fyp" / "privacy" / "redis_ratelimit.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--batch", type=int, default=500, help="events (of distinct users)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=16, help="coroutines in flight")
    parser.add_argument("--takes", type=int, default=200, help="takes per coroutine")
    parser.add_argument("--rounds", type=int, default=3, help="of the in-flight cases")
    parser.add_argument("--baseline-src", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 10
    auth = AuthConfig()
    rate, burst = auth.user_rate_per_s, auth.user_burst
    connection = RedisRateLimiter.connect(args.redis)
    prefix = f"fyp-bench-rlc-{uuid.uuid4().hex[:8]}"
    memory = InProcessLimiter(RateLimiter(rate, burst))
    shared = RedisRateLimiter(connection, "user", rate, burst, prefix)
    users = [f"u{i}" for i in range(args.batch)]
    # (each repeat takes one token per user: the buckets stay within their burst)
    args.repeats = min(args.repeats, int(burst) // 3)

    async def one_by_one(limiter: Limiter) -> None:
        for u in users:
            await limiter.take(u)

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "in the process: one take": lambda: memory.take("one"),
        "Redis: one take": lambda: shared.take("one"),
        f"in the process: {args.batch} events, one by one": lambda: one_by_one(memory),
        f"Redis: {args.batch} events, one by one": lambda: one_by_one(shared),
        f"Redis: {args.batch} events, take_each": lambda: shared.take_each(users),
    }
    results: dict[str, Any] = {}

    flights: dict[str, list[dict[str, float]]] = {}
    old = None
    if args.baseline_src is not None:
        module = baseline_limiter(args.baseline_src)
        old = module.RedisRateLimiter(
            module.RedisRateLimiter.connect(args.redis), "user", rate, burst, prefix
        )

    async def run() -> None:
        try:
            for name, f in cases.items():
                results[name] = await timed(f, args.repeats)
                console.print(f"  {name}: {results[name]['median_ms']:.3f} ms")
            for r in range(args.rounds):
                takers: list[tuple[str, Callable[[str], Any]]] = []
                if old is not None:
                    takers.append(("baseline (blocking client)", old.take))
                takers.append(("this version (redis.asyncio)", shared.take))
                for name, take in takers:
                    row = await in_flight(take, args.tasks, args.takes, f"r{r}")
                    flights.setdefault(name, []).append(row)
                    console.print(
                        f"  in flight, {name}: {row['takes_per_s']:.0f} takes/s, loop late "
                        f"p99 {row['loop_late_p99_ms']:.1f} ms"
                    )
        finally:
            await connection.close()

    try:
        asyncio.run(run())
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    print_table(
        "rate-limit checks: what a request waits for",
        ["case", "median ms", "fastest ms"],
        [[n, f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}"] for n, r in results.items()],
        caption=f"{args.repeats} repeats each; limits {rate:g}/s, burst {burst:g}",
    )
    summary = {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for name, rows in flights.items()
    }
    print_table(
        f"{args.tasks} requests in flight, {args.takes} takes each on Redis: the event loop",
        ["limiter", "takes/s", "CPU ms/take", "loop late p50", "p99", "max"],
        [
            [
                name,
                f"{r['takes_per_s']:.0f}",
                f"{r['cpu_ms_per_take']:.3f}",
                f"{r['loop_late_p50_ms']:.2f}",
                f"{r['loop_late_p99_ms']:.2f}",
                f"{r['loop_late_max_ms']:.2f}",
            ]
            for name, r in summary.items()
        ],
        caption=f"medians of {args.rounds} rounds, alternating; a 1 ms ticker's lateness in ms",
    )
    payload = {
        "bench": "ratelimit_calls",
        "when": utc_now_iso(),
        "machine": machine_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
        "in_flight": flights,
        "in_flight_summary": summary,
    }
    path = write_json("ratelimit_calls_quick" if args.quick else "ratelimit_calls", payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
