"""Embedding tables: memory per row and throughput of the training path.

Fills a user table and a video table (``fyp.model.embeddings``, ``TableConfig`` defaults:
dim 32, per-element Adagrad state) with N fresh ids each (1,000,000; ``--quick``
100,000), in training batches of 1,024 (``lookup(admit=True, touch=True)``), ids
``u0000000``/``v0000000`` made inside the measured region so the strings the table keeps
are counted. Memory is measured twice:

1. RSS growth of this process (``/proc/self/statm``) while filling, without tracing;
2. ``tracemalloc`` (Python objects and numpy buffers) after a fresh fill, current and
   peak (the peak includes the copy made when the arrays double).

Beside the measurements: the table's own ``memory_bytes()`` and ``bytes_per_row``. The
total for 1M users + 1M videos is the measured per-row cost times 1M for each table (at
N = 1M it is the measurement itself; at 100k the arrays' doubling slack is larger, so
the extrapolation overstates).

Throughput: on the filled video table, batches of 1,024 ids drawn with a long tail over
2N ids (so some are new and get admitted): ``lookup(admit=True, touch=True)``, then
``vectors`` and ``apply_gradients`` with random gradients (duplicates summed), each
timed, reported as rows per second.

    python bench/embedding_memory.py [--quick] [--n N] [--dim D]

Prints tables and writes ``bench/results/embedding_memory.json``
(``embedding_memory_quick`` for ``--quick``). Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from _common import (
    console,
    exit_on_sigterm,
    machine_info,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.model.embeddings import EmbeddingTable, TableConfig

BATCH = 1_024
TARGET_BYTES_1M_1M = 4 * 1024**3  # 1M users + 1M videos within 4 GiB
NOW = 1_764_000_000_000


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def fill(table: EmbeddingTable, prefix: str, n: int) -> float:
    """Admit ``n`` fresh ids in batches; returns seconds."""
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        ids = [f"{prefix}{i:07d}" for i in range(start, min(start + BATCH, n))]
        table.lookup(ids, NOW, admit=True, touch=True)
    return time.perf_counter() - t0


def measure_rss(cfg: TableConfig, n: int) -> dict[str, Any]:
    gc.collect()
    out: dict[str, Any] = {}
    tables = []
    for kind, prefix in (("user", "u"), ("video", "v")):
        before = rss_bytes()
        t = EmbeddingTable(kind, cfg)
        secs = fill(t, prefix, n)
        gc.collect()
        grown = rss_bytes() - before
        out[kind] = {
            "rows": len(t),
            "fill_s": secs,
            "admitted_rows_per_s": n / secs,
            "rss_growth_bytes": grown,
            "rss_bytes_per_row": grown / n,
        }
        tables.append(t)
    return out


def measure_tracemalloc(cfg: TableConfig, n: int) -> tuple[dict[str, Any], EmbeddingTable]:
    out: dict[str, Any] = {}
    video: EmbeddingTable | None = None
    for kind, prefix in (("user", "u"), ("video", "v")):
        gc.collect()
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t = EmbeddingTable(kind, cfg)
        fill(t, prefix, n)
        gc.collect()
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[kind] = {
            "rows": len(t),
            "capacity": t.capacity,
            "traced_bytes": cur - base,
            "traced_peak_bytes": peak - base,
            "traced_bytes_per_row": (cur - base) / n,
            "reported_memory_bytes": t.memory_bytes(),
            "reported_bytes_per_row": t.bytes_per_row,
            "array_bytes_per_row": 8 * cfg.dim + 8,
        }
        if kind == "video":
            video = t
    assert video is not None
    return out, video


def measure_throughput(table: EmbeddingTable, n: int, n_batches: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    id_space = 2 * n
    dim = table.dim
    # Long-tailed over 2n ids: low numbers (already in the table) are the popular ones.
    draws = np.minimum(
        (id_space * rng.random((n_batches, BATCH)) ** 2.0).astype(np.int64), id_space - 1
    )
    batches = [[f"v{int(i):07d}" for i in row] for row in draws]
    grads = rng.standard_normal((BATCH, dim)).astype(np.float32) * 0.01
    lookup_ms: list[float] = []
    vectors_ms: list[float] = []
    apply_ms: list[float] = []
    rows_before = len(table)
    t_start = time.perf_counter()
    for ids in batches:
        t0 = time.perf_counter()
        rows = table.lookup(ids, NOW + 1, admit=True, touch=True)
        t1 = time.perf_counter()
        table.vectors(rows)
        t2 = time.perf_counter()
        table.apply_gradients(rows, grads)
        t3 = time.perf_counter()
        lookup_ms.append((t1 - t0) * 1e3)
        vectors_ms.append((t2 - t1) * 1e3)
        apply_ms.append((t3 - t2) * 1e3)
    wall = time.perf_counter() - t_start
    total_rows = n_batches * BATCH

    def rate(samples: list[float]) -> float:
        return total_rows / (sum(samples) / 1e3)

    return {
        "batches": n_batches,
        "batch": BATCH,
        "rows": total_rows,
        "new_rows_admitted": len(table) - rows_before,
        "wall_s": wall,
        "rows_per_s": {
            "lookup_admit_touch": rate(lookup_ms),
            "vectors": rate(vectors_ms),
            "apply_gradients": rate(apply_ms),
            "lookup_plus_apply": total_rows / ((sum(lookup_ms) + sum(apply_ms)) / 1e3),
            "all_three": total_rows / wall,
        },
        "batch_latency_ms": {
            "lookup_admit_touch": percentiles(lookup_ms),
            "vectors": percentiles(vectors_ms),
            "apply_gradients": percentiles(apply_ms),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 ids per table")
    ap.add_argument("--n", type=int, default=None, help="ids per table")
    ap.add_argument("--dim", type=int, default=TableConfig().dim, help="embedding dim")
    ap.add_argument("--batches", type=int, default=None, help="throughput batches")
    args = ap.parse_args()
    exit_on_sigterm()
    n = args.n or (100_000 if args.quick else 1_000_000)
    n_batches = args.batches or (200 if args.quick else 1_000)
    cfg = TableConfig(dim=args.dim)
    payload: dict[str, Any] = {
        "benchmark": "embedding_memory",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(),
        "params": {
            "ids_per_table": n,
            "batch": BATCH,
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "optimizer_state": "Adagrad, one float32 accumulator per vector element",
        },
        "targets": {"bytes_1m_users_1m_videos": TARGET_BYTES_1M_1M},
    }
    console.print(f"Filling a user and a video table with {n:,} ids each (dim {cfg.dim})")
    payload["rss"] = measure_rss(cfg, n)
    gc.collect()
    console.print("Again under tracemalloc")
    traced, video = measure_tracemalloc(cfg, n)
    payload["tracemalloc"] = traced
    total = sum(
        max(traced[k]["traced_bytes_per_row"], payload["rss"][k]["rss_bytes_per_row"])
        for k in ("user", "video")
    )
    payload["extrapolated_1m_users_1m_videos_bytes"] = total * 1_000_000
    payload["target_met"] = total * 1_000_000 <= TARGET_BYTES_1M_1M
    console.print(f"Throughput: {n_batches:,} batches of {BATCH} on the filled video table")
    payload["throughput"] = measure_throughput(video, n, n_batches)
    payload["finished_at"] = utc_now_iso()
    _print(payload)
    path = write_json("embedding_memory_quick" if args.quick else "embedding_memory", payload)
    console.print(f"Wrote {path}")


def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for kind in ("user", "video"):
        tr = payload["tracemalloc"][kind]
        rs = payload["rss"][kind]
        rows.append(
            [
                kind,
                f"{tr['rows']:,}",
                f"{tr['capacity']:,}",
                f"{tr['array_bytes_per_row']}",
                f"{tr['reported_bytes_per_row']}",
                f"{tr['traced_bytes_per_row']:.0f}",
                f"{rs['rss_bytes_per_row']:.0f}",
                _mb(tr["reported_memory_bytes"]),
                _mb(tr["traced_bytes"]),
                _mb(tr["traced_peak_bytes"]),
                _mb(rs["rss_growth_bytes"]),
                f"{rs['admitted_rows_per_s']:,.0f}",
            ]
        )
    total = payload["extrapolated_1m_users_1m_videos_bytes"]
    print_table(
        "Embedding tables: memory",
        [
            "table",
            "rows",
            "capacity",
            "array B/row",
            "bytes_per_row",
            "traced B/row",
            "RSS B/row",
            "memory_bytes() MB",
            "traced MB",
            "traced peak MB",
            "RSS growth MB",
            "fill rows/s",
        ],
        rows,
        caption=(
            f"dim {payload['params']['config']['dim']}; 1M users + 1M videos: "
            f"{total / 1e6:,.0f} MB (the larger of traced and RSS per row, x 1M each); "
            f"target ≤ {TARGET_BYTES_1M_1M / 1e6:,.0f} MB: "
            f"{'met' if payload['target_met'] else 'NOT met'}. Array B/row: vector + "
            "Adagrad accumulator + last-used; the rest is the dict slot, row int and id string."
        ),
    )
    tp = payload["throughput"]
    lat = tp["batch_latency_ms"]
    print_table(
        f"Training path on the video table: {tp['batches']:,} batches of {tp['batch']:,} "
        f"({tp['new_rows_admitted']:,} new rows admitted)",
        ["step", "rows/s", "p50 ms/batch", "p99 ms/batch"],
        [
            [
                name,
                f"{tp['rows_per_s'][name]:,.0f}",
                f"{lat[name]['p50']:.3f}" if name in lat else "—",
                f"{lat[name]['p99']:.3f}" if name in lat else "—",
            ]
            for name in tp["rows_per_s"]
        ],
    )


if __name__ == "__main__":
    main()
