"""The catalog alone: what ``CatalogIndex`` holds per video, and what building it costs.

A synthetic catalog (``bench/_common.make_catalog``: ``--videos`` videos, one creator per
20, a sound per 50, 1-4 hashtags of 2,000) is written to a SQLite catalog store once;
then, in a fresh process per code (``--baseline-src DIR``: the old code's ``src``, then
this checkout's), it is read back and upserted into a ``CatalogIndex`` in one call, as
``Engine.open`` does. Reported per code:

- the bytes reachable from the index (``bench/scale.part_bytes``: Python objects by
  ``sys.getsizeof``, numpy buffers), per video and by attribute;
- the process's USS (private pages) grown by the build, the store's rows dropped after
  (what the process keeps, the allocator's leftovers included), per video;
- the build's CPU seconds (the upsert), and a checkpoint's pickle of the index: bytes, CPU
  seconds to write and to read back.

Prints a table and writes ``bench/results/catalog_memory.json`` (``--tag`` adds a suffix).

    python bench/catalog_memory.py [--videos 1000000] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import console, machine_info, print_table, smaps_rollup, utc_now_iso, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
NOW_MS = 1_800_000_000_000


def write_store(path: Path, n: int) -> None:
    from _common import make_catalog
    from fyp.catalog.store import SqliteCatalogStore

    store = SqliteCatalogStore(path)
    store.upsert(make_catalog(n, NOW_MS, seed=n).videos)
    store.close()


def worker(path: Path) -> dict[str, Any]:
    """In this process (its ``fyp`` the code under test): build, measure, report."""
    from fyp.catalog.index import CatalogIndex
    from fyp.catalog.store import SqliteCatalogStore
    from scale import part_bytes

    gc.collect()
    before = smaps_rollup(os.getpid())
    store = SqliteCatalogStore(path)
    videos = list(store.all())
    store.close()
    n = len(videos)
    cpu0 = time.process_time()
    index = CatalogIndex()
    index.upsert(videos)
    build_cpu_s = time.process_time() - cpu0
    del videos
    gc.collect()
    after = smaps_rollup(os.getpid())
    assert before is not None and after is not None
    parts = [(k, v) for k, v in vars(index).items() if not isinstance(v, (bool, int, float, str))]
    sizes = part_bytes(parts)
    cpu0 = time.process_time()
    blob = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)
    dump_cpu_s = time.process_time() - cpu0
    cpu0 = time.process_time()
    pickle.loads(blob)
    load_cpu_s = time.process_time() - cpu0
    return {
        "videos": n,
        "build_cpu_s": build_cpu_s,
        "walk_bytes": sum(sizes.values()),
        "walk_bytes_per_video": sum(sizes.values()) / n,
        "parts_bytes_per_video": {k: v / n for k, v in sizes.items()},
        "uss_mb_grown": after["uss"] - before["uss"],
        "uss_bytes_per_video": (after["uss"] - before["uss"]) * MB / n,
        "rss_mb_after": after["rss"],
        "pickle_mb": len(blob) / MB,
        "pickle_dump_cpu_s": dump_cpu_s,
        "pickle_load_cpu_s": load_cpu_s,
    }


def run_worker(src: Path, path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(path)],
        env=env,
        cwd=Path(__file__).parent,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="builds per code, alternating")
    ap.add_argument("--tag", default="", help="a suffix of the JSON file's name")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    codes = ([("before", args.baseline_src)] if args.baseline_src else []) + [
        ("this code", REPO_ROOT / "src")
    ]
    payload: dict[str, Any] = {
        "benchmark": "catalog_memory",
        "started_at": utc_now_iso(),
        "machine": machine_info(REPO_ROOT),
        "load_average_at_start": os.getloadavg(),
        "params": {"videos": args.videos, "repeat": args.repeat},
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-catalog-memory-"))
    try:
        t0 = time.perf_counter()
        write_store(root / "catalog.db", args.videos)
        console.print(f"  {args.videos:,} videos stored in {time.perf_counter() - t0:.0f} s")
        for _ in range(args.repeat):
            for name, src in codes:
                console.print(f"  {name}: building the index")
                runs[name].append(run_worker(src, root / "catalog.db"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["runs"] = runs
    payload["load_average_at_end"] = os.getloadavg()
    payload["finished_at"] = utc_now_iso()
    print_table(
        f"The catalog index of {args.videos:,} videos, per code (each run)",
        [
            "code",
            "walked B/video",
            "USS grown B/video",
            "build CPU s",
            "pickle MB",
            "pickle dump / load CPU s",
        ],
        [
            [
                name,
                " ".join(f"{r['walk_bytes_per_video']:,.0f}" for r in rs),
                " ".join(f"{r['uss_bytes_per_video']:,.0f}" for r in rs),
                " ".join(f"{r['build_cpu_s']:.1f}" for r in rs),
                " ".join(f"{r['pickle_mb']:,.0f}" for r in rs),
                " ".join(
                    f"{r['pickle_dump_cpu_s']:.1f} / {r['pickle_load_cpu_s']:.1f}" for r in rs
                ),
            ]
            for name, rs in runs.items()
        ],
    )
    names = list(dict.fromkeys(k for rs in runs.values() for k in rs[0]["parts_bytes_per_video"]))
    print_table(
        "Bytes per video by attribute of the index (first run; an object counted in the "
        "first attribute that reaches it; under 1 B in every code left out)",
        ["attribute", *runs],
        [
            [k, *(f"{rs[0]['parts_bytes_per_video'].get(k, 0.0):,.1f}" for rs in runs.values())]
            for k in names
            if max(rs[0]["parts_bytes_per_video"].get(k, 0.0) for rs in runs.values()) >= 1.0
        ],
    )
    path = write_json("catalog_memory" + (f"_{args.tag}" if args.tag else ""), payload)
    console.print(f"Wrote {path} (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
