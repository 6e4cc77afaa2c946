"""A serving process's read-only replica of the learned models, built from what the learner
publishes (:mod:`fyp.model.channel`): embedding rows by id, the fallback vectors, the
dense weights as arrays, and the ANN index of item vectors. It never trains and shares no
lock with training: the learner runs in another process.

It scores through the same numpy code as the learner's own models
(:mod:`fyp.model.serving`), so given the same published state it serves what the learner
would. Versions make applying idempotent: a delta applies only on top of the version it
follows (one applied already, or one out of order, changes nothing), a snapshot only when
it is newer than what the replica holds.

Threading: a delta is applied in place on the serving loop's thread, between requests, in
bounded chunks (:meth:`ModelReplica.apply_steps`); a snapshot is built whole beside the
serving state (:meth:`ModelReplica.build`, in a worker thread) and swapped in at once
(:meth:`ModelReplica.install`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import numpy.typing as npt

from fyp.config import Settings
from fyp.model.ann import ItemIndex
from fyp.model.catalog_rows import CatalogRankRows
from fyp.model.channel import ModelUpdate
from fyp.model.embeddings import TableChanges
from fyp.model.publisher import USER_TABLES
from fyp.model.serving import rank_predict, user_vector
from fyp.model.threads import limit_threads
from fyp.model.two_tower import TwoTowerConfig
from fyp.state.feedback import LABELS
from fyp.state.updater import LogState
from fyp.state.users import UserState
from fyp.types import now_ms

__all__ = ["ModelReplica", "ReplicaTable"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_CHUNK = 2_048  # rows written per step of a delta: a pause of a few ms between requests


class ReplicaTable:
    """The rows of one published embedding table, by id (a
    :class:`~fyp.model.embeddings.TableReader`)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._row_of: dict[str, int] = {}
        self._free: list[int] = []
        # The ids' rows, then the fallback in the last row, where row -1 reads it: a
        # read of any rows is then one gather (it runs a dozen times per request, where
        # each array operation's fixed cost is most of it).
        self._vec = np.zeros((16 + 1, dim), dtype=np.float32)
        # How often ids were added and removed: what a cache of rows by id checks
        # (fyp.model.catalog_rows).
        self.ids_added = 0
        self.ids_removed = 0

    def lookup(
        self, ids: Sequence[str], now_ms: int, *, admit: bool = False, touch: bool = False
    ) -> I64:
        """Row per id, -1 for an id without a row (the fallback). Read-only: ``admit``
        and ``touch`` are training's, and refused here."""
        if admit or touch:
            raise ValueError("a replica table is read-only")
        n = len(ids)
        return np.fromiter(map(self._row_of.get, ids, repeat(-1, n)), dtype=np.int64, count=n)

    def vectors(self, rows: I64) -> F32:
        """The vectors of ``rows`` (-1: the fallback), a copy."""
        out: F32 = self._vec[np.asarray(rows, dtype=np.int64)]
        return out

    def vector(self, id_: str) -> F32 | None:
        row = self._row_of.get(id_)
        return None if row is None else self._vec[row].copy()

    def ids(self) -> list[str]:
        return list(self._row_of)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._row_of

    def drop(self, ids: Collection[str]) -> int:
        n = 0
        for i in ids:
            row = self._row_of.pop(i, None)
            if row is not None:
                self._vec[row] = 0.0  # (an erased user's vector does not linger)
                self._free.append(row)
                n += 1
        if n:
            self.ids_removed += 1
        return n

    def set(self, changes: TableChanges, start: int = 0, stop: int | None = None) -> None:
        """Removals (on the first piece), then the rows ``start:stop`` of ``changes``."""
        if start == 0:
            self.drop(changes.removed)
            self._vec[-1] = changes.fallback
        ids = changes.ids[start:stop]
        rows = np.empty(len(ids), dtype=np.int64)
        added = False
        for k, i in enumerate(ids):
            row = self._row_of.get(i)
            if row is None:
                row = self._free.pop() if self._free else len(self._row_of) + len(self._free)
                if row >= len(self._vec) - 1:  # (the last row is the fallback's)
                    grown = np.zeros((max(2 * len(self._vec), row + 2), self.dim), np.float32)
                    grown[: len(self._vec) - 1] = self._vec[:-1]
                    grown[-1] = self._vec[-1]
                    self._vec = grown
                self._row_of[i] = row
                added = True
            rows[k] = row
        if added:
            self.ids_added += 1
        self._vec[rows] = changes.vectors[start:stop]

    @classmethod
    def of(cls, changes: TableChanges) -> ReplicaTable:
        t = cls(len(changes.fallback))
        t.set(changes)
        return t


