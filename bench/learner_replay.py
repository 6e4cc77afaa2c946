"""The learner's path in its own process, replayed: examples per CPU-second and per wall
second of the whole path (joiner, first ranker, both learned models, the item index) and
of the fold alone (what a server without the models folds from the same log: the first
ranker's statistics and step, the users' histories, co-engagement), CPU µs per event.

Setup (untimed): a synthetic catalog (``--videos``) and history (``--users`` users x 20
views plus actions) ingested into a data dir with the learned models on. Then each run is
a fresh child process over a copy of that data dir: ``Engine.open`` without its checkpoint
and without a replay (the whole path in the learner's role, as ``fyp learn`` opens it),
then the whole log learned as the learner's loop learns it (slices of 256 events, each
followed by the training steps it made due), timed (wall clock, and the process's CPU
time, all its threads: a server's index is re-clustered in one of its own).
A run ends with a digest of the state it learned (the first ranker's weights, the video
statistics, the creators' and hashtags' counts, the users' histories and affinities,
co-engagement; with the models, their
embedding rows and dense parameters, rounded, and the index's vectors), so that two
sources' runs can be compared for equal results, not only for speed.

``--baseline-src DIR`` runs each path with the ``fyp`` package of ``DIR`` too (``git
archive <commit> src | tar -x -C /tmp/before``: an earlier commit's), alternating with
this checkout's (``--repeats`` times each), so that a change is measured against what it
changed in one run, on the same machine load.

    python bench/learner_replay.py [--quick] [--baseline-src DIR] [--repeats 2]

Prints a table and writes ``bench/results/learner_replay.json`` (``_quick``). Nothing here
asserts on timings; the machine is shared, so compare rows of one run only.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    REPO_ROOT,
    batches,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    print_table,
    utc_now_iso,
    write_json,
)

TARGET_EXAMPLES_PER_CPU_S = 20_000.0
PATHS = ("fold", "whole_path")
SLICE_EVENTS = 256  # events folded between training steps, as the learner does


def build(data_dir: Path, n_videos: int, n_users: int, views: int) -> dict[str, Any]:
    """The data dir: the catalog and the history, ingested (not learned)."""
    from fyp.config import ModelSettings, PrivacyConfig, Settings
    from fyp.engine import Engine
    from fyp.types import now_ms

    now = now_ms()
    engine = Engine.open(
        Settings(
            data_dir=data_dir,
            model=ModelSettings(enabled=True),
            privacy=PrivacyConfig(require_registered_users=False),
        )
    )
    catalog = make_catalog(n_videos, now, seed=n_videos)
    history = make_history(catalog, n_users, views, now, seed=n_videos + 1)
    for chunk in batches(catalog.videos, 5_000):
        engine.upsert_videos(chunk)
    accepted = 0
    for chunk in batches(history, 5_000):
        result = engine.ingest(chunk, now=now)
        if result.rejected:
            raise RuntimeError(f"synthetic events rejected: {result.rejected[:3]}")
        accepted += result.accepted
    engine.close()
    return {"videos": n_videos, "users": n_users, "views_per_user": views, "events": accepted}


# --------------------------------------------------------------------------- a child run


def _user_digest(s: Any) -> tuple[Any, ...]:
    def affinities(table: dict[str, Any]) -> list[Any]:
        return sorted((k, a.views, a.positives, a.ts, a.session_views) for k, a in table.items())

    return (
        list(s.history),
        s.views,
        list(s.label_counts),
        list(s.recent_positives),
        affinities(s.creators),
        affinities(s.sounds),
        affinities(s.hashtags),
        s.session_finishes,
        s.session_views,
    )


def _digest(engine: Any) -> dict[str, str]:
    """Short hashes of what the replay learned, part by part."""
    import numpy as np

    state = engine.state

    def h(*parts: Any) -> str:
        d = hashlib.sha256()
        for p in parts:
            if isinstance(p, np.ndarray):
                d.update(np.ascontiguousarray(p).tobytes())
            else:
                d.update(repr(p).encode())
        return d.hexdigest()[:12]

    stats = state.stats
    out = {
        "first_ranker": h(state.ranker.weights),
        "video_stats": h(stats.views, stats.label_counts, stats.total_labels, stats.total_views),
        "group_rates": h(state.groups.creators.counts, state.groups.hashtags.counts),
        "users": h(sorted((u, _user_digest(s)) for u, s in state.users.items())),
        "coengagement": h(
            sorted((k, sorted(v.items())) for k, v in state.coengagement._co.items())
        ),
    }
    models = engine.models
    if models is not None:
        import torch

        def params(model: Any) -> list[Any]:
            # Rounded: a batched sum may differ from a looped one in its last bits.
            out: list[Any] = []
            for name, t in sorted(model.tables.items()):
                rows = np.array(sorted(t.row_of(i) for i in t.ids()), dtype=np.int64)
                out += [name, sorted(t.ids()), t.vectors(rows).round(4)]
            for m in ("net", "user_tower", "item_tower"):
                if hasattr(model, m):
                    out += [p.detach().numpy().round(4) for p in getattr(model, m).parameters()]
            return out

        out["ranker_examples"] = str(models.ranker.examples_seen)
        out["retrieval_positives"] = str(models.retrieval.positives_seen)
        with torch.no_grad():
            out["ranker"] = h(*params(models.ranker))
            out["two_tower"] = h(*params(models.retrieval))
        ids = models.index.ids()
        vectors, _ = models.index.vectors_of(ids)
        out["index"] = h(sorted(ids), np.round(vectors, 4))
    return out


def child(data_dir: Path, path: str, profile: Path | None) -> dict[str, Any]:
    """One replay of the whole log, as the learner's (``whole_path``) or a server's fold
    (``fold``); its timing and digest."""
    from fyp.config import ModelSettings, PrivacyConfig, Settings
    from fyp.engine import Engine

    model = ModelSettings(enabled=path == "whole_path", learner="in_process")
    settings = Settings(
        data_dir=data_dir, model=model, privacy=PrivacyConfig(require_registered_users=False)
    )
    # The whole path in the learner's role (as ``fyp learn`` opens it: its index holds
    # the vectors it publishes, searched by no one); the fold as a server folds it.
    role = "learner" if path == "whole_path" else "all"
    engine = Engine.open(settings, from_checkpoint=False, replay=False, role=role)
    # As the learner process runs: its loaded state frozen out of the collector's way
    # (Engine.open does it after its replay) and, where this fyp has them, the learner's
    # collector settings (fyp.learning.learner.learner_gc).
    gc.collect()
    gc.freeze()
    learner_gc = getattr(importlib.import_module("fyp.learning.learner"), "learner_gc", None)
    if learner_gc is not None:
        learner_gc()
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0, cpu0 = time.perf_counter(), time.process_time()
    # As the learner's loop does (fyp.learning.learner): a slice of the log folded, then
    # the training steps it made due; the last steps and the index's re-clustering at
    # the end.
    events = 0
    while n := engine.learn(max_events=SLICE_EVENTS, train=False):
        events += n
        while engine.train_step():
            pass
    if engine.models is not None:
        engine.models.drain()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    examples = engine.models.ranker.examples_seen if engine.models is not None else None
    out = {
        "events": events,
        "examples": examples,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_us_per_event": cpu / max(events, 1) * 1e6,
        "digest": _digest(engine),
    }
    if examples:
        out["examples_per_cpu_s"] = examples / cpu
        out["examples_per_wall_s"] = examples / wall
    engine.close()
    return out


def run_child(
    src: Path, base: Path, root: Path, path: str, profile: Path | None = None
) -> dict[str, Any]:
    data = root / "run"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(base, data)
    shutil.copy(base.with_name(base.name + ".secret"), data.with_name("run.secret"))
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{BENCH_DIR}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), "--path", path]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(data, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({src}, {path}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k videos, 1,000 users")
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each (source, path)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--profile-dir", type=Path, default=None, help="cProfile each run there")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default="whole_path", help=argparse.SUPPRESS)
    ap.add_argument("--profile", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.path, args.profile)))
        return
    exit_on_sigterm()
    if args.quick:
        args.videos, args.users = 10_000, 1_000
    paths = [p for p in args.paths.split(",") if p]
    srcs = {"this": REPO_ROOT / "src"}
    if args.baseline_src is not None:
        srcs = {"baseline": args.baseline_src.resolve(), **srcs}
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-replay-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "learner_replay",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "loadavg_start": os.getloadavg(),
        "target_examples_per_cpu_s": TARGET_EXAMPLES_PER_CPU_S,
    }
    try:
        base = root / "base"
        console.print(f"[bold]{args.videos:,} videos, {args.users:,} users[/]: ingesting")
        payload["params"] = build(base, args.videos, args.users, 20)
        runs: list[dict[str, Any]] = []
        for i in range(args.repeats):
            for path in paths:
                for name, src in srcs.items():
                    profile = None
                    if args.profile_dir is not None:
                        args.profile_dir.mkdir(parents=True, exist_ok=True)
                        profile = args.profile_dir / f"{name}-{path}-{i}.prof"
                    r = run_child(src, base, root, path, profile)
                    r.update(source=name, path=path, repeat=i, loadavg=os.getloadavg()[0])
                    runs.append(r)
                    console.print(
                        f"  {name:8} {path:10} #{i}: {r['cpu_us_per_event']:.1f} µs CPU/event"
                        + (
                            f", {r['examples_per_cpu_s']:,.0f} examples/CPU-s, "
                            f"{r['examples_per_wall_s']:,.0f}/wall-s"
                            if r.get("examples")
                            else ""
                        )
                        + f" (load {r['loadavg']:.1f})"
                    )
        payload["runs"] = runs
        payload["same_results"] = {
            path: len({json.dumps(r["digest"], sort_keys=True) for r in runs if r["path"] == path})
            == 1
            for path in paths
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    payload["loadavg_end"] = os.getloadavg()
    _print(payload)
    path = write_json("learner_replay_quick" if args.quick else "learner_replay", payload)
    console.print(f"Wrote {path}")


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["runs"]:
        rows.append(
            [
                r["source"],
                r["path"],
                str(r["repeat"]),
                f"{r['events']:,}",
                f"{r['cpu_us_per_event']:.1f}",
                f"{r['examples_per_cpu_s']:,.0f}" if r.get("examples") else "-",
                f"{r['examples_per_wall_s']:,.0f}" if r.get("examples") else "-",
                f"{r['loadavg']:.1f}",
            ]
        )
    print_table(
        "Replay of the log in one process (CPU: the process's, all threads)",
        [
            "source",
            "path",
            "run",
            "events",
            "CPU µs/event",
            "examples/CPU-s",
            "examples/wall-s",
            "load",
        ],
        rows,
    )
    for path, same in payload["same_results"].items():
        console.print(f"  {path}: {'the same' if same else 'DIFFERENT'} learned state in every run")


if __name__ == "__main__":
    main()
