"""The cluster's throughput (issue 21): the highest open-loop feed rate with p99 <= 30 ms
(``count=10``, users with history) for 1, 2 and 4 API processes of ``fyp cluster up``
with the learned models on and the learner learning from a stream of events meanwhile,
and the embedded default (``fyp serve``, the same models and stream) in the same run;
then ingest through the cluster's API (batches of 500, closed loop, events acknowledged
per second) on a Redis of its own with ``appendfsync always`` against ``everysec``.

The cluster runs on a redis-server started here (``appendonly yes``) and a schema of its
own on the machine's PostgreSQL (``--postgres``), dropped after. The catalog and the
users' history go in through the API (``fyp.client``), once per deployment. Every
request of the load goes through ``fyp.client``. Also the CPU each role used per second
of the ladder's steps (API processes, learner, redis-server), what a model of scaling
needs. Prints a table and writes ``bench/results/cluster.json`` (``_quick``). Nothing
here asserts on timings; the machine is shared, so compare the rows of one run.

Ingest alone: ``--ingest-only`` (as ``--skip-feeds``), ``--ingest-apis N`` API processes
(2), ``--ingest-seconds S``; ``--baseline-src DIR`` runs each ingest row once more with the
``fyp`` package in ``DIR`` (``git archive main src | tar -x -C DIR/..``), alternated with
this checkout's, so a change is compared within one run. Each row has the CPU the API
processes and redis-server spent per acknowledged event, their idle CPU (measured for 3 s
before) taken off.

    python bench/cluster.py [--quick] [--videos 100000 --users 2000] [--probe]
    python bench/cluster.py --ingest-only [--ingest-apis 1] [--baseline-src /tmp/before/src]

Each step of the ladder asks for ``--seconds`` of feeds at its rate, and at least
``--min-feeds`` (200): a p99 needs a hundred answers or more to be other than the
slowest one. Each step also says how late this load generator itself sent its requests
(``late_ms``: from the scheduled time to the send) and the CPU it used.

``--probe`` puts ``bench/stall_probe`` in every API process (``fyp api``, ``fyp serve``):
its event loop's stalls (the loop answering nothing for 10 ms or more: how much of it
on a CPU, waiting for one, or blocked, and where) and the time of the rate limits'
Redis calls and the key checks, summed up per step of the ladder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import (
    SLO_P99_MS,
    Server,
    batches,
    console,
    exit_on_sigterm,
    free_port,
    machine_info,
    make_catalog,
    make_history,
    open_loop,
    print_table,
    proc_cpu_s,
    user_ids,
    utc_now_iso,
    with_load_generator_auth,
    write_json,
)
from fyp.client import FypClient
from fyp.learning.link import read_status
from fyp.types import Video, now_ms

MODELS = '[model]\nenabled = true\nlearner = "process"\n'
OPEN = "[privacy]\nrequire_registered_users = false\n"  # (the events' users: not signed up)
IDLE_S = 3.0  # how long ingest measures each process's CPU with no events coming
STREAM_PER_S = 200.0  # events/s posted while the ladder runs: the learner has work


# --------------------------------------------------------------------------- servers


class RedisServer:
    """A redis-server of this run on 127.0.0.1, its files in ``dir``; killed on exit."""

    def __init__(self, dir: Path, **options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(dir)]
        args += ["--save", ""]
        for k, v in options.items():
            args += [f"--{k}", v]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def redis_client(server: RedisServer) -> Any:
    """A client of this run's redis-server."""
    import redis

    return redis.Redis(port=server.port)


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """The store URL of a new schema on ``url``'s server, dropped after."""
    import psycopg

    schema = f"fyp_bench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}schema={schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


