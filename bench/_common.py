"""Shared pieces of the benchmarks: a synthetic catalog and event history built with
numpy, a ``fyp serve`` subprocess that is always terminated, a load-generating client
that runs in its own process, percentiles, rich tables and JSON results.

Nothing here asserts on timings: the programs measure and report.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from fyp.types import Video

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

console = Console()
if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
    console = Console(width=200)


# --------------------------------------------------------------------------- numbers


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p95, p99, max of latencies in ms (nearest-rank on the sorted
    samples, via numpy's ``inverted_cdf``, so a percentile is always a measured value)."""
    if len(samples_ms) == 0:
        return {"count": 0}
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99], method="inverted_cdf")
    return {
        "count": len(a),
        "mean": float(a.mean()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(a.max()),
    }


class GcWatch:
    """Counts the garbage collector's runs and pauses while active (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses_ms[info["generation"]].append((time.perf_counter() - self._t0) * 1e3)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "collections": len(p),
                "total_ms": float(sum(p)),
                "max_ms": float(max(p)) if p else 0.0,
            }
            for g, p in self.pauses_ms.items()
        }


def ms(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# --------------------------------------------------------------------------- output


def smaps_rollup(pid: int | None) -> dict[str, float] | None:
    """A process's memory in MB from ``/proc/PID/smaps_rollup`` (Linux 4.14+): RSS, PSS
    (shared pages divided among their sharers), USS (its private pages: what it alone
    costs), the shared pages; and the peak RSS (``VmHWM``, ``/proc/PID/status``)."""
    if pid is None:
        return None
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in rollup.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            kb[parts[0][:-1]] = int(parts[1])
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            kb["VmHWM"] = int(line.split()[1])
    return {
        "rss": kb.get("Rss", 0) / 1024,
        "pss": kb.get("Pss", 0) / 1024,
        "uss": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024,
        "shared": (kb.get("Shared_Clean", 0) + kb.get("Shared_Dirty", 0)) / 1024,
        "anonymous": kb.get("Anonymous", 0) / 1024,
        "peak_rss": kb.get("VmHWM", 0) / 1024,
    }


def machine_info(data_root: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
    }
    if data_root is not None:
        info["data_root"] = str(data_root)
        info["data_root_fs"] = filesystem_of(data_root)
    return info


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    if not dirty.stdout.strip():
        return out.stdout.strip()
    # Uncommitted changes under src/: name them by a hash of the diff.
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--", "src"], cwd=REPO_ROOT, capture_output=True, timeout=10
    ).stdout
    return f"{out.stdout.strip()}+src-diff-{hashlib.sha1(diff).hexdigest()[:10]}"


def filesystem_of(path: Path) -> str | None:
    """The filesystem type holding ``path`` (fsync costs differ: ext4 vs tmpfs)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt, fstype = parts[1], parts[2]
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, best_type = mnt, fstype
    return best_type


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None
) -> None:
    table = Table(title=title, caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- synthetic data


@dataclass
class Catalog:
    """A synthetic catalog: ``videos`` plus the arrays events are drawn from."""

    videos: list[Video]
    video_ids: list[str]
    durations: np.ndarray  # ms, int64
    topic: np.ndarray  # int64: hidden, used only to give users coherent tastes
    n_topics: int


def make_catalog(n: int, now: int, seed: int = 0, n_topics: int = 30) -> Catalog:
    """``n`` videos: one creator per 20 videos on average, one sound per 50 (10% have
    none), 1-4 hashtags from a 2,000-tag vocabulary (plus ``#fyp`` on a third), uploads
    spread over 30 days with 3% in the last 24 h, durations log-normal around 20 s."""
    rng = np.random.default_rng(seed)
    n_creators = max(n // 20, 1)
    n_sounds = max(n // 50, 1)
    n_tags = 2_000
    topic = rng.integers(0, n_topics, size=n)
    creator = rng.integers(0, n_creators, size=n)
    # Sounds with a long-tailed popularity.
    sound = np.minimum((n_sounds * rng.random(n) ** 2.0).astype(np.int64), n_sounds - 1)
    no_sound = rng.random(n) < 0.10
    durations = np.clip(rng.lognormal(math.log(20_000), 0.8, size=n), 5_000, 180_000).astype(
        np.int64
    )
    age = rng.random(n) * 30 * DAY_MS
    recent = rng.random(n) < 0.03
    age[recent] = rng.random(int(recent.sum())) * DAY_MS
    created = (now - age).astype(np.int64)
    n_tag = rng.integers(1, 5, size=n)
    # Tags lean to the video's topic: tag = topic-block + zipf-ish offset.
    tag_offsets = np.minimum((n_tags / n_topics * rng.random((n, 4)) ** 2.0).astype(np.int64), 65)
    fyp_tag = rng.random(n) < 0.33
    videos: list[Video] = []
    ids: list[str] = []
    block = n_tags // n_topics
    for i in range(n):
        vid = f"v{i:07d}"
        ids.append(vid)
        t = int(topic[i])
        tags = tuple(dict.fromkeys(f"#t{t * block + int(o)}" for o in tag_offsets[i, : n_tag[i]]))
        if fyp_tag[i]:
            tags = ("#fyp", *tags)
        videos.append(
            Video(
                video_id=vid,
                creator_id=f"c{int(creator[i]):06d}",
                duration_ms=int(durations[i]),
                sound_id=None if no_sound[i] else f"s{int(sound[i]):05d}",
                hashtags=tags,
                caption=f"video {i}",
                language="en",
                created_at=int(created[i]),
            )
        )
    return Catalog(videos, ids, durations, topic.astype(np.int64), n_topics)


def _pick_videos(rng: np.random.Generator, cat: Catalog, user_topic: np.ndarray) -> np.ndarray:
    """One video row per entry of ``user_topic``: 70% from the user's topic, 30% from the
    whole catalog, both with a long-tailed popularity (low rows are the popular ones)."""
    n = len(cat.video_ids)
    k = len(user_topic)
    # Videos of topic t, in row order, are found through a sorted index.
    order = np.argsort(cat.topic, kind="stable")
    starts = np.searchsorted(cat.topic[order], np.arange(cat.n_topics))
    ends = np.searchsorted(cat.topic[order], np.arange(cat.n_topics), side="right")
    sizes = np.maximum(ends - starts, 1)
    t = user_topic
    within = np.minimum((sizes[t] * rng.random(k) ** 2.5).astype(np.int64), sizes[t] - 1)
    topical = order[np.minimum(starts[t] + within, n - 1)]
    anywhere = np.minimum((n * rng.random(k) ** 2.5).astype(np.int64), n - 1)
    return np.where(rng.random(k) < 0.7, topical, anywhere)


def make_history(
    cat: Catalog,
    n_users: int,
    views_per_user: int,
    now: int,
    seed: int = 1,
    user_prefix: str = "u",
) -> list[dict[str, object]]:
    """Synthetic events of ``n_users`` users (``views_per_user`` views each plus likes,
    shares, follows, comments and a few "not interested"), as API dicts, sorted by ``ts``.

    Each user watches in one session that starts in the last three days and ends before
    ``now``; views are 5-40 s apart. ``watch_ms`` is a skip (0.3-2 s, 30%), a partial view
    (20-95%, 40%) or a finished one (95-200%, 30%): never over 10x the duration.
    """
    rng = np.random.default_rng(seed)
    n_views = n_users * views_per_user
    user = np.repeat(np.arange(n_users), views_per_user)
    user_topic = rng.integers(0, cat.n_topics, size=n_users)
    rows = _pick_videos(rng, cat, user_topic[user])
    gaps = rng.integers(5_000, 40_000, size=(n_users, views_per_user))
    session_len = gaps.sum(axis=1)
    start = now - HOUR_MS - session_len - (rng.random(n_users) * 3 * DAY_MS).astype(np.int64)
    ts = (start[:, None] + np.cumsum(gaps, axis=1)).reshape(-1)
    dur = cat.durations[rows]
    kind = rng.random(n_views)
    ratio = np.where(
        kind < 0.3,
        0.0,
        np.where(kind < 0.7, rng.uniform(0.2, 0.95, n_views), rng.uniform(0.95, 2.0, n_views)),
    )
    watch = np.where(kind < 0.3, rng.integers(300, 2_000, n_views), (ratio * dur).astype(np.int64))
    watch = np.minimum(watch, 10 * dur)
    engaged = kind >= 0.3
    like = engaged & (rng.random(n_views) < 0.12)
    share = engaged & (rng.random(n_views) < 0.02)
    follow = engaged & (rng.random(n_views) < 0.01)
    comment = engaged & (rng.random(n_views) < 0.02)
    not_interested = (kind < 0.3) & (rng.random(n_views) < 0.01)

    events: list[tuple[int, dict[str, object]]] = []
    vids = cat.video_ids
    for i in range(n_views):
        uid = f"{user_prefix}{int(user[i]):06d}"
        vid = vids[int(rows[i])]
        t = int(ts[i])
        base = f"h{seed}-{i}"
        events.append(
            (
                t,
                {
                    "event_id": base,
                    "user_id": uid,
                    "video_id": vid,
                    "type": "view",
                    "ts": t,
                    "watch_ms": int(watch[i]),
                    "surface": "for_you",
                },
            )
        )
        for flag, typ, dt in (
            (like[i], "like", 1_000),
            (share[i], "share", 1_500),
            (follow[i], "follow", 2_000),
            (comment[i], "comment", 2_500),
            (not_interested[i], "not_interested", 500),
        ):
            if flag:
                events.append(
                    (
                        t + dt,
                        {
                            "event_id": f"{base}-{typ}",
                            "user_id": uid,
                            "video_id": vid,
                            "type": typ,
                            "ts": t + dt,
                        },
                    )
                )
    events.sort(key=lambda te: te[0])
    return [e for _, e in events]


def user_ids(n_users: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n_users)]


def batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


# --------------------------------------------------------------------------- server


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``finally`` blocks (which stop the server
    subprocess and remove the data dirs) run when the benchmark is terminated."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def with_load_generator_auth(env: Mapping[str, str], log_path: Path) -> dict[str, str]:
    """``env`` with ``FYP_CONFIG`` naming a settings file that lifts the rate limits
    (``LOAD_GENERATOR_AUTH``): a benchmark drives the server through one key, far past a
    deployment's per-key limit. A settings file of the caller's that has an ``[auth]``
    table is used as it is: it chose its limits."""
    from fyp.config import LOAD_GENERATOR_AUTH

    given = env.get("FYP_CONFIG")
    text = Path(given).read_text() if given else ""
    if "[auth]" in text:
        return dict(env)
    text += "\n[auth]\n" + "".join(f"{k} = {v}\n" for k, v in LOAD_GENERATOR_AUTH.items())
    path = log_path.with_name(log_path.name + ".toml")
    path.write_text(text)
    return {**env, "FYP_CONFIG": str(path)}


class Server:
    """``fyp serve`` on 127.0.0.1 and a free port, in a subprocess with its own process
    group. ``startup_s`` is from spawn to the first 200 from ``/healthz`` (imports,
    catalog load and replay of the event log). Always use it as a context manager.

    Its rate limits are lifted (:func:`with_load_generator_auth`) unless ``env``'s
    ``FYP_CONFIG`` sets ``[auth]`` itself."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
        store: str | None = None,
    ) -> None:
        """``store``: the store URL the server's config names, where it names one (its
        key is made there, where the server looks keys up)."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.env = with_load_generator_auth(env or {}, log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.startup_s = float("nan")
        # A key with every scope, as a deployment's app would hold: every benchmarked
        # request pays for authentication, as in production.
        from fyp.privacy.keys import bearer, create_key

        self.headers = bearer(create_key(data_dir, label="bench", store_url=store)[1])

    def client(self, timeout_s: float = 30.0) -> Any:
        """An ``httpx.Client`` of this server, with its key."""
        import httpx

        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout_s)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        try:
            for _attempt in range(3):
                if self._start():
                    return self
                self._stop()  # died (port taken?) or timed out: try another port
        except BaseException:  # interrupted while starting: __exit__ will not run
            self._stop()
            raise
        raise RuntimeError(f"fyp serve did not start; see {self.log_path}")

    def _start(self) -> bool:
        import httpx

        self.port = free_port()
        t0 = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fyp.cli",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        deadline = t0 + self.timeout_s
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            while time.perf_counter() < deadline and self.proc.poll() is None:
                try:
                    if client.get("/healthz").status_code == 200:
                        self.startup_s = time.perf_counter() - t0
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def cpu_s(self) -> float | None:
        return None if self.proc is None else proc_cpu_s(self.proc.pid)

    def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: uvicorn shuts down gracefully (lifespan closes the engine).
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except BaseException:  # timed out, or interrupted again while waiting
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise


