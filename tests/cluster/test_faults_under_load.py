"""Faults under load: ``fyp cluster up`` (two API processes on one port and a learner)
over a Redis server of the test's own (``appendonly yes``, ``appendfsync always``) and a
PostgreSQL server of its own, while a client sends feeds and event batches on a
schedule through ``fyp.client`` and counts what it saw (200s, 503s with Retry-After,
connections reset, anything else). Each test does one fault:

- ``kill -9`` of one API process: the other keeps answering; the only failures are
  connections reset (the killed process's), never an error status;
- ``kill -9`` of the learner: it is started again, resumes from its checkpoint, and what
  it serves is what a replay of the whole log learns (every event learned exactly once);
- Redis killed and started again from its AOF, and PostgreSQL stopped (immediate, as a
  crash) and started again: while down, every answer is a 200 or a 503 with a
  Retry-After, none hangs, none is a 500 or a reset; the processes recover by themselves.

After each, the batches the load could not get acknowledged are sent again (idempotent by
``event_id``), and every acknowledged event is in the log exactly once. The cluster is
shared by the module's tests (its start is most of their time); each test waits for it
to be whole before its fault, so the tests run in any order."""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from fyp.api.model_sync import ModelSync
from fyp.client import FypClient, RetryPolicy
from fyp.client.calls import NO_RETRIES
from fyp.client.errors import ApiError, UnreachableError
from fyp.config import LOAD_GENERATOR_AUTH, Settings, load_settings
from fyp.engine import Engine
from fyp.events.redis_log import RedisEventLog
from fyp.learning.link import channel_of, read_status
from fyp.privacy.keys import create_key
from fyp.types import now_ms
from learned_models import assert_serves
from postgres_servers import PostgresServer
from redis_servers import RedisServer
from server_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.faults]  # (make test-faults; CI runs it)

N_VIDEOS = 200
N_USERS = 40
FEEDS_PER_S = 20.0
BATCHES_PER_S = 4.0
BATCH = 50  # events a batch
HANG_S = 10.0  # an answer slower than this is a hang (the pool's wait is 5 s)
# A request is answered within this when nothing is down (the slowest seen: about 0.1 s).
IN_FLIGHT_S = 0.5
# A server's time down: past the key cache's staleness (RECHECK_S, 2 s: its refresher
# kept the entries fresh until the server went down, and a feed needs PostgreSQL for
# nothing else) and the pool's wait for a connection, so requests do meet the fault.
DOWN_S = 4.5
RECOVER_S = 30.0  # from a server back (or a process restarted) to answering again
START_S = 120.0

CONFIG = f"""
checkpoint_every_events = 400

[model]
enabled = true
warmup_examples = 200
retrieval_warmup = 50
ranker_batch = 64
retrieval_batch = 32
min_count = 1
publish_interval_s = 0.1
poll_interval_s = 0.1

[privacy]
require_registered_users = false

[auth]
{"".join(f"{k} = {v}{chr(10)}" for k, v in LOAD_GENERATOR_AUTH.items())}
"""


# --------------------------------------------------------------------------- the load


@dataclass
class Seen:
    """One answer (or failure) the load saw: when (monotonic s), of what, what."""

    at: float
    kind: str  # "feed" or "events"
    outcome: str  # "200", "503" (with a Retry-After), "reset", "timeout", "HTTP n", ...
    took_s: float  # from its scheduled time


