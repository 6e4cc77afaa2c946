"""ANN: which index serves two-tower retrieval over the item vectors, faiss or usearch?

Setup: ``--n`` item vectors (default 100,000; ``--quick`` 20,000) of dimension ``--dim``
(64) drawn like trained two-tower item embeddings: a mixture of 256 Gaussian topics, not
L2-normalised (norms vary log-normally, as popularity tends to inflate them), searched by
inner product. 1,000 query ("user") vectors are blends of one to three topics plus noise.
Ground truth is numpy brute force (``items @ q``, exact top 100).

For every configuration (exact numpy; faiss ``IndexFlatIP``, ``IndexHNSWFlat``,
``IndexIVFFlat``; usearch HNSW ``Index(metric="ip")``, with a few graph settings each):

- build time (add all vectors; IVF includes training);
- single-query latency, k=100, one query at a time (how the feed asks), p50/p99;
- batch throughput: all 1,000 queries in one call, with both cores;
- recall@100 against exact;
- update cost: replace 1% of the vectors (remove + add of the same ids with new
  vectors), ms per round and µs per vector, then recall@100 against the new exact answer,
  after one round and after ten rounds (10% churn: tombstones and graph repair show);
- memory: RSS growth while building, and the serialised size.

faiss HNSW cannot remove vectors (``remove_ids`` is not implemented for it), so its update
row gives the cost of a full rebuild instead.

    python bench/ann.py [--quick] [--n N] [--dim D]

Prints a table and writes ``bench/results/ann.json`` (``ann_quick`` for ``--quick``).
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits
from usearch.index import Index as UIndex

from _common import (
    console,
    machine_info,
    ms,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.model.ann import ItemIndex

K = 100
N_QUERIES = 1_000
N_TOPICS = 256
UPDATE_FRACTION = 0.01
UPDATE_ROUNDS = 10
RECALL_TARGET = 0.95


# --------------------------------------------------------------------------- data


def make_vectors(
    n: int, dim: int, n_queries: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, Callable[[int], np.ndarray]]:
    """Items, queries, and a function drawing ``m`` fresh item vectors (for updates)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((N_TOPICS, dim)).astype(np.float32) / np.sqrt(dim)
    topic_p = rng.dirichlet(np.full(N_TOPICS, 0.5))

    def items(m: int) -> np.ndarray:
        t = rng.choice(N_TOPICS, size=m, p=topic_p)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
        norm = rng.lognormal(0.0, 0.35, size=(m, 1)).astype(np.float32)
        return ((centers[t] + noise) * norm).astype(np.float32)

    x = items(n)
    w = rng.dirichlet(np.ones(3), size=n_queries) * (rng.random((n_queries, 3)) < 0.6)
    w[:, 0] += 1e-3  # at least one topic
    qt = rng.choice(N_TOPICS, size=(n_queries, 3), p=topic_p)
    q = np.einsum("qt,qtd->qd", w, centers[qt]) / w.sum(axis=1, keepdims=True)
    q = q + rng.standard_normal((n_queries, dim)) * (0.4 / np.sqrt(dim))
    return x, q.astype(np.float32), items


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top ``k`` by inner product, per query (chunked)."""
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), 256):
        scores = q[s : s + 256] @ x.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + 256] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- backends


class Backend:
    """One configuration. Labels are row numbers 0..n-1 of the item matrix."""

    name = ""
    family = ""
    params: dict[str, Any]
    can_remove = True

    def build(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        """Labels, shape (len(q), k); -1 pads."""
        raise NotImplementedError

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        """Replace the vectors of ``labels`` (``x_all`` is the full new matrix)."""
        raise NotImplementedError

    def serialized_bytes(self) -> int | None:
        return None


class NumpyExact(Backend):
    name = "numpy exact"
    family = "exact"

    def __init__(self) -> None:
        self.params = {}
        self.x = np.empty((0, 0), dtype=np.float32)

    def build(self, x: np.ndarray) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32).copy()

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return exact_topk(self.x, q, k)

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        self.x[labels] = x_new

    def serialized_bytes(self) -> int:
        return int(self.x.nbytes)


class Faiss(Backend):
    family = "faiss"

    def __init__(self, kind: str, **params: int) -> None:
        self.kind = kind
        self.params = params
        self.name = f"faiss {kind}" + "".join(f" {k}={v}" for k, v in params.items())
        self.can_remove = kind != "HNSWFlat"
        self.index: Any = None

    def _make(self, dim: int) -> Any:
        p = self.params
        if self.kind == "FlatIP":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self.kind == "HNSWFlat":
            h = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
            h.hnsw.efConstruction = p["efC"]
            h.hnsw.efSearch = p["efS"]
            return faiss.IndexIDMap2(h)
        if self.kind == "IVFFlat":
            quant = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quant, dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = p["nprobe"]
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            self._quantizer = quant  # keep the quantizer alive
            return ivf
        raise ValueError(self.kind)

    def build(self, x: np.ndarray) -> None:
        self.index = self._make(x.shape[1])
        if self.kind == "IVFFlat":
            self.index.train(x)
        self.index.add_with_ids(x, np.arange(len(x), dtype=np.int64))

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        _, labels = self.index.search(q, k)
        return np.asarray(labels)

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        if not self.can_remove:
            self.build(x_all)  # no remove_ids for HNSW: the only way is a rebuild
            return
        self.index.remove_ids(labels.astype(np.int64))
        self.index.add_with_ids(x_new, labels.astype(np.int64))

    def serialized_bytes(self) -> int:
        return int(faiss.serialize_index(self.index).size)


class USearch(Backend):
    family = "usearch"

    def __init__(self, connectivity: int, expansion_add: int, expansion_search: int) -> None:
        self.params = {"M": connectivity, "efC": expansion_add, "efS": expansion_search}
        self.name = f"usearch HNSW M={connectivity} efC={expansion_add} efS={expansion_search}"
        self.index: Any = None

    def build(self, x: np.ndarray) -> None:
        p = self.params
        self.index = UIndex(
            ndim=x.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=p["M"],
            expansion_add=p["efC"],
            expansion_search=p["efS"],
        )
        self.index.add(np.arange(len(x), dtype=np.uint64), x)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        if len(q) == 1:  # a flat Matches
            return np.asarray(self.index.search(q[0], k).keys, dtype=np.int64)[None, :]
        m = self.index.search(q, k)
        keys = np.asarray(m.keys, dtype=np.int64).reshape(len(q), -1)
        counts = np.asarray(m.counts).reshape(-1)
        mask = np.arange(keys.shape[1])[None, :] >= counts[:, None]
        keys[mask] = -1
        return keys

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        keys = labels.astype(np.uint64)
        self.index.remove(keys)
        self.index.add(keys, x_new)

    def serialized_bytes(self) -> int:
        return int(self.index.serialized_length)


def mips_to_l2(x: np.ndarray, phi: float) -> np.ndarray:
    """Append ``sqrt(phi² - |x|²)``: then ``|q' - x'|² = |q|² + phi² - 2 q·x`` for
    ``q' = [q, 0]``, so L2 order is inner-product order and HNSW sees a true metric."""
    extra = np.sqrt(np.maximum(phi * phi - np.einsum("ij,ij->i", x, x), 0.0))
    return np.hstack([x, extra[:, None]]).astype(np.float32)


