"""The engine in one process: stores, in-memory state, the pipeline, and the two loops.

``Engine.open(settings)`` loads the catalog and replays the event log into the state (the
learning loop from offset 0); the API, the importers, the benchmarks and the evaluation
all drive the same object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fyp.attributes import as_attributes
from fyp.catalog.index import CatalogIndex
from fyp.catalog.moderation import ModerationStore, SqliteModerationStore
from fyp.catalog.store import CatalogStore
from fyp.config import Settings
from fyp.events.backends import event_log_identity, open_event_log
from fyp.events.impressions import ImpressionLog
from fyp.events.ingest import IngestResult, Refusal, ingest
from fyp.events.log import EventLog
from fyp.pipeline import Feed, FeedPipeline, PipelineCounters, build_pipeline
from fyp.privacy.audit_log import AuditLog
from fyp.privacy.pseudonym import Pseudonyms
from fyp.privacy.ratelimit import retry_after
from fyp.privacy.residency import ResidencyError, bind_data_dir, not_homed_here
from fyp.privacy.rights import UserRights, erasing_message
from fyp.privacy.user_writes import UserWrites
from fyp.rank.base import FirstRankerValues, Ranker, WarmOrFirst
from fyp.rank.page_scorer import PageFeatures, PageScoredRanker, PageScorer
from fyp.rank.scorer_training import PageScorerTrainer, Retrain
from fyp.retrieve.two_tower import TwoTowerSource
from fyp.safety.moderator import Moderator
from fyp.state.feedback import LABELS
from fyp.state.updater import LogState
from fyp.storage.backends import open_stores
from fyp.storage.changes import CatalogChanges, ModerationChanges, UserChanges
from fyp.storage.checkpoint import discard_partial, read_checkpoint
from fyp.storage.checkpointer import Checkpointer
from fyp.types import (
    DAY_MS,
    DEFAULT_SURFACE,
    Attributes,
    Event,
    Impression,
    LoggedEvent,
    ModerationAction,
    UserProfile,
    Video,
    now_ms,
)
from fyp.users.controls import ControlsIn, ProfileIn, UserControls
from fyp.users.directory import UserDirectory
from fyp.users.store import SqliteUserStore, StoredUser, UserStore

if TYPE_CHECKING:
    from fyp.audit.report import AuditReport
    from fyp.learning.link import LearnerLink
    from fyp.model.online import OnlineModels
    from fyp.model.replica import ModelReplica

Clock = Callable[[], int]
log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pkl"
LEARNER_CHECKPOINT_FILE = "learner-checkpoint.pkl"  # the learner process's (fyp.learning)
# How often a reconcile reads the stores whole rather than what changed since its last
# read: a fallback (a store's change stamps cover every write, and its count of completed
# erasures the deletions of an erasure this process missed from its tombstone to its
# completion), and what a store that cannot say what changed gets at every reconcile.
FULL_RECONCILE_EVERY_S = 600.0
# Who drives the engine: "all", one process that serves and trains (tests, the evaluation,
# ``fyp train``, ``model.learner = "in_process"``); "serving", a server whose learned
# models are a replica of what a learner process publishes (it folds the log for its own
# first ranker and sources, and never trains); "learner", that learner process (it
# folds and trains, and writes nothing the server owns: no moderation, no erasure).
Role = Literal["all", "serving", "learner"]
IN_MEMORY = Path(":memory:")  # SQLite's in-memory database: a store that keeps no file
WHY_WINDOW_MS = 30 * DAY_MS  # "why this video" answers for what was served this long ago


@dataclasses.dataclass(frozen=True, slots=True)
class FoldRead:
    """Events :meth:`Engine.read_fold` read, and where the state was when it read them."""

    state: LogState
    start: int  # the state's offset
    erasures: int  # users erased from the state by then
    end: int  # the log's end, read before the events
    batch: list[LoggedEvent]


class UnknownPageError(LookupError):
    """``after`` names no response served to this user (or one whose impressions are
    gone: retention, erasure)."""


def _no_notice(kind: str, key: str) -> None:
    """The default :attr:`Engine.changed`: nothing (one process: nobody to tell)."""


def serving_gc() -> None:
    """The collector's settings for a serving process: it allocates a little per request
    over a large, long-lived state (frozen after a replay, see :meth:`Engine.open`), so
    the young generation is collected less often, since each collection is a pause
    some request waits behind. ``fyp serve`` and the demo call it; so do the benchmarks
    that time serving in process."""
    gc.set_threshold(50_000, 20, 100)


def _learning_settings(settings: Settings) -> str:
    """The settings a learned state depends on (not where it runs: data dir, host,
    port, keys), as a string to compare a checkpoint's against."""
    learned = settings.model_dump_json(
        exclude={
            "data_dir": True,
            "host": True,
            "port": True,
            "event_log": True,  # (below, without a password)
            "auth": True,
            "privacy": {"secret_file", "require_registered_users", "retention_days"},
            # How the server paces and protects its work, not what it learns.
            "checkpoint_timeout_s": True,
            "model": {
                "max_queued_batches",
                "learner",
                "publish_interval_s",
                "poll_interval_s",
                "snapshot_every_s",
                "learner_priority",
                "learner_nice",
                "learner_erase_timeout_s",
            },
        }
    )
    # The log's offsets are what a checkpoint counts in: one made from another log is not
    # restored (the embedded default adds nothing, so its checkpoints stay valid).
    where = event_log_identity(settings.event_log)
    return learned if where is None else f"{learned} event_log={where}"


