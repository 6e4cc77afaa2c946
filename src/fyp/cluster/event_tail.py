"""Events appended by other API processes folded here within a second: a thread that
waits on the event log's stream and wakes the learning loop when it grows.

Each API process folds the shared log into its own in-memory state (its learning loop,
:mod:`fyp.api.learning_loop`), which it does when woken: by its own accepted batches,
by a change notice, or by its hourly timer. Events accepted by another process woke
nothing here, so a user whose events went through A saw them in B's feeds only at B's
next wake. The tail closes that gap: ``XREAD BLOCK`` on the log's stream (``{prefix}:log``,
one entry per event, appended by every process), on a connection of its own, from the
last entry it saw; when the stream grows it calls ``wake`` and the loop folds what is
new, in its bounded slices, as it does for its own events.

Nothing of this runs on a feed's path: the thread sleeps in a socket read that releases
the GIL. It reads no event (the loop reads the log), only whether the stream moved: one
entry (``COUNT 1``), then the stream's last id, so a burst of appends costs two round
trips, whatever its size. Wakes are at most one per :data:`MIN_GAP_S`: the loop folds
everything up to the log's end each time, so wakes closer together would only repeat it.
A wake says the log's end it saw (a stream entry's id is ``0-<offset>``), so a loop that
has folded that far already (this process's own batch, folded when it was accepted)
does nothing: no round trip to find there was nothing new.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import redis

from fyp.events.redis_log import split_url, stream_key

log = logging.getLogger(__name__)

BLOCK_MS = 1_000  # how long one XREAD waits for an entry
MIN_GAP_S = 0.02  # between two wakes at most (see the module's docstring)
RETRY_S = 1.0
TIMEOUT_S = 5.0  # a command's (the blocked XREAD's socket waits BLOCK_MS longer)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventTail:
    """A thread tailing the event log at ``url`` (a ``redis://`` event log URL, its
    ``prefix`` and ``durability`` options included) that calls ``wake(log_end)`` when
    other processes (or this one) append: the offset of the newest event it saw (None
    where the stream's ids are not offsets). ``wakes`` counts the calls; ``error`` is the
    last read's failure (None once a read returns)."""

    def __init__(self, url: str, wake: Callable[[int | None], None]) -> None:
        rest, prefix, _durability = split_url(url)
        self.key = stream_key(prefix)
        self._r = redis.Redis.from_url(
            rest,
            socket_timeout=TIMEOUT_S + BLOCK_MS / 1000,
            socket_connect_timeout=TIMEOUT_S,
        )
        self._wake = wake
        self.after: str | None = None  # the last entry id seen; None until Redis answers
        self.wakes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fyp-event-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=BLOCK_MS / 1000 + TIMEOUT_S + 1)
        self._r.close()

    def _last_id(self) -> str:
        """The stream's newest entry's id ("0-0": none)."""
        newest = cast("list[Any]", self._r.xrevrange(self.key, count=1))
        return _text(newest[0][0]) if newest else "0-0"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                woke = self.step()
            except (redis.RedisError, OSError) as err:  # said in the log; retried
                if self.error is None:
                    log.warning("cannot tail the event log (%s); retrying", err)
                self.error = f"{type(err).__name__}: {err}"
                self._stop.wait(RETRY_S)
                continue
            if woke:
                self._stop.wait(MIN_GAP_S)

    def step(self, block_ms: int = BLOCK_MS) -> bool:
        """One wait for the stream to grow past the last entry seen (up to ``block_ms``);
        True if it did, and ``wake`` was called. Raises Redis's errors."""
        if self.after is None:
            # From the newest entry now, and one wake: whatever was appended before this
            # (and after the loop's last fold) is folded too.
            self.after = self._last_id()
            self.error = None
            self._call_wake()
            return True
        got = self._r.xread({self.key: self.after}, count=1, block=block_ms)
        self.error = None
        if not got:
            return False
        # Past everything appended by now: the wake's fold reads to the log's end,
        # which is at least this far.
        self.after = max(
            (self._last_id(), _text(cast("list[Any]", got)[0][1][-1][0])), key=_id_order
        )
        self._call_wake()
        return True

    def _call_wake(self) -> None:
        self.wakes += 1
        assert self.after is not None
        ms, _, seq = self.after.partition("-")
        try:
            self._wake(int(seq) if ms == "0" and seq.isdigit() else None)
        except RuntimeError:  # (the server's event loop closed: it is stopping)
            self._stop.set()


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


__all__ = ["MIN_GAP_S", "EventTail"]