class Mips(Backend):
    """HNSW in L2 over vectors augmented by one coordinate (the MIPS-to-L2 reduction).
    ``phi`` is 1.25 × the largest norm at build; a vector beyond it forces a rebuild."""

    def __init__(self, lib: str, M: int, efC: int, efS: int) -> None:  # noqa: N803
        self.lib = lib
        self.family = lib
        self.params = {"M": M, "efC": efC, "efS": efS, "transform": "mips->l2"}
        self.name = f"{lib} HNSW-L2+MIPS M={M} efC={efC} efS={efS}"
        self.can_remove = lib == "usearch"
        self.index: Any = None
        self.phi = 0.0
        self.rebuilds = 0

    def build(self, x: np.ndarray) -> None:
        p = self.params
        self.phi = 1.25 * float(np.linalg.norm(x, axis=1).max())
        xa = mips_to_l2(x, self.phi)
        if self.lib == "usearch":
            self.index = UIndex(
                ndim=xa.shape[1],
                metric="l2sq",
                dtype="f32",
                connectivity=p["M"],
                expansion_add=p["efC"],
                expansion_search=p["efS"],
            )
            self.index.add(np.arange(len(x), dtype=np.uint64), xa)
        else:
            h = faiss.IndexHNSWFlat(xa.shape[1], p["M"])
            h.hnsw.efConstruction = p["efC"]
            h.hnsw.efSearch = p["efS"]
            self.index = faiss.IndexIDMap2(h)
            self.index.add_with_ids(xa, np.arange(len(x), dtype=np.int64))

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        qa = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        if self.lib == "faiss":
            return np.asarray(self.index.search(qa, k)[1])
        if len(q) == 1:
            return np.asarray(self.index.search(qa[0], k).keys, dtype=np.int64)[None, :]
        m = self.index.search(qa, k)
        keys = np.asarray(m.keys, dtype=np.int64).reshape(len(q), -1)
        keys[np.arange(keys.shape[1])[None, :] >= np.asarray(m.counts)[:, None]] = -1
        return keys

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        if not self.can_remove or np.linalg.norm(x_new, axis=1).max() > self.phi:
            self.rebuilds += 1
            self.build(x_all)
            return
        keys = labels.astype(np.uint64)
        self.index.remove(keys)
        self.index.add(keys, mips_to_l2(x_new, self.phi))

    def serialized_bytes(self) -> int:
        if self.lib == "faiss":
            return int(faiss.serialize_index(self.index).size)
        return int(self.index.serialized_length)


