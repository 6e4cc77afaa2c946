"""``fyp serve`` as a real subprocess on 127.0.0.1, for the tests that need one (end to
end over HTTP, kill -9 durability). Not a test module: shared by them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from fyp.config import LOAD_GENERATOR_AUTH
from fyp.privacy.keys import bearer, create_key

FYP = Path(sys.executable).parent / "fyp"
START_TIMEOUT_S = 120.0


def fyp_env() -> dict[str, str]:
    """This environment without FYP_* settings, so only the flags configure the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``fyp serve`` in a subprocess on 127.0.0.1; output goes to ``log_path``."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        config: Path | None = None,
        registered_users: bool = False,
        store: str | None = None,
    ) -> None:
        """``registered_users``: residency as deployed (events only for users created
        with PUT /v1/users); off by default, as these tests are about other things. The
        server's key (every scope) is in :attr:`headers`, made in ``store`` (the store
        URL the config names, where it names one: the keys are there)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.headers = bearer(create_key(data_dir, label="tests", store_url=store)[1])
        text = "" if config is None else config.read_text()
        if not registered_users and "[privacy]" not in text:
            text += "\n[privacy]\nrequire_registered_users = false\n"  # last: a table
        if "[auth]" not in text:  # these tests send far more than a person or a key does
            text += "\n[auth]\n" + "".join(f"{k} = {v}\n" for k, v in LOAD_GENERATOR_AUTH.items())
        settings_file = log_path.with_name(log_path.name + ".toml")
        settings_file.write_text(text)
        extra = ["--config", str(settings_file)]
        self.proc = subprocess.Popen(
            [
                FYP,
                "serve",
                "--data-dir",
                data_dir,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=fyp_env(),
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fyp serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"fyp serve not ready in {timeout_s} s: {self.output()}")

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        """An HTTP client of this server, with its key."""
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout_s)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
