"""What a feed waits for its rate limits on the event log's Redis while events are being
appended (issue 21's stalls): a server run with ``appendfsync always`` fsyncs its AOF in
its one thread after each append, and answers nobody meanwhile, so a feed's two bucket
takes (its key's, its user's) wait behind whatever fsync is under way, although the
buckets themselves never reach the AOF.

Cases, each on redis-servers started here: ``log server, idle`` (the buckets on the log's
server, nothing appended), ``log server, appending`` (the default of ``[auth]
rate_limits``: the buckets on the event log's server, an appender beside at
``--batches-per-s`` batches of ``--batch`` events, the cluster bench's stream), ``own
server, appending`` (``[auth] rate_limits = "redis://…"``: the buckets on a server
without an AOF, the same appender on the log's). In each, ``--rate`` feeds per second
(open loop on an asyncio loop, as the API awaits them) each take the key's then the
user's token, in two ways: ``two calls`` (one script call each, two round trips: the
guard before issue 21's last change) and ``one call`` (``take_in_turn``: both in one
script call, as the guard takes them now); the latency is from a feed's scheduled time
to its last answer, the round trips are the commands the feeds sent, counted, and the
CPU per feed is the client loop thread's and the server's (``INFO cpu``; on the log's
server, the appends' too). The
cases alternate ``--repeats`` times (the machine's load changes over a run). Also the
fsyncs' own time on the log server's disk (``INFO persistence``: none; timed here by
an ``fsync`` of a file beside the AOF).

    python bench/ratelimit_fsync.py [--seconds 5] [--rate 100] [--repeats 2]

Prints a table and writes ``bench/results/ratelimit_fsync.json``. Nothing here asserts
on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _common import console, machine_info, percentiles, print_table, utc_now_iso, write_json
from cluster import RedisServer
from fyp.events.redis_log import RedisEventLog
from fyp.privacy.ratelimit import take_in_turn
from fyp.privacy.redis_ratelimit import RedisRateLimiter
from fyp.types import Event, now_ms


class Appender(threading.Thread):
    """``batch`` new view events appended to ``log`` ``per_s`` times a second."""

    def __init__(self, log: RedisEventLog, batch: int, per_s: float) -> None:
        super().__init__(daemon=True)
        self.log, self.batch, self.per_s = log, batch, per_s
        self.stop_flag = threading.Event()
        self.appended = 0
        self.append_ms: list[float] = []

    def run(self) -> None:
        n = 0
        t0 = time.perf_counter()
        while not self.stop_flag.is_set():
            events = []
            for _ in range(self.batch):
                n += 1
                events.append(
                    Event(
                        event_id=f"fsync-{os.getpid()}-{id(self)}-{n}",
                        user_id=f"u{n % 500}",
                        video_id=f"v{n % 1000}",
                        type="view",
                        ts=now_ms(),
                        watch_ms=5_000,
                    )
                )
            t = time.perf_counter()
            self.appended += len(self.log.append(events).accepted)
            self.append_ms.append((time.perf_counter() - t) * 1e3)
            due = t0 + len(self.append_ms) / self.per_s
            self.stop_flag.wait(max(0.0, due - time.perf_counter()))


class Counted:
    """The commands this process's asyncio Redis clients send (each a round trip)."""

    sent = 0

    @classmethod
    def install(cls) -> None:
        real = aioredis.Redis.execute_command

        async def counted(self: aioredis.Redis, *args: Any, **options: Any) -> Any:
            cls.sent += 1
            return await real(self, *args, **options)

        aioredis.Redis.execute_command = counted  # type: ignore[method-assign]


def _server_cpu_s(port: int) -> float:
    """The redis-server's CPU time so far (``INFO cpu``: user + system, its threads)."""
    import redis

    client = redis.Redis(port=port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _feeds(
    url: str, prefix: str, rate: float, seconds: float, together: bool
) -> tuple[list[float], float, float]:
    """Each feed's two takes (key, then user; ``together``: in one script call), ``rate``
    a second; latencies in ms, the round trips a feed made, and the CPU seconds of this
    loop's thread a feed cost (the client's side: the API process's)."""
    connection = RedisRateLimiter.connect(url)
    per_key = RedisRateLimiter(connection, "key", 1e9, 1e9, prefix)
    per_user = RedisRateLimiter(connection, "user", 1e9, 1e9, prefix)
    lat: list[float] = []

    async def feed(due: float, i: int) -> None:
        if together:
            await take_in_turn([(per_key, "bench-key"), (per_user, f"user-{i % 500}")])
        else:
            await per_key.take("bench-key")
            await per_user.take(f"user-{i % 500}")
        lat.append((time.perf_counter() - due) * 1e3)

    try:
        await per_key.take("warm")
        await take_in_turn([(per_key, "warm"), (per_user, "warm")])  # (both scripts loaded)
        sent, cpu = Counted.sent, time.thread_time()
        tasks = []
        t0 = time.perf_counter() + 0.1
        for i in range(int(rate * seconds)):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(feed(due, i)))
        await asyncio.gather(*tasks)
        trips = (Counted.sent - sent) / max(1, len(tasks))
        cpu = (time.thread_time() - cpu) / max(1, len(tasks))
    finally:
        await connection.close()
    return lat, trips, cpu


