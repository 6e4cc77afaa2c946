"""The engine in one process: stores, in-memory state, the pipeline, and the two loops.

``Engine.open(settings)`` loads the catalog and replays the event log into the state (the
learning loop from offset 0); the API, the importers, the benchmarks and the evaluation
all drive the same object.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.catalog.index import CatalogIndex
from fyp.catalog.store import CatalogStore, SqliteCatalogStore
from fyp.config import Settings
from fyp.events.impressions import ImpressionLog, SqliteImpressionLog
from fyp.events.ingest import IngestResult, ingest
from fyp.events.log import EventLog, SqliteEventLog
from fyp.pipeline import Feed, FeedPipeline, build_pipeline
from fyp.rank.base import WarmOrFirst
from fyp.retrieve.two_tower import TwoTowerSource
from fyp.state.updater import FeedState
from fyp.storage.checkpoint import read_checkpoint, write_checkpoint
from fyp.types import DEFAULT_SURFACE, Impression, Video, now_ms

if TYPE_CHECKING:
    from fyp.model.online import OnlineModels

Clock = Callable[[], int]
log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pkl"


def _learning_settings(settings: Settings) -> str:
    """The settings a learned state depends on (not where it runs: data dir, host,
    port), as a string to compare a checkpoint's against."""
    return settings.model_dump_json(exclude={"data_dir", "host", "port"})


