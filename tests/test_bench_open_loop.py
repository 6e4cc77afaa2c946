"""bench/_common.py's open loop: its schedule starts only once every worker holds its
client and an open connection. Built on the schedule, the clients (~30 ms of CPU each,
one after another under the GIL) made the first second's requests late: the p99 of a
short low-rate step was the load generator's own start-up, not the server's."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import fyp.client

BENCH = Path(__file__).resolve().parents[1] / "bench"
BUILD_S = 0.01  # one client's construction, one at a time (48 of them: past the 0.2 s lead)


@pytest.fixture(scope="module")
def common() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


class _Pool:
    """What the fake clients saw: how many were built and warmed when each feed was asked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # (construction one at a time, as under the GIL)
        self.built = 0
        self.warmed = 0
        self.at_each_feed: list[tuple[int, int]] = []


def test_the_schedule_starts_once_every_worker_is_ready(
    common: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _Pool()

    class SlowClient:
        def __init__(self, **kwargs: Any) -> None:
            with pool.lock:
                time.sleep(BUILD_S)
                pool.built += 1

        def __enter__(self) -> SlowClient:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def get(self, path: str) -> None:
            with pool.lock:
                pool.warmed += 1

    class InstantFyp:
        def __init__(self, http: Any, retries: Any) -> None:
            pass

        def feed(self, user_id: str, count: int) -> None:
            # (not under the builders' lock: what was ready when the schedule sent it)
            pool.at_each_feed.append((pool.built, pool.warmed))

    monkeypatch.setattr(httpx, "Client", SlowClient)
    monkeypatch.setattr(fyp.client, "FypClient", InstantFyp)
    row = common._open_loop_phase("http://127.0.0.1:9", {}, 200.0, ["u1", "u2", "u3"], 10)

    workers = common.OPEN_LOOP_WORKERS
    assert workers * BUILD_S > 0.2  # (else the old schedule would not have shown it)
    assert row["sent"] == 3 and row["failed"] == 0
    assert pool.at_each_feed == [(workers, workers)] * 3
    assert row["late_ms"]["count"] == 3
