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

Prints a table and writes ``bench/results/ratelimit_calls.json`` (``_quick``). Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--batch", type=int, default=500, help="events (of distinct users)")
    parser.add_argument("--repeats", type=int, default=50)
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

    async def run() -> None:
        try:
            for name, f in cases.items():
                results[name] = await timed(f, args.repeats)
                console.print(f"  {name}: {results[name]['median_ms']:.3f} ms")
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
    payload = {
        "bench": "ratelimit_calls",
        "when": utc_now_iso(),
        "machine": machine_info(),
        "args": vars(args),
        "results": results,
    }
    path = write_json("ratelimit_calls_quick" if args.quick else "ratelimit_calls", payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
