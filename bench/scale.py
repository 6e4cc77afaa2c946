"""The two processes of ``fyp serve`` at scale: the memory of each (and what of it is
duplicated), a feed's CPU in the serving process and the learner's examples per
CPU-second, with the learned models on.

Setup (timed, reported): the state of ``bench/feed_latency.py`` with the learned models
on (``--videos`` videos, ``--users`` users with ``--views`` views each), learned in
process, its checkpoint as the learner's (the server folds the log itself at its start,
as ``bench/learner.py`` does); a synthetic stream of new users for the learning phase.

1. *Live*: ``fyp serve`` (the learner a supervised child) on the built data dir; once
   the learner has published and caught up, the memory of each process from
   ``/proc/PID/smaps_rollup`` (RSS, PSS, USS = private pages, shared pages) and its
   peak RSS (``VmHWM``).
2. *Idle*: ``--feeds`` feeds at ``--rate`` per second, open loop over HTTP
   (count=10, 90% users with history, 10% new): the server's CPU per feed (its whole
   process: the measure that a loaded machine changes least), its own mean route time
   and the open-loop wall-clock percentiles (wall p99 needs a quiet machine).
3. *Learning*: as many feeds while the stream is posted at ``--learn-rate`` events/s: the
   server's CPU per feed then (its ingest and fold of the stream included), and the
   learner's examples per CPU-second of its own process (and per wall second). Then the
   memory of both again.
4. *Each role's state as the role opens it* (``--no-components`` skips it), after the
   live run: in a child process of its own, ``Engine.open`` as the server opens it (role
   ``serving``: it folds the log, its models a replica caught up from the learner's
   published snapshot and deltas) and as the learner does (role ``learner``: its
   checkpoint); the time to open, the process's RSS and USS after, and the bytes of each
   part of the engine (catalog, log state, user directory, the ANN index, the models,
   the pipeline, the rest), counted by walking its objects (numpy buffers and torch
   storages once each; an object reachable from two parts is counted in the first).
   What both roles hold is held twice: nothing is shared between the two interpreters
   but the pages of the files they map (libraries, mostly).

Prints tables and writes ``bench/results/scale.json`` (``scale_quick`` for ``--quick``;
``--tag`` adds a suffix). Nothing here asserts on timings.

    python bench/scale.py [--quick] [--videos 1000000 --users 20000 --views 20]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from _common import (
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    make_catalog,
    make_history,
    open_loop,
    print_table,
    proc_cpu_s,
    register_users,
    scrape_route_seconds,
    smaps_rollup,
    utc_now_iso,
    write_json,
)
from feed_latency import COUNT, build_state, request_users
from fyp.engine import LEARNER_CHECKPOINT_FILE
from fyp.storage.checkpoint import write_checkpoint
from fyp.types import now_ms
from learner import health, learner_progress, learner_status, wait_caught_up
from serve_learning import Poster

MB = 1024 * 1024

# --------------------------------------------------------------------------- memory


_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def part_bytes(parts: list[tuple[str, object]]) -> dict[str, int]:
    """The bytes reachable from each part without passing through another part's root,
    an object counted once (in the first part that reaches it): Python objects by
    ``sys.getsizeof`` (a numpy array that owns its buffer includes it), torch tensors by
    their storage (once per storage). Classes, modules and functions are not followed
    (code, not state); a part that is None counts nothing."""
    import numpy as np
    import torch

    seen: set[int] = set()
    storages: set[int] = set()
    roots = {id(root) for _, root in parts if root is not None}
    out: dict[str, int] = {}
    for name, root in parts:
        total = 0
        stack = [] if root is None else [root]
        while stack:
            obj = stack.pop()
            key = id(obj)
            if key in seen or isinstance(obj, _SKIP) or (key in roots and obj is not root):
                continue
            seen.add(key)
            if isinstance(obj, torch.Tensor):
                storage = obj.untyped_storage()
                if storage.data_ptr() not in storages:
                    storages.add(storage.data_ptr())
                    total += storage.nbytes()
                total += sys.getsizeof(obj)
                stack.extend(gc.get_referents(obj))
                continue
            total += sys.getsizeof(obj)
            if isinstance(obj, np.ndarray):
                if obj.base is not None:
                    stack.append(obj.base)
                continue  # (its elements are in its buffer, or objects of an object array)
            stack.extend(gc.get_referents(obj))
        out[name] = total
    return out


def _attributes(name: str, obj: object) -> list[tuple[str, object]]:
    """``obj``'s attributes as parts of their own (``name.attribute``), those that hold
    state (not numbers, strings or None)."""
    if obj is None or not hasattr(obj, "__dict__"):
        return []
    return [
        (f"{name}.{k}", v)
        for k, v in vars(obj).items()
        if v is not None and not isinstance(v, (bool, int, float, str, bytes))
    ]


def _role_main(data_dir: str, role: str, conn: Any) -> None:
    """A child process: open the engine as ``role`` does, report its memory and parts."""
    try:
        from fyp.config import ModelSettings, Settings
        from fyp.engine import Engine, serving_gc

        if role == "serving":
            serving_gc()
        before = smaps_rollup(os.getpid())
        settings = Settings(data_dir=Path(data_dir), model=ModelSettings(enabled=True))
        t0, cpu0 = time.perf_counter(), time.process_time()
        engine = Engine.open(settings, role=role)  # type: ignore[arg-type]
        if role == "serving":  # its models: the learner's last snapshot and deltas after
            from fyp.api.model_sync import ModelSync
            from fyp.learning.link import channel_of

            ModelSync(engine, channel_of(settings)).catch_up()
        open_s, open_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        gc.collect()
        after = smaps_rollup(os.getpid())
        models: Any = engine.replica if engine.replica is not None else engine.models
        index = getattr(models, "index", None)
        parts: list[tuple[str, object]] = [
            ("catalog", engine.catalog),
            *_attributes("log_state", engine.state),
            ("log_state", engine.state),
            ("user_directory", engine.users),
            ("ann_index", index),
            *_attributes("models", models),
            ("models", models),
            ("pipeline", engine.pipeline),
            ("rest", engine),
        ]
        t0 = time.perf_counter()
        sizes = part_bytes(parts)
        conn.send(
            (
                "ok",
                {
                    "role": role,
                    "open_s": open_s,
                    "open_cpu_s": open_cpu_s,
                    "memory_mb_before_open": before,
                    "memory_mb_after_open": after,
                    "parts_mb": {k: v / MB for k, v in sizes.items()},
                    "walk_s": time.perf_counter() - t0,
                },
            )
        )
        engine.close()
    except BaseException as err:  # (reported to the parent, which raises)
        conn.send(("error", f"{type(err).__name__}: {err}"))


def role_state(data_dir: Path, role: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_role_main, args=(str(data_dir), role, child))
    proc.start()
    child.close()
    try:
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"{role}: child exited with code {proc.exitcode}")
        status, payload = parent.recv()
    finally:
        proc.join(timeout=120)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(f"{role}: {payload}")
    return dict(payload)


# --------------------------------------------------------------------------- live


def _memory(server: Server, data_dir: Path) -> dict[str, Any]:
    learner_pid = (learner_status(data_dir) or {}).get("pid")
    return {
        "server": smaps_rollup(server.proc.pid if server.proc else None),
        "learner": smaps_rollup(None if learner_pid is None else int(learner_pid)),
    }


def _feeds(server: Server, rate: float, users: list[str]) -> dict[str, Any]:
    s0, n0 = scrape_route_seconds(server.base_url, "/v1/feed", "GET", server.headers)
    cpu0 = server.cpu_s()
    (row,) = open_loop(server, [(rate, users)], count=COUNT)
    cpu1 = server.cpu_s()
    s1, n1 = scrape_route_seconds(server.base_url, "/v1/feed", "GET", server.headers)
    # (the server's CPU includes answering the two scrapes: negligible beside the feeds)
    row["server_cpu_ms_per_feed"] = (
        float("nan") if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / len(users) * 1e3
    )
    row["server_route_mean_ms"] = (s1 - s0) / max(n1 - n0, 1) * 1e3
    return row


def live(
    data_dir: Path, root: Path, users: list[str], stream: list[dict[str, Any]], args: Any
) -> dict[str, Any]:
    config = root / "serve.toml"
    config.write_text('[model]\nenabled = true\nlearner = "process"\n')
    out: dict[str, Any] = {}
    with Server(data_dir, root / "server.log", env={"FYP_CONFIG": str(config)}) as server:
        out["server_startup_s"] = server.startup_s
        t0 = time.perf_counter()
        while (health(server)["learned_models"] or {}).get("version", 0) == 0:
            time.sleep(0.2)
        out["learner_ready_s"] = time.perf_counter() - t0
        out["caught_up_s"] = wait_caught_up(server, data_dir, True, 1800)
        time.sleep(3.0)
        out["memory_mb_ready"] = _memory(server, data_dir)
        console.print(f"  ready: {_mem_line(out['memory_mb_ready'])}")

        n = args.feeds
        out["idle"] = _feeds(server, args.rate, users[:n])
        console.print(
            f"  idle: {out['idle']['server_cpu_ms_per_feed']:.2f} ms CPU per feed, "
            f"p99 {out['idle']['latency_ms']['p99']:.1f} ms"
        )

        poster = Poster(server, stream, args.learn_rate)
        poster.start()
        time.sleep(1.0)
        progress0, t0 = learner_progress(data_dir), time.perf_counter()
        learning = _feeds(server, args.rate, users[n : 2 * n])
        progress1, wall = learner_progress(data_dir), time.perf_counter() - t0
        poster.stop_flag.set()
        poster.join()
        if progress0 is not None and progress1 is not None:
            examples = progress1[0] - progress0[0]
            learning["learner_examples"] = examples
            learning["learner_cpu_s"] = progress1[1] - progress0[1]
            learning["learner_examples_per_cpu_s"] = examples / max(
                progress1[1] - progress0[1], 1e-9
            )
            learning["learner_examples_per_s"] = examples / wall
        learning["posted_per_s"] = poster.acknowledged / max(poster.wall_s, 1e-9)
        learning["learner_lag_at_end"] = (health(server)["learned_models"] or {}).get("learner_lag")
        out["learning"] = learning
        console.print(
            f"  learning: {learning['server_cpu_ms_per_feed']:.2f} ms CPU per feed, learner "
            f"{learning.get('learner_examples_per_cpu_s', float('nan')):,.0f} examples/CPU-s"
        )
        out["catch_up_after_s"] = wait_caught_up(server, data_dir, True, 1800)
        out["memory_mb_end"] = _memory(server, data_dir)
        console.print(f"  end: {_mem_line(out['memory_mb_end'])}")
        status = learner_status(data_dir) or {}
        out["learner_cpu_s_total"] = None if "pid" not in status else proc_cpu_s(int(status["pid"]))
    return out


def _mem_line(mem: dict[str, Any]) -> str:
    return ", ".join(
        f"{who} RSS {m['rss']:,.0f} MB (USS {m['uss']:,.0f}, shared {m['shared']:,.0f})"
        for who, m in mem.items()
        if m is not None
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k videos, 2,000 users")
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000, help="users with history")
    ap.add_argument("--views", type=int, default=20, help="views per user with history")
    ap.add_argument("--feeds", type=int, default=1_000, help="feeds per phase")
    ap.add_argument("--rate", type=float, default=50.0, help="feeds/s, open loop")
    ap.add_argument("--learn-rate", type=float, default=2_000.0, help="events/s posted")
    ap.add_argument("--no-components", action="store_true", help="skip each role's parts")
    ap.add_argument("--tag", default="", help="a suffix of the JSON file's name")
    ap.add_argument("--data-root", type=Path, default=None)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.videos, args.users, args.views, args.feeds = 10_000, 2_000, 20, 300
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-scale-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "scale",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": args.videos,
            "users_with_history": args.users,
            "views_per_user": args.views,
            "count": COUNT,
            "feeds_per_phase": args.feeds,
            "rate": args.rate,
            "learn_rate": args.learn_rate,
        },
    }
    try:
        now = now_ms()
        base = root / "base"
        console.print(
            f"[bold]{args.videos:,} videos, {args.users:,} users x {args.views} views[/]: "
            "building the state (learned models on)"
        )
        t0 = time.perf_counter()
        engine, setup = build_state(base, args.videos, args.users, args.views, now, model=True)
        # The learning phase's stream: new users, a phase's worth and as much again.
        phase_s = args.feeds / args.rate
        stream_users = int(2 * args.learn_rate * (phase_s + 3) / args.views) + 1
        catalog = make_catalog(args.videos, now, seed=args.videos)
        stream = make_history(
            catalog, stream_users, args.views, now, seed=args.videos + 3, user_prefix="L"
        )
        for e in stream:
            e["event_id"] = f"L-{e['event_id']}"
        del catalog
        users = request_users(args.users, 2 * args.feeds, seed=args.videos + 10, tag="s")
        register_users(engine, stream)
        register_users(engine, [{"user_id": u} for u in users])
        # The learner restores this; the server folds the log (its fold has no models).
        write_checkpoint(base / LEARNER_CHECKPOINT_FILE, engine._payload())
        engine.close()
        del engine
        gc.collect()
        (base / "checkpoint.pkl").unlink(missing_ok=True)  # (the server folds the log)
        setup["build_s"] = time.perf_counter() - t0
        setup["data_dir_mb"] = sum(f.stat().st_size for f in base.rglob("*") if f.is_file()) / MB
        console.print(
            f"  built in {setup['build_s']:.0f} s (learn {setup['learn_s']:.0f} s, "
            f"{setup['learned_events']:,} events); data dir {setup['data_dir_mb']:,.0f} MB"
        )
        payload["setup"] = setup
        payload["live"] = live(base, root, users, stream, args)
        if not args.no_components:  # (after the live run: the learner has published)
            payload["roles"] = {}
            for role in ("serving", "learner"):
                row = role_state(base, role)
                payload["roles"][role] = row
                console.print(
                    f"  {role} opened in {row['open_s']:.0f} s: RSS "
                    f"{row['memory_mb_after_open']['rss']:,.0f} MB"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload["finished_at"] = utc_now_iso()
    payload["loadavg_at_end"] = list(os.getloadavg())
    _print(payload)
    name = ("scale_quick" if args.quick else "scale") + (f"_{args.tag}" if args.tag else "")
    path = write_json(name, payload)
    console.print(f"Wrote {path}")


def _f(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _print(payload: dict[str, Any]) -> None:
    p = payload["params"]
    size = f"{p['videos']:,} videos, {p['users_with_history']:,} users x {p['views_per_user']}"
    lv = payload["live"]
    rows = []
    for when in ("memory_mb_ready", "memory_mb_end"):
        for who in ("server", "learner"):
            m = lv[when][who]
            if m is None:
                continue
            rows.append(
                [
                    f"{who} ({'ready' if when.endswith('ready') else 'after learning'})",
                    _f(m["rss"]),
                    _f(m["pss"]),
                    _f(m["uss"]),
                    _f(m["shared"]),
                    _f(m["peak_rss"]),
                ]
            )
    print_table(
        f"Memory of each process, MB ({size})",
        ["process", "RSS", "PSS", "USS", "shared", "peak RSS"],
        rows,
    )
    roles = payload.get("roles")
    if roles:
        serving, learner = roles["serving"]["parts_mb"], roles["learner"]["parts_mb"]
        names = list(dict.fromkeys([*serving, *learner]))
        shown = [n for n in names if max(serving.get(n, 0.0), learner.get(n, 0.0)) >= 1.0]
        print_table(
            f"Each role's state as it opens it, MB ({size}; parts under 1 MB in both left out)",
            ["part", "serving", "learner"],
            [[n, _f(serving.get(n)), _f(learner.get(n))] for n in shown]
            + [
                [
                    "process RSS after open",
                    _f(roles["serving"]["memory_mb_after_open"]["rss"]),
                    _f(roles["learner"]["memory_mb_after_open"]["rss"]),
                ],
                [
                    "process RSS before open (imports)",
                    _f(roles["serving"]["memory_mb_before_open"]["rss"]),
                    _f(roles["learner"]["memory_mb_before_open"]["rss"]),
                ],
                [
                    "sum of the parts",
                    _f(sum(serving.values())),
                    _f(sum(learner.values())),
                ],
                ["open s", _f(roles["serving"]["open_s"]), _f(roles["learner"]["open_s"])],
            ],
        )
    rows = []
    for phase in ("idle", "learning"):
        r = lv[phase]
        rows.append(
            [
                phase,
                _f(r["server_cpu_ms_per_feed"], 2),
                _f(r["server_route_mean_ms"], 2),
                _f(r["latency_ms"]["p50"], 1),
                _f(r["latency_ms"]["p99"], 1),
                _f(r.get("learner_examples_per_cpu_s")),
                _f(r.get("learner_examples_per_s")),
            ]
        )
    print_table(
        f"Serving and learning ({size}; {p['rate']:.0f} feeds/s open loop, "
        f"{p['learn_rate']:,.0f} events/s posted while learning; wall times on a shared machine)",
        [
            "phase",
            "server CPU ms/feed",
            "server route mean ms",
            "wall p50 ms",
            "wall p99 ms",
            "learner examples/CPU-s",
            "learner examples/s",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