def _folded(actions: Sequence[ModerationAction]) -> tuple[str | None, tuple[str, ...] | None]:
    """A video's moderation state and labels after its ``actions`` (in order): each
    action sets what it names and leaves the rest."""
    state: str | None = None
    labels: tuple[str, ...] | None = None
    for a in actions:
        state = state if a.state is None else a.state
        labels = labels if a.labels is None else a.labels
    return state, labels


def _close_quietly(close: Callable[[], None], what: str) -> None:
    """``close()``, a failure logged: called while an error unwinds, which it must not
    replace (the cause the operator needs to see)."""
    try:
        close()
    except Exception as err:
        log.warning("could not close %s after a failed open (%s)", what, err)


def serving_role(settings: Settings) -> Role:
    """The role of a server under these settings: "serving" where a learner process
    trains the learned models, else "all"."""
    m = settings.model
    return "serving" if m.enabled and m.learner == "process" else "all"


def open_data_dir(settings: Settings) -> Pseudonyms:
    """Check that the data dir is this region's (binding a new one) and load the
    pseudonym secret beside it (made for a new one): DataDirError or SecretError, with
    a message for the operator, when either is wrong."""
    data = settings.data_dir
    new = bind_data_dir(data, settings.region)
    secret = settings.privacy.secret_file or data.with_name(data.name + ".secret")
    return Pseudonyms.from_file(secret, data, create=new)