@dataclass
class Load:
    """Feeds (``count=10``) and event batches sent on a fixed schedule from threads of
    their own, each answer classified; every call tried once (``NO_RETRIES``), so what
    a client saw is counted as it happened."""

    url: str
    key: str
    videos: list[str]
    seen: list[Seen] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    unacked: list[list[dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def start(self) -> Load:
        self._stop.clear()
        for kind, rate, workers in (("feed", FEEDS_PER_S, 4), ("events", BATCHES_PER_S, 2)):
            jobs: queue.SimpleQueue[float | None] = queue.SimpleQueue()
            self._threads.append(threading.Thread(target=self._schedule, args=(jobs, rate)))
            self._threads += [
                threading.Thread(target=self._work, args=(kind, jobs, workers))
                for _ in range(workers)
            ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(HANG_S * 3)
            assert not t.is_alive(), "a load thread hangs"
        self._threads.clear()

    def _schedule(self, jobs: queue.SimpleQueue[float | None], rate: float) -> None:
        t0 = time.monotonic()
        for i in itertools.count():
            due = t0 + i / rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            jobs.put(due)
        for _ in range(4):
            jobs.put(None)

    def _work(self, kind: str, jobs: queue.SimpleQueue[float | None], workers: int) -> None:
        with FypClient(self.url, self.key, retries=NO_RETRIES, timeout_s=HANG_S) as client:
            while (due := jobs.get()) is not None:
                outcome = self._feed(client) if kind == "feed" else self._events(client)
                at = time.monotonic()
                with self._lock:
                    self.seen.append(Seen(at, kind, outcome, at - due))

    def _feed(self, client: FypClient) -> str:
        n = next(self._ids)
        return outcome(lambda: client.feed(f"u{n % N_USERS}", count=10))

    def batch(self) -> list[dict[str, Any]]:
        out = []
        for _ in range(BATCH):
            n = next(self._ids)
            watched = 15_000 if n % 3 else 400
            out.append(
                {
                    "event_id": f"chaos-{os.getpid()}-{n}",
                    "user_id": f"u{n % N_USERS}",
                    "video_id": self.videos[(n * 7) % len(self.videos)],
                    "type": "view",
                    "ts": now_ms(),
                    "watch_ms": watched,
                }
            )
        return out

    def _events(self, client: FypClient) -> str:
        events = self.batch()
        result: list[Any] = []
        said = outcome(lambda: result.append(client.send_events(events)))
        with self._lock:
            if said != "200":
                self.unacked.append(events)
            elif result[0].rejected:
                self.unacked.append(events)
                return f"rejected {result[0].rejected[:1]}"
            else:
                self.acked.update(e["event_id"] for e in events)
        return said

    def send_the_rest(self) -> None:
        """The batches not acknowledged during the load, sent again until they are
        (what an app does: an event sent twice is stored once)."""
        with FypClient(self.url, self.key, retries=RetryPolicy(attempts=20)) as client:
            for events in self.unacked:
                assert not client.send_events(events).rejected
                self.acked.update(e["event_id"] for e in events)
        self.unacked.clear()

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        with self._lock:
            return Counter(f"{s.kind} {s.outcome}" for s in self.seen if since <= s.at < until)

    def slowest(self, since: float = 0.0, until: float = float("inf")) -> dict[str, float]:
        """The longest wait (s) for each kind and outcome."""
        out: dict[str, float] = {}
        with self._lock:
            for s in self.seen:
                if since <= s.at < until:
                    k = f"{s.kind} {s.outcome}"
                    out[k] = round(max(out.get(k, 0.0), s.took_s), 2)
        return out

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        return {k.split(" ", 1)[1] for k in self.counts(since, until)}


DETAILS: list[str] = []  # the API's messages of the errors the load saw, for the report


def outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except ApiError as err:
        DETAILS.append(f"{time.monotonic():.2f} {err}")
        if err.status_code == 503:
            return "503" if err.retry_after is not None else "503 without Retry-After"
        return f"HTTP {err.status_code}"
    except UnreachableError as err:
        if isinstance(err.__cause__, httpx.TimeoutException):
            return "timeout"
        return "reset"  # (refused, reset or closed before an answer)
    return "200"


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """``fyp cluster up --api 2`` with the learned models on, over its own servers."""

    def __init__(self, root: Path, unavailable: Callable[[str], NoReturn]) -> None:
        self.root = root
        self.redis = RedisServer(
            root / "redis", unavailable, appendonly="yes", appendfsync="always"
        )
        self.pg = PostgresServer(unavailable)
        self.event_log = f"{self.redis.url}?prefix=chaos"
        self.channel = f"{self.redis.url}?prefix=chaos-models"
        self.config = root / "fyp.toml"
        self.config.write_text(CONFIG)
        self.dir = root / "cluster"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
        argv = [sys.executable, "-m", "fyp.cli", "cluster", "up", "--data-dir", str(self.dir)]
        argv += ["--event-log", self.event_log, "--store", self.pg.url, "--api", "2"]
        argv += ["--port", str(self.port), "--model-channel", self.channel]
        argv += ["--config", str(self.config)]
        self._out = (root / "up.log").open("wb")
        self.up = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_S
        while not (self.dir / "api-0").exists():
            assert self.up.poll() is None, self.said()
            assert time.monotonic() < deadline, "no cluster directory"
            time.sleep(0.1)
        self.key = create_key(self.dir, label="chaos", store_url=self.pg.url)[1]
        self.wait_whole(deadline)
        self.videos = [f"v{i}" for i in range(N_VIDEOS)]
        with FypClient(self.url, self.key) as client:
            made = now_ms() - 86_400_000
            client.upsert_videos(
                [
                    {"video_id": v, "creator_id": f"c{i % 20}", "duration_ms": 20_000}
                    | {"hashtags": [f"#t{i % 7}"], "created_at": made}
                    for i, v in enumerate(self.videos)
                ]
            )
        time.sleep(1.5)  # (in force in every process within 1 s: the other's catalog too)

    def said(self) -> str:
        return (self.root / "up.log").read_text()

    def settings(self, data_dir: Path, **model: Any) -> Settings:
        """The cluster's settings, in a data dir of the caller's."""
        env = {
            "FYP_EVENT_LOG": self.event_log,
            "FYP_STORE": self.pg.url,
            "FYP_MODEL_CHANNEL": self.channel,
            "FYP_SECRET_FILE": str(self.dir / "pseudonym.secret"),
        }
        settings = load_settings(self.config, {"data_dir": data_dir}, environ=env)
        return settings.model_copy(update={"model": settings.model.model_copy(update=model)})

    def children(self) -> dict[str, int]:
        """``api-0``, ``api-1``, ``learner``: their process ids."""
        out = {}
        for pid in Path(f"/proc/{self.up.pid}/task/{self.up.pid}/children").read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"learn" in argv:
                out["learner"] = int(pid)
            elif b"api" in argv:
                out[argv[argv.index(b"--data-dir") + 1].decode().rsplit("/", 1)[1]] = int(pid)
        return out

    def wait_whole(self, deadline: float) -> None:
        """Until both API processes serve and the learner is up and caught up."""
        while True:
            assert self.up.poll() is None, self.said()
            assert time.monotonic() < deadline, f"the cluster is not whole: {self.said()}"
            status = read_status(self.dir / "api-0")
            logs = [self.dir / f"api-{i}.log" for i in range(2)]
            served = all(p.exists() and "fyp serving" in p.read_text() for p in logs)
            if (
                served
                and set(self.children()) == {"api-0", "api-1", "learner"}
                and status is not None
                and status.ready
                and status.pid == self.children()["learner"]
                and self.answers()
            ):
                return
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def log_counts(self) -> Counter[str]:
        log = RedisEventLog.from_url(self.event_log)
        try:
            out: Counter[str] = Counter()
            offset = 0
            while batch := log.read(offset, 5_000):
                out.update(e.event.event_id for e in batch)
                offset = batch[-1].offset
            return out
        finally:
            log.close()

    def close(self) -> None:
        if self.up.poll() is None:
            self.up.terminate()
            try:
                self.up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        self._out.close()
        self.pg.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, unavailable: Callable[[str], NoReturn]
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("chaos"), unavailable)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def load(cluster: Cluster) -> Iterator[Load]:
    """The load on a whole cluster; after the test, every acknowledged event (and every
    batch sent again) in the log exactly once."""
    cluster.wait_whole(time.monotonic() + START_S)
    run = Load(cluster.url, cluster.key, cluster.videos)
    yield run
    run.stop()
    run.send_the_rest()
    counts = cluster.log_counts()
    assert {i for i in run.acked if counts[i] != 1} == set()
    assert [i for i, n in counts.items() if n > 1] == []


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout_s, what
        time.sleep(0.05)
    return time.monotonic() - t0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------- the faults


def test_kill_9_of_an_api_process_fails_only_its_connections(cluster: Cluster, load: Load) -> None:
    load.start()
    time.sleep(1.5)
    victim = cluster.children()["api-1"]
    log = cluster.dir / "api-1.log"
    starts = log.read_text().count("fyp serving")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not _alive(victim), 10, "the killed process did not exit")
    wait_for(
        lambda: log.read_text().count("fyp serving") > starts,
        RECOVER_S,
        "api-1 was not started again",
    )
    back = time.monotonic()
    time.sleep(1.0)
    load.stop()
    before, during = load.counts(until=killed), load.counts(killed, back)
    print(
        f"before: {dict(before)}; while api-1 was down: {dict(during)}; after: "
        f"{dict(load.counts(back))}"
    )
    assert load.outcomes(until=killed) == {"200"}, (before, DETAILS)
    assert load.outcomes() <= {"200", "reset"}, load.counts()  # (never an error status)
    assert during["feed 200"] > 0 and during["events 200"] > 0, during  # the other served


def test_kill_9_of_the_learner_resumes_from_its_checkpoint_exactly_once(
    cluster: Cluster, load: Load, tmp_path: Path
) -> None:
    data = cluster.dir / "api-0"
    load.start()
    first = read_status(data)
    assert first is not None
    wait_for(
        lambda: (s := read_status(data)) is not None and s.offset > first.offset + 3 * BATCH,
        RECOVER_S,
        "the learner learns nothing",
    )
    wait_for(lambda: (data / "learner-checkpoint.pkl").exists(), RECOVER_S, "no checkpoint")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(
        lambda: (s := read_status(data)) is not None and s.pid != first.pid and s.ready,
        RECOVER_S * 2,
        "the learner was not started again",
    )
    time.sleep(1.0)
    load.stop()
    print(f"the load: {dict(load.counts())}")
    assert load.outcomes() == {"200"}, load.counts()  # (the API processes do not need it)
    load.send_the_rest()
    log = RedisEventLog.from_url(cluster.event_log)
    end = log.last_offset()
    log.close()
    # Settled: everything learned and published (the version unchanged for a while).
    last: list[int] = [-1, 0]

    def settled() -> bool:
        s = read_status(data)
        if s is None or s.offset < end:
            return False
        if s.version != last[0]:
            last[:] = [s.version, int(time.monotonic() * 1000)]
        return time.monotonic() * 1000 - last[1] > 800

    wait_for(settled, RECOVER_S * 2, "the learner did not catch up")
    server = Engine.open(cluster.settings(tmp_path / "serving"), role="serving")
    replay = Engine.open(
        cluster.settings(tmp_path / "replay", learner="in_process"), from_checkpoint=False
    )
    try:
        ModelSync(server, channel_of(server.settings)).catch_up()
        assert server.replica is not None and replay.models is not None
        assert replay.state.applied_offset == end
        assert_serves(server.replica, replay.models)
    finally:
        server.close()
        replay.close()


@pytest.mark.parametrize("which", ["redis", "postgresql"])
def test_a_server_restarted_gets_503s_with_retry_after_then_recovery(
    cluster: Cluster, load: Load, which: str
) -> None:
    stop, start = (
        (cluster.redis.kill, cluster.redis.start)
        if which == "redis"
        else (cluster.pg.stop, cluster.pg.start)
    )
    load.start()
    time.sleep(1.5)
    stop()
    down = time.monotonic()
    time.sleep(DOWN_S)
    start()
    back = time.monotonic()
    took = wait_for(
        lambda: load.counts(back)["events 200"] > 0,
        RECOVER_S,
        f"no events acknowledged since {which} came back: {dict(load.counts(back))}",
    )
    recovered = time.monotonic()
    time.sleep(2.0)
    load.stop()
    print(
        f"{which}: before {dict(load.counts(until=down))}; down {dict(load.counts(down, back))}; "
        f"back, until the first acknowledged batch ({took:.1f} s): "
        f"{dict(load.counts(back, recovered))}; after {dict(load.counts(recovered))}; "
        f"slowest: {load.slowest()}; said: {DETAILS[-5:]}"
    )
    # (a request sent in the moment before the stop may meet it: it counts as during)
    calm = down - IN_FLIGHT_S
    assert load.outcomes(until=calm) == {"200"}, (load.counts(until=calm), DETAILS)
    assert load.outcomes() <= {"200", "503"}, load.counts()  # (no 500, no hang, no reset)
    # It did see the fault (a request sent while the server was down may be answered once
    # it is back: it waited for a connection).
    assert "503" in load.outcomes(down, recovered), load.counts(down, recovered)
    assert load.outcomes(recovered + 1.0) == {"200"}, load.counts(recovered)