class Wrapper(Backend):
    """``fyp.model.ann.ItemIndex`` as built, with string ids (the wrapper's own cost)."""

    family = "fyp ItemIndex"

    def __init__(self, **config: int) -> None:
        self.params = config
        self.name = "fyp ItemIndex" + "".join(f" {k}={v}" for k, v in config.items())
        self.index: ItemIndex | None = None
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}

    def build(self, x: np.ndarray) -> None:
        self.ids = [f"v{i:07d}" for i in range(len(x))]
        self.pos = {v: i for i, v in enumerate(self.ids)}
        self.index = ItemIndex(x.shape[1], **self.params)
        self.index.upsert(self.ids, x)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        assert self.index is not None
        found, _ = self.index.search(q, k)
        out = np.full((len(q), k), -1, dtype=np.int64)
        for r, row in enumerate(found):
            out[r, : len(row)] = [self.pos[v] for v in row]
        return out

    def update(self, labels: np.ndarray, x_new: np.ndarray, x_all: np.ndarray) -> None:
        assert self.index is not None
        self.index.upsert([self.ids[i] for i in labels], x_new)


# --------------------------------------------------------------------------- measurement


@dataclass
class Data:
    x: np.ndarray
    q: np.ndarray
    truth: np.ndarray
    draw: Callable[[int], np.ndarray]


def set_threads(n: int) -> None:
    faiss.omp_set_num_threads(n)


def measure(b: Backend, d: Data, single_queries: int, seed: int) -> dict[str, Any]:
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    b.build(d.x)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_growth = rss_bytes() - rss0

    # Single queries, one at a time, one thread (the engine serves one user per call and
    # other requests need the other core).
    set_threads(1)
    lat: list[float] = []
    with threadpool_limits(1):  # numpy's BLAS too
        for i in range(20):
            b.search(d.q[i : i + 1], K)  # warm up
        for i in range(single_queries):
            qi = d.q[i : i + 1]
            t = time.perf_counter()
            b.search(qi, K)
            lat.append((time.perf_counter() - t) * 1e3)
    set_threads(os.cpu_count() or 1)

    t = time.perf_counter()
    found = b.search(d.q, K)
    batch_s = time.perf_counter() - t
    r0 = recall(found, d.truth)

    # Updates: replace 1% of the vectors, UPDATE_ROUNDS times.
    rng = np.random.default_rng(seed)
    x_all = d.x.copy()
    n_upd = max(int(len(x_all) * UPDATE_FRACTION), 1)
    upd_ms: list[float] = []
    r1 = r10 = float("nan")
    rounds = UPDATE_ROUNDS if b.can_remove else 1
    for rnd in range(rounds):
        labels = rng.choice(len(x_all), size=n_upd, replace=False)
        x_new = d.draw(n_upd)
        x_all[labels] = x_new
        t = time.perf_counter()
        b.update(labels, x_new, x_all)
        upd_ms.append((time.perf_counter() - t) * 1e3)
        if rnd == 0:
            r1 = recall(b.search(d.q, K), exact_topk(x_all, d.q, K))
    if b.can_remove:
        r10 = recall(b.search(d.q, K), exact_topk(x_all, d.q, K))

    ser = b.serialized_bytes()
    return {
        "name": b.name,
        "family": b.family,
        "params": b.params,
        "incremental": b.can_remove,
        "build_s": build_s,
        "single_query_ms": percentiles(lat),
        "batch_queries": len(d.q),
        "batch_s": batch_s,
        "batch_qps": len(d.q) / batch_s,
        "recall_at_100": r0,
        "update_vectors_per_round": n_upd,
        "update_ms_per_round": percentiles(upd_ms),
        "update_us_per_vector": float(np.mean(upd_ms)) * 1e3 / n_upd,
        "update_is_rebuild": not b.can_remove,
        "recall_after_1_round": r1,
        "recall_after_10_rounds": r10 if b.can_remove else None,
        "rss_growth_mib": rss_growth / 2**20,
        "serialized_mib": ser / 2**20 if ser is not None else None,
    }


