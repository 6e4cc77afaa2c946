"""Changes in force in every serving process within a second: a stream of notices on the
event log's Redis, which every process appends to and tails.

After a change is committed to its store and applied in the process that made it, that
process appends a notice ``(kind, key)`` to ``{prefix}:changes`` before it answers, so
an acknowledged change has its notice. The kinds are the engine's
(:meth:`fyp.engine.Engine.apply_change`): ``video`` (an upload or an update, one
notice a batch), ``moderation`` (a decision), ``user`` (a profile, controls, a
refresh: the user's random handle, deleted with them, not their pseudonym) and
``erasure`` (the erasure's audit reference; one when it is accepted, one when it is
complete): no notice names an erased user.

Every process tails the stream from a thread of its own (``XREAD BLOCK``) from the last
id it read, and re-reads each changed thing from its store (never from the notice)
before applying it under the engine's lock. A stream rather than pub/sub: a process
that was disconnected resumes from its last id and misses nothing, unless the stream
was trimmed past it meanwhile (``MAXLEN ~``), which it notices and answers by
reconciling everything with the stores. It also reconciles at its start and every
``reconcile_every_s``, which covers a change whose process died between its commit and
its notice, and erasures this process missed whole (down, or cut off, from the user's
tombstone to its completion). A periodic reconcile reads only what the stores changed
since the last (PostgreSQL's and the embedded SQLite files both say; an erasure
completed since is among what they say, not whose), the whole stores at the start,
after a gap and every ``FULL_RECONCILE_EVERY_S``
(:meth:`fyp.engine.Engine.reconcile_changes`).

The follower also starts the tail of the event log (:mod:`fyp.cluster.event_tail`): the
events other processes accept reach this one's learning loop as their changes do; and
the lease on sending reported videos to review (:mod:`fyp.cluster.review_lease`), which
one serving process holds at a time.

Where the event log is not on Redis there is one process, and nothing here runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from fyp.cluster.event_tail import EventTail
from fyp.cluster.review_lease import ReviewLease
from fyp.config import Settings
from fyp.engine import Engine
from fyp.privacy.ratelimit import limits_store
from fyp.storage.redis_server import reaching, split_url

log = logging.getLogger(__name__)

KINDS = ("video", "moderation", "user", "erasure")
MAX_LEN = 100_000  # notices kept (about: MAXLEN ~ trims whole nodes)
BLOCK_MS = 1_000  # how long one XREAD waits for a notice
BATCH = 500  # notices one XREAD returns at most
RECONCILE_EVERY_S = 30.0
RETRY_S = 1.0
TIMEOUT_S = 5.0  # a command's (the blocked XREAD's socket waits BLOCK_MS longer)


def changes_url(settings: Settings) -> str | None:
    """The Redis URL (with its ``prefix``) the notices go on: the event log's server and
    prefix when the log is on Redis, else None (one process)."""
    return limits_store(None, settings.event_log)


@dataclass(frozen=True, slots=True)
class Notice:
    id: str  # the stream's
    kind: str
    key: str
    at_ms: int  # when it was appended (the appending process's clock)
    by: str  # the process that made the change


class ChangeStream:
    """The stream of notices on one Redis server, under one prefix."""

    def __init__(self, url: str) -> None:
        rest, prefix = split_url(url, "the change notices'")
        self.key = f"{{{prefix}}}:changes"
        self._r = redis.Redis.from_url(
            rest, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        # Blocked reads on a connection of their own, its timeout past the block.
        self._tail = redis.Redis.from_url(
            rest,
            socket_timeout=TIMEOUT_S + BLOCK_MS / 1000,
            socket_connect_timeout=TIMEOUT_S,
        )
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process, in its notices

    def publish(self, kind: str, key: str) -> str:
        """Append a notice; its id. StorageUnavailableError when Redis cannot be reached
        (the change is committed and in force here; the others see it at their next
        reconcile)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of change {kind!r}")
        fields = {"kind": kind, "key": key, "at": str(time.time_ns() // 1_000_000)}
        fields["by"] = self.origin
        with reaching("the change notices"):
            entry = self._r.xadd(self.key, fields, maxlen=MAX_LEN, approximate=True)  # type: ignore[arg-type]
        return _text(entry)

    def last_id(self) -> str:
        """The id of the last notice appended so far ("0-0" for none)."""
        with reaching("the change notices"):
            info = self._r.xinfo_stream(self.key) if self._r.exists(self.key) else None
        return "0-0" if info is None else _text(info["last-generated-id"])

    def first_id(self) -> str | None:
        """The id of the oldest notice kept (None: none is)."""
        with reaching("the change notices"):
            first = self._r.xrange(self.key, count=1)
        return None if not first else _text(first[0][0])

    def read(self, after: str, block_ms: int = BLOCK_MS, count: int = BATCH) -> list[Notice]:
        """The notices after ``after``, waiting up to ``block_ms`` for one."""
        with reaching("the change notices"):
            got = cast(  # (RESP2: [[stream, [(id, fields), ...]]])
                "list[Any]", self._tail.xread({self.key: after}, count=count, block=block_ms)
            )
        notices: list[Notice] = []
        for _stream, entries in got or ():
            for entry_id, raw in entries:
                f = {_text(k): _text(v) for k, v in raw.items()}
                notices.append(
                    Notice(_text(entry_id), f["kind"], f["key"], int(f["at"]), f.get("by", ""))
                )
        return notices

    def delete(self) -> None:
        self._r.delete(self.key)

    def close(self) -> None:
        self._r.close()
        self._tail.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _older(a: str, b: str) -> bool:
    """Whether stream id ``a`` is before ``b``."""
    ams, aseq = a.split("-")
    bms, bseq = b.split("-")
    return (int(ams), int(aseq)) < (int(bms), int(bseq))


class ChangeFollower:
    """A thread that tails the stream and applies other processes' notices to
    ``engine`` (see the module's docstring). ``applied`` is called after notices were
    applied (the server wakes its learning loop: a refresh is carried out by it);
    ``lag_s`` and ``error`` are what ``/healthz`` says. ``tail``, if given, is started
    and stopped with it: the events other processes append, as the notices are their
    changes (:mod:`fyp.cluster.event_tail`)."""

    def __init__(
        self,
        engine: Engine,
        stream: ChangeStream,
        applied: Callable[[], None] = lambda: None,
        reconcile_every_s: float = RECONCILE_EVERY_S,
        tail: EventTail | None = None,
        lease: ReviewLease | None = None,
    ) -> None:
        self.engine = engine
        self.stream = stream
        self.tail = tail
        self.lease = lease
        self.applied_hook = applied
        self.reconcile_every_s = reconcile_every_s
        self.error: str | None = None
        self.applied = 0  # notices of others applied
        self.reconciled = 0  # reconciles that found something to change
        self.gaps = 0  # reads that found the stream trimmed past the last notice read
        # Where to read from: after the last notice now (what came before is in the
        # stores the engine read at its start); None until Redis answers.
        self.last: str | None = None
        try:
            self.last = stream.last_id()
        except OSError as err:
            self.error = f"{type(err).__name__}: {err}"
        self._ok_at = time.monotonic()  # when a read last returned (all read applied)
        # Due at the first step: a process started from its checkpoint may hold users
        # erased while it was down (UserRights.drop_erased_elsewhere).
        self._reconciled_at = -math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fyp-changes", daemon=True)
        engine.changed = self._publish
        if lease is not None:
            engine.moderator.review_turn = lease.held

    def _publish(self, kind: str, key: str) -> None:
        self.stream.publish(kind, key)

    def start(self) -> None:
        self._thread.start()
        if self.tail is not None:
            self.tail.start()
        if self.lease is not None:
            self.lease.start()

    def stop(self) -> None:
        self._stop.set()
        if self.tail is not None:
            self.tail.stop()
        if self.lease is not None:
            self.lease.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=BLOCK_MS / 1000 + TIMEOUT_S + 1)
        self.engine.changed = lambda kind, key: None
        if self.lease is not None and self.engine.moderator.review_turn == self.lease.held:
            # (its lease stopped, never held again: the engine, used on alone, would
            # keep every reported video due for good)
            self.engine.moderator.review_turn = None
        self.stream.close()

    @property
    def lag_s(self) -> float:
        """Seconds for which this process may be missing others' changes: 0 while its
        reads return (a blocked read returns within a second of a notice, or of
        nothing), else since the last one that did."""
        quiet = time.monotonic() - self._ok_at
        return 0.0 if quiet <= BLOCK_MS / 1000 + 1.0 and self.error is None else quiet

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as err:  # Redis or a store down: said in /healthz, retried
                if self.error is None:
                    log.warning("cannot follow other processes' changes (%s); retrying", err)
                self.error = f"{type(err).__name__}: {err}"
                self._stop.wait(RETRY_S)

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """One read of the stream (waiting up to ``block_ms`` for a notice), what it
        returned applied, and the reconcile if one is due; returns the notices of others
        applied. Raises what a read or an apply raised (the thread retries)."""
        if self.last is None:  # (Redis was down at the start: changes may be missed)
            self.last = self.stream.last_id()
            self.reconcile(full=True)
        notices = self.stream.read(self.last, block_ms)
        if notices:
            self._check_gap()  # (XREAD past a trimmed id returns from the first kept)
        applied = self._apply(notices)
        self._ok_at = time.monotonic()
        self.error = None
        if time.monotonic() - self._reconciled_at >= self.reconcile_every_s:
            self.reconcile()
        return applied

    def _apply(self, notices: list[Notice]) -> int:
        mine = self.stream.origin
        others = [n for n in notices if n.by != mine]
        for n in others:
            self.engine.apply_change(n.kind, n.key)
            self.last = n.id  # (applied: a fault after this resumes past it)
        if notices:
            self.last = notices[-1].id
        if others:
            self.applied += len(others)
            self.applied_hook()
        return len(others)

    def _check_gap(self) -> None:
        """Reconcile if the stream no longer holds the last notice read: those after it
        may have been trimmed away unread (what they said is in the stores)."""
        first = self.stream.first_id()
        last = self.last or "0-0"
        if first is not None and last != "0-0" and _older(last, first):
            log.info("change notices were trimmed past this process's last; reconciling")
            self.gaps += 1
            self.reconcile(full=True)

    def reconcile(self, full: bool | None = None) -> int:
        """The stores compared with what is in force here, the differences applied
        (``full``: as :meth:`fyp.engine.Engine.reconcile_changes`)."""
        self._reconciled_at = time.monotonic()
        n = self.engine.reconcile_changes(full)
        if n:
            self.reconciled += 1
            log.info("reconciled %d changes with the stores", n)
            self.applied_hook()
        return n


def follow_changes(
    engine: Engine, settings: Settings, applied: Callable[[int | None], None]
) -> ChangeFollower | None:
    """A started follower of the notices where the event log is on Redis (several
    processes may serve), with ``engine``'s changes published to them, and a tail of the
    log's events (both call ``applied``: the learning loop folds what they announce; the
    tail with the log's end it saw, the notices with None);
    else None."""
    url = changes_url(settings)
    if url is None or settings.event_log is None:
        return None
    # A step that raises (a thread that cannot start, Redis answering with an error)
    # stops and closes what came before it, then the error goes on: else their threads
    # and Redis connections outlive it, and the engine keeps a review turn never taken.
    with contextlib.ExitStack() as opened:
        tail = EventTail(settings.event_log, applied)
        opened.callback(tail.stop)  # (one not started: its client closed)
        lease = ReviewLease(url)  # (the reports are folded here: reviews take turns)
        opened.callback(lease.stop)
        stream = ChangeStream(url)
        opened.callback(stream.close)
        follower = ChangeFollower(engine, stream, lambda: applied(None), tail=tail, lease=lease)
        opened.pop_all()  # (the follower's stop stops them all, and unhooks the engine)
        opened.callback(follower.stop)
        follower.start()
        opened.pop_all()
    return follower
