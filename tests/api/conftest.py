"""Shared pieces of the HTTP API tests: an engine on a temporary data dir, the app over it
served in-process by ``TestClient`` (lifespan and learning loop running), a small
catalog, and payload builders.

Test modules reach the helpers through the ``api`` fixture rather than ``import
conftest``: with several ``conftest.py`` files and no packages, the name ``conftest``
may be bound to another directory's file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import LOAD_GENERATOR_AUTH, Settings, load_settings
from fyp.engine import Engine
from fyp.privacy.keys import bearer, create_key
from fyp.types import now_ms

N_VIDEOS = 60
N_CREATORS = 6
DURATION_MS = 10_000  # every catalog video lasts 10 s
LEARN_TIMEOUT_S = 10.0
SOURCE_BUDGET_MS = 100.0


def video_payload(i: int, **changes: Any) -> dict[str, Any]:
    """The ``POST /v1/videos`` item of video ``v{i:03d}`` (creator ``c{i % 6}``)."""
    body: dict[str, Any] = {
        "video_id": f"v{i:03d}",
        "creator_id": f"c{i % N_CREATORS}",
        "duration_ms": DURATION_MS,
        "sound_id": f"s{i}",
        "hashtags": [f"#tag{i % 4}"],
        "caption": f"video {i}",
        "created_at": now_ms() - 3_600_000,
    }
    body.update(changes)
    return body


def event_payload(
    event_id: str,
    user_id: str = "u1",
    video_id: str = "v001",
    type: str = "view",  # the API's field name
    **changes: Any,
) -> dict[str, Any]:
    """A valid ``POST /v1/events`` item (a 5 s view unless changed)."""
    body: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user_id,
        "video_id": video_id,
        "type": type,
        "ts": now_ms(),
    }
    if type == "view":
        body["watch_ms"] = 5_000
    body.update(changes)
    return body


def wait_until_learned(client: TestClient, timeout_s: float = LEARN_TIMEOUT_S) -> dict[str, Any]:
    """Poll ``/healthz`` until the learning loop has applied every logged event; returns
    the last health body. Fails the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        health: dict[str, Any] = client.get("/healthz").json()
        if health["learning_lag"] == 0:
            return health
        if time.monotonic() > deadline:
            pytest.fail(f"learning loop still {health['learning_lag']} events behind")
        time.sleep(0.01)


class Api:
    """What the tests need besides the client: builders, constants, and a wait."""

    n_videos = N_VIDEOS
    n_creators = N_CREATORS
    duration_ms = DURATION_MS

    def __init__(self, client: TestClient) -> None:
        self.client = client

    video = staticmethod(video_payload)
    event = staticmethod(event_payload)

    @staticmethod
    def creator_of(video_id: str) -> str:
        """The creator ``video_payload`` gives ``video_id``."""
        return f"c{int(video_id[1:]) % N_CREATORS}"

    def wait_until_learned(self, timeout_s: float = LEARN_TIMEOUT_S) -> dict[str, Any]:
        return wait_until_learned(self.client, timeout_s)

    def feed(self, user_id: str, **params: Any) -> dict[str, Any]:
        """``GET /v1/feed``; asserts a 200."""
        resp = self.client.get("/v1/feed", params={"user_id": user_id, **params})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults, but a candidate-source budget of 100 ms instead of 25: on a busy test
    machine a source descheduled for 25 ms would fail open and a test that looks for its
    candidates (followed creators, say) would flake."""
    return load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "sources": {"budget_ms": SOURCE_BUDGET_MS},
            # Users need not be created first, and one key may send more than a person or
            # a deployment's key does: residency and rate limits have tests of their own.
            "privacy": {"require_registered_users": False},
            "auth": LOAD_GENERATOR_AUTH,
        },
        environ={},
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """The engine the app serves; held here so tests can look into its stores."""
    eng = Engine.open(settings)
    try:
        yield eng
    finally:
        eng.close()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The app over ``engine``, its lifespan (and learning loop) running; every request
    carries a key with every scope (tests/api/test_auth.py tries the others)."""
    headers = bearer(create_key(settings.data_dir, label="tests")[1])
    with TestClient(create_app(settings, engine=engine), headers=headers) as c:
        yield c


@pytest.fixture
def catalog(client: TestClient) -> list[dict[str, Any]]:
    """Seed ``N_VIDEOS`` videos through the API; returns their payloads."""
    videos = [video_payload(i) for i in range(N_VIDEOS)]
    resp = client.post("/v1/videos", json={"videos": videos})
    assert resp.status_code == 200, resp.text
    assert resp.json()["upserted"] == N_VIDEOS
    return videos


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)