def register_users(engine: Any, events: Sequence[Mapping[str, Any]]) -> int:
    """Create the users of ``events`` (residency: a deployment takes events only of the
    users it homes), in one write, as sign-ups before the benchmark would have."""
    return int(engine.register_users(sorted({str(e["user_id"]) for e in events})))


def ingest_all(engine: Any, events: Sequence[Mapping[str, Any]], now: int) -> int:
    """Create the users of ``events`` and ingest them in chunks; returns how many were
    accepted. A rejected event is the benchmark's own bug: raised, never skipped."""
    register_users(engine, events)
    accepted = 0
    for chunk in batches(events, 5_000):
        result = engine.ingest(chunk, now=now)
        if result.rejected:
            raise RuntimeError(f"synthetic events rejected: {result.rejected[:3]}")
        accepted += int(result.accepted)
    return accepted


def scrape_route_seconds(
    base_url: str, route: str, method: str, headers: Mapping[str, str]
) -> tuple[float, float]:
    """(sum of seconds, count) of the server's own latency histogram for one route, as
    timed by the app's metrics middleware (after HTTP parsing, before the socket write).
    ``headers``: a key (``/metrics`` needs one unless ``auth.metrics_public``)."""
    import httpx

    resp = httpx.get(f"{base_url}/metrics", headers=dict(headers), timeout=10)
    resp.raise_for_status()
    text = resp.text
    want = f'method="{method}",route="{route}"'
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("fyp_http_request_seconds_sum") and want in line:
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("fyp_http_request_seconds_count") and want in line:
            count = float(line.rsplit(" ", 1)[1])
    return total, count


