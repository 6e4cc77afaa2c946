"""The memory of the examples the fold keeps after they close (each user's last, for
actions that come late: ``ranker.late_examples_kept``, 100,000 by default), with each
kept example owning its arrays (now) and holding views of the slice they were computed
with (before: ``Example.compact`` made a no-op), in the same run.

Setup: ``--videos`` videos and ``--users`` users with ``--views`` views each
(``bench/_common.py``'s synthetic history), ingested into a data dir once. Per variant,
in a child process of its own: the log folded from the start as a server folds it (the
learned models off: the fold is what both processes run), then the process's RSS and
USS, the bytes of the buffers the kept examples keep alive (a view keeps its base's),
and the fold's CPU per event.

Prints a table and writes ``bench/results/kept_examples.json``. Nothing here asserts.

    python bench/kept_examples.py [--videos 10000 --users 20000 --views 10]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (
    batches,
    console,
    exit_on_sigterm,
    ingest_all,
    machine_info,
    make_catalog,
    make_history,
    print_table,
    smaps_rollup,
    utc_now_iso,
    write_json,
)
from fyp.types import now_ms

MB = 1024 * 1024


def held_bytes(examples: list[Any]) -> int:
    """The bytes of the buffers these examples keep alive, each buffer once."""
    buffers: dict[int, int] = {}
    for e in examples:
        x = e.inputs
        for a in (e.features, x.video_counts, x.creator_counts, x.tag_counts):
            if a is None:
                continue
            base = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes
    return sum(buffers.values())


def _fold_main(data_dir: str, compact: bool, conn: Any) -> None:
    try:
        from fyp.config import ModelSettings, Settings
        from fyp.engine import Engine
        from fyp.state.updater import Example

        if not compact:
            Example.compact = lambda self: None  # type: ignore[method-assign]
        before = smaps_rollup(os.getpid())
        engine = Engine.open(
            Settings(data_dir=Path(data_dir), model=ModelSettings(enabled=False)),
            from_checkpoint=False,
            replay=False,
        )
        cpu0 = time.process_time()
        events = engine.learn()
        cpu = time.process_time() - cpu0
        gc.collect()
        after = smaps_rollup(os.getpid())
        kept = list(engine.state._closed.values())
        conn.send(
            (
                "ok",
                {
                    "compact": compact,
                    "events": events,
                    "fold_cpu_us_per_event": cpu / max(events, 1) * 1e6,
                    "kept_examples": len(kept),
                    "kept_held_mb": held_bytes(kept) / MB,
                    "memory_mb_before": before,
                    "memory_mb_after": after,
                },
            )
        )
        engine.close()
    except BaseException as err:  # (reported to the parent, which raises)
        conn.send(("error", f"{type(err).__name__}: {err}"))


def fold(data_dir: Path, compact: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_fold_main, args=(str(data_dir), compact, child))
    proc.start()
    child.close()
    try:
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"child exited with code {proc.exitcode}")
        status, payload = parent.recv()
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(payload)
    return dict(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--data-root", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-kept-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "kept_examples",
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {"videos": args.videos, "users": args.users, "views_per_user": args.views},
    }
    try:
        from fyp.config import ModelSettings, Settings
        from fyp.engine import Engine

        now = now_ms()
        data = root / "data"
        engine = Engine.open(Settings(data_dir=data, model=ModelSettings(enabled=False)))
        catalog = make_catalog(args.videos, now, seed=args.videos)
        for chunk in batches(catalog.videos, 5_000):
            engine.upsert_videos(chunk)
        history = make_history(catalog, args.users, args.views, now, seed=args.videos + 1)
        ingest_all(engine, history, now)
        engine.close()
        del engine, catalog, history
        rows = [fold(data, compact) for compact in (False, True)]
        payload["results"] = rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    payload["loadavg_at_end"] = list(os.getloadavg())
    print_table(
        f"Kept examples ({args.videos:,} videos, {args.users:,} users x {args.views} views; "
        "the log folded as a server folds it, models off)",
        [
            "kept examples",
            "count",
            "buffers they keep, MB",
            "process RSS, MB",
            "USS, MB",
            "fold µs CPU/event",
        ],
        [
            [
                "own arrays (now)" if r["compact"] else "views of the slice (before)",
                f"{r['kept_examples']:,}",
                f"{r['kept_held_mb']:,.1f}",
                f"{r['memory_mb_after']['rss']:,.0f}",
                f"{r['memory_mb_after']['uss']:,.0f}",
                f"{r['fold_cpu_us_per_event']:,.1f}",
            ]
            for r in payload["results"]
        ],
    )
    console.print(f"Wrote {write_json('kept_examples', payload)}")


if __name__ == "__main__":
    main()