class Cluster:
    """``fyp cluster up --api N`` on a free port, until :meth:`stop`; ``base_url`` and
    ``headers`` as :class:`_common.Server`'s, so the same load reaches it."""

    def __init__(
        self,
        root: Path,
        n_api: int,
        event_log: str,
        store: str,
        channel: str,
        config: Path,
        learner: bool = True,
    ) -> None:
        from fyp.privacy.keys import bearer, create_key

        self.root, self.n_api, self.port = root, n_api, free_port()
        self.learner = learner
        self.probe_dir: Path | None = None  # (bench/stall_probe's folder, if probed)
        argv = [sys.executable, "-m", "fyp.cli", "cluster", "up", "--data-dir", str(root)]
        argv += ["--api", str(n_api), "--port", str(self.port), "--config", str(config)]
        argv += ["--event-log", event_log, "--store", store, "--model-channel", channel]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
        root.mkdir(parents=True, exist_ok=True)
        self._log = (root / "up.log").open("ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self.headers = bearer(create_key(root, label="bench", store_url=store)[1])
            self._wait_up(t0 + 900)
        except BaseException:  # (interrupted or failed while starting: not left running)
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout_s: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout_s)

    def _wait_up(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fyp cluster up exited; see {self.root / 'up.log'}")
            logs = [self.root / f"api-{i}.log" for i in range(self.n_api)]
            status = read_status(self.root / "api-0")
            learned = not self.learner or (status is not None and status.ready)
            serving = all(p.exists() and "fyp serving" in p.read_text() for p in logs)
            if serving and learned and self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError("the cluster did not start")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.base_url + "/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def pids(self) -> dict[str, int]:
        """``api-i`` (each), ``learner``, ``redis-limits`` (the rate limits' own
        redis-server, where ``fyp cluster up`` starts one): their process ids."""
        out: dict[str, int] = {}
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in path.read_text().split():
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"redis-server" in argv[0]:  # (the rate limits' own: a role of Redis)
                out["redis-limits"] = int(pid)
                continue
            n = sum(k.startswith("api") for k in out)
            out["learner" if b"learn" in argv else f"api-{n}"] = int(pid)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- load


class Stream(threading.Thread):
    """``events`` posted at ``rate`` per second (a batch every 0.1 s) through
    ``fyp.client`` until stopped: the learner's work while the ladder runs."""

    def __init__(self, server: Any, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.server, self.events, self.rate = server, events, rate
        self.stop_flag = threading.Event()
        self.acknowledged = self.posted = 0

    def run(self) -> None:
        with self.server.client() as http:
            client = FypClient(http=http)
            t0 = time.perf_counter()
            while not self.stop_flag.wait(0.1) and self.posted < len(self.events):
                due = min(int(self.rate * (time.perf_counter() - t0)), len(self.events))
                batch = self.events[self.posted : due]
                self.posted = due
                if batch:
                    self.acknowledged += client.send_events(batch).accepted


def video_json(v: Video) -> dict[str, Any]:
    """A catalog video as the API takes it."""
    out: dict[str, Any] = {"video_id": v.video_id, "creator_id": v.creator_id}
    out |= {"duration_ms": v.duration_ms, "hashtags": list(v.hashtags), "caption": v.caption}
    out |= {"created_at": v.created_at, "language": v.language}
    if v.sound_id is not None:
        out["sound_id"] = v.sound_id
    return out


def load_data(server: Any, cat: Any, history: list[dict[str, Any]]) -> float:
    """The catalog and the history through the API; seconds."""
    t0 = time.perf_counter()
    with server.client(timeout_s=300.0) as http:
        client = FypClient(http=http)
        client.upsert_videos([video_json(v) for v in cat.videos])
        for part in batches(history, 5_000):
            result = client.send_events(list(part), batch_size=500)
            if result.rejected:
                raise RuntimeError(f"history rejected: {result.rejected[:3]}")
    return time.perf_counter() - t0


def wait_learned(data_dir: Path, timeout_s: float = 900.0) -> float:
    """Until the learner (its status in ``data_dir``) has learned the whole log; s."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        status = read_status(data_dir)
        if status is not None and status.ready and status.offset >= max(status.log_end, 1):
            return time.perf_counter() - t0
        time.sleep(0.5)
    return float("nan")


PROBE = Path(__file__).parent / "stall_probe"


def probe_into(folder: Path | None) -> None:
    """The API processes started from now on probed into ``folder`` (None: not)."""
    if folder is None:
        os.environ.pop("STALL_PROBE_DIR", None)
        return
    os.environ["STALL_PROBE_DIR"] = str(folder)
    path = os.environ.get("PYTHONPATH", "")
    if str(PROBE) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PROBE), *filter(None, [path])])


def read_probes(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("probe-*.json")):
        with contextlib.suppress(ValueError, OSError):
            out.append(json.loads(path.read_text()))
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def probe_step(folder: Path, seen: dict[int, tuple[int, dict[str, int]]]) -> dict[str, Any]:
    """What the probes recorded since ``seen`` (per process: stalls and calls already
    counted, updated here): the stalls by kind, their commonest stacks, the calls' times."""
    stalls: list[dict[str, Any]] = []
    calls: dict[str, list[float]] = {}
    for p in read_probes(folder):
        n_stalls, n_calls = seen.get(p["pid"], (0, {}))
        stalls += p["stalls"][n_stalls:]
        for name, times in p["calls"].items():
            calls.setdefault(name, []).extend(times[n_calls.get(name, 0) :])
        seen[p["pid"]] = (len(p["stalls"]), {k: len(v) for k, v in p["calls"].items()})
    stacks: dict[str, float] = {}
    on_cpu: dict[str, float] = {}  # (the loop's own work: what a quiet machine sees too)
    for s in stalls:
        for stack, n in s["stacks"][:1]:
            stacks[stack] = stacks.get(stack, 0.0) + s["wall_ms"] * n / max(n, 1)
            on_cpu[stack] = on_cpu.get(stack, 0.0) + s["cpu_ms"]
    return {
        "stalls": len(stalls),
        "stall_ms": {
            k: round(sum(s[f"{k}_ms"] for s in stalls), 1)
            for k in ("wall", "cpu", "runq", "blocked")
        },
        "longest_ms": max((s["wall_ms"] for s in stalls), default=0.0),
        "top_stacks": sorted(stacks.items(), key=lambda kv: -kv[1])[:5],
        # Stalls in which the loop's thread itself ran this long (ms on its CPU clock):
        # they make the p99 whatever else runs on the machine.
        "on_cpu_stalls": {f">={t}": sum(s["cpu_ms"] >= t for s in stalls) for t in (10, 20, 30)},
        "top_on_cpu_stacks": sorted(on_cpu.items(), key=lambda kv: -kv[1])[:5],
        "calls_ms": {k: _quantiles(v) for k, v in calls.items()},
    }


def cpu(pids: dict[str, int]) -> dict[str, float]:
    return {k: proc_cpu_s(p) or 0.0 for k, p in pids.items()}


def step_feeds(rate: float, args: argparse.Namespace) -> int:
    """Feeds asked for in a step of ``rate``: ``args.seconds`` of them, and at least
    ``args.min_feeds`` (the p99 of 50 answers, 5 s at 10 feeds/s, is their slowest:
    one stall made a low rate's row)."""
    return max(int(rate * args.seconds), args.min_feeds)


def ladder(
    server: Any,
    pids: dict[str, int],
    users: list[str],
    stream: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A warm-up, then the ladder's rates with the stream flowing; each step's latency
    and the CPU seconds per second of each role."""
    open_loop(server, [(20.0, users[:100])])  # warm-up
    probed: dict[int, tuple[int, dict[str, int]]] = {}
    folder = getattr(server, "probe_dir", None)
    if folder is not None:
        time.sleep(2.5)  # (the probes' files rewritten: the warm-up's part set aside)
        probe_step(folder, probed)
    poster = Stream(server, stream, STREAM_PER_S)
    poster.start()
    began = time.perf_counter()
    # The stream alone, no feeds: what each role spends per second whatever the feed
    # rate (timers, polls, the fold of every event); a step's CPU per feed is this
    # spread over its feeds plus the feeds' own.
    time.sleep(1.0)
    before, t0 = cpu(pids), time.perf_counter()
    time.sleep(args.seconds)
    after, wall = cpu(pids), time.perf_counter() - t0
    idle = {k: (after[k] - before[k]) / wall for k in pids}
    api_idle = sum(v for k, v in idle.items() if k.startswith(("api", "server")))
    console.print(
        f"    no feeds (the stream only): API {api_idle:.3f} CPU s/s; "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(idle.items()))
        + f"; load {os.getloadavg()[0]:.1f}"
    )
    rows = []
    offset = 100
    for rate in args.ladder:
        n = step_feeds(rate, args)
        picked = [users[(offset + i) % len(users)] for i in range(n)]
        offset += n
        before, t0 = cpu(pids), time.perf_counter()
        (row,) = open_loop(server, [(rate, picked)])
        wall = time.perf_counter() - t0
        after = cpu(pids)
        row["cpu_s_per_s"] = {k: (after[k] - before[k]) / wall for k in pids}
        api = sum(after[k] - before[k] for k in pids if k.startswith(("api", "server")))
        row["api_cpu_ms_per_feed"] = api / max(n, 1) * 1e3
        row["load_average"] = list(os.getloadavg())
        rows.append(row)
        slowest = ", ".join(f"{x['ms']:.0f} @ {x['at_s']:.1f}" for x in row["slowest"][:3])
        console.print(
            f"    {rate:,.0f} feeds/s: p50 {row['latency_ms'].get('p50', float('nan')):.1f}"
            f" p99 {row['latency_ms'].get('p99', float('nan')):.1f} ms,"
            f" failed {row['failed']}, API CPU {row['api_cpu_ms_per_feed']:.1f} ms/feed,"
            f" load {row['load_average'][0]:.1f}; client late p99"
            f" {row['late_ms'].get('p99', float('nan')):.1f} ms,"
            f" CPU {row['client_cpu_s_per_s']:.2f} s/s; slowest (ms @ s into the step): {slowest}"
        )
        if folder is not None:
            time.sleep(2.5)
            row["probe"] = probe = probe_step(folder, probed)
            console.print(f"      stalls: {probe['stalls']} {probe['stall_ms']}")
            for name, q in probe["calls_ms"].items():
                console.print(f"      {name}: {q}")
            for stack, ms in probe["top_stacks"][:3]:
                console.print(f"      {ms:.0f} ms in {stack[:300]}")
            console.print(f"      on-CPU stalls: {probe['on_cpu_stalls']}")
            for stack, ms in probe["top_on_cpu_stacks"][:3]:
                console.print(f"      {ms:.0f} ms on CPU in {stack[:300]}")
        past = row["latency_ms"].get("p99", float("inf")) > 4 * SLO_P99_MS or row["failed"]
        if past and not args.every_step:
            break  # (far past it: higher rates only queue more)
    poster.stop_flag.set()
    poster.join()
    streamed_s = time.perf_counter() - began
    within = [r["rate"] for r in rows if r["latency_ms"].get("p99", 1e9) <= SLO_P99_MS]
    return {
        "ladder": rows,
        "idle_cpu_s_per_s": idle,
        "idle_api_cpu_s_per_s": api_idle,
        "max_rate_at_slo": max(within, default=0.0),
        "stream_acknowledged_per_s": poster.acknowledged / streamed_s,
    }


# --------------------------------------------------------------------------- ingest


def _ingest_main(base_url: str, headers: dict[str, str], seconds: float, seed: int, q: Any) -> None:
    """One client process: batches of 500 new events, closed loop, for ``seconds``."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as http:
        client = FypClient(http=http)
        acked = batches_sent = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        n = 0
        while time.perf_counter() - t0 < seconds:
            batch = []
            for _ in range(500):
                n += 1
                batch.append(
                    {
                        "event_id": f"ingest-{seed}-{n}",
                        "user_id": f"i{(seed * 7_919 + n) % 10_000:05d}",
                        "video_id": f"v{(n * 31) % 1_000:07d}",
                        "type": "view",
                        "ts": now_ms(),
                        "watch_ms": 5_000,
                    }
                )
            acked += client.send_events(batch).accepted
            batches_sent += 1
        q.put((acked, batches_sent, time.perf_counter() - t0, time.process_time() - cpu0))


def ingest(
    root: Path,
    store: str,
    fsync: str,
    args: argparse.Namespace,
    src: Path | None = None,
    n_api: int = 2,
) -> dict[str, Any]:
    """Events/s acknowledged through ``fyp cluster up --api n_api`` (the
    learned models off) on a Redis of its own with ``appendfsync`` ``fsync``;
    ``args.ingest_clients`` client processes, each sending batches of 500 closed loop.
    Also the CPU each role spent per acknowledged event, which depends less than the
    rate on the share of the machine the run got. ``src``: the ``fyp`` package the
    cluster runs (an earlier commit's ``src``, for a before/after in the same run)."""
    name = f"ingest-{n_api}-{fsync}" + ("" if src is None else "-baseline")
    redis = RedisServer(root / f"redis-{name}", appendonly="yes", appendfsync=fsync)
    config = root / f"{name}.toml"
    config.write_text("[model]\nenabled = false\n" + OPEN)
    config = Path(with_load_generator_auth({"FYP_CONFIG": str(config)}, config)["FYP_CONFIG"])
    log = redis.url("bench") + f"&durability={'always' if fsync == 'always' else 'everysec'}"
    cluster = None
    saved = os.environ.get("PYTHONPATH")
    try:
        if src is not None:  # (the cluster's processes inherit it)
            os.environ["PYTHONPATH"] = str(src)
        try:
            cluster = Cluster(
                root / name, n_api, log, store, redis.url("bench-models"), config, False
            )
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        cat = make_catalog(1_000, now_ms(), seed=3)
        with cluster.client(timeout_s=300) as http:
            FypClient(http=http).upsert_videos([video_json(v) for v in cat.videos])
        time.sleep(1.5)  # (in force in every process)
        pids = {**cluster.pids(), "redis": redis.proc.pid}
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        # What each process spends with no events coming (its timers, polls and
        # reconciliations), taken off what it spent under load: per event, that fixed
        # cost would weigh more the slower the machine let the run go.
        t_idle, idle_before = time.perf_counter(), cpu(pids)
        time.sleep(IDLE_S)
        before = cpu(pids)
        idle_wall = time.perf_counter() - t_idle
        idle = {k: (before[k] - idle_before[k]) / idle_wall for k in pids}
        procs = [
            ctx.Process(
                target=_ingest_main,
                args=(cluster.base_url, cluster.headers, args.ingest_seconds, i, q),
            )
            for i in range(args.ingest_clients)
        ]
        stats = redis_client(redis)
        stats.config_resetstat()  # (the commands of the load alone)
        for p in procs:
            p.start()
        got = [q.get(timeout=args.ingest_seconds + 300) for _ in procs]
        for p in procs:
            p.join()
        after = cpu(pids)
        acked = sum(g[0] for g in got)
        wall = max(g[2] for g in got)
        used = {k: after[k] - before[k] for k in pids}
        busy = {k: max(0.0, used[k] - idle[k] * wall) for k in pids}
        api_s = sum(v for k, v in busy.items() if k.startswith("api"))
        commands = stats.info("commandstats")
        stats.close()
        return {
            "appendfsync": fsync,
            "src": "this checkout" if src is None else str(src),
            "clients": args.ingest_clients,
            "api_processes": n_api,
            "events_acknowledged": acked,
            "seconds": wall,
            "events_per_s": acked / wall,
            "cpu_s_per_s": {k: v / wall for k, v in used.items()},
            "idle_cpu_s_per_s": idle,
            # Idle taken off. (The API processes fold the log as it grows: their folding
            # during the run is in it, what was left to fold after it is not.)
            "api_cpu_us_per_event": 1e6 * api_s / max(acked, 1),
            "redis_cpu_us_per_event": 1e6
            * (busy["redis"] + busy.get("redis-limits", 0.0))
            / max(acked, 1),
            # (the load generator's share of the same cores: building, sending, parsing)
            "clients_cpu_us_per_event": 1e6 * sum(g[3] for g in got) / max(acked, 1),
            # Redis commands per acknowledged event, by command (those inside scripts
            # too), and the microseconds Redis timed them for: wall time inside the
            # command, which a loaded machine stretches (compare within a run).
            "redis_calls_per_event": {
                k.removeprefix("cmdstat_"): v["calls"] / max(acked, 1) for k, v in commands.items()
            },
            "redis_command_us_per_event": {
                k.removeprefix("cmdstat_"): v["usec"] / max(acked, 1) for k, v in commands.items()
            },
            "loadavg_after": list(os.getloadavg()),
        }
    finally:
        if cluster is not None:
            cluster.stop()
        redis.stop()


# --------------------------------------------------------------------------- main


def _python_path(src: Path, probe_folder: Path | None) -> str:
    """The PYTHONPATH of processes that run the ``fyp`` package at ``src`` (the stall
    probe first where one records into ``probe_folder``)."""
    return os.pathsep.join([*([str(PROBE)] if probe_folder is not None else []), str(src)])


def embedded(
    root: Path,
    config: Path,
    cat: Any,
    history: list[dict[str, Any]],
    users: list[str],
    stream: list[dict[str, Any]],
    args: argparse.Namespace,
    src: Path | None = None,
    name: str = "embedded",
) -> dict[str, Any]:
    """The embedded default's row: ``fyp serve``, its learner a process of its own;
    ``src``: the ``fyp`` package it runs (an earlier commit's, for a before/after in the
    same run), this checkout's if None."""
    data = root / name
    data.mkdir()
    folder = root / f"probe-{name}" if args.probe else None
    probe_into(folder)
    env = {"FYP_CONFIG": str(config)}
    if src is not None:  # (the server and its learner import fyp from there)
        env["PYTHONPATH"] = _python_path(src, folder)
    with Server(data, root / f"{name}.log", env=env) as server:
        server.probe_dir = folder  # type: ignore[attr-defined]
        loaded = load_data(server, cat, history)
        caught = wait_learned(data)
        console.print(f"  embedded: loaded in {loaded:.0f} s, learned in {caught:.0f} s")
        assert server.proc is not None
        pids = {"server": server.proc.pid}
        status = read_status(data)
        if status is not None:
            pids["learner"] = status.pid
        row: dict[str, Any] = {"deployment": "embedded (fyp serve)", "api_processes": 1}
        row["src"] = "this checkout" if src is None else str(src)
        row |= ladder(server, pids, users, stream, args)
        return row


def cluster_row(
    root: Path,
    n_api: int,
    redis: RedisServer,
    store: str,
    config: Path,
    cat: Any,
    history: list[dict[str, Any]],
    users: list[str],
    stream: list[dict[str, Any]],
    args: argparse.Namespace,
    src: Path | None,
    load: bool,
) -> dict[str, Any]:
    """A row of ``fyp cluster up --api n_api`` on ``redis`` and ``store`` (shared by every
    cluster of the run: ``load``, the first, puts the catalog and the history in);
    ``src``: the ``fyp`` package its processes run (None: this checkout's)."""
    name = f"cluster-{n_api}" + ("" if src is None else "-baseline")
    folder = root / f"probe-{name}" if args.probe else None
    probe_into(folder)
    saved = os.environ.get("PYTHONPATH")
    if src is not None:  # (the cluster's processes inherit it)
        os.environ["PYTHONPATH"] = _python_path(src, folder)
    try:
        cluster = Cluster(
            root / name,
            n_api,
            redis.url("bench"),
            store,
            redis.url(f"bench-models-{name}"),
            config,
        )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    cluster.probe_dir = folder
    try:
        if load:
            loaded = load_data(cluster, cat, history)
            console.print(f"  cluster: loaded in {loaded:.0f} s")
        caught = wait_learned(cluster.root / "api-0")
        console.print(f"  {name}: started in {cluster.startup_s:.0f} s, learned in {caught:.0f} s")
        time.sleep(2.0)
        pids = {**cluster.pids(), "redis": redis.proc.pid}
        row: dict[str, Any] = {"deployment": f"fyp cluster up --api {n_api}"}
        row |= {"api_processes": n_api, "startup_s": cluster.startup_s}
        row["src"] = "this checkout" if src is None else str(src)
        row |= ladder(cluster, pids, users, stream, args)
        return row
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--videos", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--apis", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-feeds", action="store_true")
    parser.add_argument("--ingest-only", action="store_true", help="as --skip-feeds")
    parser.add_argument(
        "--ingest-apis", type=int, nargs="+", default=[2], help="API processes for ingest"
    )
    parser.add_argument("--ingest-seconds", type=float, help="each ingest run's length")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run every row (embedded, clusters, ingest) with the fyp package in this"
        " src dir (git archive main src), alternated with this checkout's",
    )
    parser.add_argument("--rounds", type=int, default=1, help="embedded rows per code, alternated")
    parser.add_argument("--skip-clusters", action="store_true", help="the embedded row only")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--probe", action="store_true", help="the API processes' stalls")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--ladder", type=float, nargs="+", help="the rates (feeds/s)")
    parser.add_argument("--seconds", type=float, help="per rate")
    parser.add_argument(
        "--every-step",
        action="store_true",
        help="every rate of the ladder, past 4x the SLO too (the CPU per feed at fixed"
        " rates, old and new, on a loaded machine)",
    )
    parser.add_argument(
        "--min-feeds", type=int, default=200, help="per rate, at least (p99 needs them)"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    args.videos = args.videos or (10_000 if args.quick else 100_000)
    args.users = args.users or (500 if args.quick else 2_000)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    if not args.ladder:
        args.ladder = [10, 25, 50, 100, 150, 200]
        if not args.quick:
            args.ladder += [300, 400]
    args.ingest_seconds = args.ingest_seconds or (8.0 if args.quick else 20.0)
    args.skip_feeds = args.skip_feeds or args.ingest_only
    args.ingest_clients = 4
    views = 20
    now = now_ms()
    cat = make_catalog(args.videos, now)
    history = make_history(cat, args.users, views, now)
    # A stream of its own for each deployment (the clusters share one log: events sent
    # again would be stored once and learned from by no one).
    ladder_s = sum(step_feeds(rate, args) / rate for rate in args.ladder)
    per_user = int(STREAM_PER_S * ladder_s / args.users) + 2

    def streams(k: int) -> list[dict[str, Any]]:
        return make_history(cat, args.users, per_user, now, seed=10 + k)

    users = user_ids(args.users)
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-cluster-"))
    out: dict[str, Any] = {
        "bench": "cluster",
        "when": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": args.videos,
            "users": args.users,
            "history_events": len(history),
            "ladder": args.ladder,
            "seconds_per_step": args.seconds,
            "min_feeds_per_step": args.min_feeds,
            "slo_p99_ms": SLO_P99_MS,
            "stream_events_per_s": STREAM_PER_S,
            "quick": args.quick,
        },
        "feeds": [],
        "ingest": [],
    }
    console.print(
        f"cluster bench: {args.videos:,} videos, {args.users:,} users, "
        f"{len(history):,} history events; load average {os.getloadavg()}"
    )
    try:
        if not args.skip_feeds:
            config = root / "models.toml"
            config.write_text(MODELS + OPEN)
            config = Path(
                with_load_generator_auth({"FYP_CONFIG": str(config)}, config)["FYP_CONFIG"]
            )
            codes: list[Path | None] = [None]
            if args.baseline_src is not None:
                codes.append(args.baseline_src.resolve())
            if not args.skip_embedded:
                for k in range(args.rounds):
                    for j, src in enumerate(codes if k % 2 == 0 else codes[::-1]):
                        row = embedded(
                            root,
                            config,
                            cat,
                            history,
                            users,
                            streams(0),
                            args,
                            src,
                            f"embedded-{k}-{j}",
                        )
                        row["round"] = k
                        out["feeds"].append(row)
            if not args.skip_clusters:
                redis = RedisServer(root / "redis-feeds", appendonly="yes", appendfsync="always")
                try:
                    with postgres_schema(args.postgres) as store:
                        k = 0
                        for i, n_api in enumerate(args.apis):
                            # (this checkout's and the baseline's, alternated: the load
                            # changes over a run)
                            for src in codes if i % 2 == 0 else codes[::-1]:
                                k += 1
                                row = cluster_row(
                                    root,
                                    n_api,
                                    redis,
                                    store,
                                    config,
                                    cat,
                                    history,
                                    users,
                                    streams(k),
                                    args,
                                    src,
                                    load=k == 1,
                                )
                                out["feeds"].append(row)
                finally:
                    redis.stop()
        if not args.skip_ingest:
            with postgres_schema(args.postgres) as store:
                srcs: list[Path | None] = [None]
                if args.baseline_src is not None:
                    srcs.append(args.baseline_src.resolve())
                runs = [
                    (n, fsync, src)
                    for n in args.ingest_apis
                    for fsync in ("always", "everysec")
                    for src in srcs  # (alternated: the load changes over a run)
                ]
                for n_api, fsync, src in runs:
                    row = ingest(root, store, fsync, args, src, n_api)
                    console.print(
                        f"  ingest, {n_api} API, appendfsync {fsync}, {row['src']}: "
                        f"{row['events_per_s']:,.0f}/s, API "
                        f"{row['api_cpu_us_per_event']:.1f} µs/event, redis "
                        f"{row['redis_cpu_us_per_event']:.1f} µs/event, clients "
                        f"{row['clients_cpu_us_per_event']:.1f} µs/event"
                    )
                    mix = sorted(row["redis_calls_per_event"].items(), key=lambda kv: -kv[1])
                    console.print(
                        "    redis commands per event: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in mix if v >= 0.01)
                    )
                    out["ingest"].append(row)
    finally:
        out["machine"]["loadavg_at_end"] = list(os.getloadavg())
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(out)
    path = write_json("cluster_quick" if args.quick else "cluster", out)
    console.print(f"wrote {path}")


def report(out: dict[str, Any]) -> None:
    rows = []
    for r in out["feeds"]:
        # The CPU of the highest rate within the SLO, else of the lowest rate tried.
        best = next(
            (s for s in r["ladder"] if s["rate"] == r["max_rate_at_slo"]),
            r["ladder"][0] if r["ladder"] else None,
        )
        roles = (best or {}).get("cpu_s_per_s", {})
        src = r.get("src", "this checkout")
        rows.append(
            [
                r["deployment"] + ("" if src == "this checkout" else f" ({src})"),
                f"{r['max_rate_at_slo']:,.0f}",
                " / ".join(
                    f"{s['rate']:.0f}:{s['latency_ms'].get('p99', float('nan')):.0f}"
                    for s in r["ladder"]
                ),
                "—" if best is None else f"{best['api_cpu_ms_per_feed']:.1f}",
                f"{r.get('idle_api_cpu_s_per_s', float('nan')):.3f}",
                ", ".join(f"{k} {v:.2f}" for k, v in sorted(roles.items())),
            ]
        )
    print_table(
        "Feeds at p99 <= 30 ms (count=10, the learner learning meanwhile)",
        [
            "deployment",
            "feeds/s at SLO",
            "rate:p99 ms per step",
            "API CPU ms/feed",
            "API CPU s/s, no feeds",
            "CPU s/s by role",
        ],
        rows,
    )
    print_table(
        "Ingest through the cluster's API (batches of 500)",
        [
            "appendfsync",
            "fyp",
            "API processes",
            "events/s acknowledged",
            "API CPU µs/event",
            "redis CPU µs/event",
            "clients",
            "CPU s/s",
        ],
        [
            [
                r["appendfsync"],
                r.get("src", "this checkout"),
                str(r.get("api_processes", 2)),
                f"{r['events_per_s']:,.0f}",
                f"{r.get('api_cpu_us_per_event', float('nan')):.1f}",
                f"{r.get('redis_cpu_us_per_event', float('nan')):.1f}",
                str(r["clients"]),
                ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu_s_per_s"].items())),
            ]
            for r in out["ingest"]
        ],
    )


if __name__ == "__main__":
    main()