# --------------------------------------------------------------------------- client process


@dataclass
class Job:
    method: str  # GET or POST
    path: str
    body: bytes | None = None


@dataclass
class LoadResult:
    """What a client process measured over the timed phase (warm-up excluded)."""

    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    requests: int = 0
    accepted: int = 0  # events acknowledged (POST /v1/events, status 200)
    items: int = 0  # feed items returned (GET /v1/feed)
    empty_feeds: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    stopped_by_time: bool = False


def _run_phase(
    jobs: Sequence[Job],
    concurrency: int,
    max_seconds: float | None,
    clients: list[Any],
) -> LoadResult:
    import orjson

    counter = itertools.count()
    lock = threading.Lock()
    result = LoadResult()
    start_gate = threading.Barrier(concurrency + 1)
    stop_at: list[float] = [math.inf]

    def worker(client: Any) -> None:
        lat: list[float] = []
        statuses: dict[int, int] = {}
        errors = accepted = items = empty = done = 0
        start_gate.wait()
        while True:
            i = next(counter)
            if i >= len(jobs) or time.perf_counter() >= stop_at[0]:
                break
            job = jobs[i]
            t0 = time.perf_counter()
            try:
                if job.method == "GET":
                    resp = client.get(job.path)
                else:
                    resp = client.post(
                        job.path, content=job.body, headers={"content-type": "application/json"}
                    )
                body = resp.content
            except Exception:  # a transport error: counted, not timed
                errors += 1
                done += 1
                continue
            dt = (time.perf_counter() - t0) * 1000.0
            done += 1
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 200:
                lat.append(dt)
                if job.path.startswith("/v1/events"):
                    accepted += int(orjson.loads(body)["accepted"])
                elif job.path.startswith("/v1/feed"):
                    n = len(orjson.loads(body)["items"])
                    items += n
                    empty += n == 0
        with lock:
            result.latencies_ms.extend(lat)
            for k, v in statuses.items():
                result.statuses[k] = result.statuses.get(k, 0) + v
            result.errors += errors
            result.accepted += accepted
            result.items += items
            result.empty_feeds += empty
            result.requests += done

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if max_seconds is not None:
        stop_at[0] = t0 + max_seconds
    start_gate.wait()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    result.client_cpu_s = time.process_time() - cpu0
    result.stopped_by_time = max_seconds is not None and result.wall_s >= max_seconds
    return result