def crossover(sizes: list[int], dim: int, single: int) -> list[dict[str, Any]]:
    """``ItemIndex`` exact (brute force) against IVF at growing sizes: where does the
    exact mode stop paying? Single queries, one thread, k=100."""
    rows = []
    for n in sizes:
        x, q, _ = make_vectors(n, dim, single, seed=n)
        truth = exact_topk(x, q, K)
        ids = [f"v{i}" for i in range(n)]
        pos = {v: i for i, v in enumerate(ids)}
        for mode, exact_below in (("exact", 1 << 62), ("ivf", 0)):
            index = ItemIndex(dim, exact_below=exact_below)
            t = time.perf_counter()
            index.upsert(ids, x)
            build_s = time.perf_counter() - t
            lat, found = [], []
            with threadpool_limits(1):
                set_threads(1)
                for i in range(single):
                    t = time.perf_counter()
                    got, _ = index.search(q[i], K)
                    lat.append((time.perf_counter() - t) * 1e3)
                    found.append([pos[v] for v in got[0]])
                set_threads(os.cpu_count() or 1)
            f = np.full((single, K), -1, dtype=np.int64)
            for r, row in enumerate(found):
                f[r, : len(row)] = row
            rows.append(
                {
                    "items": n,
                    "mode": mode,
                    "build_s": build_s,
                    "single_query_ms": percentiles(lat),
                    "recall_at_100": recall(f, truth),
                }
            )
    return rows


