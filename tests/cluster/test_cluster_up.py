"""``fyp cluster up``: two API processes on one port over the machine's PostgreSQL and
Redis. One key (made in the cluster's directory) works whichever process a connection
reaches; videos posted through one are served by every one; one killed -9, the other
serves and it is started again; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import redis

from fyp.privacy.keys import bearer, create_key
from fyp.types import now_ms
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix
from server_process import free_port

pytestmark = pytest.mark.slow


def test_cluster_up_serves_two_api_processes_on_one_port(
    tmp_path: Path, unavailable: Callable[[str], NoReturn], postgres_url: str
) -> None:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    root, port = tmp_path / "cluster", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
    argv = [sys.executable, "-m", "fyp.cli", "cluster", "up", "--data-dir", str(root)]
    argv += ["--event-log", f"{SHARED_URL}?prefix={prefix}&durability=none"]
    argv += ["--store", postgres_url, "--api", "2", "--port", str(port)]
    out = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def said() -> str:
        return (tmp_path / "up.log").read_text()

    try:
        deadline = time.monotonic() + 60
        while not (root / "api-0").exists():
            assert up.poll() is None, said()
            assert time.monotonic() < deadline, "no cluster directory"
            time.sleep(0.1)
        headers = bearer(create_key(root, label="tests", store_url=postgres_url)[1])
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:  # (both processes: their logs say they started)
            try:
                up_now = httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
            logs = [root / f"api-{i}.log" for i in range(2)]
            return up_now and all(p.exists() and "fyp serving" in p.read_text() for p in logs)

        while not ready():
            assert up.poll() is None, said()
            assert time.monotonic() < deadline, "the cluster did not start"
            time.sleep(0.2)
        time.sleep(1.0)  # (the second process's routes, once its log says it serves)
        video = {"video_id": "v1", "creator_id": "c1", "duration_ms": 10_000}
        video["created_at"] = now_ms()
        resp = httpx.post(url + "/v1/videos", json={"videos": [video]}, headers=headers)
        assert resp.status_code == 200, resp.text
        time.sleep(1.0)  # (the target: in force in every process within 1 s)
        # A connection each: the kernel spreads them over both processes.
        for _ in range(40):
            got = httpx.get(url + "/v1/videos", params={"ids": "v1"}, headers=headers)
            assert got.status_code == 200, got.text  # (the key: known to both)
            assert [v["video_id"] for v in got.json()["videos"]] == ["v1"]
        # The rate limits' buckets: on a redis-server of the cluster's own (no AOF), not
        # on the event log's server.
        children = Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()
        servers = [pid for pid in children if b"redis-server" in _argv(pid)[0]]
        assert len(servers) == 1, [_argv(pid) for pid in children]
        own = redis.Redis(unix_socket_path=str(root / "ratelimits.sock"))
        try:
            assert own.keys("{fyp}:rl2:*"), "no bucket on the cluster's own server"
            assert own.config_get("appendonly") == {"appendonly": "no"}
        finally:
            own.close()
        assert client.keys(f"{{{prefix}}}:rl2:*") == []
        # kill -9 of one API process: the other keeps serving, and it is started again.
        children = [pid for pid in children if pid not in servers]
        assert len(children) == 2, children
        os.kill(int(children[0]), signal.SIGKILL)
        while _alive(int(children[0])):  # (gone, with the connections it had accepted)
            time.sleep(0.01)
        # The other keeps serving, and none of these is reset: the processes accept from
        # one socket that fyp cluster up holds, so the killed one took no queue of
        # connections with it, and its replacement accepts only once it serves (with a
        # socket each, SO_REUSEPORT, up to 3 of these 20 were reset in runs here).
        reset = 0
        for _ in range(20):
            try:
                got = httpx.get(url + "/v1/videos", params={"ids": "v1"}, headers=headers)
            except httpx.TransportError:
                reset += 1
                continue
            assert got.status_code == 200, got.text
        assert reset == 0, reset
        while "exited (-9); starting it again" not in said():
            assert time.monotonic() < deadline + 60, said()
            time.sleep(0.1)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
    finally:
        if up.poll() is None:  # (a failure above: its children are stopped with it)
            up.terminate()
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
        out.close()
        delete_prefix(client, prefix)
        client.close()


def test_a_killed_cluster_up_takes_its_api_processes_with_it(
    tmp_path: Path, unavailable: Callable[[str], NoReturn], postgres_url: str
) -> None:
    """``fyp cluster up`` killed with SIGKILL (it cannot stop them itself): its API
    process stops too, rather than hold the port unsupervised."""
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    root, port = tmp_path / "cluster", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
    argv = [sys.executable, "-m", "fyp.cli", "cluster", "up", "--data-dir", str(root)]
    argv += ["--event-log", f"{SHARED_URL}?prefix={prefix}&durability=none"]
    argv += ["--store", postgres_url, "--api", "1", "--port", str(port)]
    up = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not children:
            assert up.poll() is None and time.monotonic() < deadline, "no API process"
            children = Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()
            time.sleep(0.1)
        child = int(children[0])
        up.kill()
        up.wait()
        while _alive(child):
            assert time.monotonic() < deadline + 30, "the API process outlived cluster up"
            time.sleep(0.1)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in map(int, children):  # (on a failure: not left behind)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        delete_prefix(client, prefix)
        client.close()


def _alive(pid: int) -> bool:
    """Not a zombie (reaped by init once it exits)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _argv(pid: str) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
