"""bench/_common.py's open loop: its schedule starts only once every worker holds its
client and an open connection. Built on the schedule, the clients (each loaded the CA
bundle, holding the GIL) made a phase's first requests late, and the open loop counted
that delay as the server's latency: the p99 of a short low-rate step was the load
generator's own start-up, not the server's."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import httpx
import pytest

import fyp.client
from bench_modules import import_bench

BUILD_S = 0.012  # one client's construction, one at a time (48 of them: past the 0.2 s lead)


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return import_bench("_common")


def test_no_request_is_sent_before_every_client_is_built(
    common: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[float] = []
    sent: list[float] = []
    lock = threading.Lock()
    one_at_a_time = threading.Lock()  # (as a C call holding the GIL: built in turn)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/healthz":  # (a worker's warm-up, before the barrier)
            with lock:
                sent.append(time.perf_counter())
        return httpx.Response(200, json={"request_id": "r", "surface": "for_you", "items": []})

    class SlowClient(httpx.Client):
        """A client that takes CPU to build, as loading the CA bundle does, and answers
        every request at once."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with one_at_a_time:
                end = time.thread_time() + BUILD_S
                while time.thread_time() < end:
                    pass
            super().__init__(*args, **{**kwargs, "transport": httpx.MockTransport(answer)})
            with lock:
                built.append(time.perf_counter())

    monkeypatch.setattr(httpx, "Client", SlowClient)
    row = common._open_loop_phase("http://bench.invalid", {}, 200.0, ["u1"] * 20, 10)
    assert row["failed"] == 0 and row["latency_ms"]["count"] == 20
    assert len(built) == common.OPEN_LOOP_WORKERS
    assert min(sent) > max(built)


def test_a_client_that_cannot_be_built_fails_the_phase_rather_than_hanging_it(
    common: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [0]

    class OneFails(httpx.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made[0] += 1
            if made[0] == 7:
                raise OSError("no file descriptors left")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(httpx, "Client", OneFails)
    outcome: list[BaseException | None] = []

    def phase() -> None:
        try:
            common._open_loop_phase("http://bench.invalid", {}, 100.0, ["u1"], 10)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=phase, daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert outcome and isinstance(outcome[0], RuntimeError)
    assert "no file descriptors left" in str(outcome[0])


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
