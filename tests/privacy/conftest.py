"""Deployments as they run: a region, a data dir of their own, residency enforced, keys
required, the app served in-process with its learning loop. Tests reach the helpers
through the ``deployments`` fixture (see tests/conftest.py for why not ``import``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.privacy.keys import bearer, create_key
from fyp.types import now_ms

N_VIDEOS = 40


def scan(root: Path, needles: Sequence[str | bytes]) -> dict[str | bytes, list[str]]:
    """Each needle (text, as UTF-8, or raw bytes: a learned vector's) found in the bytes
    of any file under ``root`` -> the files."""
    found: dict[str | bytes, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # A temporary file renamed or removed since the listing (a checkpoint being
            # written while the engine runs): what it became is read where it landed, or
            # by the scan the tests make after a clean stop.
            continue
        for needle in needles:
            if (needle.encode() if isinstance(needle, str) else needle) in data:
                found.setdefault(needle, []).append(str(path.relative_to(root)))
    return found


def vector_bytes(engine: Engine, pseudonym: str) -> list[bytes]:
    """The bytes of the user's learned embedding rows (float32, as the tables hold and a
    checkpoint pickles them), for a byte scan; one per model with a row for the user."""
    assert engine.models is not None
    return [
        np.asarray(vector, dtype=np.float32).tobytes()
        for vector in engine.models.user_vectors(pseudonym).values()
        if vector is not None
    ]


class Deployment:
    def __init__(self, root: Path, region: str, **overrides: Any) -> None:
        self.region = region
        self.root = root
        self.data_dir = root / f"data-{region}"
        self.settings: Settings = load_settings(
            overrides={
                "data_dir": self.data_dir,
                "region": region,
                **overrides,
            },
            environ={},
        )
        self.engine = Engine.open(self.settings)
        _, self.token = create_key(self.data_dir, label=f"{region} operator")
        self.client = TestClient(
            create_app(self.settings, engine=self.engine), headers=bearer(self.token)
        )
        self.client.__enter__()
        videos = [
            {
                "video_id": f"v{i:03d}",
                "creator_id": f"c{i % 5}",
                "duration_ms": 10_000,
                "hashtags": [f"#t{i % 4}"],
                "created_at": now_ms() - 86_400_000,
            }
            for i in range(N_VIDEOS)
        ]
        assert self.client.post("/v1/videos", json={"videos": videos}).status_code == 200
        self._n = 0

    def key(self, *scopes: str, region: str | None = None) -> dict[str, str]:
        """Headers with a new key of these scopes."""
        return bearer(create_key(self.data_dir, scopes, region, "test")[1])

    def events(self, user_id: str, n: int, like_every: int = 3) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(n):
            self._n += 1
            video = f"v{(self._n * 7) % N_VIDEOS:03d}"
            ts = now_ms() - 60_000 + self._n
            out.append(
                {
                    "event_id": f"{self.region}-ev-{self._n:06d}",
                    "user_id": user_id,
                    "video_id": video,
                    "type": "view",
                    "ts": ts,
                    "watch_ms": 10_000,
                }
            )
            if i % like_every == 0:
                out.append(
                    {
                        "event_id": f"{self.region}-like-{self._n:06d}",
                        "user_id": user_id,
                        "video_id": video,
                        "type": "like",
                        "ts": ts + 1,
                    }
                )
        return out

    def wait_until_learned(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.client.get("/healthz").json()["learning_lag"]:
            assert time.monotonic() < deadline, "learning loop behind"
            time.sleep(0.01)

    def close(self) -> None:
        if self.client is None:
            return
        self.client.__exit__(None, None, None)
        self.engine.close()
        self.client = None  # type: ignore[assignment]


class Deployments:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.open: list[Deployment] = []

    def start(self, region: str, **overrides: Any) -> Deployment:
        d = Deployment(self.root, region, **overrides)
        self.open.append(d)
        return d

    scan = staticmethod(scan)
    vector_bytes = staticmethod(vector_bytes)


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[Deployments]:
    ds = Deployments(tmp_path)
    try:
        yield ds
    finally:
        for d in ds.open:
            d.close()
