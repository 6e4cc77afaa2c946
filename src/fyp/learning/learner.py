"""The learner process: it folds the durable event log from its own checkpoint's offset
(the same fold as the server's: joiner, first ranker), trains the learned models on the
examples, checkpoints (state, models and offset together: every event learned exactly
once across kill -9), and publishes what it learned through the model channel, a delta
every ``model.publish_interval_s`` and a snapshot every ``model.snapshot_every_s``.

It writes nothing the server owns (no moderation, no erasure of stores): it follows the
server's tombstones (an erased user's state and rows dropped, its checkpoint and the
published files rewritten without them, then the user listed as erased in its status)
and refresh marks, and the catalog's new videos. It runs at a lowered scheduling
priority (:mod:`fyp.learning.priority`: nice 19 by default, SCHED_IDLE on request):
serving gets the CPU first.

``fyp learn --data-dir D`` runs it alone; ``fyp serve`` starts it as a child and restarts
it if it dies (:mod:`fyp.learning.supervisor`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from fyp.config import Settings
from fyp.engine import Engine
from fyp.learning.link import (
    HOST,
    LearnerStatus,
    channel_of,
    encode_status,
    learner_lock,
    write_status,
)
from fyp.learning.priority import lower_priority
from fyp.model.publisher import USER_TABLES, Publisher
from fyp.types import now_ms

log = logging.getLogger(__name__)

_SLICE_EVENTS = 256  # events folded between training steps
_STEP_BUDGET_S = 0.05  # training steps between looks at the log, the stores and the clock
_IDLE_S = 0.01  # a sleep when there is nothing to do
_STATUS_EVERY_S = 0.2
_STORES_EVERY_S = 0.1  # how often it looks at tombstones and refresh marks


class Learner:
    """One learner over ``settings.data_dir``; the caller holds its lock (see
    :func:`run`)."""

    def __init__(self, settings: Settings, wall_clock: Callable[[], int] = now_ms) -> None:
        self.settings = settings
        self.wall_clock = wall_clock
        self.engine = Engine.open(settings, role="learner")  # (a replay trains too)
        models = self.engine.models
        if models is None:
            raise ValueError("the learner needs the learned models on (model.enabled)")
        self.models = models
        self.channel = channel_of(settings)
        self.publisher = Publisher(models, self.channel, wall_clock)
        self.status = LearnerStatus(pid=os.getpid(), host=HOST, started_ms=wall_clock())
        self._status_error = False  # (the channel's copy: said once, retried)
        self._refreshes = {(u, o) for u, o, _ in self.engine.user_store.refreshes()}
        self._published_at = 0.0
        self._snapshot_at = 0.0
        self._status_at = 0.0
        self._stores_at = 0.0
        self._end = 0  # the log's end when the catalog was last followed
        self._counted = (time.monotonic(), models.ranker.examples_seen)
        # Erased whole while no learner ran, through a process whose data dir is not this
        # one (it carried the erasure out at rest there and on the channel, not in this
        # checkpoint): the tombstone is gone, the store's profiles tell them.
        self.engine.rights.drop_erased_elsewhere()
        # Tombstoned at the start: dropped from the state by the open; from the files here.
        self._forget_at_rest(list(self.engine.rights.erasures_pending()))
        self.publish(snapshot=True)
        self.status.ready = True
        self.write_status()

    # -- one pass ---------------------------------------------------------------------

    def step(self) -> bool:
        """One pass: the stores looked at, a slice of the log folded, training steps for
        a short while, a publish, a checkpoint when due. Whether there was work."""
        engine, now = self.engine, time.monotonic()
        # Also at once when the log grew past all it had read and learned: an idle learner
        # reads the log's end at every step (cheap; a step that finds nothing is followed
        # by a pause), the catalog and the stores only when that moved or as often as
        # _STORES_EVERY_S.
        if now - self._stores_at >= _STORES_EVERY_S or (
            self._end <= engine.state.applied_offset and engine.event_log.follow() > self._end
        ):
            self.look()
        end = self._end  # (not past it: an event logged since may be of a video not seen)
        worked = False
        pending = end - engine.state.applied_offset
        if engine.training_backlogged():
            pass  # (the events wait in the log, not as examples in memory)
        elif pending > 0:
            engine.learn(max_events=min(_SLICE_EVENTS, pending), train=False)
            worked = True
        elif engine.state.refresh_due():
            with engine.lock:
                engine.state.apply([], through=engine.state.applied_offset)
            worked = True
        deadline = time.monotonic() + _STEP_BUDGET_S
        while time.monotonic() < deadline and engine.train_step():
            worked = True
        now = time.monotonic()
        if now - self._published_at >= self.settings.model.publish_interval_s:
            self.publish(snapshot=now - self._snapshot_at >= self.settings.model.snapshot_every_s)
        engine.checkpoints.poll()
        if engine.checkpoints.due():
            engine.checkpoints.start()
        if now - self._status_at >= _STATUS_EVERY_S:
            self.write_status(end)
        return worked

    def look(self) -> None:
        """Read the log's end, the videos the server stored, its tombstones and refresh
        marks, now."""
        self._stores_at = time.monotonic()
        self._end = self.engine.event_log.follow()
        self.follow_catalog()  # (after reading the end: every video of those events)
        self.follow_stores()

    def publish(self, snapshot: bool = False) -> None:
        now = time.monotonic()
        if snapshot:
            self.publisher.snapshot_due()
            self._snapshot_at = now
        self.publisher.publish(self.engine.state.applied_offset)
        self._published_at = now

    def follow_catalog(self) -> None:
        """Videos the server stored since: their events are learned, not skipped."""
        engine = self.engine
        if engine.catalog_store.count() > len(engine.catalog):
            with engine.lock:
                known = engine.catalog.row_of
                new = [v for v in engine.catalog_store.all() if v.video_id not in known]
                engine.catalog.upsert(new)
                engine.state.stats.ensure(len(engine.catalog))

    def follow_stores(self) -> None:
        """The server's tombstones (erasures) and refresh marks since the last look."""
        engine = self.engine
        new = engine.rights.follow_tombstones()
        if new:
            self.publish()  # the removals, to every server
            engine.checkpoints.write()  # the learner's checkpoint without them
            self._forget_at_rest(new)
            self.write_status()  # (the server's erasure waits for this)
        pending = engine.rights.erasures_pending()
        self.status.erased = sorted(pending.values())
        for user_id, offset, _ in engine.user_store.refreshes():
            if (user_id, offset) not in self._refreshes and user_id not in pending:
                self._refreshes.add((user_id, offset))
                engine.state.schedule_refresh(user_id, offset)

    def _forget_at_rest(self, users: list[str]) -> None:
        if users:
            self.channel.forget({name: set(users) for name in USER_TABLES})
        # (by their audit references: no file keeps an erased user's pseudonym)
        self.status.erased = sorted(self.engine.rights.erasures_pending().values())

    def write_status(self, log_end: int | None = None) -> None:
        s, engine = self.status, self.engine
        now = time.monotonic()
        s.heartbeat_ms = self.wall_clock()
        s.offset = engine.state.applied_offset
        s.log_end = engine.event_log.last_offset() if log_end is None else log_end
        s.version = self.publisher.version
        s.examples = self.models.ranker.examples_seen
        then, before = self._counted
        if now - then >= 1.0:
            s.examples_per_s = round((s.examples - before) / (now - then), 1)
            self._counted = (now, s.examples)
        write_status(self.settings.data_dir, s)
        try:
            self.channel.put_learner_status(encode_status(s))
            self._status_error = False
        except OSError as err:  # (Redis down: the next publish meets it too, and exits)
            if not self._status_error:
                log.warning("cannot keep the learner's status on the channel (%s)", err)
            self._status_error = True
        self._status_at = now

    def close(self) -> None:
        try:
            self.engine.close()
        finally:
            self.channel.close()


