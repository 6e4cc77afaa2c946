"""When and how an engine's checkpoints are written: here and now, or by a forked child
while the process goes on serving and learning; the child reaped, killed past its time,
retried after a failure; an erasure's rewrite awaited.

What goes into a checkpoint and how it is read back is the engine's (its payload and its
restore); how a file is written atomically is :mod:`fyp.storage.checkpoint`'s. This class
keeps the one writer a process may have at a time and what it knows of the last one that
landed (``offset``) or failed (``error``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fyp.storage.checkpoint import CAN_FORK, discard_partial, fork_write, kill, reap
from fyp.storage.checkpoint import write_checkpoint as write_file

log = logging.getLogger(__name__)
RETRY_S = 5.0  # after a background checkpoint failed (a full disk, say)
_POLL_S = 0.01  # how often a wait for a checkpoint child looks whether it ended


class Checkpointer:
    """The checkpoints of one engine, at ``path``: ``payload()`` is the state to write,
    ``applied()`` the log offset it is as of; ``lock`` is the engine's (a snapshot is
    the state between two learning steps); ``landed(offset)`` is told of each checkpoint
    written, with the offset it holds the log through."""

    def __init__(
        self,
        path: Path,
        payload: Callable[[], dict[str, Any]],
        applied: Callable[[], int],
        lock: threading.RLock,
        every_events: int,
        timeout_s: float,
        landed: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._payload = payload
        self._applied = applied
        self._lock = lock
        self.every_events = every_events
        self.timeout_s = timeout_s
        self._landed = landed
        self.offset = 0  # the log offset of the last checkpoint written or read
        # Why the last checkpoint failed, until one is written (``/healthz`` reports it).
        self.error: str | None = None
        self.retry_at = 0.0  # after a failed one: not again before (monotonic s)
        # The child writing one: (pid, its offset, when it is killed: monotonic s).
        self._writer: tuple[int, int, float] | None = None
        # Children an erasure waits for: pid -> None while running, then whether written.
        self._awaited: dict[int, bool | None] = {}

    def write(self) -> int:
        """Write the state as of now, atomically, here (after a checkpoint being written
        in the background, if one is); returns the bytes written. Restart = this + the
        rest of the log, so every event is learned exactly once."""
        with self._lock:
            self.settle()
            offset = self._applied()
            try:
                size = write_file(self.path, self._payload())
            except OSError as err:
                self.error = f"the checkpoint could not be written ({err})"
                raise
            self._land(offset)
            return size

    def start(self) -> bool:
        """Begin a checkpoint of the state as of now, written by a forked child while
        this process goes on (pickling the state holds the interpreter for seconds at
        scale). Where the platform cannot fork it is written here instead. False when
        one is being written already. :meth:`poll` or :meth:`settle` takes its result."""
        if not CAN_FORK:
            self.write()
            return True
        with self._lock:
            self.poll()
            if self._writer is not None:
                return False
            return self._fork() is not None

    def _fork(self) -> int | None:
        """Fork the child that writes the state as of now (under the lock, no writer
        running); its pid, or None when the fork failed (retried later)."""
        offset = self._applied()
        try:
            pid = fork_write(self.path, self._payload())
        except OSError as err:  # no memory or processes left to fork: wait, then again
            log.warning("could not fork the checkpoint writer (%s)", err)
            self.error = f"could not fork the checkpoint writer ({err})"
            self.retry_at = time.monotonic() + RETRY_S
            return None
        self._writer = (pid, offset, time.monotonic() + self.timeout_s)
        return pid

    def poll(self, wait: bool = False) -> bool | None:
        """Reap a background checkpoint: True once it is written (``offset`` moves to
        its offset), False when its child failed or ran past ``timeout_s`` and was killed
        (the next one retries), None while it runs or when there is none. ``wait``: until
        it ends (or its time is up)."""
        with self._lock:
            if self._writer is None:
                return None
            pid, offset, deadline = self._writer
            code = reap(pid, wait=False)
            while code is None and wait and time.monotonic() < deadline:
                time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
                code = reap(pid, wait=False)
            if code is None:
                if time.monotonic() < deadline:
                    return None
                code = kill(pid)
                why = f"ran past {self.timeout_s:g} s (killed)"
            else:
                why = f"failed (exit code {code})"
            self._writer = None
            if pid in self._awaited:  # an erasure waits for this one
                self._awaited[pid] = code == 0
            if code != 0:
                self.error = f"the background checkpoint {why}"
                log.warning("%s", self.error)
                # What a killed child had written holds user data: not left on disk.
                discard_partial(self.path)
                self.retry_at = time.monotonic() + RETRY_S
                return False
            self._land(max(self.offset, offset))
            return True

    def _land(self, offset: int) -> None:
        self.offset = offset
        self.error = None
        if self._landed is not None:
            self._landed(offset)

    def settle(self) -> None:
        """Wait for a background checkpoint, if one is being written (before anything
        else writes the file: an older snapshot must not land after a newer one); one
        past its time is killed."""
        self.poll(wait=True)

    def due(self) -> bool:
        """Whether ``every_events`` events were applied since the last one (and none is
        being written, nor a failed one waiting for its retry)."""
        return (
            bool(self.every_events)
            and self._writer is None
            and time.monotonic() >= self.retry_at
            and self._applied() - self.offset >= self.every_events
        )

    @property
    def writing(self) -> bool:
        """Whether a background checkpoint is being written (or waits to be reaped)."""
        return self._writer is not None

    @property
    def writer_pid(self) -> int | None:
        """The pid of the child writing one, if any."""
        return None if self._writer is None else self._writer[0]

    # -- an erasure's rewrite ---------------------------------------------------------------

    def held(self) -> bool:
        """Whether a checkpoint was written or read (so a rewrite is owed after a change
        that must not outlive it, an erasure)."""
        return self.offset > 0 or self.path.exists()

    def begin_rewrite(self) -> int | None:
        """Under the lock, with the state already changed: a child writing the state as
        of now, whose pid :meth:`await_rewrite` waits for; or, where the platform cannot
        fork or the fork failed, the checkpoint written here (None)."""
        writer = self._fork() if CAN_FORK else None
        if writer is None:
            with self.dropped_on_failure():
                self.write()
        else:
            self._awaited[writer] = None
        return writer

    def await_rewrite(self, writer: int) -> None:
        """Wait, without the lock, for a rewrite's child (reaped here or by the learning
        loop, whichever looks first); raises OSError if it failed."""
        while True:
            with self._lock:
                if self._awaited[writer] is None:
                    self.poll()  # reaps it once ended (kills it past its time)
                if self._awaited[writer] is not None:
                    written = self._awaited.pop(writer)
                    if not written:
                        with self.dropped_on_failure():
                            raise OSError(
                                errno.EIO,
                                "the checkpoint without the erased user could not be "
                                "written (see the log); the old one is deleted",
                            )
                    return
            time.sleep(_POLL_S)

    @contextlib.contextmanager
    def dropped_on_failure(self) -> Iterator[None]:
        """A rewrite that fails leaves the old checkpoint, which still holds what was
        erased: it goes too (a restart then replays the log, which no longer has it)."""
        try:
            yield
        except BaseException:
            self.path.unlink(missing_ok=True)
            self.offset = 0
            raise