def _fsync_ms(folder: Path, n: int = 50) -> dict[str, float]:
    """The disk's fsync of a small append, ``n`` times: what each of the server's costs."""
    path = folder / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    out = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 2_000)
            t = time.perf_counter()
            os.fsync(fd)
            out.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.01)
    finally:
        os.close(fd)
        path.unlink()
    return percentiles(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="feeds per second")
    parser.add_argument("--batch", type=int, default=20, help="events per append")
    parser.add_argument("--batches-per-s", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-rl-fsync-"))
    log_redis = RedisServer(root / "log", appendonly="yes", appendfsync="always")
    own_redis = RedisServer(root / "own", appendonly="no")
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"bench": "ratelimit_fsync", "when": utc_now_iso()}
    out |= {"machine": machine_info(root), "params": vars(args)}
    console.print(f"load average {os.getloadavg()}")
    Counted.install()
    try:
        log = RedisEventLog.from_url(log_redis.url("bench") + "&durability=always")
        cases = [
            ("log server, idle", log_redis, False),
            ("log server, appending", log_redis, True),
            ("own server, appending", own_redis, True),
        ]
        runs = [(case, together) for case in cases for together in (False, True)]
        for r in range(args.repeats):
            for (name, server, appending), together in runs:
                appender = Appender(log, args.batch, args.batches_per_s)
                if appending:
                    appender.start()
                url = f"redis://127.0.0.1:{server.port}/0"
                server_cpu = _server_cpu_s(server.port)
                lat, trips, cpu = asyncio.run(
                    _feeds(url, f"rl{r}{int(together)}", args.rate, args.seconds, together)
                )
                server_cpu = _server_cpu_s(server.port) - server_cpu
                if appending:
                    appender.stop_flag.set()
                    appender.join()
                row = {
                    "case": name,
                    "takes": "one call" if together else "two calls",
                    "round": r,
                    "round_trips_per_feed": trips,
                    "client_cpu_us_per_feed": cpu * 1e6,
                    # (the appends' too where the buckets share the log's server)
                    "server_cpu_us_per_feed": server_cpu * 1e6 / (args.rate * args.seconds),
                    "feeds_ms": percentiles(lat),
                    "appends_ms": percentiles(appender.append_ms),
                    "events_appended": appender.appended,
                    "fsync_ms": _fsync_ms(root / "log"),
                    "load_average": list(os.getloadavg()),
                }
                rows.append(row)
                f = row["feeds_ms"]
                console.print(
                    f"  {name}, {row['takes']} (round {r}): {trips:.2f} round trips;"
                    f" p50 {f['p50']:.2f} p99 {f['p99']:.2f}"
                    f" max {f['max']:.2f} ms; load {row['load_average'][0]:.1f}"
                )
        log.close()
    finally:
        log_redis.stop()
        own_redis.stop()
        shutil.rmtree(root, ignore_errors=True)
    out["rows"] = rows
    print_table(
        "A feed's two rate-limit takes (key, user), open loop",
        [
            "case",
            "takes",
            "round",
            "round trips / feed",
            "client CPU µs / feed",
            "server CPU µs / feed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "append p50 / p99 ms",
            "fsync p50 / p99 ms",
        ],
        [
            [
                r["case"],
                r["takes"],
                str(r["round"]),
                f"{r['round_trips_per_feed']:.2f}",
                f"{r['client_cpu_us_per_feed']:.0f}",
                f"{r['server_cpu_us_per_feed']:.0f}",
                f"{r['feeds_ms']['p50']:.2f}",
                f"{r['feeds_ms']['p99']:.2f}",
                f"{r['feeds_ms']['max']:.2f}",
                "—"
                if not r["appends_ms"]["count"]
                else f"{r['appends_ms']['p50']:.1f} / {r['appends_ms']['p99']:.1f}",
                f"{r['fsync_ms']['p50']:.1f} / {r['fsync_ms']['p99']:.1f}",
            ]
            for r in rows
        ],
    )
    console.print(f"wrote {write_json('ratelimit_fsync', out)}")


if __name__ == "__main__":
    main()