class Engine:
    def __init__(
        self,
        settings: Settings,
        catalog_store: CatalogStore,
        event_log: EventLog,
        impression_log: ImpressionLog,
        clock: Clock = now_ms,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.catalog_store = catalog_store
        self.event_log = event_log
        self.impressions = impression_log
        self.catalog = CatalogIndex(settings.feed.excluded_labels)
        self.state = FeedState(settings, self.catalog)
        # The learned models train from the learning step's examples (fyp.model.online).
        self.models: OnlineModels | None = None
        if settings.model.enabled:
            from fyp.model.online import OnlineModels

            self.models = OnlineModels(settings, self.state)
        self.pipeline: FeedPipeline = self._build_pipeline()
        # One lock for the in-memory state: the learning step and a feed request never
        # interleave (each holds it for milliseconds).
        self._lock = threading.RLock()
        self.catalog.upsert(list(catalog_store.all()))
        self.state.stats.ensure(len(self.catalog))
        self._restore_serving_memory()
        self.checkpoint_offset = 0  # the log offset of the last checkpoint written or read

    def _build_pipeline(self) -> FeedPipeline:
        settings, models = self.settings, self.models
        return build_pipeline(
            settings,
            self.state,
            self.impressions,
            None
            if models is None
            else WarmOrFirst(models.ranker, self.state.ranker, settings.model.rerank_top),
            [] if models is None else [TwoTowerSource(models, settings.model.retrieval_candidates)],
        )

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock = now_ms,
        replay: bool = True,
        from_checkpoint: bool = True,
    ) -> Engine:
        """The embedded engine over SQLite files in ``settings.data_dir``: its state
        from the last checkpoint (when there is one, made under the same settings, and
        ``from_checkpoint``), then the rest of the log replayed."""
        data: Path = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        engine = cls(
            settings,
            SqliteCatalogStore(data / "catalog.db"),
            SqliteEventLog(data / "events.db"),
            SqliteImpressionLog(data / "impressions.db"),
            clock,
        )
        if from_checkpoint:
            engine._restore(read_checkpoint(data / CHECKPOINT_FILE))
        if replay:
            engine.learn()
            # The replayed state is a great many long-lived objects; a full collection
            # walking them pauses whatever runs next (a feed request) for hundreds of ms.
            gc.collect()
            gc.freeze()
        return engine

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> int:
        """Write the learning state (and the learned models) as of the applied offset,
        atomically; returns the bytes written. Restart = this + the rest of the log, so
        every event is learned exactly once."""
        with self._lock:
            offset = self.state.applied_offset
            size = write_checkpoint(
                self.settings.data_dir / CHECKPOINT_FILE,
                {
                    "offset": offset,
                    "settings": _learning_settings(self.settings),
                    "state": self.state,
                    "models": self.models,
                },
            )
            self.checkpoint_offset = offset
            return size

    def _restore(self, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is None:
            return
        if checkpoint["settings"] != _learning_settings(self.settings):
            log.warning("checkpoint made under other settings: replaying the log instead")
            return
        state: FeedState = checkpoint["state"]
        state.settings = self.settings
        # Videos added or changed since the checkpoint (rows of known ones are kept): the
        # catalog the constructor read from the store, in its row order.
        state.catalog.upsert(self.catalog.videos)
        self.state = state
        self.catalog = state.catalog
        self.models = checkpoint["models"]
        if self.models is not None:
            self.models.settings = self.settings
        state.stats.ensure(len(self.catalog))
        # What was served is not in the event log: rebuilt from the impressions, as at
        # any start.
        state.stats.exposures[:] = 0
        for user in state.users.values():
            user.served.clear()
            user.served_set.clear()
        self._restore_serving_memory()
        self.pipeline = self._build_pipeline()
        self.checkpoint_offset = int(checkpoint["offset"])

    def _restore_serving_memory(self) -> None:
        row_of = self.catalog.row_of
        for video_id, n in self.impressions.exposure_counts().items():
            row = row_of.get(video_id)
            if row is not None:
                self.state.stats.exposures[row] += n
        per_user = self.settings.feed.served_memory
        for user_id, video_ids in self.impressions.recent_by_user(per_user).items():
            rows = [row_of[v] for v in video_ids if v in row_of]
            self.state.user(user_id).remember_served(rows, per_user)

    # -- writes ----------------------------------------------------------------------------

    def upsert_videos(self, videos: Sequence[Video]) -> int:
        """Store videos durably, then make them servable."""
        self.catalog_store.upsert(videos)
        with self._lock:
            self.catalog.upsert(videos)
            self.state.stats.ensure(len(self.catalog))
        return len(videos)

    def ingest(self, raw_events: Sequence[object], now: int | None = None) -> IngestResult:
        """Validate and durably append events. Learning happens in :meth:`learn`."""
        return ingest(
            raw_events,
            self.catalog,
            self.event_log,
            self.settings.limits,
            self.clock() if now is None else now,
        )

    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        """Record impressions served elsewhere (an imported log); ones already recorded
        (the same request_id and position) change nothing."""
        new = self.impressions.record(impressions)
        by_user: dict[str, list[int]] = {}
        for imp, is_new in zip(impressions, new, strict=True):
            if not is_new:
                continue
            row = self.catalog.row_of.get(imp.video_id)
            if row is not None:
                by_user.setdefault(imp.user_id, []).append(row)
        with self._lock:
            for user_id, rows in by_user.items():
                self.state.record_served(user_id, rows)

    # -- the learning loop -----------------------------------------------------------------

    def pending(self) -> int:
        """Events in the log not yet applied to the state."""
        return self.event_log.last_offset() - self.state.applied_offset

    def learn(self, max_events: int | None = None, chunk: int = 5_000, train: bool = True) -> int:
        """Apply events after the state's offset (all of them, or ``max_events``); then,
        with ``train``, every training step of the learned models they made due (the
        server's loop passes False and interleaves :meth:`train_step` with feeds)."""
        done = 0
        while max_events is None or done < max_events:
            limit = chunk if max_events is None else min(chunk, max_events - done)
            batch = self.event_log.read(self.state.applied_offset, limit)
            if not batch:
                break
            with self._lock:
                self.state.apply(batch)
                if train and self.models is not None:
                    self.models.drain()
            done += len(batch)
        if train and self.models is not None and self.models.due():
            with self._lock:  # e.g. the index to rebuild after a restart from a checkpoint
                self.models.drain()
        return done

    def train_step(self) -> bool:
        """One bounded piece of the learned models' training, if any is due."""
        if self.models is None:
            return False
        with self._lock:
            return self.models.step()

    # -- the serving loop ------------------------------------------------------------------

    def feed(
        self,
        user_id: str,
        count: int | None = None,
        surface: str = DEFAULT_SURFACE,
        now: int | None = None,
    ) -> Feed:
        n = self.settings.feed.default_count if count is None else count
        with self._lock:
            return self.pipeline.run(user_id, n, surface, self.clock() if now is None else now)

    def close(self) -> None:
        self.event_log.close()
        self.impressions.close()
        self.catalog_store.close()
