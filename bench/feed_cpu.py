"""A feed's CPU in process, this code against an earlier commit's in the same run, and
whether both serve the same pages.

Setup (untimed, kept in ``--state`` to be reused by later runs): the state of
``bench/learner.py`` (``--videos`` videos, ``--users`` users with 20 views each, the
learned models warm) and the models published to a channel beside it, as a learner
process publishes them.

Per mode (``serving``: a serving replica's engine with the published models, what ``fyp
serve`` serves from; ``off``: the first ranker) and per code (``--baseline-src DIR``:
the ``fyp`` package of ``DIR``, from ``git archive <commit> src``; then this
checkout's), a fresh process opens the engine on a copy of the state and asks for the
same sequence of ``Engine.feed(user, count=10)`` at a fixed time with seeded request ids
(the ``fresh`` source's draws follow them) and no source budget (a source over budget
on a busy machine would change a page). It reports the process's CPU per feed (all its
threads: the impression log's writer too) and the pages; the pages of both codes are
compared card by card (video, source, reason, score), so a change meant as a pure
optimisation shows here if it changed what is served. ``--profile`` adds cProfile's
top functions (by their own time) of this code's run. ``--upload-every N`` uploads a
video before every N-th feed (warm-up included; the same videos for both codes), as a
catalog that changes while serving does; the uploads' own CPU is not counted in the
feeds' (it is reported apart).

    python bench/feed_cpu.py [--quick] [--baseline-src DIR] [--modes serving,off]
                             [--upload-every N]

Prints a table and writes ``bench/results/feed_cpu.json`` (``_quick``). Nothing here
asserts on timings; compare the two codes of one run only.
"""

from __future__ import annotations

import argparse
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
    console,
    exit_on_sigterm,
    machine_info,
    print_table,
    register_users,
    utc_now_iso,
    write_json,
)

COUNT = 10
WARMUP = 100
# The parts timed with --sections (CPU of the calling thread, summed per part; a part
# inside another counts in both): (module, class, method).
SECTIONS = [
    ("fyp.pipeline", "FeedPipeline", "_retrieve"),
    ("fyp.retrieve.two_tower", "TwoTowerSource", "fetch"),
    ("fyp.retrieve.coengagement", "CoEngagementSource", "fetch"),
    ("fyp.retrieve.fresh", "FreshSource", "fetch"),
    ("fyp.retrieve.topics", "TopicSource", "fetch"),
    ("fyp.retrieve.discover", "DiscoverSource", "fetch"),
    ("fyp.retrieve.tastes", "TasteSource", "fetch"),
    ("fyp.retrieve.trending", "TrendingSource", "fetch"),
    ("fyp.retrieve.followed", "FollowedCreatorsSource", "fetch"),
    ("fyp.pipeline", "FeedPipeline", "_filter"),
    ("fyp.pipeline", "FeedPipeline", "_rank"),
    ("fyp.rank.first_ranker", "FirstRanker", "score"),
    ("fyp.model.replica", "ReplicaRanker", "predict"),
    ("fyp.model.catalog_rows", "CatalogRankRows", "rank_batch"),
    ("fyp.rerank.tastes", "TasteAllocation", "apply"),
    ("fyp.rerank.diversity", "CreatorSoundSpacing", "arrange"),
    ("fyp.rerank.diversity", "CreatorSoundSpacing", "looked_at"),
    ("fyp.pipeline", "FeedPipeline", "_last_gate"),
    ("fyp.rank.explain", "Explainer", "explain"),
    ("fyp.pipeline", "RecordImpressions", "__call__"),
]


def time_sections() -> dict[str, float]:
    """Wrap each of :data:`SECTIONS` (that the code has) with a CPU timer: the seconds
    spent in each, by name."""
    import functools
    import importlib

    spent: dict[str, float] = {}
    for module, cls_name, method in SECTIONS:
        cls = getattr(importlib.import_module(module), cls_name, None)
        if cls is None or not hasattr(cls, method):
            continue
        name = f"{cls_name}.{method}"
        spent[name] = 0.0

        def timed(f: Any, name: str = name) -> Any:
            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return f(*args, **kwargs)
                finally:
                    spent[name] += time.thread_time() - t0

            return wrapper

        setattr(cls, method, timed(getattr(cls, method)))
    return spent


def build(state: Path, videos: int, users: int) -> None:
    """The state of ``bench/learner.py`` in ``state/data``, its models published to
    ``state/models``, the request users in ``state/users.json`` and the time in
    ``state/now``."""
    from feed_latency import build_state, request_users
    from fyp.model.channel import FileModelChannel
    from fyp.model.publisher import Publisher
    from fyp.types import now_ms

    now = now_ms()
    data = state / "data"
    engine, _ = build_state(data, videos, users, 20, now, model=True)
    requests = request_users(users, 2_000, seed=videos + 10, tag="cpu")
    register_users(engine, [{"user_id": u} for u in requests])
    assert engine.models is not None
    Publisher(engine.models, FileModelChannel(state / "models")).publish(
        engine.state.applied_offset
    )
    engine.checkpoints.write()
    engine.close()
    (state / "users.json").write_text(json.dumps(requests))
    (state / "now").write_text(str(now))


