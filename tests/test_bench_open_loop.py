"""bench/_common.py's open loop: its schedule starts only once every client thread holds
its client. The clients were made on the schedule, so their construction (each loaded
the CA bundle, holding the GIL) delayed a phase's first requests, and the open loop
counted that delay as the server's latency: the p99 of the low rates of a ladder,
whatever the server did."""

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

BENCH = Path(__file__).resolve().parents[1] / "bench"
BUILD_S = 0.012  # CPU (the GIL held) per client built: 48 of them outlast the head start


@pytest.fixture(scope="module")
def common() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


def test_no_request_is_sent_before_every_client_is_built(
    common: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[float] = []
    sent: list[float] = []
    lock = threading.Lock()
    one_at_a_time = threading.Lock()  # (as a C call holding the GIL: built in turn)

    def answer(request: httpx.Request) -> httpx.Response:
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
