"""What one reconcile of a serving process with the shared stores costs: a whole read
(what every periodic reconcile did before the change cursors, and still the first, the
one after a gap and the one every ``FULL_RECONCILE_EVERY_S``) against an incremental
read of what changed since the last (PostgreSQL: migration 0004_change_cursors; the
embedded SQLite files: fyp.storage.sqlite_changes).

Setup: ``--store postgresql``, a fresh schema of the server at ``--url`` (dropped
after), engines A and B each with a data dir of its own; ``--store sqlite``, A and B
over the SQLite files of one data dir (as processes on one machine share them). A
upserts ``--videos`` videos and registers ``--users`` users, a quarter of them with
controls (timed: what the change stamps cost writes); B reconciles. Then, ``--reps``
times each: B's whole read; B's incremental read with nothing changed; B's incremental
read after A changed ``--changes`` videos (a new caption), moderated ``--changes`` and
changed ``--changes`` users' controls; and B's incremental read after A erased a user
(B compares what it holds with every stored profile: the erasure's user is not
recorded). Per reconcile: whether it read whole, rows read (the rows the queries
returned, as the engine counts them), the wall time and this process's CPU time (a
server's CPU is not in it), medians over the reps. Code without the stamps (run with
its ``src`` first on ``PYTHONPATH``) reads whole where it cannot read incrementally.

    python bench/reconcile.py [--quick] [--store postgresql|sqlite] [--videos N]
        [--users N] [--changes N] [--url URL]

Prints a table and writes ``bench/results/reconcile[_sqlite][_quick].json``. Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from _common import console, exit_on_sigterm, machine_info, print_table, utc_now_iso, write_json
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.types import Video
from fyp.users.controls import ControlsIn

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/test"


def settings(data_dir: Path, url: str | None) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "store": url,
            "privacy": {"secret_file": data_dir.with_name("shared.secret")},
        },
        environ={},
    )


def videos(n: int, caption: str = "") -> list[Video]:
    return [
        Video(f"v{i}", f"c{i % 50}", duration_ms=15_000, hashtags=(f"#t{i % 30}",), caption=caption)
        for i in range(n)
    ]


def measure(b: Engine, reps: int, before: Callable[[int], None], full: bool) -> dict[str, Any]:
    rows: list[int] = []
    wall: list[float] = []
    cpu: list[float] = []
    changed: list[int] = []
    whole: list[bool] = []
    for rep in range(reps):
        before(rep)
        w, c = time.perf_counter(), time.process_time()
        changed.append(b.reconcile_changes(full=full))
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        whole.append(b.last_reconcile[0])
        rows.append(b.last_reconcile[1])
    return {
        "whole": all(whole),
        "rows_read": statistics.median(rows),
        "changed": statistics.median(changed),
        "wall_ms": statistics.median(wall) * 1000,
        "cpu_ms": statistics.median(cpu) * 1000,
    }


def main() -> None:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--videos", type=int)
    p.add_argument("--users", type=int)
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql")
    args = p.parse_args()
    sqlite = args.store == "sqlite"
    n_videos = args.videos or (2_000 if args.quick else 20_000)
    n_users = args.users or (1_000 if args.quick else 10_000)
    k = args.changes
    schema = f"fyp_bench_{uuid.uuid4().hex[:10]}"
    url = None if sqlite else f"{args.url}{'&' if '?' in args.url else '?'}schema={schema}"
    root = Path(tempfile.mkdtemp(prefix="fyp-reconcile-"))
    where = "the SQLite files of one data dir" if sqlite else f"PostgreSQL schema {schema}"
    console.print(f"{n_videos:,} videos, {n_users:,} users; {where}")
    a = b = None
    writes: dict[str, dict[str, float]] = {}
    try:
        a = Engine.open(settings(root / "a", url))
        users = [f"u{i}" for i in range(n_users)]
        controlled = users[: n_users // 4]
        for name, write in (
            (f"upsert {n_videos:,} videos (one call)", lambda: a.upsert_videos(videos(n_videos))),
            (f"register {n_users:,} users (one call)", lambda: a.register_users(users)),
            (
                f"controls of {len(controlled):,} users (a call each)",
                lambda: [a.set_controls(u, ControlsIn(mute_hashtags=["#t1"])) for u in controlled],
            ),
        ):
            w, c = time.perf_counter(), time.process_time()
            write()
            writes[name] = {
                "wall_ms": (time.perf_counter() - w) * 1000,
                "cpu_ms": (time.process_time() - c) * 1000,
            }
        b = Engine.open(settings(root / ("a" if sqlite else "b"), url), from_checkpoint=False)
        b.reconcile_changes(full=True)
        engine_a = a

        def nothing(rep: int) -> None:
            pass

        def changes(rep: int) -> None:
            engine_a.upsert_videos(videos(k, caption=f"edit {rep}"))
            for i in range(k):
                engine_a.moderator.moderate(
                    f"v{k + i}", "pending" if rep % 2 == 0 else "approved", None, "b"
                )
            for u in users[-k:]:
                engine_a.set_controls(u, ControlsIn(mute_hashtags=[f"#t{rep}"]))

        def erasure(rep: int) -> None:
            engine_a.rights.erase_user(users[n_users // 2 + rep], "bench")

        results = {
            "whole read": measure(b, args.reps, nothing, full=True),
            "incremental, nothing changed": measure(b, args.reps, nothing, full=False),
            f"incremental, {k}+{k}+{k} changed": measure(b, args.reps, changes, full=False),
            "incremental, a user erased": measure(b, args.reps, erasure, full=False),
        }
    finally:
        for engine in (b, a):
            if engine is not None:
                engine.close()
        shutil.rmtree(root, ignore_errors=True)
        if not sqlite:
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    print_table(
        f"Writes by A, {args.store}",
        ["write", "wall ms", "CPU ms (this process)"],
        [[n, f"{w['wall_ms']:.1f}", f"{w['cpu_ms']:.1f}"] for n, w in writes.items()],
    )
    print_table(
        f"One reconcile, {args.store}, {n_videos:,} videos and {n_users:,} users "
        f"(medians of {args.reps})",
        ["read (asked)", "read whole", "rows read", "changes applied", "wall ms", "CPU ms"],
        [
            [
                name,
                "yes" if r["whole"] else "no",
                f"{r['rows_read']:,.0f}",
                f"{r['changed']:.0f}",
                f"{r['wall_ms']:.1f}",
                f"{r['cpu_ms']:.1f}",
            ]
            for name, r in results.items()
        ],
    )
    path = write_json(
        "reconcile" + ("_sqlite" if sqlite else "") + ("_quick" if args.quick else ""),
        {
            "when": utc_now_iso(),
            "machine": machine_info(),
            "store": args.store,
            "writes": writes,
            "videos": n_videos,
            "users": n_users,
            "changes": k,
            "reps": args.reps,
            "results": results,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