def worker(
    state: Path, mode: str, feeds: int, out: Path, profile: bool, sections: bool, upload_every: int
) -> None:
    """One code's run (in its own process, with that code's ``fyp`` first on the path):
    the engine on a copy of the state, ``feeds`` timed feeds after a warm-up, a video
    uploaded before every ``upload_every``-th (0: none)."""
    import cProfile
    import io
    import itertools
    import pstats

    from fyp.api.model_sync import ModelSync
    from fyp.config import ModelSettings, Settings, SourcesConfig
    from fyp.engine import Engine, serving_gc
    from fyp.model.channel import FileModelChannel
    from fyp.types import Video

    serving_gc()
    spent = time_sections() if sections else {}
    data = Path(tempfile.mkdtemp(prefix="fyp-feed-cpu-")) / "data"
    shutil.copytree(state / "data", data)
    shutil.copy(state / "data.secret", data.with_name("data.secret"))
    try:
        settings = Settings(
            data_dir=data,
            model=ModelSettings(enabled=mode == "serving"),
            sources=SourcesConfig(budget_ms=1e9),
        )
        engine = Engine.open(settings, role="serving" if mode == "serving" else "all")
        if mode == "serving":
            ModelSync(engine, FileModelChannel(state / "models")).catch_up()
        ids = itertools.count()
        engine.pipeline.new_request_id = lambda: f"r{next(ids):08x}"
        now = int((state / "now").read_text())
        users: list[str] = json.loads((state / "users.json").read_text())
        users = (users * (1 + (WARMUP + feeds) // len(users)))[: WARMUP + feeds]
        pages: list[list[Any]] = []
        upload_cpu = 0.0

        def upload(i: int) -> None:
            """Before feed ``i``, a new video like an existing one (another's creator,
            sound and hashtags), so that both codes see the same catalog."""
            nonlocal upload_cpu
            if not upload_every or i % upload_every:
                return
            t0 = time.process_time()
            like = engine.catalog.videos[(i * 7919) % len(engine.catalog)]
            video = Video(
                f"bench-upload-{i}",
                like.creator_id,
                like.duration_ms,
                sound_id=like.sound_id,
                hashtags=like.hashtags,
                created_at=now + i,
            )
            engine.upsert_videos([video])
            upload_cpu += time.process_time() - t0

        for i, u in enumerate(users[:WARMUP]):
            upload(i)
            f = engine.feed(u, COUNT, now=now + i)
            pages.append([(c.video_id, c.source, c.reason, c.score) for c in f.items])
        profiler = cProfile.Profile() if profile else None
        for k in spent:
            spent[k] = 0.0
        upload_cpu = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for i, u in enumerate(users[WARMUP:], start=WARMUP):
            upload(i)
            f = engine.feed(u, COUNT, now=now + i)
            pages.append([(c.video_id, c.source, c.reason, c.score) for c in f.items])
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0 - upload_cpu, time.perf_counter() - wall0
        top = ""
        if profiler is not None:
            s = io.StringIO()
            pstats.Stats(profiler, stream=s).sort_stats("tottime").print_stats(40)
            top = s.getvalue()
        result = {
            "ranker": engine.pipeline.ranker.active(),
            "feeds": feeds,
            "cpu_ms_per_feed": cpu / feeds * 1000,
            "wall_ms_per_feed": wall / feeds * 1000,
            "upload_cpu_ms": upload_cpu * 1000,
            "pages": pages,
            "profile": top,
            "sections_ms_per_feed": {k: v / feeds * 1000 for k, v in spent.items()},
        }
        engine.close()
    finally:
        shutil.rmtree(data.parent, ignore_errors=True)
    out.write_text(json.dumps(result))


def run_worker(
    src: Path,
    state: Path,
    mode: str,
    feeds: int,
    root: Path,
    profile: bool,
    sections: bool,
    upload_every: int,
) -> dict[str, Any]:
    out = root / f"result-{mode}-{abs(hash(str(src)))}.json"
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{BENCH_DIR}")
    cmd = [sys.executable, str(BENCH_DIR / "feed_cpu.py"), "--worker", str(out)]
    cmd += ["--state", str(state), "--modes", mode, "--feeds", str(feeds)]
    cmd += ["--profile"] if profile else []
    cmd += ["--upload-every", str(upload_every)]
    subprocess.run(cmd + (["--sections"] if sections else []), env=env, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _median_sections(runs: list[dict[str, Any]]) -> dict[str, float]:
    import statistics

    names = runs[0]["sections_ms_per_feed"]
    return {k: statistics.median(r["sections_ms_per_feed"][k] for r in runs) for k in names}


def first_difference(a: list[Any], b: list[Any]) -> str | None:
    """Where two runs' pages first differ (``None``: identical)."""
    for i, (pa, pb) in enumerate(zip(a, b, strict=False)):
        if pa != pb:
            return f"feed {i}: {pa[:3]} != {pb[:3]}"
    return None if len(a) == len(b) else f"{len(a)} feeds against {len(b)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k videos, 1,500 users")
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--feeds", type=int, default=1_000, help="timed feeds per run")
    ap.add_argument("--modes", default="serving,off", help="of serving, off (models off)")
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each code, alternating")
    ap.add_argument("--state", type=Path, default=None, help="built here if absent; reused")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sections", action="store_true", help="the CPU of the path's parts")
    ap.add_argument(
        "--upload-every", type=int, default=0, help="upload a video every N feeds (0: none)"
    )
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(
            args.state,
            args.modes,
            args.feeds,
            args.worker,
            args.profile,
            args.sections,
            args.upload_every,
        )
        return
    exit_on_sigterm()
    if args.quick:
        args.videos, args.users = 10_000, 1_500
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-feed-cpu-"))
    state = args.state or root / "state"
    if not (state / "now").exists():
        console.print(f"[bold]{args.videos:,} videos[/]: building the state in {state}")
        build(state, args.videos, args.users)
    payload: dict[str, Any] = {
        "benchmark": "feed_cpu",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "load_average_at_start": os.getloadavg(),
        "params": {
            "videos": args.videos,
            "users": args.users,
            "count": COUNT,
            "upload_every": args.upload_every,
        },
    }
    codes = ([("before", args.baseline_src)] if args.baseline_src else []) + [
        ("this code", REPO_ROOT / "src")
    ]
    results: list[dict[str, Any]] = []
    try:
        for mode in args.modes.split(","):
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
            for _ in range(args.repeat):
                for name, src in codes:
                    profile = args.profile and name == "this code"
                    runs[name].append(
                        run_worker(
                            src,
                            state,
                            mode,
                            args.feeds,
                            root,
                            profile,
                            args.sections,
                            args.upload_every,
                        )
                    )
            reference = runs[codes[0][0]][0]["pages"]
            for name, _ in codes:
                cpu = [r["cpu_ms_per_feed"] for r in runs[name]]
                pages = runs[name][0]["pages"]
                results.append(
                    {
                        "mode": mode,
                        "code": name,
                        "ranker": runs[name][0]["ranker"],
                        "cpu_ms_per_feed": cpu,
                        "wall_ms_per_feed": [r["wall_ms_per_feed"] for r in runs[name]],
                        "pages_differ": first_difference(reference, pages),
                        "profile": runs[name][0]["profile"],
                        "sections_ms_per_feed": _median_sections(runs[name]),
                    }
                )
    finally:
        if args.state is None:
            shutil.rmtree(root, ignore_errors=True)
    payload["results"] = results
    payload["load_average_at_end"] = os.getloadavg()
    payload["finished_at"] = utc_now_iso()
    for r in results:
        if r["profile"]:
            console.print(f"[bold]{r['mode']}, {r['code']}[/]: cProfile, by own time")
            console.print(r["profile"])
    print_table(
        "A feed's CPU in process (ms per feed, each run; the pages against the first code's)",
        ["mode", "code", "ranker", "CPU ms/feed", "wall ms/feed", "pages"],
        [
            [
                r["mode"],
                r["code"],
                r["ranker"],
                " ".join(f"{x:.2f}" for x in r["cpu_ms_per_feed"]),
                " ".join(f"{x:.2f}" for x in r["wall_ms_per_feed"]),
                r["pages_differ"] or "identical",
            ]
            for r in results
        ],
    )
    if args.sections:
        for mode in dict.fromkeys(r["mode"] for r in results):
            of_mode = [r for r in results if r["mode"] == mode]
            names = list(dict.fromkeys(k for r in of_mode for k in r["sections_ms_per_feed"]))
            print_table(
                f"{mode}: CPU ms per feed in each part (the median of the runs)",
                ["part", *(r["code"] for r in of_mode)],
                [
                    [k, *(f"{r['sections_ms_per_feed'].get(k, float('nan')):.3f}" for r in of_mode)]
                    for k in names
                ],
            )
    console.print(f"load average {payload['load_average_at_start']} → {os.getloadavg()}")
    for r in results:
        r.pop("profile")
    path = write_json("feed_cpu_quick" if args.quick else "feed_cpu", payload)
    console.print(f"Wrote {path}")


if __name__ == "__main__":
    main()
