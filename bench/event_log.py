"""The event log alone: events per second appended and acknowledged, SQLite against Redis.

Setup: a synthetic stream of ``--events`` events (views and actions of 10k users on 10k
videos, unique ids), cut into batches of 500 before any timing. Each backend gets a
fresh store in a directory of its own under ``--dir`` (the system's temp dir unless
given; its filesystem is in the JSON, as fsync costs differ):

- ``sqlite``: the embedded log (one fsynced WAL commit per batch).
- ``redis always``: a redis-server started here with ``appendonly yes``, ``appendfsync
  always``: a batch is acknowledged once its AOF write is fsynced (the log's default
  ``durability=always``).
- ``redis everysec``: the same with ``appendfsync everysec`` (``durability=everysec``):
  written to the AOF before the reply, fsynced within the second.
- ``redis no AOF``: nothing on disk (``durability=none``): the floor, what the script
  and the round trip cost.

Each backend is run with 1 caller and with 4 (processes, each appending its own share of
the batches, as API processes would): Redis fsyncs once for all the writes it has
received by the time it goes to write the AOF, so concurrent callers share an fsync.
After each run the log is checked to hold every event exactly once.

    python bench/event_log.py [--quick] [--events N] [--dir PATH]

Prints a table and writes ``bench/results/event_log.json`` (``event_log_quick`` for
``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from _common import (
    console,
    exit_on_sigterm,
    filesystem_of,
    free_port,
    machine_info,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.events.log import EventLog, SqliteEventLog
from fyp.events.redis_log import RedisEventLog
from fyp.types import Event, EventType

BATCH = 500
ACTIONS = [EventType.LIKE, EventType.SHARE, EventType.FOLLOW, EventType.COMMENT]


def make_events(n: int, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    now = 1_750_000_000_000
    events = []
    for i in range(n):
        kind = EventType.VIEW if rng.random() < 0.85 else rng.choice(ACTIONS)
        events.append(
            Event(
                f"ev-{seed}-{i:09d}",
                f"u{rng.randrange(10_000)}",
                f"v{rng.randrange(10_000)}",
                kind,
                now - rng.randrange(86_400_000),
                rng.randrange(30_000) if kind is EventType.VIEW else None,
                f"req-{rng.randrange(1 << 30):08x}",
                "for_you",
            )
        )
    return events


class RedisProcess:
    """A redis-server on 127.0.0.1, its files in ``dir``; killed by :meth:`stop`."""

    def __init__(self, dir: Path, **options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        dir.mkdir(parents=True)
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(dir)]
        args += ["--save", ""]
        for name, value in options.items():
            args += [f"--{name}", value]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _caller(
    open_log: Callable[[], EventLog],
    batches: Sequence[Sequence[Event]],
    start: Any,
    done: Any,
) -> None:
    log = open_log()
    start.wait()
    for batch in batches:
        log.append(batch)
    log.close()
    done.put(time.perf_counter())


def run(
    open_log: Callable[[], EventLog], batches: Sequence[Sequence[Event]], callers: int
) -> float:
    """Seconds from the start to the last acknowledgement of every batch, appended by
    ``callers`` processes (forked: as API processes would), each appending every
    ``callers``-th batch through a log of its own; checks every event is held once."""
    ctx = mp.get_context("fork")
    start, done = ctx.Barrier(callers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_caller, args=(open_log, batches[k::callers], start, done))
        for k in range(callers)
    ]
    for p in procs:
        p.start()
    start.wait()
    started = time.perf_counter()
    ends = [done.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a caller failed (exit code {p.exitcode})")
    log = open_log()
    held = log.count()
    log.close()
    total = sum(len(b) for b in batches)
    if held != total:
        raise SystemExit(f"the log holds {held} events of {total} appended")
    return max(ends) - started


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k events instead of 200k")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores' files go")
    args = parser.parse_args()
    n = args.events or (20_000 if args.quick else 200_000)
    events = make_events(n)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-event-log-", dir=args.dir))
    console.print(f"{n:,} events in batches of {BATCH}, stores under {root}")

    servers: dict[str, RedisProcess] = {}
    backends: dict[str, Callable[[str], Callable[[], EventLog]]] = {
        "sqlite": lambda run_id: lambda: SqliteEventLog(root / run_id / "events.db"),
    }
    for name, options, durability in [
        ("redis always", {"appendonly": "yes", "appendfsync": "always"}, "always"),
        ("redis everysec", {"appendonly": "yes", "appendfsync": "everysec"}, "everysec"),
        ("redis no AOF", {"appendonly": "no"}, "none"),
    ]:
        server = servers[name] = RedisProcess(root / name.replace(" ", "-"), **options)
        backends[name] = (
            lambda url, d: lambda run_id: lambda: RedisEventLog(url, prefix=run_id, durability=d)  # type: ignore[misc]
        )(server.url, durability)

    results: list[dict[str, Any]] = []
    try:
        for name, backend in backends.items():
            for callers in (1, 4):
                run_id = f"{name.replace(' ', '-')}-{callers}"
                seconds = run(backend(run_id), batches, callers)
                results.append(
                    {
                        "backend": name,
                        "callers": callers,
                        "events": n,
                        "seconds": seconds,
                        "events_per_s": n / seconds,
                        "batch_ms": 1000 * seconds / len(batches) * callers,
                    }
                )
                console.print(f"  {name}, {callers} caller(s): {n / seconds:,.0f} events/s")
    finally:
        for server in servers.values():
            server.stop()

    print_table(
        f"Event log: append and acknowledge, batches of {BATCH} ({n:,} events)",
        ["backend", "callers", "events/s", "ms per batch (per caller)"],
        [
            [r["backend"], str(r["callers"]), f"{r['events_per_s']:,.0f}", f"{r['batch_ms']:.1f}"]
            for r in results
        ],
        caption="redis always: acknowledged after the AOF's fsync; everysec: written, fsynced "
        "within the second; no AOF: nothing on disk. A shared machine: compare rows of one run.",
    )
    path = write_json(
        "event_log_quick" if args.quick else "event_log",
        {
            "when": utc_now_iso(),
            "machine": machine_info(root),
            "filesystem": filesystem_of(root),
            "batch": BATCH,
            "results": results,
        },
    )
    shutil.rmtree(root, ignore_errors=True)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