def client_main(conn: Any) -> None:
    """Run in a separate process. Receives ``(base_url, phases, concurrency)`` on
    ``conn``; runs ``concurrency`` threads, each with its own keep-alive
    ``httpx.Client``; for each phase runs the warm-up jobs, then the timed jobs (closed
    loop: each thread sends its next request when the previous one is answered); sends
    back ``("ok", [LoadResult, ...])`` or ``("error", why)``."""
    import httpx

    try:
        base_url, phases, concurrency, headers = conn.recv()
        clients = [
            httpx.Client(
                base_url=base_url,
                headers=headers,
                timeout=60.0,
                limits=httpx.Limits(max_connections=1),
            )
            for _ in range(concurrency)
        ]
        out: list[LoadResult] = []
        for warmup, timed, max_seconds in phases:
            if warmup:
                _run_phase(warmup, concurrency, None, clients)
            out.append(_run_phase(timed, concurrency, max_seconds, clients))
        for c in clients:
            c.close()
        conn.send(("ok", out))
    except BaseException as exc:  # report, then let the parent decide
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def run_clients(
    base_url: str,
    phases: list[tuple[list[Job], list[Job], float | None]],
    concurrency: int,
    timeout_s: float = 900.0,
    headers: dict[str, str] | None = None,
) -> list[LoadResult]:
    """Run ``client_main`` in a fresh (spawned) process and return its results
    (``headers`` on every request: the server's key).

    The jobs go over the pipe after the process has started (not as ``Process`` args), so
    a client that dies early shows up as an error here rather than a hang."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=client_main, args=(child,), daemon=True)
    proc.start()
    child.close()
    try:
        parent.send((base_url, phases, concurrency, headers or {}))
        deadline = time.monotonic() + timeout_s
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"client process exited with code {proc.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"client process gave no result in {timeout_s:.0f} s")
        status, payload = parent.recv()
    except BaseException:
        proc.terminate()  # interrupted, died or timed out: do not wait for the load
        raise
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        parent.close()
    if status != "ok":
        raise RuntimeError(f"client process failed: {payload}")
    return list(payload)


# --------------------------------------------------------------------------- open loop

SLO_P99_MS = 30.0  # the feed's target: p99 of an open-loop request rate
FEED_COUNT = 10  # items a feed request asks for
OPEN_LOOP_WORKERS = 48  # client threads: enough that a slow answer does not delay the schedule


class Reachable(Protocol):
    """A server the load can reach: ``Server`` here, or a cluster's shared port."""

    @property
    def base_url(self) -> str: ...

    headers: dict[str, str]


