"""The serving process's keeper of its learner: ``fyp serve`` (with the learned models
on) starts the learner as a child OS process and starts it again whenever it dies, after
a pause that doubles with each quick death (a learner that cannot start does not spin);
meanwhile the server serves the last published models and ``/healthz`` says the learner
is down. The child is told the server's pid and stops when the server is gone."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from fyp.config import Settings

log = logging.getLogger(__name__)

SETTINGS_ENV = "FYP_LEARNER_SETTINGS"  # the server's settings, as JSON, for the child
PARENT_ENV = "FYP_LEARNER_PARENT"
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_HEALTHY_AFTER_S = 60.0  # a learner that ran this long and died restarts at once
_STOP_WAIT_S = 15.0


class Supervisor:
    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # starts after the first
        self.last_exit: int | None = None  # the last child's exit code
        self._backoff = _FIRST_BACKOFF_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="learner-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _spawn(self) -> None:
        env = dict(os.environ)
        env[SETTINGS_ENV] = self.settings.model_dump_json()
        env[PARENT_ENV] = str(os.getpid())
        out = None if self.log_path is None else self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fyp.learning"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                close_fds=True,
            )
        finally:
            if out is not None:
                out.close()
        self._started = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            self.last_exit = proc.returncode
            ran = time.monotonic() - self._started
            if ran >= _HEALTHY_AFTER_S:
                self._backoff = _FIRST_BACKOFF_S
            log.warning(
                "the learner process exited (code %s) after %.1f s; restarting in %.1f s",
                proc.returncode,
                ran,
                self._backoff,
            )
            if self._stop.wait(self._backoff):
                return
            self._backoff = min(2 * self._backoff, _MAX_BACKOFF_S)
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        """Stop watching, then the child: SIGTERM (it stops between two steps), SIGKILL
        if it has not within a while."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
