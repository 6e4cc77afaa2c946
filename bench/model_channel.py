"""The model channel alone: from the learner starting a publish to a reader in another
process holding the decoded update, files in a data dir against a Redis server.

Setup: updates shaped like the learner's (``fyp.model.publisher``): four embedding
tables (ranker and retrieval, users and videos) of ``--dim`` floats and the ANN item
vectors. A *delta* touches ``--rows`` rows of each and carries no dense weights (most
publishes); a *snapshot* holds ``--videos`` video rows, ``--users`` user rows and about
``--dense-kb`` of dense weights. All are built (and encoded once, for their size) before
any timing.

For each channel (``files``: :class:`FileModelChannel` in a temp dir; ``redis``:
:class:`RedisModelChannel` on ``--redis`` under a prefix of its own, deleted after), a
writer publishes a snapshot, then ``--deltas`` deltas every ``--interval-ms``, then
``--snapshots`` more snapshots each followed by a few deltas. A reader process polls
``read_after`` every ``--poll-ms`` (the servers' default, ``model.poll_interval_s``, is
100 ms: add half of it on average) and records when each update is decoded. Reported per
channel and kind (a snapshot; a delta of the steady phase; a delta published right after
a snapshot, which waits while the reader reads the snapshot): the writer's publish call,
and publish→decoded in the reader (wall clock of one machine), p50/p95/max. Applying an
update to a server's replica costs the same whatever carried it, so it is not part of
this.

    python bench/model_channel.py [--quick] [--redis redis://127.0.0.1:6379/0]

Prints a table and writes ``bench/results/model_channel.json`` (``_quick``). Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from _common import (
    console,
    exit_on_sigterm,
    machine_info,
    ms,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.model.channel import (
    FileModelChannel,
    IndexChanges,
    ModelChannel,
    ModelUpdate,
    encode,
)
from fyp.model.embeddings import TableChanges
from fyp.model.redis_channel import RedisModelChannel

TABLES = ("ranker.user", "ranker.video", "retrieval.user", "retrieval.video")


def _table(ids: list[str], dim: int, rng: np.random.Generator) -> TableChanges:
    vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
    return TableChanges(ids, vectors, [], np.zeros(dim, np.float32))


def make_update(
    version: int, full: bool, args: argparse.Namespace, rng: np.random.Generator
) -> ModelUpdate:
    if full:
        users, videos = args.users, args.videos
    else:
        users = videos = args.rows
    user_ids = [f"u{i}" for i in rng.choice(args.users, users, replace=False)]
    video_ids = [f"v{i}" for i in rng.choice(args.videos, videos, replace=False)]
    tables = {
        name: _table(user_ids if name.endswith("user") else video_ids, args.dim, rng)
        for name in TABLES
    }
    dense = None
    if full:
        n = args.dense_kb * 1024 // 4 // 8
        dense = {f"w{k}": rng.standard_normal(n).astype(np.float32) for k in range(8)}
    index = IndexChanges(
        video_ids, rng.standard_normal((len(video_ids), args.dim)).astype(np.float32), [], full
    )
    return ModelUpdate(version, full, 0, version, 0, 0, tables, index, dense)


KINDS = ("delta", "delta after a snapshot", "snapshot")


def kind_of(update: ModelUpdate, args: argparse.Namespace) -> str:
    """A snapshot; a delta of the steady phase; or one of the deltas published right
    after a snapshot (the reader is busy reading the snapshot: they wait for it)."""
    if update.full:
        return "snapshot"
    return "delta" if update.version <= args.deltas + 1 else "delta after a snapshot"


def open_channel(kind: str, where: str) -> ModelChannel:
    if kind == "files":
        return FileModelChannel(Path(where))
    url, prefix = where.rsplit("#", 1)
    return RedisModelChannel(url, prefix=prefix)


def reader_main(kind: str, where: str, poll_s: float, last: int, conn: Any) -> None:
    """Polls until version ``last`` is read; sends {version: wall time decoded}."""
    exit_on_sigterm()
    channel = open_channel(kind, where)
    seen: dict[int, float] = {}
    version = 0
    conn.send("ready")
    while version < last:
        for update in channel.read_after(version):
            seen[update.version] = time.time()
            version = update.version
        time.sleep(poll_s)
    conn.send(seen)


def run_channel(
    kind: str, where: str, plan: list[ModelUpdate], args: argparse.Namespace
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    channel = open_channel(kind, where)
    reader = ctx.Process(
        target=reader_main, args=(kind, where, args.poll_ms / 1000, plan[-1].version, child)
    )
    reader.start()
    assert parent.recv() == "ready"
    started: dict[int, float] = {}
    calls: dict[str, list[float]] = {k: [] for k in KINDS}
    for update in plan:
        t0 = time.time()
        started[update.version] = t0
        channel.publish(update)
        calls[kind_of(update, args)].append((time.time() - t0) * 1000)
        time.sleep(args.interval_ms / 1000)
    if not parent.poll(120):
        reader.kill()
        raise RuntimeError(f"{kind}: the reader did not finish")
    seen: dict[int, float] = parent.recv()
    reader.join(10)
    latency: dict[str, list[float]] = {k: [] for k in KINDS}
    missed = 0
    for update in plan:
        kind_ = kind_of(update, args)
        if update.version in seen:
            latency[kind_].append((seen[update.version] - started[update.version]) * 1000)
        else:
            missed += 1  # superseded by a snapshot before the reader looked: never needed
    return {
        "publish_ms": {k: percentiles(v) for k, v in calls.items()},
        "publish_to_decoded_ms": {k: percentiles(v) for k, v in latency.items()},
        "updates_skipped_by_reader": missed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--dense-kb", type=int, default=512)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.deltas, args.snapshots = 40, 2
        args.users = args.videos = 20_000
    exit_on_sigterm()
    rng = np.random.default_rng(0)
    plan: list[ModelUpdate] = [make_update(1, True, args, rng)]
    for _ in range(args.deltas):
        plan.append(make_update(len(plan) + 1, False, args, rng))
    for _ in range(args.snapshots):
        plan.append(make_update(len(plan) + 1, True, args, rng))
        for _ in range(3):
            plan.append(make_update(len(plan) + 1, False, args, rng))
    sizes = {
        "delta_bytes": len(encode(plan[1])),
        "snapshot_bytes": len(encode(plan[0])),
    }
    console.print(
        f"{len(plan)} updates; a delta {sizes['delta_bytes'] / 1e6:.2f} MB, "
        f"a snapshot {sizes['snapshot_bytes'] / 1e6:.1f} MB"
    )
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fyp-bench-channel-"))
    client = redis.Redis.from_url(args.redis)
    prefix = f"fyp-bench-{uuid.uuid4().hex[:8]}"
    try:
        results["files"] = run_channel("files", str(tmp / "models"), plan, args)
        results["redis"] = run_channel("redis", f"{args.redis}#{prefix}", plan, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    rows = []
    for name, r in results.items():
        for kind in KINDS:
            call, lat = r["publish_ms"][kind], r["publish_to_decoded_ms"][kind]
            rows.append(
                [
                    f"{name} {kind}",
                    str(lat.get("count", 0)),
                    ms(call.get("p50")),
                    ms(call.get("p95")),
                    ms(lat.get("p50")),
                    ms(lat.get("p95")),
                    ms(lat.get("max")),
                ]
            )
    print_table(
        "model channel: publish → decoded in another process",
        ["channel / update", "n", "publish p50", "publish p95", "p50", "p95", "max"],
        rows,
        caption=f"ms; reader polls every {args.poll_ms:g} ms; "
        f"delta {args.rows} rows x 4 tables, snapshot {args.videos} videos, dim {args.dim}",
    )
    payload = {
        "bench": "model_channel",
        "when": utc_now_iso(),
        "machine": machine_info(tmp),
        "args": vars(args),
        "sizes": sizes,
        "results": results,
    }
    path = write_json("model_channel_quick" if args.quick else "model_channel", payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