@dataclass
class _Parts:
    """What a snapshot replaces: built beside the serving state, then swapped in."""

    tables: dict[str, ReplicaTable]
    dense: dict[str, F32]
    index: ItemIndex
    update: ModelUpdate


@dataclass
class ReplicaStatus:
    """What ``/healthz`` and ``/metrics`` report of the models served."""

    version: int = 0
    published_ms: int = 0  # when the learner published it (wall clock)
    applied_ms: int = 0  # when this process applied it
    offset: int = 0  # the log offset the learner had learned up to
    updates: int = 0  # updates applied
    ignored: int = 0  # updates read and not applied (applied already, or out of order)
    max_pause_ms: float = 0.0  # the longest step of an apply (feeds waited that long)
    # From each recent update's publish to its apply here (ms): the lag across processes.
    delays_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1_000))


class ModelReplica:
    """See the module's doc. ``state``: the serving process's own fold of the log (the
    first ranker the learned ranker refines, the users' histories, the catalog)."""

    def __init__(self, settings: Settings, state: LogState) -> None:
        limit_threads(settings.model.threads)  # (see fyp.model.threads)
        self.settings = settings
        self.state = state
        self.tables: dict[str, ReplicaTable] = {}
        self.dense: dict[str, F32] = {}
        self.examples = 0
        self.positives = 0
        self.index = _new_index(settings)
        self.status = ReplicaStatus()
        self.value_weights = np.zeros(len(LABELS), dtype=np.float32)
        for name, w in settings.ranker.value_weights.items():
            self.value_weights[LABELS.index(name)] = w
        self.ranker = ReplicaRanker(self)
        self.retrieval = ReplicaRetrieval(self)
        # Erased users -> the last version that may hold their rows (inf until the learner
        # has dropped them): kept out of every update up to it (read before the learner
        # rewrote the files, or published before it saw the erasure).
        self._forgotten: dict[str, float] = {}

    @property
    def version(self) -> int:
        return self.status.version

    # -- applying ----------------------------------------------------------------------

    def accepts(self, update: ModelUpdate) -> bool:
        """Whether ``update`` applies on top of what is held: a snapshot newer than it,
        or the delta that follows it."""
        if update.full:
            return update.version > self.version
        return update.version == self.version + 1 and self.version > 0

    def build(self, update: ModelUpdate) -> _Parts:
        """A snapshot's tables, weights and index, built apart (any thread)."""
        tables = {name: ReplicaTable.of(t) for name, t in update.tables.items()}
        index = _new_index(self.settings)
        if update.index.ids:
            index.upsert(update.index.ids, update.index.vectors, lists=False)
            index.recluster()
            index.settle()
        return _Parts(tables, dict(update.dense or {}), index, update)

    def install(self, parts: _Parts) -> bool:
        """Swap a built snapshot in (on the serving thread; nothing to wait for), without
        the rows of users erased since it was published."""
        if not self.accepts(parts.update):
            self.status.ignored += 1
            return False
        gone = self._erased_in(parts.update)
        for name in USER_TABLES:
            if name in parts.tables:
                parts.tables[name].drop(gone)
        self.tables, self.dense, self.index = parts.tables, parts.dense, parts.index
        self._done(parts.update)
        return True

    def apply_steps(self, update: ModelUpdate) -> Iterator[float]:
        """Apply a delta (or a snapshot, in place: a test's or a start's) in chunks of at
        most a few thousand rows, yielding after each the ms it took (the serving loop
        serves requests in between). Nothing if it does not apply."""
        if not self.accepts(update):
            self.status.ignored += 1
            return
        if update.full:
            start = time.perf_counter()
            self.install(self.build(update))
            yield (time.perf_counter() - start) * 1000
            return
        erased = self._erased_in(update)
        if erased:
            update = update.without({name: erased for name in USER_TABLES})
        for name, changes in update.tables.items():
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = ReplicaTable(len(changes.fallback))
            for start in range(0, max(len(changes.ids), 1), _CHUNK):
                t0 = time.perf_counter()
                table.set(changes, start, start + _CHUNK)
                yield self._pause(t0)
        idx = update.index
        lists = not idx.recluster
        if idx.removed:
            self.index.remove(idx.removed)
        for start in range(0, len(idx.ids), _CHUNK):
            t0 = time.perf_counter()
            stop = start + _CHUNK
            self.index.upsert(idx.ids[start:stop], idx.vectors[start:stop], lists=lists)
            yield self._pause(t0)
        if idx.recluster and len(self.index):
            self.index.recluster()  # (in the index's worker thread: searches go on)
        if update.dense is not None:
            self.dense = dict(update.dense)  # one reference: a request sees old or new
        self._done(update)

    def apply(self, update: ModelUpdate) -> bool:
        """:meth:`apply_steps` at once; whether it applied."""
        before = self.version
        for _ in self.apply_steps(update):
            pass
        return self.version != before

    def _pause(self, t0: float) -> float:
        ms = (time.perf_counter() - t0) * 1000
        self.status.max_pause_ms = max(self.status.max_pause_ms, ms)
        return ms

    def _done(self, update: ModelUpdate) -> None:
        s = self.status
        s.version, s.published_ms, s.offset = update.version, update.published_ms, update.offset
        s.applied_ms = now_ms()
        s.delays_ms.append(float(s.applied_ms - update.published_ms))
        s.updates += 1
        self.examples, self.positives = update.ranker_examples, update.retrieval_positives

    # -- erasure -----------------------------------------------------------------------

    def forget_user(self, user_id: str, through: float = math.inf) -> None:
        """Drop the user's rows now (an erasure), and keep them out of every update of
        version ``through`` or older (the learner's version once it has dropped them and
        rewritten its files: :meth:`fyp.learning.link.LearnerLink.erase`; until then,
        every update)."""
        self._forgotten[user_id] = through
        for name in USER_TABLES:
            table = self.tables.get(name)
            if table is not None:
                table.drop([user_id])

    def _erased_in(self, update: ModelUpdate) -> set[str]:
        """The erased users whose rows ``update`` may hold (and is not to bring back)."""
        # (an entry the replica has passed can no longer matter: older updates never apply)
        self._forgotten = {k: v for k, v in self._forgotten.items() if v >= self.version}
        return {k for k, v in self._forgotten.items() if update.version <= v}

    def user_vectors(self, user_id: str) -> dict[str, list[float] | None]:
        """The user's rows served here (None: none, the shared fallback), for an export."""
        out: dict[str, list[float] | None] = {}
        for name, table_name in (("ranker", "ranker.user"), ("retrieval", "retrieval.user")):
            table = self.tables.get(table_name)
            v = None if table is None else table.vector(user_id)
            out[name] = None if v is None else v.tolist()
        return out

    def holds_user(self, user_id: str) -> bool:
        return any(user_id in self.tables.get(name, ()) for name in USER_TABLES)


