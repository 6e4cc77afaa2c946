"""The lock of durable writes about users: shared by event batches, exclusive for the
rest (profiles, controls, imported impressions, and an erasure setting its tombstone).

An erasure's guarantee is that a write which passed the tombstone check has landed
before the erasure deletes: the check and the write are made under this lock, and the
tombstone is set under it, exclusively. Event batches only need each other to be
excluded from that moment, not from one another: each is checked and appended on its
own, and the log itself orders concurrent appends. Under one plain lock, the batches of
one process were appended one at a time, each waiting for its own fsync of the event
log (a Redis server with ``appendfsync always``), where concurrent appends share one.

Writers first: once an exclusive holder waits, no new shared holder gets in, so a
stream of event batches cannot keep an erasure waiting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import TracebackType


class UserWrites:
    """``with lock:`` exclusive (as a ``threading.Lock``); ``with lock.shared():`` shared
    with other shared holders. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0  # shared holders now
        self._exclusive = False  # an exclusive holder now
        self._waiting = 0  # exclusive holders waiting

    def __enter__(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held with other shared holders; never with an exclusive one."""
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()