class Engine:
    def __init__(
        self,
        settings: Settings,
        catalog_store: CatalogStore,
        event_log: EventLog,
        impression_log: ImpressionLog,
        clock: Clock = now_ms,
        moderation_store: ModerationStore | None = None,
        user_store: UserStore | None = None,
        pseudonyms: Pseudonyms | None = None,
        audit: AuditLog | None = None,
        role: Role = "all",
    ) -> None:
        self.settings = settings
        self.role: Role = role
        name = LEARNER_CHECKPOINT_FILE if role == "learner" else CHECKPOINT_FILE
        self.clock = clock
        # User ids are replaced by their pseudonyms where they enter (every method that
        # takes one): nothing below this class, in memory or on disk, holds a raw id.
        self.pseudonyms = pseudonyms or Pseudonyms.ephemeral()
        self.audit = audit or AuditLog(None, clock)
        self.catalog_store = catalog_store
        self.event_log = event_log
        self.impressions = impression_log
        # In memory unless given: an engine in a test or an evaluation keeps no files.
        self.moderation_store: ModerationStore = moderation_store or SqliteModerationStore(
            IN_MEMORY
        )
        self.user_store: UserStore = user_store or SqliteUserStore(IN_MEMORY)
        self.catalog = CatalogIndex(settings.feed.excluded_labels, settings.policy)
        self.state = LogState(settings, self.catalog)
        self.users = UserDirectory(settings.feed.history_size, len(LABELS))
        history = self.moderation_store.history()
        self.catalog.moderate(history)
        self.users.profiles.update(self.user_store.profiles())
        for user_id, data in self.user_store.controls().items():
            self.users.set_controls(user_id, UserControls.from_json(data))
        # The learned models train from the learning step's examples (fyp.model.online).
        self.models: OnlineModels | None = None
        # A serving process's read-only copy of what the learner process publishes.
        self.replica: ModelReplica | None = None
        # The learner process, as the serving process reaches it (an erasure waits for it).
        self.learner: LearnerLink | None = None
        if settings.model.enabled and role == "serving":
            from fyp.learning.link import LearnerLink
            from fyp.model.replica import ModelReplica

            self.replica = ModelReplica(settings, self.state)
            self.learner = LearnerLink(settings)
        elif settings.model.enabled:
            from fyp.model.online import OnlineModels

            # The learner process publishes its item vectors and searches none of them.
            self.models = OnlineModels(settings, self.state, searched=role != "learner")
        # The page scorer, trained from the log at each period's boundary (fyp.rank).
        self.page_scorer: PageScorerTrainer | None = self._new_page_scorer()
        # The catalog before the pipeline: its sources build what they derive from it
        # (discover's topics) now, not in a first request that would run over budget.
        self.catalog.upsert(list(catalog_store.all()))
        self.state.stats.ensure(len(self.catalog))
        self.pipeline: FeedPipeline = self._build_pipeline()
        # One lock for the in-memory state: the learning step and a feed request never
        # interleave (each holds it for milliseconds).
        self._lock = threading.RLock()
        self.moderator = Moderator(
            lambda: self.state,
            self.moderation_store,
            self.audit,
            clock,
            settings.policy.extra_labels,
            self._lock,
            history,
            reviews=role != "learner",
        )
        self._restore_serving_memory()
        self.checkpoints = Checkpointer(
            settings.data_dir / name,
            self._payload,
            lambda: self.state.applied_offset,
            self._lock,
            settings.checkpoint_every_events,
            settings.checkpoint_timeout_s,
            landed=self._checkpointed,
        )
        # Taken by every durable write about a user (ingest's gate and append, shared
        # between batches; profiles, controls, imported impressions), and by an erasure
        # to set its tombstone: a write that passed the tombstone check has landed before
        # the erasure deletes.
        self._user_writes = UserWrites()
        # Export and erasure, with the erasures accepted and not complete: nothing of
        # those users is stored, learned or served.
        self.rights = UserRights(
            settings,
            self.pseudonyms,
            self.audit,
            self.user_store,
            self.users,
            event_log,
            impression_log,
            self.checkpoints,
            lambda: self.state,
            lambda: self.models,
            self.replica,
            self.learner,
            self.home,
            clock,
            self._lock,
            self._user_writes,
        )
        # Called after each change other serving processes must apply (committed to its
        # store, applied here), before it is acknowledged: (kind, key), see
        # fyp.cluster.changes, which sets it where there are other processes to tell.
        self.changed: Callable[[str, str], None] = _no_notice
        self.moderator.changed = lambda video_id: self.changed("moderation", video_id)
        self.rights.changed = lambda ref: self.changed("erasure", ref)
        self._refresh_marks_known: set[tuple[str, int]] = set()  # (pid, offset) applied
        # Where each store's changes are read from next (reconcile_changes); None until
        # the first whole read, or for a store that cannot say what changed.
        self._change_cursors: dict[str, int] | None = None
        self._full_reconcile_at = -math.inf
        self.last_reconcile: tuple[bool, int] = (False, 0)  # (whole?, rows read) of the last
        self._apply_user_settings()

    @property
    def lock(self) -> threading.RLock:
        """The lock of the in-memory state: feeds, learning steps and a replica's
        applies each hold it (for milliseconds)."""
        return self._lock

    def _apply_user_settings(self) -> None:
        """Profiles' regions and pending refreshes, into the (new or restored) state."""
        for user_id, profile in self.users.profiles.items():
            if user_id in self.rights.tombstoned:
                continue
            if profile.region is not None:
                self.state.user(user_id).region = profile.region
            # (a restored user's codes may predate a change of the profile: set again)
            if profile.attributes or user_id in self.state.users:
                self.state.set_user_attributes(user_id, profile.attributes)
        for user_id, offset, _ in self.user_store.refreshes():
            self._refresh_marks_known.add((user_id, offset))
            # (a mark applied already is in the state; one of a user being erased, never)
            if offset > self.state.applied_offset and user_id not in self.rights.tombstoned:
                self.state.schedule_refresh(user_id, offset)

    def _new_page_scorer(self) -> PageScorerTrainer | None:
        if not self.settings.scorer.enabled:
            return None
        trainer = PageScorerTrainer(self.settings.scorer, PageScorer())
        self.state.forget_listeners.append(trainer.forget)  # refreshes and erasures
        return trainer

    def _build_pipeline(self) -> FeedPipeline:
        settings = self.settings
        learned: OnlineModels | ModelReplica | None = self.models
        if self.replica is not None:
            self.replica.state = self.state  # (a restored state replaces the constructor's)
            learned = self.replica
        ranker: Ranker = (
            FirstRankerValues(self.state.ranker)
            if learned is None
            else WarmOrFirst(learned.ranker, self.state.ranker, settings.model.rerank_top)
        )
        if self.page_scorer is not None:
            ranker = PageScoredRanker(
                ranker, self.page_scorer.scorer, PageFeatures(self.state, learned)
            )
        return build_pipeline(
            settings,
            self.state,
            self.impressions,
            ranker,
            []
            if learned is None
            else [TwoTowerSource(learned, settings.model.retrieval_candidates)],
            self.users,
        )

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock = now_ms,
        replay: bool = True,
        from_checkpoint: bool = True,
        role: Role = "all",
    ) -> Engine:
        """The engine over the stores of ``settings.store`` (SQLite files in
        ``settings.data_dir`` by default) and its event log: its state
        from the last checkpoint (when there is one, made under the same settings, and
        ``from_checkpoint``), then the rest of the log replayed. ``role``: see
        :data:`Role`."""
        data: Path = settings.data_dir
        pseudonyms = open_data_dir(settings)
        # A step that raises (a store that fails to open, a bad checkpoint, a failing
        # replay) closes what was opened before it, last first, and the error goes on:
        # else its connections, files and writer threads outlive it (a SQLite file kept
        # locked, a retry in the same process refused).
        with contextlib.ExitStack() as opened:
            stores = open_stores(settings.store, data, clock)
            opened.callback(_close_quietly, stores.close, "the stores")
            event_log = open_event_log(settings.event_log, data)
            opened.callback(_close_quietly, event_log.close, "the event log")
            engine = cls(
                settings,
                stores.catalog,
                event_log,
                stores.impressions,
                clock,
                stores.moderation,
                stores.users,
                pseudonyms,
                stores.audit,
                role,
            )
            opened.pop_all()  # (the engine holds them now: its close closes them all)
            opened.callback(_close_quietly, engine.close, "the engine")
            # A checkpoint the last process was writing when it died (its child dies with
            # it) never landed; what it had written holds user data, erased or not since.
            if discard_partial(engine.checkpoints.path):
                log.info("removed a partial checkpoint left by a killed writer")
            if from_checkpoint:
                engine._restore(read_checkpoint(engine.checkpoints.path))
            for pid in engine.rights.tombstoned:  # a checkpoint older than their tombstone
                engine.state.erase_user(pid)
            if replay:
                engine.learn()  # (which skips the events of users being erased)
                # The replayed state is a great many long-lived objects; a full collection
                # walking them pauses whatever runs next (a feed request) for hundreds of ms.
                gc.collect()
                gc.freeze()
            if role != "learner":  # (the server completes erasures; the learner follows)
                engine.rights.resume_erasures()
            opened.pop_all()  # opened whole: the caller closes it
        return engine

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpointed(self, offset: int) -> None:
        """A checkpoint holds the log through ``offset``: told to the log too (one that
        trims, the Redis log, keeps what this process would replay after it)."""
        reader = f"{self.role}@{socket.gethostname()}:{self.settings.data_dir.resolve()}"
        try:
            self.event_log.commit(reader, offset)
        except OSError as err:  # (its server unreachable: the next checkpoint tells it)
            log.warning("could not record the checkpoint's offset in the event log (%s)", err)

    def _payload(self) -> dict[str, Any]:
        return {
            "offset": self.state.applied_offset,
            "settings": _learning_settings(self.settings),
            "state": self.state,
            "models": self.models,
            "page_scorer": self.page_scorer,
        }

    def _restore(self, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is None:
            return
        if checkpoint["settings"] != _learning_settings(self.settings):
            log.warning("checkpoint made under other settings: replaying the log instead")
            return
        if (checkpoint["models"] is None) != (self.models is None):
            # (a serving process's, without the models, or one that trained them)
            log.warning("checkpoint made by another role: replaying the log instead")
            return
        state: LogState = checkpoint["state"]
        state.settings = self.settings
        # Videos and moderation since the checkpoint: the catalog the constructor read
        # from the stores (rows of known videos are kept).
        state.catalog.update_from(self.catalog)
        self.state = state
        self.catalog = state.catalog
        self.models = checkpoint["models"]
        if self.models is not None:
            self.models.settings = self.settings
            self.models.set_searched(self.role != "learner")
        # (the checkpoint's trainer is the forget listener of the checkpoint's state)
        self.page_scorer = checkpoint.get("page_scorer")
        if self.page_scorer is None:
            self.page_scorer = self._new_page_scorer()
        state.stats.ensure(len(self.catalog))
        # What was served is not in the event log: rebuilt from the impressions, as at
        # any start.
        state.stats.exposures[:] = 0
        for user in state.users.values():
            user.served.clear()
            user.served_set.clear()
        self._restore_serving_memory()
        self.pipeline = self._build_pipeline()
        self.checkpoints.offset = int(checkpoint["offset"])
        self._checkpointed(self.checkpoints.offset)
        self._apply_user_settings()

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
        if videos:  # one notice for the batch (ids hold no control characters)
            self.changed("video", "\n".join(dict.fromkeys(v.video_id for v in videos)))
        return len(videos)

    def ingest(
        self,
        raw_events: Sequence[object],
        now: int | None = None,
        user_limit: Callable[[str], float] | None = None,
    ) -> IngestResult:
        """Validate and durably append events (each user's id pseudonymised; events of
        users not homed here refused). ``user_limit``: seconds a user must wait before
        sending more (0: go ahead), e.g. the API's per-user rate limit. Learning happens
        in :meth:`learn`."""

        pseudonym = self.pseudonyms.of  # cached: residency_refusal's call costs nothing more

        def gate(e: Event) -> Event | Refusal:
            refusal = self.residency_refusal(e.user_id)
            if refusal is not None:
                return Refusal("residency", f"user_id: {refusal}")
            pid = pseudonym(e.user_id)
            if pid in self.rights.tombstoned:
                return Refusal("erasing", f"user_id: {erasing_message(e.user_id)}")
            wait = 0.0 if user_limit is None else user_limit(e.user_id)
            if wait > 0:
                return Refusal(
                    "rate_limited",
                    f"user_id: over this user's rate limit; retry in {retry_after(wait)} s",
                )
            return Event(  # stored under the pseudonym (a constructor: replace() costs 3x)
                e.event_id,
                pid,
                e.video_id,
                e.type,
                e.ts,
                e.watch_ms,
                e.request_id,
                e.surface,
            )

        # The gate and the append under the lock that an erasure takes to set its
        # tombstone: an event let in before it is in the log when the erasure deletes.
        # Shared by batches: one batch's append (its fsync) does not wait for another's.
        with self._user_writes.shared():
            return ingest(
                raw_events,
                self.catalog,
                self.event_log,
                self.settings.limits,
                self.clock() if now is None else now,
                gate,
            )

    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        """Record impressions served elsewhere (an imported log); ones already recorded
        (the same request_id and position) change nothing."""
        impressions = [
            dataclasses.replace(i, user_id=self.pseudonyms.of(i.user_id)) for i in impressions
        ]
        with self._user_writes:  # (none of a user being erased)
            impressions = [i for i in impressions if i.user_id not in self.rights.tombstoned]
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

    def pending(self, log_end: int | None = None) -> int:
        """Events in the log not yet applied to the state; ``log_end``, the log's end read
        already (off the event loop, fyp.api.log_end), else read now. Never below 0 (the
        loop may have folded past an end read a moment ago)."""
        end = self.event_log.last_offset() if log_end is None else log_end
        return max(0, end - self.state.applied_offset)

    def learning_due(self) -> bool:
        """Whether :meth:`learn` has anything to do: events, or a refresh to carry out."""
        return self.pending() > 0 or self.state.refresh_due()

    def learn(self, max_events: int | None = None, chunk: int = 5_000, train: bool = True) -> int:
        """Apply events after the state's offset (all of them, or ``max_events``); then,
        with ``train``, every training step of the learned models they made due (the
        server's loop passes False and interleaves :meth:`train_step` with feeds)."""
        done = 0
        froze = False
        while max_events is None or done < max_events:
            if max_events is None and done >= chunk:
                # A long replay only adds long-lived state (users, affinities, rows):
                # out of the collector's way as it grows, else every full collection
                # walks all of it again (a seventh of a replay's time at 100k videos).
                gc.freeze()
                froze = True
            limit = chunk if max_events is None else min(chunk, max_events - done)
            with self._lock:  # read under it too: an erasure between would be undone
                end = self.event_log.last_offset()
                batch = self.event_log.read(self.state.applied_offset, limit)
                applied = self._fold(batch, end, train)
            if applied is None:
                break
            done += applied
        if train and self.models is not None:
            # What is still due (e.g. the index to rebuild after a restart from a
            # checkpoint), and the index's re-clustering, if one runs, swapped in.
            with self._lock:
                self.models.drain()
        if froze:  # one full collection for what the replay left unreachable, then as before
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        return done

    def _fold(self, batch: list[LoggedEvent], end: int, train: bool) -> int | None:
        """One step of :meth:`learn` (hold the lock; it is let go for a page scorer's
        boundary): ``batch``, the events read after the state's offset (the log's end
        ``end`` read before them), applied up to the page scorer's next boundary. The
        events applied; 0 where the boundary's work came first (read again); None where
        there were none (the log's end reached)."""
        if not batch:
            # Offsets up to the log's end that hold no event (erased, expired) are
            # passed over, refreshes due by then carried out.
            if self.state.refresh_due() or end > self.state.applied_offset:
                self.state.apply([], through=end)
            self.moderator.review_reported()  # any a failed write left due
            return None
        # The page scorer's boundary: events before it are applied first, the boundary's
        # work done (outside the lock), then the rest.
        before = len(batch) if self.page_scorer is None else self.page_scorer.before(batch)
        if not before:
            self._lock.release()
            try:
                self.train_page_scorer(batch[0].event.ts)
            finally:
                self._lock.acquire()
            return 0
        batch = batch[:before]
        self.state.apply(self._learnable(batch), through=batch[-1].offset)
        if train and self.models is not None:
            self.models.drain(settle=False)
        self.moderator.review_reported()
        return len(batch)

    def read_fold(self, limit: int) -> FoldRead:
        """The next ``limit`` events to fold, read without the lock, for
        :meth:`apply_fold`: the server's learning loop reads them in a worker thread
        where the log is on a server (Redis), so that the round trips hold neither the
        lock nor its event loop (a read waits behind the server's fsyncs)."""
        state = self.state
        start, erasures = state.applied_offset, state.erasures
        end = self.event_log.last_offset()
        return FoldRead(state, start, erasures, end, self.event_log.read(start, limit))

    def apply_fold(self, fold: FoldRead) -> int | None:
        """What :meth:`learn` (one step, ``train=False``) does with the events it reads,
        for events :meth:`read_fold` read: applied if the state is where they were read
        from and no user was erased from it since (their events, read before the
        erasure deleted them, would bring the user back); else not, and ``-1`` (read
        again). Otherwise as :meth:`_fold`."""
        with self._lock:
            state = self.state
            if fold.state is not state or (fold.start, fold.erasures) != (
                state.applied_offset,
                state.erasures,
            ):
                return -1
            return self._fold(fold.batch, fold.end, train=False)

    def train_page_scorer(self, now: int) -> Retrain | None:
        """The page scorer's work at a period's boundary, if ``now`` (event time, Unix ms)
        has reached one: label the last period's pools, retrain, take new pools
        (fyp.rank.scorer_training). The learning step calls it with the time of the
        first event past a boundary, before applying that event; an evaluation, at the
        end of its training days. None if not due."""
        trainer = self.page_scorer
        if trainer is None or not trainer.due(now):
            return None
        ranker = self.pipeline.ranker
        if not isinstance(ranker, PageScoredRanker):  # replaced (a test's ranker)
            trainer.skip(now)
            return None
        # Asking for pools must not change what is served: no side effects, own counters.
        pipeline = dataclasses.replace(self.pipeline, side_effects=[], counters=PipelineCounters())
        done = trainer.boundary(self.state, pipeline, ranker, now, self._lock)
        log.info(
            "page scorer: %d pools labelled, trained on %d (%.1f s, weights %s), "
            "%d new pools (%.1f s)",
            done.labelled_pools,
            done.trained_groups,
            done.fit_s,
            done.weights,
            done.snapshot_users,
            done.snapshot_s,
        )
        return done

    def _learnable(self, batch: list[LoggedEvent]) -> list[LoggedEvent]:
        """The events of ``batch`` the learning step may learn from: not those of a user
        being erased (deleted from the log by the erasure, but a replay at a start that
        resumes one, or a step between its tombstone and its deletion, would see them)."""
        erasing = self.rights.tombstoned
        if not erasing:
            return batch
        return [x for x in batch if x.event.user_id not in erasing]

    def training_due(self) -> bool:
        """Whether :meth:`train_step` has work (the learned models' queues, the index)."""
        if self.models is None:
            return False
        with self._lock:
            return self.models.due()

    def training_backlogged(self) -> bool:
        """Whether the learned models have so much queued (``max_queued_batches``) that
        the learning loop should train before it reads more events."""
        if self.models is None:
            return False
        with self._lock:
            return self.models.backlogged()

    def train_step(self) -> bool:
        """One bounded piece of the learned models' training, if any is due."""
        if self.models is None:
            return False
        with self._lock:
            return self.models.step()

    # -- users ------------------------------------------------------------------------------

    def pseudonym(self, user_id: str) -> str:
        """How ``user_id`` is known inside the engine (and at rest)."""
        return self.pseudonyms.of(user_id)

    def residency_refusal(self, user_id: str) -> str | None:
        """Why this deployment may not read or write ``user_id``'s data (None: it may).
        With ``privacy.require_registered_users``, only users created here count."""
        if not self.settings.privacy.require_registered_users:
            return None
        if self._homed(self.pseudonyms.of(user_id)):
            return None
        return not_homed_here(user_id, self.settings.region)

    def _homed(self, pid: str) -> bool:
        """Whether the user of pseudonym ``pid`` was created here, in this region."""
        profile = self.users.profiles.get(pid)
        return profile is not None and profile.region == self.settings.region

    def home(self, user_id: str) -> str:
        """The user's pseudonym, if their data may be touched here; else ResidencyError,
        or ErasureInProgressError for a user being erased."""
        refusal = self.residency_refusal(user_id)
        if refusal is not None:
            raise ResidencyError(refusal)
        pid = self.pseudonyms.of(user_id)
        self.rights.refuse_erasing(user_id, pid)
        return pid

    def knows_user(self, user_id: str) -> bool:
        pid = self.pseudonyms.of(user_id)
        return pid in self.users.profiles or pid in self.state.users

    def born(self, user_id: str) -> int | None:
        """When the user's profile was created (Unix ms; 0 for a user without one), None
        while they are being erased: what a user token is bound to, so that it dies with
        its user and never serves the new user an erased id is created as again."""
        pid = self.pseudonyms.of(user_id)
        if pid in self.rights.tombstoned:
            return None
        profile = self.users.profiles.get(pid)
        return 0 if profile is None else profile.created_at

    def profile_of(self, user_id: str) -> UserProfile | None:
        return self.users.profiles.get(self.home(user_id))

    def controls_of(self, user_id: str) -> UserControls:
        return self.users.controls_of(self.home(user_id))

    def register_users(self, user_ids: Sequence[str]) -> int:
        """Create, homed in this region, the users not known yet (a trusted import: its
        users are this deployment's); returns how many were new. One durable write."""
        now = self.clock()
        with self._user_writes:  # (users being erased are not created again until erased)
            new = {
                pid: UserProfile(pid, region=self.settings.region, created_at=now, updated_at=now)
                for pid in map(self.pseudonyms.of, user_ids)
                if pid not in self.users.profiles and pid not in self.rights.tombstoned
            }
            if new:
                self.user_store.put_profiles(list(new.values()))
                with self._lock:
                    self.users.profiles.update(new)
                    for pid in new:
                        self.state.user(pid).region = self.settings.region
        return len(new)

    def put_user_attributes(self, attributes: Mapping[str, Attributes]) -> int:
        """Set these users' attributes (user id -> all their attributes, as checked by
        :func:`fyp.attributes.attributes_problem`), creating the users not known yet,
        homed in this region (a trusted import, like :meth:`register_users`); returns how
        many profiles were written. Users being erased are left out. One durable write."""
        now = self.clock()
        with self._user_writes:
            changed: dict[str, UserProfile] = {}
            for user_id, attrs in attributes.items():
                pid = self.pseudonyms.of(user_id)
                if pid in self.rights.tombstoned:
                    continue
                old = self.users.profiles.get(pid)
                if old is None:
                    old = UserProfile(pid, region=self.settings.region, created_at=now)
                elif old.attributes == attrs:
                    continue
                changed[pid] = dataclasses.replace(old, attributes=attrs, updated_at=now)
            if changed:
                self.user_store.put_profiles(list(changed.values()))
                with self._lock:
                    self.users.profiles.update(changed)
                    for pid, profile in changed.items():
                        if profile.region is not None:
                            self.state.user(pid).region = profile.region
                        self.state.set_user_attributes(pid, profile.attributes)
        return len(changed)

    def put_user(self, user_id: str, change: ProfileIn) -> tuple[UserProfile, bool]:
        """Create or update a profile (the fields given); returns it (its ``user_id``
        the pseudonym) and whether it is new. The region is this deployment's (given or
        not): a user of another region is refused (ResidencyError), and nothing written.
        Durable before it returns. ErasureInProgressError while the user is being erased:
        once erased, the id is created anew, empty."""
        given = change.model_dump(exclude_unset=True)
        region = self.settings.region
        if (given.get("region") or region) != region:
            raise ResidencyError(
                f"region {given['region']!r} is not this deployment's ({region!r}): a "
                f"user is created by their home region's deployment"
            )
        now = self.clock()
        pid = self.pseudonyms.of(user_id)
        with self._user_writes:
            self.rights.refuse_erasing(user_id, pid)
            old = self.users.profiles.get(pid)
            base = old or UserProfile(pid, created_at=now)
            attributes = (
                as_attributes(change.attributes or {}) if "attributes" in given else base.attributes
            )
            profile = UserProfile(
                pid,
                given.get("age_band", base.age_band),
                given.get("language", base.language),
                region,
                base.created_at,
                now,
                attributes,
            )
            self.user_store.put_profile(profile)
            with self._lock:
                self.users.profiles[pid] = profile
                self.state.user(pid).region = profile.region
                self.state.set_user_attributes(pid, profile.attributes)
        self._user_changed(pid)
        return profile, old is None

    def set_controls(self, user_id: str, change: ControlsIn) -> UserControls:
        """Apply a controls change (durable before it returns). ``refresh`` forgets the
        user's learned personalisation as of every event logged so far: the learning step
        does it, at its next :meth:`learn` (the server's learning loop is woken)."""
        with self._user_writes:  # checked and written before any erasure of the user
            user_id = self.home(user_id)
            now = self.clock()
            controls = self.users.controls_of(user_id).updated(change)
            self.user_store.put_controls(user_id, controls.to_json(), now)
            mark = self.event_log.last_offset() if change.refresh else None
            if mark is not None:
                self.user_store.add_refresh(user_id, mark, now)
            with self._lock:
                self.users.set_controls(user_id, controls)
                if mark is not None:
                    self._refresh_marks_known.add((user_id, mark))
                    self.state.schedule_refresh(user_id, mark)
        self._user_changed(user_id)
        return controls

    def why(self, user_id: str, video_id: str) -> Impression | None:
        """The last time ``video_id`` was served to ``user_id`` within the window, as it
        was recorded then (source, reason, signals)."""
        imp = self.impressions.find(self.home(user_id), video_id)
        if imp is None or imp.ts < self.clock() - WHY_WINDOW_MS:
            return None
        return imp

    def expire(self, now: int | None = None) -> tuple[int, int]:
        """Retention: delete events and impressions older than ``privacy.retention_days``
        (what was learned from them ages out with the embedding tables' expiry); returns
        (events, impressions) deleted."""
        days = self.settings.privacy.retention_days
        if days <= 0:
            return 0, 0
        cutoff = (self.clock() if now is None else now) - int(days * DAY_MS)
        return self.event_log.delete_before(cutoff), self.impressions.delete_before(cutoff)

    def audit_report(self, since_ms: int, until_ms: int) -> AuditReport:
        """The algorithm audit (``fyp audit report``) of what was served in the window,
        from this engine's own stores."""
        from fyp.audit.report import build_audit

        with self._lock:
            videos = {v.video_id: v for v in self.catalog.videos}
            profiles = dict(self.users.profiles)
        return build_audit(
            self.impressions.between(since_ms, until_ms),
            videos,
            profiles,
            self.impressions.filter_counts(since_ms, until_ms),
            self.moderation_store.history(),
            since_ms,
            until_ms,
        )

    # -- changes other serving processes made (fyp.cluster.changes) -------------------------

    def _user_changed(self, pid: str) -> None:
        if self.changed is not _no_notice:  # (one process: no handle made)
            self.changed("user", self.user_store.handle(pid))

    def apply_change(self, kind: str, key: str) -> None:
        """Put in force here a change another serving process committed to the shared
        stores, re-read from them (the store is the truth, not the notice): ``video`` (an
        upload or an update; ``key`` a batch's ids, a line each), ``moderation`` (a
        decision; ``key`` the video's id), ``user`` (a profile, controls,
        a refresh; ``key`` the user's handle, :meth:`fyp.users.store.UserStore.handle`),
        ``erasure`` (``key`` the erasure's audit reference: every tombstone is looked at
        again)."""
        if kind == "video":
            # (a video's moderation survives its re-upload: only the video is read)
            videos = [v for v in map(self.catalog_store.get, key.split("\n")) if v is not None]
            with self._lock:
                self.catalog.upsert(videos)
                self.state.stats.ensure(len(self.catalog))
        elif kind == "moderation":
            self.moderator.apply_history(key)
        elif kind == "user":
            pid = self.user_store.user_of_handle(key)
            if pid is not None:  # (else erased since)
                self._apply_stored_user(pid, self.user_store.user(pid))
        elif kind == "erasure":
            if not self.rights.follow_erasures():
                # Read after the erasure completed (this follower lagged, or reconnected):
                # its tombstone is gone, so the tombstones say nothing; the profiles do.
                self.rights.drop_erased_elsewhere()
        else:
            log.warning("a change notice of an unknown kind (%r) ignored", kind)

    def _apply_stored_user(self, pid: str, stored: StoredUser) -> bool:
        """The user's profile, controls and refresh marks as stored, in force here;
        whether anything changed."""
        changed = False
        with self._user_writes, self._lock:
            if pid in self.rights.tombstoned or stored.tombstone is not None:
                return False  # (the erasure's notices drop them)
            p = stored.profile
            if p is not None and self.users.profiles.get(pid) != p:
                self.users.profiles[pid] = p
                if p.region is not None:
                    self.state.user(pid).region = p.region
                self.state.set_user_attributes(pid, p.attributes)
                changed = True
            if stored.controls is not None:
                controls = UserControls.from_json(stored.controls)
                if controls != self.users.controls_of(pid):
                    self.users.set_controls(pid, controls)
                    changed = True
            for offset in stored.refreshes:
                if (pid, offset) not in self._refresh_marks_known:
                    self._refresh_marks_known.add((pid, offset))
                    self.state.schedule_refresh(pid, offset)
                    changed = True
        return changed

    def reconcile_changes(self, full: bool | None = None) -> int:
        """Everything the shared stores hold that this process could have missed
        (its notices trimmed away, or a writer killed between its commit and its
        notice), compared with what is in force here, the differences applied. Returns
        how many videos and users changed. ``full``: read the stores whole (True), only
        what changed since the last read (False: where the stores can say, else whole),
        or whole every ``FULL_RECONCILE_EVERY_S`` and at the first (None)."""
        cursors = self._change_cursors
        stores = self._change_stores()
        if full is None:
            full = time.monotonic() - self._full_reconcile_at >= FULL_RECONCILE_EVERY_S
        if full or cursors is None or stores is None:
            return self._reconcile_whole()
        return self._reconcile_since(stores, cursors)

    def _change_stores(self) -> tuple[CatalogChanges, ModerationChanges, UserChanges] | None:
        """The three stores a reconcile reads, where each can say what changed since a
        cursor (:mod:`fyp.storage.changes`); else None (read whole each time)."""
        cat, mod, users = self.catalog_store, self.moderation_store, self.user_store
        if (
            isinstance(cat, CatalogChanges)
            and isinstance(mod, ModerationChanges)
            and isinstance(users, UserChanges)
        ):
            return cat, mod, users
        return None

    def _reconcile_whole(self) -> int:
        cat, mod, users = self.catalog_store, self.moderation_store, self.user_store
        # Cursors first: a write committed after them is read again by the next read.
        stores = self._change_stores()
        cursors: dict[str, int] | None = None
        if stores is not None:
            cursors = {
                "catalog": stores[0].change_cursor(),
                "moderation": stores[1].change_cursor(),
                "users": stores[2].change_cursor(),
            }
        began = time.monotonic()  # (set once the read is done: one that fails is redone)
        changed = 0
        catalog = list(cat.all())
        changed += self._apply_stored_videos(catalog)
        history = mod.history()
        by_video: dict[str, list[ModerationAction]] = {}
        for a in history:
            by_video.setdefault(a.video_id, []).append(a)
        changed += self._apply_folded_moderation(
            {video_id: _folded(actions) for video_id, actions in by_video.items()}
        )
        changed += self.rights.follow_erasures()
        changed += self.rights.drop_erased_elsewhere()
        profiles, controls = users.profiles(), users.controls()
        refreshes = users.refreshes()
        marks: dict[str, list[int]] = {}
        for pid, offset, _ in refreshes:
            marks.setdefault(pid, []).append(offset)
        for pid in profiles.keys() | controls.keys() | marks.keys():
            user = StoredUser(profiles.get(pid), controls.get(pid), tuple(marks.get(pid, ())), None)
            changed += self._apply_stored_user(pid, user)
        self._change_cursors, self._full_reconcile_at = cursors, began
        rows = len(catalog) + len(history) + len(profiles) + len(controls) + len(refreshes)
        self.last_reconcile = (True, rows)
        return changed

    def _reconcile_since(
        self,
        stores: tuple[CatalogChanges, ModerationChanges, UserChanges],
        cursors: dict[str, int],
    ) -> int:
        cat, mod, users = stores
        changed = 0
        videos, at_catalog = cat.videos_since(cursors["catalog"])
        changed += self._apply_stored_videos(videos)
        moderated, at_moderation = mod.videos_moderated_since(cursors["moderation"])
        folded: dict[str, tuple[str | None, tuple[str, ...] | None]] = {}
        rows = len(videos)
        for video_id in moderated:
            history = self.moderation_store.history(video_id)
            rows += len(history)
            folded[video_id] = _folded(history)
        changed += self._apply_folded_moderation(folded)
        changed += self.rights.follow_erasures()
        since = users.users_since(cursors["users"])
        stored = since.users
        if since.erased:
            # An erasure completed since the last read, which this process may have missed
            # whole (whose is not stored): what it holds is compared with every stored
            # profile, a read this costs only then.
            changed += self.rights.drop_erased_elsewhere()
        else:
            # A profile created anew under an erased user's id since this process last
            # looked: what it holds of the erased user goes before the new profile is in
            # force.
            profiles = {pid: u.profile for pid, u in stored.items() if u.profile is not None}
            changed += self.rights.drop_erased_elsewhere(changed=profiles)
        for pid, user in stored.items():
            changed += self._apply_stored_user(pid, user)
        rows += len(stored)
        self._change_cursors = {
            "catalog": at_catalog,
            "moderation": at_moderation,
            "users": since.cursor,
        }
        self.last_reconcile = (False, rows)
        return changed

    def _apply_stored_videos(self, stored: Sequence[Video]) -> int:
        with self._lock:
            videos = [v for v in stored if self._video_differs(v)]
            if videos:
                self.catalog.upsert(videos)
                self.state.stats.ensure(len(self.catalog))
        return len(videos)

    def _apply_folded_moderation(
        self, folded: Mapping[str, tuple[str | None, tuple[str, ...] | None]]
    ) -> int:
        changed = 0
        here = self.catalog.moderation
        for video_id, (state, labels) in folded.items():
            now_state, now_labels = here.get(video_id, (None, None))
            if (None if now_state is None else now_state.value, now_labels) != (state, labels):
                self.moderator.apply_history(video_id)
                changed += 1
        return changed

    def _video_differs(self, video: Video) -> bool:
        row = self.catalog.row_of.get(video.video_id)
        return row is None or self.catalog.videos[row] != video

    # -- the serving loop ------------------------------------------------------------------

    def feed(
        self,
        user_id: str,
        count: int | None = None,
        surface: str = DEFAULT_SURFACE,
        now: int | None = None,
        after: str | None = None,
        shown: int = 0,
    ) -> Feed:
        """The next ``count`` items (a default page without). ``after``: the request id
        of a page served to the user of which only the first ``shown`` cards were shown
        (0 <= shown): the rest is withdrawn (its impressions deleted, its videos no
        longer served, so they may come again) and the new page takes its place, ranked
        with all that was learned since; ``count`` defaults to the cards withdrawn."""
        if shown < 0:
            raise ValueError(f"shown must be 0 or more, got {shown}")
        with self._lock:
            # Checked under the lock an erasure sets its tombstone and removes the
            # profile under, with the impressions recorded in the same hold: a feed that
            # waited out an erasure records nothing of the erased user.
            pid = self.home(user_id)
            n = self.settings.feed.default_count if count is None else count
            if after is not None:
                withdrawn = self.impressions.withdraw(pid, after, shown)
                if withdrawn is None:
                    raise UnknownPageError(f"after: no page {after!r} was served to this user")
                row_of = self.catalog.row_of
                rows = [row_of[v] for v in withdrawn if v in row_of]
                self.state.withdraw_served(self.state.user(pid), rows)
                if count is None:
                    n = max(len(withdrawn), 1)
            return self.pipeline.run(pid, n, surface, self.clock() if now is None else now)

    def close(self) -> None:
        """Close every store, even when one fails to (its last write on a full disk)."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.checkpoints.settle)  # (callbacks run last first: this last)
            for store in (
                self.audit,
                self.user_store,
                self.moderation_store,
                self.catalog_store,
                self.impressions,
                self.event_log,
            ):
                stack.callback(store.close)
            if self.learner is not None:
                stack.callback(self.learner.close)