def run(
    settings: Settings,
    stop: threading.Event,
    parent: int | None = None,
    on_start: Callable[[Learner], None] | None = None,
) -> None:
    """The learner until ``stop`` is set (or, with ``parent``, until that process is
    gone): waits for the learner's lock first (another learner, or a server carrying out
    an erasure for a learner not running, holds it). ``on_start``: told of the learner
    once it is ready (a test's look inside)."""
    with learner_lock(settings.data_dir, wait=True):
        learner = Learner(settings)
        if on_start is not None:
            on_start(learner)
        try:
            while not stop.is_set():
                if parent is not None and os.getppid() != parent:
                    log.warning("the server that started this learner is gone: stopping")
                    break
                if not learner.step():
                    stop.wait(_IDLE_S)
            learner.engine.checkpoints.settle()
        finally:
            learner.close()


def learner_gc() -> None:
    """The collector's settings for the learner process. The fold allocates several
    objects per event (examples, affinities, training batches), most of them long-lived,
    so with the default threshold a young collection runs every few events and walks
    them until they are promoted. The state loaded at the start is frozen already
    (:meth:`fyp.engine.Engine.open`); a larger young generation leaves the rest
    (``bench/learner_replay.py`` runs the learning path with these settings)."""
    gc.set_threshold(50_000, 20, 100)


def main(settings: Settings, supervised: bool) -> None:
    """The learner process's entry (``fyp learn``): lowered priority, the collector's
    settings (:func:`learner_gc`), and SIGTERM stops it between two steps."""
    got = lower_priority(settings.model.learner_nice, settings.model.learner_priority)
    if got != settings.model.learner_priority:
        log.warning("SCHED_IDLE refused: the learner runs at nice %d", settings.model.learner_nice)
    learner_gc()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, stop_from_a_signal(stop))
    signal.signal(signal.SIGINT, stop_from_a_signal(stop))
    run(settings, stop, os.getppid() if supervised else None)


def stop_from_a_signal(stop: threading.Event) -> Callable[[int, object], None]:
    """A signal handler that sets ``stop``. Not by itself: a handler runs in the main
    thread between two bytecodes, possibly inside ``stop.wait`` with the event's lock
    held (as the wait takes it back), and ``stop.set`` would then wait for that lock
    forever: a learner asked to stop hung, outliving its server. A thread sets it once
    the main thread lets the lock go."""

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    return handler
