"""Two real ``fyp serve`` processes (learned models off) on different ports, each with a
data dir of its own, over one PostgreSQL schema and one Redis event log: what is changed
through one is in force in the other's next feed, and each says in /healthz that it
follows the other's changes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from fyp.types import now_ms
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix
from server_process import Server

pytestmark = pytest.mark.slow

DEADLINE_S = 5.0  # generous: the target is 1 s (bench/cluster_changes.py measures it)


@pytest.fixture
def servers(
    tmp_path: Path, unavailable: Callable[[str], NoReturn], postgres_url: str
) -> Iterator[tuple[Server, Server]]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'event_log = "{SHARED_URL}?prefix={prefix}&durability=none"\n'
        f'store = "{postgres_url}"\n'
        "[privacy]\n"
        "require_registered_users = false\n"
        f'secret_file = "{tmp_path / "shared.secret"}"\n'  # (one for every process)
    )
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            server = Server(
                tmp_path / name, tmp_path / f"{name}.log", config=config, store=postgres_url
            )
            started.append(server)
            server.wait_ready()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()
        delete_prefix(client, prefix)
        client.close()


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def _eventually(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not in force in the other process after {DEADLINE_S} s: {what}")
        time.sleep(0.02)


def test_two_fyp_serve_processes_follow_each_others_changes(
    servers: tuple[Server, Server],
) -> None:
    a_server, b_server = servers
    with a_server.client() as a, b_server.client() as b:
        assert _ok(b.get("/healthz"))["changes_lag_s"] == 0.0
        videos = [
            {
                "video_id": f"v{i:02d}",
                "creator_id": f"c{i % 3}",
                "duration_ms": 10_000,
                "caption": f"video {i}",
                "created_at": now_ms() - 3_600_000,
            }
            for i in range(30)
        ]
        _ok(a.post("/v1/videos", json={"videos": videos}))
        _eventually("new videos", lambda: _ok(b.get("/healthz"))["videos"] == 30)

        def served(user: str) -> set[str]:
            items = _ok(b.get("/v1/feed", params={"user_id": user, "count": 30}))["items"]
            return {i["video_id"] for i in items}

        assert "v05" in served("u0")  # (30 asked of 30: every eligible video)
        _ok(a.post("/v1/moderation", json={"video_id": "v05", "state": "removed", "reason": "t"}))
        users = iter(range(1, 1000))
        _eventually("moderation", lambda: "v05" not in served(f"u{next(users)}"))

        _ok(a.put("/v1/users/m1", json={}))
        _ok(a.post("/v1/users/m1/controls", json={"mute_creators": ["c1"]}))
        _eventually(
            "controls",
            lambda: _ok(b.get("/v1/users/m1"))["controls"]["mute_creators"] == ["c1"],
        )
        assert served("m1") and all(int(v[1:]) % 3 != 1 for v in served("m1"))

        _ok(a.delete("/v1/users/m1"))
        _eventually("erasure", lambda: b.get("/v1/users/m1").status_code == 404)
        assert _ok(b.get("/healthz"))["status"] == "ok"