def _open_loop_phase(
    base_url: str, headers: dict[str, str], rate: float, users: Sequence[str], count: int
) -> dict[str, Any]:
    """A feed of each of ``users`` (``count`` items) at ``rate`` per second on a fixed
    schedule, through ``fyp.client`` tried once; the latency of each is from its
    scheduled time to its answer (a late answer delays no later request).

    The schedule starts once every worker holds its client and an open connection (an
    app backend keeps its pool warm): built on the schedule, the clients (about 30 ms of
    CPU each, under one GIL, for an SSL context a plain-HTTP URL never uses) made the
    first second's requests late by up to the whole pool's construction, the p99 of a
    short low-rate step. ``late_ms``: from each request's scheduled time to a worker
    sending it (this load generator's own lateness: all workers busy, or no CPU for
    it); ``client_cpu_s_per_s``: its CPU over the step."""
    import httpx

    from fyp.client import NO_RETRIES, FypClient, FypError

    jobs: queue.SimpleQueue[tuple[float, str] | None] = queue.SimpleQueue()
    lock = threading.Lock()
    lat: list[float] = []
    late: list[float] = []
    slowest: list[tuple[float, float]] = []  # (ms, s into the phase) of the slowest answers
    bad = [0]
    ssl_context = httpx.create_ssl_context()  # (one for all: see above)
    ready = threading.Barrier(OPEN_LOOP_WORKERS + 1)
    unbuilt: list[Exception] = []

    def worker() -> None:
        try:
            http = httpx.Client(
                base_url=base_url, headers=headers, timeout=30.0, verify=ssl_context
            )
        except Exception as exc:
            unbuilt.append(exc)
            ready.abort()  # (the phase fails, rather than waits for this worker)
            return
        with http:
            client = FypClient(http=http, retries=NO_RETRIES)
            with contextlib.suppress(httpx.HTTPError):
                http.get("/healthz")  # (opens this worker's connection)
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
            while (job := jobs.get()) is not None:
                due, user = job
                sent = time.perf_counter()
                try:
                    client.feed(user, count=count)
                    ok = True
                except FypError:
                    ok = False
                done = time.perf_counter()
                with lock:
                    late.append((sent - due) * 1000)
                    if ok:
                        lat.append((done - due) * 1000)
                        slowest.append((lat[-1], due - t0))
                        if len(slowest) > 40:
                            slowest.sort(reverse=True)
                            del slowest[5:]
                    else:
                        bad[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(OPEN_LOOP_WORKERS)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(
            f"client threads not ready (built, connected) in 120 s: {unbuilt!r}"
        ) from None
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.2
    for i, user in enumerate(users):
        due = t0 + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        jobs.put((due, user))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    top = [{"ms": round(ms, 1), "at_s": round(at, 2)} for ms, at in sorted(slowest)[::-1][:5]]
    return {
        "rate": rate,
        "sent": len(users),
        "failed": bad[0],
        "latency_ms": percentiles(lat),
        "slowest": top,
        "late_ms": percentiles(late),
        "client_cpu_s_per_s": (time.process_time() - cpu0) / max(wall, 1e-9),
    }


def _open_loop_main(conn: Any) -> None:
    try:
        base_url, headers, phases, count = conn.recv()
        out = [_open_loop_phase(base_url, headers, rate, users, count) for rate, users in phases]
        conn.send(("ok", out))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def open_loop(
    server: Reachable, phases: list[tuple[float, Sequence[str]]], count: int = FEED_COUNT
) -> list[dict[str, Any]]:
    """The phases (rate per second, users whose feeds to ask for) one after another,
    from a client process of its own (so the client's CPU is not the server's)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_open_loop_main, args=(child,), daemon=True)
    proc.start()
    child.close()
    try:
        parent.send((server.base_url, server.headers, [(r, list(u)) for r, u in phases], count))
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"client process exited with code {proc.exitcode}")
        status, payload = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(payload)
    return list(payload)