def configs(n: int) -> list[Backend]:
    nlist = int(4 * np.sqrt(n))
    nlist = 1 << int(np.round(np.log2(nlist)))
    return [
        NumpyExact(),
        Faiss("FlatIP"),
        Faiss("HNSWFlat", M=32, efC=200, efS=256),
        Mips("faiss", 16, 100, 256),
        Faiss("IVFFlat", nlist=nlist, nprobe=16),
        Faiss("IVFFlat", nlist=nlist, nprobe=32),
        Faiss("IVFFlat", nlist=nlist, nprobe=64),
        USearch(16, 128, 512),
        USearch(32, 200, 512),
        Mips("usearch", 16, 128, 512),
        Mips("usearch", 32, 200, 512),
        Wrapper(),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 items instead of 100,000")
    ap.add_argument("--n", type=int, default=None, help="item vectors")
    ap.add_argument("--dim", type=int, default=64, help="vector dimension")
    ap.add_argument("--only", default=None, help="run only configs whose name contains this")
    args = ap.parse_args()
    n = args.n or (20_000 if args.quick else 100_000)
    single = 300 if args.quick else N_QUERIES

    t0 = time.perf_counter()
    x, q, draw = make_vectors(n, args.dim, N_QUERIES, seed=0)
    truth = exact_topk(x, q, K)
    data = Data(x, q, truth, draw)
    console.print(
        f"{n:,} item vectors × {args.dim} (mixture of {N_TOPICS} topics, unnormalised, "
        f"norm p50 {np.median(np.linalg.norm(x, axis=1)):.2f}), {N_QUERIES:,} queries, "
        f"k={K}; data + ground truth in {time.perf_counter() - t0:.1f} s"
    )
    payload: dict[str, Any] = {
        "benchmark": "ann",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(),
        "versions": {"faiss": faiss.__version__, "usearch": _usearch_version()},
        "params": {
            "items": n,
            "dim": args.dim,
            "topics": N_TOPICS,
            "queries": N_QUERIES,
            "single_queries_timed": single,
            "k": K,
            "metric": "inner product, unnormalised vectors",
            "update_fraction_per_round": UPDATE_FRACTION,
            "update_rounds": UPDATE_ROUNDS,
            "single_query_threads": 1,
            "batch_threads": os.cpu_count(),
        },
        "targets": {"recall_at_100": RECALL_TARGET},
        "results": [],
    }
    for i, b in enumerate(configs(n)):
        if args.only and args.only not in b.name:
            continue
        console.print(f"  {b.name} …", end="")
        row = measure(b, data, single, seed=100 + i)
        payload["results"].append(row)
        console.print(
            f" recall {row['recall_at_100']:.3f}, "
            f"p50 {row['single_query_ms']['p50']:.3f} ms, build {row['build_s']:.1f} s"
        )
        del b
        gc.collect()
    sizes = [2_500, 5_000, 10_000, 20_000] + ([] if args.quick else [40_000, 100_000])
    if not args.only or "crossover" in args.only:
        console.print(f"  crossover: ItemIndex exact vs IVF at {sizes} items …")
        payload["crossover"] = crossover(sizes, args.dim, 300)
    payload["finished_at"] = utc_now_iso()
    payload["fastest_meeting_target"] = _fastest(payload["results"])
    _print(payload)
    if "crossover" in payload:
        _print_crossover(payload["crossover"])
    path = write_json("ann_quick" if args.quick else "ann", payload)
    console.print(f"Wrote {path}")


def _usearch_version() -> str:
    import usearch

    return str(usearch.__version__)


def _fastest(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """Per family, the configuration with the lowest single-query p99 among those with
    recall@100 ≥ target both at build and after ten rounds of updates."""
    best: dict[str, str | None] = {}
    for fam in ("exact", "faiss", "usearch", "fyp ItemIndex"):
        ok = [
            r
            for r in rows
            if r["family"] == fam
            and r["recall_at_100"] >= RECALL_TARGET
            and (r["recall_after_10_rounds"] or 0.0) >= RECALL_TARGET
        ]
        best[fam] = min(ok, key=lambda r: r["single_query_ms"]["p99"])["name"] if ok else None
    return best


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["results"]:
        lat = r["single_query_ms"]
        r10 = r["recall_after_10_rounds"]
        upd = r["update_ms_per_round"]
        rows.append(
            [
                r["name"],
                f"{r['build_s']:.2f}",
                ms(lat["p50"], 3),
                ms(lat["p99"], 3),
                f"{r['batch_qps']:,.0f}",
                f"{r['recall_at_100']:.4f}",
                f"{r['recall_after_1_round']:.4f}",
                f"{r10:.4f}" if r10 is not None else "—",
                ms(upd["p50"], 1) + (" (rebuild)" if r["update_is_rebuild"] else ""),
                ms(r["update_us_per_vector"], 1),
                f"{r['rss_growth_mib']:.0f}",
                ms(r["serialized_mib"], 1),
            ]
        )
    p = payload["params"]
    print_table(
        f"ANN over {p['items']:,} × {p['dim']} item vectors, inner product, k={p['k']}",
        [
            "configuration",
            "build s",
            "1q p50 ms",
            "1q p99 ms",
            "batch q/s",
            "recall@100",
            "after 1% upd",
            f"after {UPDATE_ROUNDS}×1%",
            "upd ms/round",
            "upd µs/vec",
            "RSS MiB",
            "saved MiB",
        ],
        rows,
        caption=(
            f"Single queries: one at a time, 1 thread, k={p['k']}. Batch: {p['queries']:,} "
            f"queries in one call, {p['batch_threads']} threads. An update round replaces "
            f"{UPDATE_FRACTION:.0%} of the vectors (remove + add); recall after updates is "
            "against the new exact answer. Fastest with recall@100 ≥ "
            f"{RECALL_TARGET} (also after updates): {payload['fastest_meeting_target']}."
        ),
    )


def _print_crossover(rows: list[dict[str, Any]]) -> None:
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_n.setdefault(r["items"], {})[r["mode"]] = r
    table = []
    for n, m in by_n.items():
        e, i = m["exact"], m["ivf"]
        table.append(
            [
                f"{n:,}",
                ms(e["single_query_ms"]["p50"], 3),
                ms(e["single_query_ms"]["p99"], 3),
                ms(i["single_query_ms"]["p50"], 3),
                ms(i["single_query_ms"]["p99"], 3),
                f"{i['recall_at_100']:.4f}",
                f"{i['build_s']:.2f}",
            ]
        )
    print_table(
        "ItemIndex: exact (brute force) against IVF, by size",
        [
            "items",
            "exact p50 ms",
            "exact p99 ms",
            "IVF p50 ms",
            "IVF p99 ms",
            "IVF recall@100",
            "IVF build s",
        ],
        table,
        caption="Single queries through ItemIndex.search (string ids, rescoring), 1 thread, "
        "k=100. Exact recall is 1.",
    )


if __name__ == "__main__":
    main()
