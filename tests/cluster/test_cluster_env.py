"""What ``fyp cluster up`` gives its processes: the caller's ``FYP_*`` settings (they were
all dropped, so ``FYP_RATE_LIMITS`` or ``FYP_REGION`` set for a cluster reached none of
its processes), but for those it sets for each itself; and the rate limits' own
redis-server: soft state, no AOF, no snapshots, that a limiter takes tokens from."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from fyp.cluster.commands import (
    Child,
    child_env,
    rate_limits_server_argv,
    rate_limits_socket,
    wait_for_socket,
)
from fyp.privacy.redis_ratelimit import RedisRateLimiter


def test_the_callers_settings_reach_the_processes_but_for_those_up_sets(tmp_path: Path) -> None:
    caller = {
        "PATH": "/usr/bin",
        "FYP_REGION": "eu",
        "FYP_RATE_LIMITS": "redis://10.0.0.9:6379/0",
        "FYP_CONFIG": "/etc/fyp.toml",
        "FYP_MODEL_CHANNEL": "redis://10.0.0.8:6379/0",
        "FYP_DATA_DIR": "/srv/elsewhere",
        "FYP_EVENT_LOG": "redis://10.0.0.7:6379/0",
        "FYP_STORE": "postgresql://old@10.0.0.7/db",
        "FYP_SECRET_FILE": "/srv/old.secret",
        "FYP_LEARNER_SETTINGS": "{}",
        "FYP_LEARNER_PARENT": "1",
    }
    env = child_env(caller, tmp_path, "redis://127.0.0.1:6379/0", "postgresql://x@h/db", None)
    assert env == {
        "PATH": "/usr/bin",
        "FYP_REGION": "eu",
        "FYP_RATE_LIMITS": "redis://10.0.0.9:6379/0",
        "FYP_CONFIG": "/etc/fyp.toml",
        "FYP_MODEL_CHANNEL": "redis://10.0.0.8:6379/0",  # (no --model-channel given)
        "FYP_EVENT_LOG": "redis://127.0.0.1:6379/0",
        "FYP_STORE": "postgresql://x@h/db",
        "FYP_SECRET_FILE": str(tmp_path / "pseudonym.secret"),
    }
    given = child_env(caller, tmp_path, "redis://a/0", "postgresql://b/db", "redis://c/0")
    assert given["FYP_MODEL_CHANNEL"] == "redis://c/0"


def test_a_socket_path_too_long_for_unix_goes_to_the_temp_dir(tmp_path: Path) -> None:
    assert rate_limits_socket(tmp_path) == tmp_path / "ratelimits.sock"
    deep = tmp_path / ("d" * 120)
    far = rate_limits_socket(deep)
    assert far.name == "ratelimits.sock" and len(str(far)) <= 100
    far.parent.rmdir()


def test_the_rate_limits_own_server_keeps_no_files_and_holds_the_buckets(
    tmp_path: Path, unavailable: Callable[[str], NoReturn]
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    sock = rate_limits_socket(tmp_path)
    server = Child("rate limits", rate_limits_server_argv(binary, sock), {}, tmp_path / "rl.log")
    try:
        wait_for_socket(sock, server)
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        try:
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("port") == {"port": "0"}  # (no TCP port at all)
            connection = RedisRateLimiter.connect(f"unix://{sock}")
            limiter = RedisRateLimiter(connection, "key", rate=1.0, burst=2.0)

            async def takes() -> list[float]:
                try:
                    return [await limiter.take("k1") for _ in range(3)]
                finally:
                    await limiter.close()

            waits = asyncio.run(takes())
            assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # (the third: refused)
            assert client.keys("{fyp}:rl2:key:*") == ["{fyp}:rl2:key:k1"]
        finally:
            client.close()
        assert not any(tmp_path.glob("*.aof")) and not any(tmp_path.glob("*.rdb"))
    finally:
        server.stop()


def test_a_start_that_fails_stops_the_buckets_server_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` on a port already taken fails: the buckets' redis-server it had started is
    stopped with it, not left running with nothing to stop it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here")
    from fyp.cluster import commands

    started: list[Child] = []
    real = commands.Child

    def recording(*args: object, **kwargs: object) -> Child:
        child = real(*args, **kwargs)  # type: ignore[arg-type]
        started.append(child)
        return child

    monkeypatch.setattr(commands, "Child", recording)
    monkeypatch.delenv("FYP_RATE_LIMITS", raising=False)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            commands.up(
                data_dir=tmp_path / "cluster",
                event_log="redis://127.0.0.1:6379/0",
                store="postgresql://nobody@127.0.0.1:1/none",
                api=1,
                port=taken.getsockname()[1],
            )
    finally:
        taken.close()
    assert [c.name for c in started] == ["rate limits' redis-server"]
    assert started[0].proc.poll() is not None  # stopped
