"""A data dir with a server (role "serving") and its learner, small enough to train in a
second or two: the ``learning`` fixture. Tests compare what a server serves with what a
replay of the log learns (an engine that trains in process, role "all")."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fyp.api.model_sync import ModelSync
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.learning.learner import Learner, run
from fyp.learning.link import channel_of, learner_lock, read_status
from fyp.learning.supervisor import PARENT_ENV, SETTINGS_ENV
from fyp.model.online import OnlineModels
from fyp.model.replica import ModelReplica
from fyp.types import Video
from learned_models import assert_serves

NOW = 1_700_000_000_000
MODEL = {
    "enabled": True,
    "warmup_examples": 300,
    "retrieval_warmup": 100,
    "ranker_batch": 64,
    "retrieval_batch": 32,
    "min_count": 1,
    "publish_interval_s": 0.05,
    "poll_interval_s": 0.05,
    # At SCHED_IDLE a learner on a machine whose every core other work keeps busy gets no
    # CPU at all, and these tests wait for it: their learners run niced, as before
    # SCHED_IDLE (tests/learning/test_priority.py tests SCHED_IDLE itself).
    "learner_priority": "nice",
    "learner_nice": 10,
}
N_VIDEOS = 300
N_USERS = 50


class Learning:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.engines: list[Engine] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.settings = self.settings_for(self.data)

    @staticmethod
    def settings_for(data: Path, **overrides: Any) -> Settings:
        return load_settings(
            overrides={
                "data_dir": data,
                "privacy": {"require_registered_users": False},
                "model": MODEL,
                **overrides,
            },
            environ={},
        )

    def server(self, settings: Settings | None = None) -> Engine:
        engine = Engine.open(settings or self.settings, clock=lambda: NOW, role="serving")
        self.engines.append(engine)
        return engine

    def replay(self) -> OnlineModels:
        """What an engine that trains in process learns from the whole log, now (it
        reads the stores and writes nothing)."""
        engine = Engine.open(self.settings, clock=lambda: NOW, from_checkpoint=False)
        self.engines.append(engine)
        assert engine.models is not None
        return engine.models

    def catalog(self, server: Engine) -> None:
        server.upsert_videos(
            [
                Video(
                    f"v{i}",
                    f"c{i % 20}",
                    20_000,
                    hashtags=(f"t{i % 7}",),
                    created_at=NOW - 86_400_000,
                )
                for i in range(N_VIDEOS)
            ]
        )

    @staticmethod
    def events(start: int, n: int, seed: int) -> list[dict[str, object]]:
        """Views (users like creators of their own parity) with likes now and then."""
        rng = np.random.default_rng(seed)
        out: list[dict[str, object]] = []
        for k in range(start, start + n):
            u, v = int(rng.integers(0, N_USERS)), int(rng.integers(0, N_VIDEOS))
            liked = (v % 20) % 2 == u % 2
            out.append(
                {
                    "event_id": f"e{k}",
                    "user_id": f"u{u}",
                    "video_id": f"v{v}",
                    "type": "view",
                    "ts": NOW - 3_600_000 + k * 500,
                    "watch_ms": 20_000 if liked else 500,
                }
            )
            if liked and k % 3 == 0:
                out.append({**out[-1], "event_id": f"like{k}", "type": "like"})
                out[-1].pop("watch_ms")
        return out

    def ingest(self, server: Engine, start: int, n: int, seed: int = 0) -> None:
        events = self.events(start, n, seed)
        for i in range(0, len(events), 500):
            assert not server.ingest(events[i : i + 500], now=NOW).rejected
        server.learn()

    # -- learners ----------------------------------------------------------------------

    def learner_here(self) -> Iterator[Learner]:
        """A learner in this process (its lock held until the generator closes)."""
        with learner_lock(self.data, wait=True):
            learner = Learner(self.settings)
            try:
                yield learner
            finally:
                learner.close()

    def learner_thread(self) -> threading.Event:
        """A learner running in a thread of this process until the event is set
        (:meth:`running_learner` is it)."""
        stop = threading.Event()
        thread = threading.Thread(
            target=run, args=(self.settings, stop), kwargs={"on_start": self._started}
        )
        thread.start()
        self.threads.append((thread, stop))
        return stop

    def _started(self, learner: Learner) -> None:
        self._running = learner

    def running_learner(self) -> Learner:
        return self._running

    def learner_process(self, log_name: str = "learner.log") -> subprocess.Popen[bytes]:
        """A learner as ``fyp serve`` starts one: ``python -m fyp.learning``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
        env[SETTINGS_ENV] = self.settings.model_dump_json()
        env[PARENT_ENV] = str(os.getpid())
        with (self.root / log_name).open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fyp.learning"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def wait_settled(self, server: Engine, timeout_s: float = 60.0, apply: bool = True) -> None:
        """Until the running learner has learned the whole log and published all of it
        (its version unchanged for a while), and ``server`` has applied it (``apply``:
        applied here; else by the app's own poller, waited for)."""
        deadline = time.monotonic() + timeout_s
        end = server.event_log.follow()
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            status = read_status(self.data)
            if status is not None and status.ready and status.offset >= end:
                if status.version != last:
                    last, since = status.version, time.monotonic()
                elif time.monotonic() - since > 0.6:
                    assert server.replica is not None
                    if apply:
                        self.sync(server)
                    if server.replica.version == last:
                        return
            time.sleep(0.05)
        raise AssertionError(f"the learner did not settle: {read_status(self.data)}")

    def sync(self, server: Engine) -> int:
        return ModelSync(server, channel_of(self.settings)).catch_up()

    def close(self) -> None:
        for thread, stop in self.threads:
            stop.set()
            thread.join(30)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for engine in self.engines:
            engine.close()


def fingerprint(replica: ModelReplica) -> dict[str, Any]:
    """Everything a replica serves from, as plain values."""
    return {
        "version": replica.version,
        "tables": {
            name: sorted((i, t.vector(i).tobytes()) for i in t.ids())  # type: ignore[union-attr]
            for name, t in replica.tables.items()
        },
        "fallbacks": {
            name: t.vectors(np.array([-1])).tobytes() for name, t in replica.tables.items()
        },
        "dense": {k: w.tobytes() for k, w in sorted(replica.dense.items())},
        "index": sorted(replica.index.ids()),
        "examples": (replica.examples, replica.positives),
    }


def scan(root: Path, needles: Sequence[bytes]) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for needle in needles:
            if needle in data:
                found.setdefault(needle, []).append(str(path.relative_to(root)))
    return found


class Kit:
    """What the test modules reach through the fixture."""

    NOW = NOW
    fingerprint = staticmethod(fingerprint)
    assert_serves = staticmethod(assert_serves)
    scan = staticmethod(scan)


@pytest.fixture
def learning(tmp_path: Path) -> Iterator[Learning]:
    env = Learning(tmp_path)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def lkit() -> type[Kit]:
    return Kit