class ReplicaRanker:
    """The learned ranker as :class:`fyp.rank.base.WarmOrFirst` reads it."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica
        self.catalog_rows = CatalogRankRows()

    @property
    def warm(self) -> bool:
        r = self.replica
        return bool(r.dense) and r.examples >= r.settings.model.warmup_examples

    def predict(
        self,
        user_id: str,
        user: UserState,
        rows: Sequence[int],
        now: int,
        surface: str,
        first_features: F64 | None = None,
    ) -> tuple[F32, F32]:
        r = self.replica
        tables = {k.removeprefix("ranker."): t for k, t in r.tables.items() if k[:7] == "ranker."}
        weights = {k.removeprefix("ranker."): w for k, w in r.dense.items() if k[:7] == "ranker."}
        batch = self.catalog_rows.rank_batch(tables, r.state.catalog, rows, user_id, surface, now)
        return rank_predict(
            tables,
            weights,
            r.state.ranker,
            r.value_weights,
            True,
            user_id,
            user,
            rows,
            now,
            surface,
            first_features,
            batch,
        )


class ReplicaRetrieval:
    """Two-tower retrieval as :class:`fyp.retrieve.two_tower.TwoTowerSource` reads it."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica
        self.history = TwoTowerConfig().history

    @property
    def warm(self) -> bool:
        r = self.replica
        return bool(r.dense) and r.positives >= r.settings.model.retrieval_warmup

    def pooled(self, history: Sequence[int]) -> list[int]:
        return list(history)[-self.history :]

    def user_vector(self, user_id: str, history: Sequence[int], now: int) -> F32:
        r = self.replica
        tables = {
            k.removeprefix("retrieval."): t for k, t in r.tables.items() if k[:10] == "retrieval."
        }
        weights = {
            k.removeprefix("retrieval."): w for k, w in r.dense.items() if k[:10] == "retrieval."
        }
        return user_vector(tables, weights, r.state.catalog, user_id, history, now)


def _new_index(settings: Settings) -> ItemIndex:
    return ItemIndex(TwoTowerConfig().output_dim, seed=settings.model.seed, background=True)
