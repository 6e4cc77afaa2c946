"""Redis for the tests: the shared server (``FYP_TEST_REDIS_URL``, by default the one on
127.0.0.1:6379), used under a key prefix of each test's own that is deleted after it;
and ``redis-server`` processes a test starts itself, on a free port with a data dir of
its own, for a particular durability setting or to be killed. Not a test module."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import redis

from server_process import free_port

SHARED_URL = os.environ.get("FYP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT_S = 10.0


def shared_redis(unavailable: Callable[[str], NoReturn]) -> redis.Redis:
    """A client of the shared server, or the test ends (skip here, failure under CI)."""
    client = redis.Redis.from_url(SHARED_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        unavailable(f"no Redis answers at {SHARED_URL} ({err}); set FYP_TEST_REDIS_URL")
    return client


def unique_prefix() -> str:
    return f"fyp-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key of the log under ``prefix`` (its keys share the ``{prefix}`` tag)."""
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1_000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, its files in ``dir``; ``options``
    are redis.conf directives (``appendonly yes``, ...). Stopped by :meth:`stop`."""

    def __init__(self, dir: Path, unavailable: Callable[[str], NoReturn], **options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.options = {"save": '""', "appendonly": "no", **options}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
        ]
        for name, value in self.options.items():
            args += [f"--{name}", *(value.split() if value != '""' else [""])]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log_text = (self.dir / "redis.log").read_text(errors="replace")
                        raise RuntimeError(f"redis-server did not start:\n{log_text}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=10)

    def kill(self) -> None:
        """``kill -9``: nothing flushed, nothing saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()  # the files are the test's to read, not to keep: no final save
        self.proc = None

    def files(self) -> list[Path]:
        """The server's data files (the RDB file, the AOF's parts), not its log."""
        return [p for p in self.dir.rglob("*") if p.is_file() and p.name != "redis.log"]
