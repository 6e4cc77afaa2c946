"""The stores on PostgreSQL against SQLite, in the same run: what each write a request
waits for costs, one caller at a time.

Operations, each repeated ``--reps`` times on a fresh store of each backend (SQLite files
in a temporary directory, as the embedded default opens them; a new schema of the
PostgreSQL server at ``--url``, dropped after):

- **catalog upsert**: 1,000 videos in one call (new ids each time);
- **moderation action**: one action recorded;
- **controls write**: one user's controls replaced;
- **impression page**: the 10 impressions of one feed response appended through the
  write-behind (the call a feed request waits for), and the rate at which they are
  stored (the appends, then a read, which writes everything pending);
- **audit append**: one hash-chained record, durable before it returns.

Latency is per call (p50, p99, from the caller); ops/s is calls over their total time.
Every write but the impression page is committed durably before the call returns (SQLite
fsync / PostgreSQL ``synchronous_commit=on`` to its WAL).

    python bench/pg_stores.py [--quick] [--reps N] [--url postgresql://…]

Prints a table and writes ``bench/results/pg_stores.json`` (``pg_stores_quick`` for
``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from _common import (
    console,
    exit_on_sigterm,
    machine_info,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.storage.backends import Stores, open_stores
from fyp.types import Impression, ModerationAction, Video

T0 = 1_750_000_000_000
CATALOG_BATCH = 1_000
PAGE = 10
DEFAULT_URL = "postgresql://root@127.0.0.1:5432/test"


def videos(batch: int) -> list[Video]:
    return [
        Video(
            f"b{batch}-v{i}",
            f"c{i % 50}",
            duration_ms=15_000 + i,
            sound_id=f"s{i % 97}",
            hashtags=(f"t{i % 30}", f"t{i % 7}"),
            caption=f"video {i} of batch {batch}",
            created_at=T0 - i,
        )
        for i in range(CATALOG_BATCH)
    ]


def page(request: int) -> list[Impression]:
    return [
        Impression(
            f"r{request}", f"u{request % 500}", f"b0-v{(request * PAGE + p) % CATALOG_BATCH}",
            p, "popular", 1.0 / (p + 1), "foryou", T0 + request, "popular",
            (("popularity", 0.5),),
        )
        for p in range(PAGE)
    ]  # fmt: skip


def timed(op: Callable[[int], Any], reps: int) -> dict[str, Any]:
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(reps):
        t = time.perf_counter()
        op(i)
        samples.append(1000 * (time.perf_counter() - t))
    total = time.perf_counter() - started
    return {"reps": reps, "seconds": total, "ops_per_s": reps / total, **percentiles(samples)}


def measure(stores: Stores, reps: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    catalog_reps = max(3, reps // 20)  # (1,000 videos each)
    out["catalog upsert (1,000 videos)"] = timed(
        lambda i: stores.catalog.upsert(videos(i)), catalog_reps
    )
    out["moderation action"] = timed(
        lambda i: stores.moderation.add(
            [ModerationAction(f"b0-v{i % CATALOG_BATCH}", "limited", None, "bench", "k_x", T0 + i)]
        ),
        reps,
    )
    out["controls write"] = timed(
        lambda i: stores.users.put_controls(
            f"u{i % 500}", {"mute_creators": [f"c{i % 50}"], "hide_hashtags": []}, T0 + i
        ),
        reps,
    )
    started = time.perf_counter()
    appended = timed(
        lambda i: stores.impressions.append(page(i), {("seen", "seen"): 3}, "foryou", T0 + i),
        reps,
    )
    stored = stores.impressions.count()  # (a read writes what is pending first)
    drained = time.perf_counter() - started
    assert stored == reps * PAGE, (stored, reps * PAGE)
    appended["stored_pages_per_s"] = reps / drained
    out["impression page (10, write-behind)"] = appended
    out["audit append"] = timed(
        lambda i: stores.audit.append("moderation", "k_x", details={"video_id": f"v{i}"}), reps
    )
    return out


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 reps instead of 1,000")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--url", default=DEFAULT_URL, help="a PostgreSQL database to use")
    args = parser.parse_args()
    reps = args.reps or (100 if args.quick else 1_000)
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-pg-stores-"))
    schema = f"fyp_bench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}schema={schema}"
    console.print(f"{reps:,} reps a write; SQLite under {root}, PostgreSQL schema {schema}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for backend, where in (("sqlite", None), ("postgresql", url)):
            stores = open_stores(where, root)
            try:
                results[backend] = measure(stores, reps)
            finally:
                stores.close()
            console.print(f"  {backend} done")
        with psycopg.connect(args.url, autocommit=True) as conn:
            server = conn.execute(
                "SELECT current_setting('server_version'), current_setting('fsync'),"
                " current_setting('synchronous_commit')"
            ).fetchone()
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    for op in results["sqlite"]:
        s, p = results["sqlite"][op], results["postgresql"][op]
        rows.append(
            [
                op,
                f"{s['p50']:.2f} / {s['p99']:.2f}",
                f"{p['p50']:.2f} / {p['p99']:.2f}",
                f"{s['ops_per_s']:,.0f}",
                f"{p['ops_per_s']:,.0f}",
            ]
        )
    imp = "impression page (10, write-behind)"
    print_table(
        f"Store writes, one caller ({reps:,} reps; catalog {max(3, reps // 20)})",
        ["operation", "SQLite p50 / p99 ms", "PostgreSQL p50 / p99 ms", "SQLite ops/s", "PG ops/s"],
        rows,
        caption=f"impression pages stored/s (appends then drained): SQLite "
        f"{results['sqlite'][imp]['stored_pages_per_s']:,.0f}, PostgreSQL "
        f"{results['postgresql'][imp]['stored_pages_per_s']:,.0f}. PostgreSQL "
        f"{server[0] if server else '?'}, fsync {server[1] if server else '?'}. "
        "A shared machine: compare rows of one run.",
    )
    path = write_json(
        "pg_stores_quick" if args.quick else "pg_stores",
        {
            "when": utc_now_iso(),
            "machine": machine_info(),
            "postgresql": {
                "version": server[0] if server else None,
                "fsync": server[1] if server else None,
                "synchronous_commit": server[2] if server else None,
            },
            "reps": reps,
            "results": results,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
