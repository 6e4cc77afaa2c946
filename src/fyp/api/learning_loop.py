"""The server's learning loop: a task of its event loop, woken by every accepted event
batch, that folds the log into the in-memory state in small slices and (where the
server trains the learned models itself, ``model.learner = "in_process"``) interleaves
training steps, yielding between them so feeds are served while a backlog drains. Where
a learner process trains (:mod:`fyp.learning`), the slices only fold, and
:mod:`fyp.api.model_sync` keeps the served models up to date."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from fyp.api.log_end import log_on_a_server, read_log_end
from fyp.engine import Engine

RETENTION_EVERY_S = 3600.0  # how often the learning loop deletes what retention expired
STORAGE_RETRY_S = 1.0
MIN_STEPS_PER_SLICE = 2  # training steps before new events may cut in (see _steps)
SLICE_EVENTS = 256  # events folded between two requests' turns at most

log = logging.getLogger(__name__)
# Reads of a slice off the loop before one under the lock: a read is thrown away only
# when an erasure or a refresh landed while it ran, rarely twice in a row.
_FOLD_TRIES = 3


class LearningLoop:
    """The learning loop as a task of the server's event loop: woken by every accepted
    batch, it applies the log in small slices, yielding between them so feeds are
    served while a backlog drains. If it dies, ``failure`` says why (``/healthz``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # A log on a server (Redis): its round trips are made from worker threads, not
        # on the event loop, which serves nothing while it waits for one (the server
        # answers after its fsyncs). The embedded log's reads are local and short.
        self._remote = log_on_a_server(engine)
        # Where the log is on a server: the log's end as last known (read with a slice's
        # events, or told by a wake), so that "anything to fold?" is answered without a
        # round trip; None, unknown (read it). Wakes came from the process's own batches
        # and from the tail of every process's appends (fyp.cluster.event_tail), each
        # woken loop asked the server for the end, read a slice (the end again), then
        # asked for the end once more: three worker-thread hops and four round trips a
        # wake, most finding nothing new (a batch of its own wakes it twice).
        self._end: int | None = None
        self._wakes = 0
        self._wake = asyncio.Event()  # made here, inside the running loop it belongs to
        self._slice_error: str | None = None  # the last slice's, until one goes through
        self._expired_at = -RETENTION_EVERY_S
        self._task = asyncio.create_task(self._run())
        self._wake.set()  # catch up with anything logged before the start

    def wake(self, log_end: int | None = None) -> None:
        """Look for new events (and a refresh due); ``log_end``, the log's end where the
        waker knows it (an append's, the tail's): nothing to do if the state is there."""
        if self._remote and log_end is not None and log_end <= self.engine.state.applied_offset:
            return  # (folded already: e.g. this process's own batch, told by the tail)
        self._end = None  # (read again: a slice in flight may have read it before the news)
        self._wakes += 1
        self._wake.set()

    @property
    def storage_error(self) -> str | None:
        """A storage failure the loop is retrying (a slice's write), else the last
        checkpoint's, until a checkpoint is written: a slice that goes through says
        nothing about the checkpoint file."""
        return self._slice_error or self.engine.checkpoints.error

    @property
    def failure(self) -> str | None:
        if not self._task.done() or self._task.cancelled():
            return None
        exc = self._task.exception()
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    async def _run(self) -> None:
        while True:
            try:
                await self._steps()
            except (sqlite3.Error, OSError) as err:
                # The disk (full, read-only, failing). Nothing is lost: the next step
                # redoes the writes that failed (a review is due again, a checkpoint
                # is written again), so wait and try again.
                self._slice_error = f"{type(err).__name__}: {err}"
                log.warning("the learning loop hit a storage error (%s); retrying", err)
                await asyncio.sleep(STORAGE_RETRY_S)
                self._wake.set()
            except Exception:
                log.exception("the learning loop stopped; feeds are served from the last state")
                raise

    async def _steps(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - self._expired_at >= RETENTION_EVERY_S:
                self._expired_at = loop.time()
                self.engine.expire()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that arrives as the event is set (it returns the result), and stop() then
            # waited for the next wake, up to an hour (tests/api/test_learning_loop.py).
            # While a checkpoint child writes, look every second whether it is done.
            idle_s = 1.0 if self.engine.checkpoints.writing else RETENTION_EVERY_S
            try:
                async with asyncio.timeout(idle_s):
                    await self._wake.wait()
            except TimeoutError:
                # Woken by no one: read the log's end itself rather than trust the one
                # last told (a tail that stopped telling would leave events unfolded).
                self._end = None
            self._wake.clear()
            self.engine.checkpoints.poll()  # a failure stays in engine.checkpoints.error
            while (learning := await self._learning_due()) or self.engine.training_due():
                # Not while training is far behind (a stream faster than it): the events
                # wait in the log, durable, rather than as examples in memory.
                if learning and not self.engine.training_backlogged():
                    await self._fold(SLICE_EVENTS)
                    self._slice_error = None
                    await asyncio.sleep(0)
                # The learned models' steps one at a time, feeds served in between. New
                # events go first (what a user just did shows in their next feed, not
                # after a backlog of training: a whole-catalog index refresh is ~200
                # steps), but not before MIN_STEPS_PER_SLICE steps, so that training
                # keeps up with a steady stream (a slice makes about 1.7 steps due).
                steps = 0
                while self.engine.train_step():
                    steps += 1
                    await asyncio.sleep(0)
                    if (
                        steps >= MIN_STEPS_PER_SLICE
                        and await self._pending() > 0
                        and not self.engine.training_backlogged()
                    ):
                        break
                self.engine.checkpoints.poll()
                if self.engine.checkpoints.due():
                    self.engine.checkpoints.start()  # written by a child; feeds go on
                    await asyncio.sleep(0)

    async def _pending(self) -> int:
        return self.engine.pending(await read_log_end(self.engine))

    async def _learning_due(self) -> bool:
        """:meth:`Engine.learning_due`; where the log is on a server, from the end last
        read or told (unknown: a slice is read, which reads it), else asked from a
        worker thread."""
        if self.engine.state.refresh_due():
            return True
        if self._remote:
            return self._end is None or self._end > self.engine.state.applied_offset
        return await self._pending() > 0

    async def _fold(self, limit: int) -> None:
        """A slice of the log folded: :meth:`Engine.learn`; where the log is on a server,
        its events read in a worker thread (:meth:`Engine.read_fold`) and applied here,
        read again in a worker thread if the state moved meanwhile (an erasure), and under
        the lock, on this loop, only if it moved every time (so a fold always ends)."""
        if self._remote:
            for _ in range(_FOLD_TRIES):
                wakes = self._wakes
                fold = await asyncio.to_thread(self.engine.read_fold, limit)
                # The end read with the slice, unless a wake came meanwhile (its news may
                # be past it).
                self._end = fold.end if wakes == self._wakes else None
                if self.engine.apply_fold(fold) != -1:
                    return
            self._end = None  # (read under the lock below: the end it reads is not kept)
        self.engine.learn(max_events=limit, train=False)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
