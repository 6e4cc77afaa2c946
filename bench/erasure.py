"""Erasure: how long ``DELETE /v1/users/{id}`` takes on a data dir of some size.

Setup: a synthetic catalog and history (users with 20 views each, plus their actions),
ingested and learned in process, impressions recorded for every view, a checkpoint
written. Then, for several users: ``engine.rights.erase_user`` (what the route does:
delete the user's events and impressions with overwriting and WAL truncation, drop their
state, rewrite the checkpoint), timed end to end, with an in-place checkpoint
(``Engine.checkpoints.write``) timed on its own as the baseline in the same run. The
promise is "within 60 s"; the answer comes only once it is done.

Meanwhile a thread asks for feeds (``Engine.feed``, count=10, one user not erased) one
after another: the longest of them during each erasure, and during each in-place
checkpoint, says how long serving stood still (the erasure's rewrite is written by a
forked child; the in-place checkpoint pickles under the engine's lock).

    python bench/erasure.py [--quick]

Prints a table and writes ``bench/results/erasure.json`` (``erasure_quick``). Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from _common import (
    batches,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    percentiles,
    print_table,
    user_ids,
    utc_now_iso,
    write_json,
)
from feed_latency import build_state
from fyp.engine import Engine
from fyp.types import Impression, now_ms

T = TypeVar("T")

ERASED = 5  # users erased (and checkpoints rewritten) per run
VIEWS_PER_USER = 20


def build(data_dir: Path, n_videos: int, n_users: int, now: int) -> tuple[Engine, dict[str, Any]]:
    """The latency benchmark's state (its catalog and history, ingested and learned),
    plus an impression for every view, so an erasure has both to delete."""
    t0 = time.perf_counter()
    engine, setup = build_state(data_dir, n_videos, n_users, VIEWS_PER_USER, now)
    # The same history again (same seeds): build_state keeps only what it ingested.
    history = make_history(
        make_catalog(n_videos, now, seed=n_videos), n_users, VIEWS_PER_USER, now, seed=n_videos + 1
    )
    views = [e for e in history if e["type"] == "view"]
    for start, chunk in enumerate(batches(views, 5_000)):
        engine.record_impressions(
            [
                Impression(
                    f"r{start}-{i}", str(e["user_id"]), str(e["video_id"]), 0, "trending",
                    1.0, "for_you", int(str(e["ts"])) - 1,
                )
                for i, e in enumerate(chunk)
            ]
        )  # fmt: skip
    checkpoint_bytes = engine.checkpoints.write()
    setup.update(
        {
            "events": engine.event_log.count(),
            "impressions": engine.impressions.count(),
            "checkpoint_bytes": checkpoint_bytes,
            "data_dir_bytes": sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()),
            "build_s": time.perf_counter() - t0,
        }
    )
    return engine, setup


class Feeder(threading.Thread):
    """Asks ``engine`` for feeds for ``user`` back to back until stopped."""

    def __init__(self, engine: Engine, user: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.user = engine, user
        self.stop_flag = threading.Event()
        self.latencies_ms: list[float] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            t0 = time.perf_counter()
            self.engine.feed(self.user, count=10)
            self.latencies_ms.append((time.perf_counter() - t0) * 1e3)


def while_feeding(engine: Engine, user: str, work: Callable[[], T]) -> tuple[T, float, float]:
    """(what ``work`` returned, the ms it took, the longest feed served meanwhile in ms)."""
    feeder = Feeder(engine, user)
    feeder.start()
    while not feeder.latencies_ms:  # serving before the work begins
        time.sleep(0.001)
    t0 = time.perf_counter()
    result = work()
    took = (time.perf_counter() - t0) * 1e3
    feeder.stop_flag.set()
    feeder.join()
    return result, took, max(feeder.latencies_ms[1:] or feeder.latencies_ms)


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dir")
    args = ap.parse_args()
    n_videos, n_users = (5_000, 2_000) if args.quick else (50_000, 25_000)
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-erasure-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "erasure",
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "quick": args.quick,
    }
    try:
        now = now_ms()
        console.print(f"[bold]{n_videos:,} videos, {n_users:,} users x 20 views[/]: building")
        engine, setup = build(root / "data", n_videos, n_users, now)
        console.print(
            f"  {setup['events']:,} events, {setup['impressions']:,} impressions, "
            f"checkpoint {setup['checkpoint_bytes'] / 1e6:.0f} MB, in {setup['build_s']:.0f} s"
        )
        try:
            users = user_ids(n_users)  # the history's ids
            erase_ms: list[float] = []
            checkpoint_ms: list[float] = []
            erase_feed_ms: list[float] = []  # the longest feed during each
            checkpoint_feed_ms: list[float] = []
            deleted: list[dict[str, int]] = []
            feeding = users[1]  # never erased (those are users[i * 97])
            for i in range(ERASED):
                _, took, longest = while_feeding(engine, feeding, engine.checkpoints.write)
                checkpoint_ms.append(took)
                checkpoint_feed_ms.append(longest)
                user = users[i * 97]
                done, took, longest = while_feeding(
                    engine, feeding, lambda u=user: engine.rights.erase_user(u, "bench")
                )
                erase_ms.append(took)
                erase_feed_ms.append(longest)
                deleted.append({"events": done.events, "impressions": done.impressions})
        finally:
            engine.close()
        payload["setup"] = setup
        payload["results"] = {
            "erase_ms": percentiles(erase_ms),
            "erase_ms_all": erase_ms,
            "checkpoint_only_ms": percentiles(checkpoint_ms),
            "longest_feed_during_erasure_ms": erase_feed_ms,
            "longest_feed_during_checkpoint_in_place_ms": checkpoint_feed_ms,
            "deleted_per_user": deleted,
        }
        print_table(
            "Erasure (DELETE /v1/users/{id}, in process), ms",
            ["what", "runs", "p50", "max", "longest feed meanwhile (max)"],
            [
                ["erase one user (deletes + checkpoint rewrite)", str(ERASED),
                 f"{percentiles(erase_ms)['p50']:.0f}", f"{max(erase_ms):.0f}",
                 f"{max(erase_feed_ms):.0f}"],
                ["baseline: a checkpoint in place", str(ERASED),
                 f"{percentiles(checkpoint_ms)['p50']:.0f}", f"{max(checkpoint_ms):.0f}",
                 f"{max(checkpoint_feed_ms):.0f}"],
            ],
            caption=(
                f"{setup['events']:,} events, {setup['impressions']:,} impressions, "
                f"{setup['data_dir_bytes'] / 1e6:.0f} MB data dir; each erased user had "
                f"about {deleted[0]['events']} events. Target: within 60 s."
            ),
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    path = write_json("erasure_quick" if args.quick else "erasure", payload)
    console.print(f"Wrote {path}")


if __name__ == "__main__":
    main()
