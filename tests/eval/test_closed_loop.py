"""The closed-loop check: in the simulator, simulated users watching the engine's feed
(served in-process through the real HTTP API) watch more than users given the same
catalog in random order, on the same world and seed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import LOAD_GENERATOR_AUTH, load_settings
from fyp.engine import Engine
from fyp.eval.simulate import (
    EngineFeed,
    RandomFeed,
    build_world,
    register_users,
    run_audience,
    seed_catalog,
)
from fyp.privacy.keys import bearer, create_key

SEED = 0
REQUESTS = 3_000
WINDOW = 1_000  # the last feed requests, where learning shows
TARGET_LIFT = 1.5
LEARN_TIMEOUT_S = 30.0


class LearnedClient(TestClient):
    """A TestClient that, after each accepted ``POST /v1/events``, waits until the app's
    learning loop (an asyncio task, woken by the ingest) has applied every event; so each
    feed request sees everything the user did before it, as in a deployment where a
    user's next swipe comes long after the learning step. (It reads the lag that
    ``/healthz`` reports straight from the engine: an HTTP poll per page costs seconds.)"""

    def __init__(self, app: Any, engine: Engine) -> None:
        super().__init__(app)
        self.engine = engine
        self.waits = 0  # pages after which the loop had not caught up yet

    def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        resp = super().post(url, **kwargs)
        if str(url) == "/v1/events" and resp.is_success and self.engine.pending() > 0:
            self.waits += 1
            deadline = time.monotonic() + LEARN_TIMEOUT_S
            while self.engine.pending() > 0:
                if time.monotonic() > deadline:
                    pytest.fail(f"learning loop behind for over {LEARN_TIMEOUT_S} s")
                time.sleep(0.0005)
        return resp


@pytest.mark.slow
def test_engine_feed_beats_random_order_in_the_closed_loop(tmp_path: Path) -> None:
    world = build_world(seed=SEED)
    random_report = run_audience(
        world, RandomFeed(world, SEED), client=None, requests=REQUESTS, seed=SEED
    )

    settings = load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "auth": LOAD_GENERATOR_AUTH,  # a simulation's pace
        },
        environ={},
    )
    engine = Engine.open(settings)
    _, token = create_key(settings.data_dir, label="closed loop")
    try:
        with LearnedClient(create_app(settings, engine=engine), engine) as client:
            client.headers.update(bearer(token))
            register_users(client, world)  # residency: users are created before they act
            assert seed_catalog(client, world) == len(world.videos)
            engine_report = run_audience(
                world, EngineFeed(client), client=client, requests=REQUESTS, seed=SEED
            )
            health = client.get("/healthz").json()
            failures = [
                line
                for line in client.get("/metrics").text.splitlines()
                if line.startswith("fyp_candidate_source_failures_total")
            ]
    finally:
        engine.close()
    assert health["learning_lag"] == 0
    assert health["events"] > REQUESTS  # every page led to at least one event

    engine = engine_report.last_window_watch_ratio(WINDOW)
    random = random_report.last_window_watch_ratio(WINDOW)
    lift = engine / random
    print(
        f"\nclosed loop ({len(world.videos):,} videos, {len(world.users)} users, "
        f"{REQUESTS:,} requests, seed {SEED}): mean watch ratio over the last {WINDOW:,} "
        f"requests: engine {engine:.3f}, random order {random:.3f}, lift {lift:.2f}x "
        f"(target {TARGET_LIFT}x); pages after which learning lagged: {client.waits}; "
        f"source failures: {failures or 'none'}"
    )
    assert engine_report.requests == random_report.requests == REQUESTS
    assert lift > TARGET_LIFT
