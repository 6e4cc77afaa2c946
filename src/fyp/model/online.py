"""The learned models, trained online from the learning loop's joined examples.

The learning step (:class:`fyp.state.updater.LogState`) is the joiner: it opens an
example when a user's view (or action) of a video arrives, with the context as it was
before that event, completes its labels with the actions that follow, and closes it after
the label window. Each closed micro-batch reaches :meth:`OnlineModels.on_examples`, which
turns it into training examples for

* the multi-task ranker (every viewed impression, positive or not), and
* two-tower retrieval (the positives: long view, like, share, follow, comment),

and queues them; :meth:`OnlineModels.step` then does one bounded piece of training at a
time (a batch, or a slice of an index refresh), so the server's learning loop can serve
feeds between pieces. Batches have a fixed size and are carried across calls — so
replaying the same log gives the same models, whatever the cut of the calls.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fyp.config import Settings
from fyp.model.ann import ItemIndex
from fyp.model.channel import IndexChanges
from fyp.model.rank_queue import RankColumns, RankQueue
from fyp.model.ranker import ModelConfig, MultiTaskRanker, dense_from_examples
from fyp.model.threads import limit_threads
from fyp.model.torch_ops import fuse
from fyp.model.two_tower import RetrievalExample, TwoTower, TwoTowerConfig
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import Example, LogState

__all__ = ["OnlineModels"]

_FULL_REFRESH_STEPS = 200  # retrieval steps between whole-catalog refreshes of the index
_REFRESH_CHUNK = 512  # index rows recomputed per training step (a few ms)

_POSITIVE = np.array(
    [LABEL_INDEX[n] for n in ("long_view", "like", "share", "follow", "comment")], dtype=np.intp
)


class OnlineModels:
    # Whether this process searches its own index (a server, an evaluation) or only
    # publishes its vectors (the learner process). A class default: a checkpoint of the
    # code before reads True.
    searched: bool = True

    def __init__(self, settings: Settings, state: LogState, searched: bool = True) -> None:
        m = settings.model
        # One thread each: a feed request asks for one user at a time, where thread
        # pools only spin (and steal the core the server needs).
        limit_threads(m.threads)
        self.settings = settings
        self.state = state
        self.ranker = MultiTaskRanker(
            ModelConfig(
                embedding_dim=m.embedding_dim,
                min_count=m.min_count,
                expire_after_days=m.expire_after_days,
                warmup_examples=m.warmup_examples,
                seed=m.seed,
            ),
            settings.ranker.value_weights,
            state.ranker,
        )
        self.retrieval = TwoTower(
            TwoTowerConfig(
                min_count=m.min_count,
                expire_after_days=m.expire_after_days,
                warmup_examples=m.retrieval_warmup,
                seed=m.seed,
            ),
            state.catalog,
        )
        # Item vectors of the whole catalog for retrieval; rows of each training batch
        # are refreshed after their step, everything every ``_FULL_REFRESH_STEPS``.
        self.searched = searched
        self.index = _new_index(self.retrieval.cfg.output_dim, m.seed, searched)
        self._retrieval_steps = 0
        # A whole-catalog refresh in progress: its vectors are stored chunk by chunk, the
        # lists re-clustered once at its end (every vector moved), not kept up to date.
        self._refresh_rows: list[int] = []
        # The rows of the last retrieval batch, refreshed as a step of their own (each
        # step holds the engine's lock: two short ones let a feed in between).
        self._batch_rows: list[int] = []
        self._rank_queue = RankQueue()
        self._retrieval_queue: list[RetrievalExample] = []
        # The index's changes since the last publish (fyp.model.publisher): the ids whose
        # vectors were set, and whether its lists were re-clustered.
        self._index_dirty: set[str] = set()
        self._index_reclustered = False
        state.example_listeners.append(self.on_examples)
        state.forget_listeners.append(self.forget_user)

    def on_examples(self, examples: Sequence[Example]) -> None:
        if not examples:
            return
        catalog = self.state.catalog
        features = self.state.batch_features(examples)  # computed for the first ranker
        rows = np.array([e.row for e in examples], dtype=np.intp)
        # The batch's dense inputs at once (per example, numpy's overhead on arrays of
        # a few numbers cost more than the arithmetic).
        ts = np.array([e.ts for e in examples], dtype=np.int64)
        dense = dense_from_examples(
            features,
            catalog.duration_ms[rows].astype(np.float64),
            ts,
            np.array([e.video_views for e in examples]),
            np.array([e.user_views for e in examples]),
        )
        # The first ranker has just learned from this batch: its logits now, fixed here
        # so that a replay learns the same residual.
        priors = self.state.ranker.logits(features).astype(np.float32)
        labels = np.stack([e.labels for e in examples]).astype(np.float32)
        positive = (labels[:, _POSITIVE] != 0).any(axis=1).tolist()
        videos = [catalog.videos[e.row] for e in examples]
        self._rank_queue.append(
            RankColumns(
                [e.user_id for e in examples],
                [v.video_id for v in videos],
                [v.creator_id for v in videos],
                [v.sound_id for v in videos],
                [v.hashtags for v in videos],
                [e.surface for e in examples],
                ts,
                dense,
                labels,
                priors,
                np.ones(len(examples), dtype=np.float32),
            )
        )
        for e, is_positive in zip(examples, positive, strict=True):
            if is_positive:
                self._retrieval_queue.append(RetrievalExample(e.user_id, e.row, e.history, e.ts))

    def forget_user(self, user_id: str, erase: bool = False) -> None:
        """On "refresh", the user's embedding rows go (they start again from the shared
        fallback vector, as a new user does), and so do their examples still queued, so
        training does not bring the old tastes back. Full batches are trained first: what
        is dropped is then only the remainder, the same whatever the cut of the calls.
        ``erase``: not on an erasure, whose examples must not be learned from at all (the
        batches are trained without them)."""
        if not erase:
            self.drain()
        self._rank_queue.drop_user(user_id)
        self._retrieval_queue = [x for x in self._retrieval_queue if x.user_id != user_id]
        self.ranker.tables["user"].forget([user_id])
        self.retrieval.tables["user"].forget([user_id])

    def user_vectors(self, user_id: str) -> dict[str, list[float] | None]:
        """The user's learned embedding rows (None: none yet, the shared fallback), for
        an export."""
        out: dict[str, list[float] | None] = {}
        for name, model in (("ranker", self.ranker), ("retrieval", self.retrieval)):
            table = model.tables["user"]
            row = table.row_of(user_id)
            out[name] = (
                None if row < 0 else table.vectors(np.array([row], dtype=np.int64))[0].tolist()
            )
        return out

    # A checkpoint holds everything but the ANN index (a native object): it is rebuilt
    # from the restored item tower by the first training steps after a restart.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["index"] = None
        state["_refresh_rows"] = []
        state["_batch_rows"] = []
        state["_index_dirty"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self._rank_queue, list):  # a checkpoint of the code before
            self._rank_queue = RankQueue.of(self._rank_queue)
        m = self.settings.model
        limit_threads(m.threads)
        fuse(self.ranker.optimizer)  # (a checkpoint of the code before: unfused)
        fuse(self.retrieval.optimizer)
        self.index = _new_index(self.retrieval.cfg.output_dim, m.seed, self.searched)
        self._index_stale = True
        self._index_dirty, self._index_reclustered = set(), False

    def set_searched(self, searched: bool) -> None:
        """Whether this process searches the index (see :func:`_new_index`); said before
        the index holds anything (at the start, or after a restore from a checkpoint,
        whose index is rebuilt anyway)."""
        if len(self.index):
            raise RuntimeError("the index is built already")
        self.searched = searched
        self.index = _new_index(self.retrieval.cfg.output_dim, self.settings.model.seed, searched)

    def _schedule_stale_refresh(self) -> None:
        if getattr(self, "_index_stale", False) and self.retrieval.warm:
            self._refresh_rows = list(range(len(self.state.catalog)))
            self._index_stale = False

    def due(self) -> bool:
        """Whether :meth:`step` has work: a full batch for a model, or index rows to
        refresh."""
        m = self.settings.model
        self._schedule_stale_refresh()
        return (
            bool(self._refresh_rows)
            or bool(self._batch_rows)
            or len(self._rank_queue) >= m.ranker_batch
            or len(self._retrieval_queue) >= m.retrieval_batch
        )

    def backlogged(self) -> bool:
        """Whether either model has ``max_queued_batches`` batches queued: the learning
        loop then trains before it reads more events (memory stays bounded)."""
        m = self.settings.model
        return (
            len(self._rank_queue) >= m.max_queued_batches * m.ranker_batch
            or len(self._retrieval_queue) >= m.max_queued_batches * m.retrieval_batch
        )

    def step(self) -> bool:
        """One bounded piece of training work, the most urgent first: a chunk of a due
        whole-catalog index refresh, else the index rows of the last retrieval batch,
        else one ranker batch, else one retrieval batch. Returns False when nothing was
        due.

        Work is cut this small so that a server can serve feeds between pieces (the
        learning loop yields after each); the order depends only on the queues, so
        draining them (:meth:`drain`) after the same log gives the same models."""
        m = self.settings.model
        self._schedule_stale_refresh()
        if self._refresh_rows:
            self.refresh_chunk()
            return True
        if self._batch_rows:
            rows, self._batch_rows = self._batch_rows, []
            self.refresh_index(rows)
            return True
        if len(self._rank_queue) >= m.ranker_batch:
            self.ranker.learn(self._rank_queue.take(m.ranker_batch))
            return True
        if len(self._retrieval_queue) >= m.retrieval_batch:
            batch_r = self._retrieval_queue[: m.retrieval_batch]
            del self._retrieval_queue[: m.retrieval_batch]
            self.retrieval.learn(batch_r)
            self._retrieval_steps += 1
            if self.retrieval.warm:
                if len(self.index) == 0 or self._retrieval_steps % _FULL_REFRESH_STEPS == 0:
                    self._refresh_rows = list(range(len(self.state.catalog)))
                else:
                    self._batch_rows = sorted({e.row for e in batch_r})
            return True
        return False

    def drain(self, settle: bool = True) -> int:
        """Every due piece of work; how many there were. ``settle``: and wait for the
        index's background re-clustering, if one runs (then the index is what it would
        be had it been built in place; a replay's chunks pass False, to keep it running
        beside them)."""
        n = 0
        while self.step():
            n += 1
        if settle:
            self.index.settle()
        return n

    def refresh_chunk(self) -> None:
        """The next chunk of a whole-catalog refresh of the index (the last one has the
        lists re-clustered)."""
        chunk = self._refresh_rows[:_REFRESH_CHUNK]
        del self._refresh_rows[:_REFRESH_CHUNK]
        self.refresh_index(chunk, lists=False)
        if not self._refresh_rows:
            self.index.recluster()
            self._index_reclustered = True

    def refresh_index(self, rows: Sequence[int], lists: bool = True) -> None:
        """Recompute the item vectors of catalog ``rows`` into the index (a serving-side
        read of the towers: no time-dependent lookup happens, so no clock is needed);
        ``lists``: as :meth:`ItemIndex.upsert`'s."""
        videos = self.state.catalog.videos
        rows = list(rows)
        ids = [videos[r].video_id for r in rows]
        self.index.upsert(ids, self.retrieval.item_vectors(rows, 0), lists=lists)
        self._index_dirty.update(ids)

    def take_index_changes(self, everything: bool) -> IndexChanges:
        """The item vectors set since the last call (``everything``: all of them), and
        whether the lists were re-clustered meanwhile; forgets them."""
        ids = self.index.ids() if everything else sorted(self._index_dirty)
        recluster = self._index_reclustered or everything
        self._index_dirty, self._index_reclustered = set(), False
        vectors, _ = self.index.vectors_of(ids)
        return IndexChanges(ids, vectors, [], recluster)


def _new_index(dim: int, seed: int, searched: bool) -> ItemIndex:
    """The item vectors' index. Searched (a server, an evaluation): IVF lists once it is
    large enough, re-clustered in a worker thread (a build over a large catalog, under
    the engine's lock, would hold every feed for as long: docs/performance.md). Not searched
    (the learner process, which publishes the vectors and never retrieves): the vectors
    alone, never clustered; each serving process clusters its own copy
    (:mod:`fyp.model.replica`), so lists built here were thrown away."""
    if not searched:
        return ItemIndex(dim, seed=seed, exact_below=sys.maxsize)
    return ItemIndex(dim, seed=seed, background=True)
