"""The serving process's side of the model channel: a task of the server's event loop that
keeps the replica of the learned models (:mod:`fyp.model.replica`) up to date with what
the learner process publishes.

Every ``model.poll_interval_s`` it reads, in a worker thread, what was published after
the version it serves; a delta is applied in place between requests, in chunks of a few
milliseconds each under the state's lock (feeds hold it too), a snapshot is built in a
worker thread and swapped in at once. Nothing here waits for the learner: if it is down,
the last published models go on being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fyp.engine import Engine
from fyp.learning.link import HOST, LearnerStatus
from fyp.model.channel import ModelChannel
from fyp.model.replica import ModelReplica
from fyp.types import now_ms

log = logging.getLogger(__name__)
_LEARNER_STALE_MS = 5_000  # a status older than this: the learner is not running
_STATUS_EVERY_S = 0.5  # how often the learner's status on the channel is read


@dataclass(frozen=True)
class ModelHealth:
    """The learned models a server serves, for ``/healthz`` and ``/metrics``."""

    version: int  # the version served (0: none yet: the first ranker serves)
    age_s: float | None  # since the learner published it
    versions_behind: int  # published and not applied yet
    learner_up: bool
    learner_offset: int  # events the learner has learned from
    learner_lag: int  # events in the log it has not learned from yet
    restarts: int  # of the learner, by this server's supervisor
    sync_error: str | None


class ModelSync:
    def __init__(self, engine: Engine, channel: ModelChannel) -> None:
        assert engine.replica is not None, "a serving engine (role 'serving')"
        self.engine = engine
        self.replica: ModelReplica = engine.replica
        self.channel = channel
        self.latest = 0  # the newest version published, as of the last poll
        self.error: str | None = None
        self.restarts: Callable[[], int] = lambda: 0  # (the supervisor's count, if one runs)
        # The learner this server runs, while it runs (None: not supervised here).
        self.supervised_pid: Callable[[], int | None] = lambda: None
        self._task: asyncio.Task[None] | None = None

    def catch_up(self) -> int:
        """Everything published, applied now (at a start, before serving); how many."""
        n = 0
        for update in self.channel.read_after(self.replica.version):
            n += self.replica.apply(update)
        self.latest = self.channel.latest()
        return n

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.channel.close)

    async def _run(self) -> None:
        every = self.engine.settings.model.poll_interval_s
        status_at = -math.inf
        link = self.engine.learner
        while True:
            try:
                await self.sync()
                self.error = None
                if link is not None and time.monotonic() - status_at >= _STATUS_EVERY_S:
                    # (the learner's status on the channel, for /healthz: read here, in a
                    # thread, as a Redis read on the event loop would hold every request)
                    status_at = time.monotonic()
                    await asyncio.to_thread(link.remote_status)
            except Exception as err:  # a torn read, a full disk: the next poll retries
                self.error = f"{type(err).__name__}: {err}"
                log.warning("could not apply the published models (%s); retrying", err)
            await asyncio.sleep(every)

    async def sync(self) -> int:
        """One poll: what was published since, applied; how many updates."""
        replica, lock = self.replica, self.engine.lock
        updates = await asyncio.to_thread(self.channel.read_after, replica.version)
        applied = 0
        for update in updates:
            if not replica.accepts(update):
                replica.status.ignored += 1
                continue
            if update.full:
                parts = await asyncio.to_thread(replica.build, update)
                with lock:
                    applied += replica.install(parts)
                continue
            steps = replica.apply_steps(update)
            while True:
                with lock:
                    if next(steps, None) is None:
                        break
                await asyncio.sleep(0)  # requests waiting go first
            applied += 1
        if updates:
            self.latest = max(self.latest, updates[-1].version)
        return applied

    def health(self, learner: LearnerStatus | None, log_end: int) -> ModelHealth:
        s = self.replica.status
        supervised = self.supervised_pid()
        up = (
            learner is not None
            and now_ms() - learner.heartbeat_ms < _LEARNER_STALE_MS
            # (a killed one's last status is fresh for a while)
            and (
                learner.pid == supervised
                if supervised is not None
                # (its pid is looked up only on its own machine: elsewhere, the heartbeat)
                else learner.host not in ("", HOST) or _alive(learner.pid)
            )
        )
        latest = max(self.latest, learner.version if learner is not None else 0)
        return ModelHealth(
            version=s.version,
            age_s=None if not s.version else round((now_ms() - s.published_ms) / 1000, 3),
            versions_behind=max(0, latest - s.version),
            learner_up=up,
            learner_offset=learner.offset if learner is not None else 0,
            learner_lag=max(0, log_end - (learner.offset if learner is not None else 0)),
            restarts=self.restarts(),
            sync_error=self.error,
        )


def _p95(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (the learner runs on this machine): it exists and has
    not exited (a zombie, not yet reaped by its parent, has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)  # (no /proc: whether it exists at all)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


class ModelSyncCollector(Collector):
    """``/metrics``: the model version served, its age, how far behind the learner it
    is, and whether the learner runs."""

    def __init__(self, sync: ModelSync, engine: Engine, log_end: Callable[[], int]) -> None:
        self.sync = sync
        self.engine = engine
        self.log_end = log_end  # (the event log's end as read for the scrape: Metrics.log_end)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        link = self.engine.learner
        h = self.sync.health(None if link is None else link.status(), self.log_end())
        status = self.sync.replica.status
        gauges = (
            ("fyp_model_version", "The learned models' version served", h.version),
            (
                "fyp_model_age_seconds",
                "Since the learner published the version served",
                h.age_s if h.age_s is not None else float("nan"),
            ),
            (
                "fyp_model_versions_behind",
                "Versions published and not applied yet",
                h.versions_behind,
            ),
            (
                "fyp_learner_up",
                "Whether the learner process runs (1) or not (0)",
                int(h.learner_up),
            ),
            (
                "fyp_learner_lag_events",
                "Events in the log the learner has not learned from",
                h.learner_lag,
            ),
            (
                "fyp_model_publish_to_apply_p95_seconds",
                "From the learner's publish to this server's apply, p95 of the last 1,000",
                _p95(status.delays_ms) / 1000,
            ),
            (
                "fyp_model_apply_max_pause_seconds",
                "The longest step of applying a published update (feeds waited behind it)",
                status.max_pause_ms / 1000,
            ),
        )
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        restarts = CounterMetricFamily("fyp_learner_restarts", "Learner processes restarted")
        restarts.add_metric([], h.restarts)
        yield restarts
        ignored = CounterMetricFamily(
            "fyp_model_updates_ignored",
            "Published updates read and not applied (applied already, or out of order)",
        )
        ignored.add_metric([], status.ignored)
        yield ignored
