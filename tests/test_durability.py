"""Durability: ``kill -9`` the server in the middle of ingestion. Every acknowledged event
must be in the log exactly once afterwards, every batch must be there whole or not at
all, and after a restart re-sending every batch must add each missing event once and
count the acknowledged ones as duplicates."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fyp.events.log import SqliteEventLog
from fyp.types import now_ms
from server_process import Server

pytestmark = pytest.mark.slow

BATCH = 200
N_VIDEOS = 50
RUN_BEFORE_KILL_S = 1.5


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a test starts; every one is stopped at teardown, whatever happened."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for srv in started:
            srv.stop()


def start(servers: list[Server], data_dir: Path, log_path: Path) -> Server:
    srv = Server(data_dir, log_path)
    servers.append(srv)
    srv.wait_ready()
    return srv


def make_batch(n: int) -> list[dict[str, Any]]:
    ts = now_ms()
    return [
        {
            "event_id": f"b{n:05d}-{j:03d}",
            "user_id": f"u{(n * BATCH + j) % 37}",
            "video_id": f"v{j % N_VIDEOS:03d}",
            "type": "view" if j % 4 else "like",
            "ts": ts,
            **({"watch_ms": 1_000 + j} if j % 4 else {}),
        }
        for j in range(BATCH)
    ]


@dataclass
class Sender:
    """Posts batches of fresh events back to back until the server goes away."""

    server: Server
    batches: list[list[dict[str, Any]]] = field(default_factory=list)  # every one sent
    acked: list[int] = field(default_factory=list)  # indices answered 200, all accepted
    in_flight: int | None = None  # the batch whose request the kill cut off
    error: BaseException | None = None
    sending: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.server.client(30.0) as client:
            while not self.stop.is_set():
                n = len(self.batches)
                batch = make_batch(n)
                self.batches.append(batch)
                self.sending.set()
                try:
                    resp = client.post("/v1/events", json={"events": batch})
                except httpx.TransportError as exc:
                    self.in_flight = n
                    self.error = exc
                    return
                body = resp.json()
                if resp.status_code != 200 or body["accepted"] != BATCH:
                    self.error = AssertionError(f"batch {n}: {resp.status_code} {body}")
                    return
                self.acked.append(n)


def kill_when(srv: Server, sender: Sender, moment: str, data_dir: Path) -> None:
    """``kill -9`` the server with a batch in flight: ``early``, 2 ms after it goes out
    (still being read or validated), or ``after_commit``, as soon as it is visible in the
    log (stored, most likely not yet acknowledged)."""
    sender.sending.clear()
    assert sender.sending.wait(timeout=10)
    n = len(sender.batches) - 1
    if moment == "early":
        time.sleep(0.002)
    else:
        first_id = sender.batches[n][0]["event_id"]
        log = SqliteEventLog(data_dir / "events.db")
        try:
            deadline = time.monotonic() + 10
            while not log.contains(first_id) and time.monotonic() < deadline:
                pass
        finally:
            log.close()
    srv.kill9()


@pytest.mark.parametrize("moment", ["early", "after_commit"])
def test_kill_9_mid_ingestion_loses_no_acknowledged_event(
    tmp_path: Path, servers: list[Server], moment: str
) -> None:
    data_dir = tmp_path / "data"
    srv = start(servers, data_dir, tmp_path / "serve-1.log")
    videos = [
        {"video_id": f"v{i:03d}", "creator_id": f"c{i % 7}", "duration_ms": 20_000}
        for i in range(N_VIDEOS)
    ]
    resp = httpx.post(
        srv.base_url + "/v1/videos", json={"videos": videos}, headers=srv.headers, timeout=30
    )
    assert resp.status_code == 200, resp.text

    sender = Sender(srv)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    try:
        time.sleep(RUN_BEFORE_KILL_S)
        kill_when(srv, sender, moment, data_dir)
    finally:
        sender.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert srv.proc.returncode == -signal.SIGKILL
    assert not isinstance(sender.error, AssertionError), sender.error
    assert len(sender.acked) >= 3, f"only {len(sender.acked)} batches acknowledged before the kill"
    acked_ids = [e["event_id"] for n in sender.acked for e in sender.batches[n]]

    # The store as the killed process left it (SQLite recovers its WAL on open).
    log = SqliteEventLog(data_dir / "events.db")
    try:
        stored = [logged.event.event_id for logged in log.iter_all()]
        assert log.count() == len(stored) == len(set(stored))  # nothing twice
        assert all(log.contains(eid) for eid in acked_ids)  # every acknowledged one
        sent_ids = {e["event_id"] for batch in sender.batches for e in batch}
        assert set(stored) <= sent_ids
        # Each batch is all there or not there at all.
        per_batch = [sum(log.contains(e["event_id"]) for e in b) for b in sender.batches]
        assert all(k in (0, BATCH) for k in per_batch), per_batch
        assert len(stored) == BATCH * sum(1 for k in per_batch if k == BATCH)
    finally:
        log.close()
    unacked = [n for n in range(len(sender.batches)) if n not in set(sender.acked)]
    landed = [n for n in unacked if per_batch[n] == BATCH]
    print(
        f"\nkill -9 ({moment}) after {len(sender.acked)} acknowledged batches of {BATCH}; "
        f"in flight: {sender.in_flight}; unacknowledged batches stored whole: {landed}, "
        f"absent: {[n for n in unacked if n not in landed]}"
    )

    # Restart on the same data dir and send everything again.
    srv2 = start(servers, data_dir, tmp_path / "serve-2.log")
    with srv2.client(30.0) as client:
        health = client.get("/healthz").json()
        assert health["events"] == len(stored)
        for n, batch in enumerate(sender.batches):
            resp = client.post("/v1/events", json={"events": batch})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            if per_batch[n] == BATCH:
                assert (body["accepted"], body["duplicates"]) == (0, BATCH), (n, body)
            else:
                assert (body["accepted"], body["duplicates"]) == (BATCH, 0), (n, body)
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["learning_lag"] and time.monotonic() < deadline:
            time.sleep(0.02)
        health = client.get("/healthz").json()
        assert health["learning_lag"] == 0
        assert health["events"] == BATCH * len(sender.batches)
    srv2.stop()

    log = SqliteEventLog(data_dir / "events.db")
    try:
        stored = [logged.event.event_id for logged in log.iter_all()]
        assert len(stored) == len(set(stored)) == BATCH * len(sender.batches)
        assert all(log.contains(e["event_id"]) for b in sender.batches for e in b)
    finally:
        log.close()
