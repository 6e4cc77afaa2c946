"""Collisionless embedding tables, one per id type, for models that learn online.

A table is keyed by the raw id (a ``str``), so no two ids ever share a row: there is no
modulo hashing. Rows are created as ids arrive and live in numpy float32 arrays grown by
doubling; a dict maps id -> row, a parallel list maps row -> id, and evicted rows go on a
free list and are reused by later admissions.

* **Frequency filter.** With ``min_count > 1`` an id is only counted (in a bounded
  "pending" map, least recently seen dropped first beyond ``pending_limit``) until it
  has occurred ``min_count`` times in training lookups; until then it has no row and
  reads the table's shared *fallback* vector, which is itself learned.
* **Expiry.** Every row records when it was last used (admitted, or looked up with
  ``touch=True``); :meth:`EmbeddingTable.expire` evicts rows unused for
  ``expire_after_ms``, so on an endless stream of new ids memory stays bounded by the
  ids active within that window.
* **Optimizer.** Sparse Adagrad with a per-element accumulator per row (and one for the
  fallback), as :class:`torch.optim.Adagrad` with ``initial_accumulator_value`` and
  ``eps=1e-10``: ``acc += g**2; w -= lr * g / (sqrt(acc) + eps)``, where ``g`` is the sum
  of the gradients of all occurrences of the row in the batch.
* **Memory.** :attr:`EmbeddingTable.bytes_per_row` and
  :meth:`EmbeddingTable.memory_bytes` account for the arrays (vector, accumulator,
  last-used) and the Python bookkeeping (dict slot, row int, id string, row -> id
  pointer). With ``dim=32`` a row costs about 400 bytes, so 1M users + 1M videos take
  well under 1 GB (``bench/embedding_memory.py`` measures it).

Torch glue: :func:`gather` gives a leaf tensor of a batch's vectors for a model's forward
pass; after ``backward()``, :func:`scatter_gradients` applies its gradient to the table.
Tables are not thread-safe: one trainer owns them.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from fyp.types import DAY_MS

if TYPE_CHECKING:
    import torch

ADAGRAD_EPS = 1e-10
_NEVER = np.iinfo(np.int64).max  # last-used of a free row: never expires
_INITIAL_CAPACITY = 16
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class TableConfig:
    """How one embedding table behaves. Times in ms."""

    dim: int = 32
    min_count: int = 1  # an id gets its own row after this many occurrences (frequency filter)
    # Rows not used (admitted, or looked up with touch=True) for this long are evicted by
    # expire(); None: never.
    expire_after_ms: int | None = 30 * DAY_MS
    learning_rate: float = 0.05  # Adagrad
    init_scale: float = 0.01  # new rows ~ N(0, init_scale)
    initial_accumulator: float = 0.1
    pending_limit: int = 1_000_000  # most ids being counted toward min_count at once

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if self.expire_after_ms is not None and self.expire_after_ms <= 0:
            raise ValueError(f"expire_after_ms must be > 0 or None, got {self.expire_after_ms}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale}")
        if not self.initial_accumulator >= 0:
            raise ValueError(f"initial_accumulator must be >= 0, got {self.initial_accumulator}")
        if self.pending_limit < 1:
            raise ValueError(f"pending_limit must be >= 1, got {self.pending_limit}")


_DEFAULT_CFG = TableConfig()


class TableReader(Protocol):
    """What serving reads of a table: rows by id (-1: none, the fallback) and vectors by
    row. An :class:`EmbeddingTable`, or a replica of one (``fyp.model.replica``)."""

    def lookup(
        self, ids: Sequence[str], now_ms: int, *, admit: bool = False, touch: bool = False
    ) -> NDArray[np.int64]: ...

    def vectors(self, rows: NDArray[np.int64]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class TableChanges:
    """Rows of one table to set (``ids`` with their ``vectors``), ids to remove, and the
    shared fallback vector: a published piece of what the table learned."""

    ids: list[str]
    vectors: NDArray[np.float32]  # (len(ids), dim)
    removed: list[str]
    fallback: NDArray[np.float32]  # (dim,)


def _obj_bytes(n: int) -> int:
    """What pymalloc really allocates for a small object of ``n`` bytes (16-byte classes)."""
    return (n + 15) & ~15 if n <= 512 else n


def _str_bytes(s: str) -> int:
    return _obj_bytes(sys.getsizeof(s))


_INT_BYTES = _obj_bytes(sys.getsizeof(1 << 20))  # a row number >= 256 is its own int object


class EmbeddingTable:
    """Collisionless: keyed by the raw id (a str); no two ids ever share a row."""

    def __init__(self, name: str, cfg: TableConfig, seed: int = 0) -> None:
        self.name = name
        self.cfg = cfg
        self.dim = cfg.dim
        self._rng = np.random.default_rng(seed)
        self._row_of: dict[str, int] = {}
        self._id_of: list[str | None] = []  # row -> id (None: free); len == high-water mark
        self._free: list[int] = []  # stack of free rows below the high-water mark
        self._vec = np.zeros((_INITIAL_CAPACITY, self.dim), dtype=np.float32)
        self._acc = np.zeros((_INITIAL_CAPACITY, self.dim), dtype=np.float32)
        self._last_used = np.full(_INITIAL_CAPACITY, _NEVER, dtype=np.int64)
        self._fb_vec = (self._rng.standard_normal(self.dim) * cfg.init_scale).astype(np.float32)
        self._fb_acc = np.full(self.dim, cfg.initial_accumulator, dtype=np.float32)
        self._pending: OrderedDict[str, int] = OrderedDict()  # id -> count, oldest first
        self._key_bytes = 0  # allocated size of the id strings of rows
        self._pending_key_bytes = 0
        # What changed since the last :meth:`take_changes`, while a publisher reads them
        # (``track_changes``): rows whose vector was set or moved, ids whose row went.
        self.track_changes = False
        self._dirty: set[int] = set()
        self._removed: set[str] = set()

    # ------------------------------------------------------------------ lookups

    def lookup(
        self, ids: Sequence[str], now_ms: int, *, admit: bool = False, touch: bool = False
    ) -> NDArray[np.int64]:
        """Row index per id, -1 where the id has no row (unknown or not yet admitted: it
        uses the table's shared fallback vector).

        ``admit=True`` (training): count one occurrence per entry of ``ids`` (repeats in
        one call count each) and give a row to ids reaching ``min_count``; the result
        reflects the table after the call, so every entry of an id admitted by the call
        gets its new row. Admission counts as a use (sets last-used to ``now_ms``).
        ``touch=True``: refresh the last-used time of the ids with rows (training
        touches; serving need not). Last-used times never move backwards.
        """
        get = self._row_of.get
        if not admit:
            # (map runs the dict's get without a Python frame per id)
            out = np.fromiter(map(get, ids, repeat(-1, len(ids))), dtype=np.int64, count=len(ids))
        else:
            new_rows: list[int] = []
            found: list[int | None] = list(map(get, ids))
            if None in found:
                # The ids without a row counted in order; an id this call admits has its
                # row at its later entries (so it is looked up again).
                for k in [k for k, r in enumerate(found) if r is None]:
                    i = ids[k]
                    r = get(i)
                    found[k] = self._count(i, new_rows) if r is None else r
            out = np.array(found, dtype=np.int64).reshape(len(found))
            if new_rows:
                self._init_rows(np.asarray(new_rows, dtype=np.int64), now_ms)
                missing = np.flatnonzero(out < 0)
                if len(missing):  # entries before the occurrence that admitted their id
                    out[missing] = [get(ids[int(k)], -1) for k in missing]
        if touch:
            live = out[out >= 0]
            if len(live):
                self._last_used[live] = np.maximum(self._last_used[live], now_ms)
        return out

    def _count(self, id_: str, new_rows: list[int]) -> int:
        """One occurrence of an id without a row: its row if this admits it, else -1."""
        min_count = self.cfg.min_count
        if min_count <= 1:
            return self._admit(id_, new_rows)
        pending = self._pending
        c = pending.get(id_)
        if c is None:
            pending[id_] = 1
            self._pending_key_bytes += _str_bytes(id_)
            if len(pending) > self.cfg.pending_limit:
                old, _ = pending.popitem(last=False)
                self._pending_key_bytes -= _str_bytes(old)
            return -1
        c += 1
        if c >= min_count:
            del pending[id_]
            self._pending_key_bytes -= _str_bytes(id_)
            return self._admit(id_, new_rows)
        pending[id_] = c
        pending.move_to_end(id_)
        return -1

    def _admit(self, id_: str, new_rows: list[int]) -> int:
        if self._free:
            row = self._free.pop()
            self._id_of[row] = id_
        else:
            row = len(self._id_of)
            if row == len(self._vec):
                self._grow()
            self._id_of.append(id_)
        self._row_of[id_] = row
        self._key_bytes += _str_bytes(id_)
        new_rows.append(row)
        return row

    def _grow(self) -> None:
        cap = len(self._vec)
        new_cap = max(2 * cap, _INITIAL_CAPACITY)
        vec = np.zeros((new_cap, self.dim), dtype=np.float32)
        vec[:cap] = self._vec
        acc = np.zeros((new_cap, self.dim), dtype=np.float32)
        acc[:cap] = self._acc
        last = np.full(new_cap, _NEVER, dtype=np.int64)
        last[:cap] = self._last_used
        self._vec, self._acc, self._last_used = vec, acc, last

    def _init_rows(self, rows: NDArray[np.int64], now_ms: int) -> None:
        init = self._rng.standard_normal((len(rows), self.dim)) * self.cfg.init_scale
        self._vec[rows] = init.astype(np.float32)
        self._acc[rows] = self.cfg.initial_accumulator
        self._last_used[rows] = now_ms
        if self.track_changes:
            self._dirty.update(rows.tolist())

    def vectors(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """(n, dim) vectors of ``rows``; -1 gives the fallback vector. A copy: callers may
        mutate it."""
        rows = np.asarray(rows, dtype=np.int64)
        self._check_rows(rows)
        out: NDArray[np.float32] = self._vec[np.maximum(rows, 0)]
        out[rows < 0] = self._fb_vec
        return out

    def fallback(self) -> NDArray[np.float32]:
        """A copy of the shared fallback vector (what ids without a row read)."""
        return self._fb_vec.copy()

    def _check_rows(self, rows: NDArray[np.int64]) -> None:
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-d, got shape {rows.shape}")
        if len(rows) and (int(rows.max()) >= len(self._id_of) or int(rows.min()) < -1):
            raise IndexError(f"{self.name}: row out of range (rows in use: {len(self._id_of)})")

    # ------------------------------------------------------------------ learning

    def apply_gradients(self, rows: NDArray[np.int64], grads: NDArray[np.float32]) -> None:
        """Per-row Adagrad. Duplicate rows' gradients are summed first; rows == -1 update
        the fallback vector (with its own accumulator)."""
        rows = np.asarray(rows, dtype=np.int64)
        g = np.asarray(grads, dtype=np.float32)
        if g.shape != (len(rows), self.dim):
            raise ValueError(f"grads must have shape ({len(rows)}, {self.dim}), got {g.shape}")
        self._check_rows(rows)
        if len(rows) == 0:
            return
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        uniq = sorted_rows[starts]
        summed = np.add.reduceat(g[order], starts, axis=0)  # duplicates summed
        lr = np.float32(self.cfg.learning_rate)
        eps = np.float32(ADAGRAD_EPS)
        if uniq[0] < 0:  # sorted: -1 comes first
            gf = summed[0]
            self._fb_acc += gf * gf
            self._fb_vec -= lr * gf / (np.sqrt(self._fb_acc) + eps)
            uniq, summed = uniq[1:], summed[1:]
        if len(uniq):
            acc = self._acc[uniq] + summed * summed
            self._acc[uniq] = acc
            self._vec[uniq] -= lr * summed / (np.sqrt(acc) + eps)
            if self.track_changes:
                self._dirty.update(uniq.tolist())

    # ------------------------------------------------------------------ eviction

    def expire(self, now_ms: int) -> int:
        """Evict rows unused (not admitted, not touched) for ``expire_after_ms`` or more;
        returns how many. Their rows are reused by later admissions."""
        if self.cfg.expire_after_ms is None:
            return 0
        hwm = len(self._id_of)
        cutoff = now_ms - self.cfg.expire_after_ms
        stale = np.flatnonzero(self._last_used[:hwm] <= cutoff)  # free rows hold _NEVER
        for row in stale[::-1].tolist():  # the lowest rows are reused first
            self._release(row)
        return len(stale)

    def forget(self, ids: Sequence[str]) -> int:
        """Drop these ids' rows and pending counts now (erasure, or to relearn them from
        scratch); returns how many rows were dropped."""
        dropped = 0
        for i in ids:
            if self._pending.pop(i, None) is not None:
                self._pending_key_bytes -= _str_bytes(i)
            row = self._row_of.get(i)
            if row is not None:
                self._release(row)
                dropped += 1
        return dropped

    def _release(self, row: int) -> None:
        id_ = self._id_of[row]
        assert id_ is not None
        del self._row_of[id_]
        self._key_bytes -= _str_bytes(id_)
        self._id_of[row] = None
        self._last_used[row] = _NEVER
        # Zeroed, not left for the next id to overwrite: a row freed by an erasure must not
        # carry the erased user's learned vector into the next checkpoint.
        self._vec[row] = 0.0
        self._acc[row] = 0.0
        self._free.append(row)
        if self.track_changes:
            self._dirty.discard(row)
            self._removed.add(id_)

    # ------------------------------------------------------------------ publishing

    # What changed is not part of a checkpoint (it may name an id erased since, and a
    # restarted learner publishes everything first anyway).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["track_changes"] = False
        state["_dirty"], state["_removed"] = set(), set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def take_changes(self) -> TableChanges:
        """The rows set or moved and the ids removed since the last call (and the
        fallback vector, which moves with every batch that reads it), then forgets them:
        what a reader holding the table as of the last call needs to hold it as of now."""
        rows = np.fromiter(sorted(self._dirty), dtype=np.int64, count=len(self._dirty))
        ids = [self._id_of[r] for r in rows.tolist()]
        removed = sorted(i for i in self._removed if i not in self._row_of)  # (or back)
        self._dirty, self._removed = set(), set()
        return TableChanges(
            [i for i in ids if i is not None], self._vec[rows].copy(), removed, self.fallback()
        )

    def snapshot(self) -> TableChanges:
        """Every row (as :meth:`take_changes` would give a reader that holds nothing), and
        the change sets forgotten: what a new reader starts from."""
        self._dirty, self._removed = set(), set()
        ids = list(self._row_of)
        rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(ids))
        return TableChanges(ids, self._vec[rows].copy(), [], self.fallback())

    # ------------------------------------------------------------------ inspection

    def row_of(self, id: str) -> int:
        """The id's row, -1 if it has none."""
        return self._row_of.get(id, -1)

    def ids(self) -> list[str]:
        """The ids with rows."""
        return list(self._row_of)

    def pending_count(self, id: str) -> int:
        """Occurrences counted toward ``min_count`` for an id without a row (0 if none)."""
        return self._pending.get(id, 0)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id: object) -> bool:
        return id in self._row_of

    @property
    def capacity(self) -> int:
        """Rows allocated in the arrays (grown by doubling)."""
        return len(self._vec)

    @property
    def bytes_per_row(self) -> int:
        """Memory of one row, an honest estimate: the vector and Adagrad accumulator
        (``2 * 4 * dim``), last-used (8), the row -> id pointer (8), the dict slot (the
        dict's own size per entry, measured; ~31 B at 1M entries), the row's int object
        (32) and the id string (its mean allocated size over the current rows; 64 B for
        an ASCII id of 8-15 characters, assumed when the table is empty). Excludes array
        capacity not yet used (at most 2x after doubling), counted by :meth:`memory_bytes`."""
        n = len(self._row_of)
        dict_slot = sys.getsizeof(self._row_of) / n if n else 32.0
        key = self._key_bytes / n if n else 64.0
        return round(8 * self.dim + 8 + 8 + dict_slot + _INT_BYTES + key)

    def memory_bytes(self) -> int:
        """Memory of the whole table: arrays at their capacity, fallback, dict, row -> id
        list, free list, id strings and row ints, and the pending counts."""
        arrays = self._vec.nbytes + self._acc.nbytes + self._last_used.nbytes
        arrays += self._fb_vec.nbytes + self._fb_acc.nbytes
        rows = (
            sys.getsizeof(self._row_of)
            + sys.getsizeof(self._id_of)
            + sys.getsizeof(self._free)
            + (len(self._row_of) + len(self._free)) * _INT_BYTES
            + self._key_bytes
        )
        pending = sys.getsizeof(self._pending) + self._pending_key_bytes
        return int(arrays + rows + pending)

    def stats(self) -> dict[str, int]:
        return {
            "rows": len(self),
            "capacity": self.capacity,
            "free_rows": len(self._free),
            "pending": len(self._pending),
            "bytes_per_row": self.bytes_per_row,
            "memory_bytes": self.memory_bytes(),
        }

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The table as numpy arrays, scalars and lists of str (``ids``,
        ``pending_ids``): ``np.savez(f, **state)`` works with ``allow_pickle=False``
        (lists of str become unicode arrays), and :meth:`from_state_dict` takes the
        loaded arrays back. ``cfg_expire_after_ms`` is -1 for None."""
        hwm = len(self._id_of)
        ids = list(self._row_of)
        s = self._rng.bit_generator.state["state"]
        rng_state = np.array(
            [
                s["state"] >> 64,
                s["state"] & _MASK64,
                s["inc"] >> 64,
                s["inc"] & _MASK64,
                self._rng.bit_generator.state["has_uint32"],
                self._rng.bit_generator.state["uinteger"],
            ],
            dtype=np.uint64,
        )
        cfg = {f"cfg_{f.name}": getattr(self.cfg, f.name) for f in fields(self.cfg)}
        if cfg["cfg_expire_after_ms"] is None:
            cfg["cfg_expire_after_ms"] = -1
        return {
            "name": self.name,
            **cfg,
            "ids": ids,
            "rows": np.fromiter(self._row_of.values(), dtype=np.int64, count=len(ids)),
            "vectors": self._vec[:hwm].copy(),
            "accumulators": self._acc[:hwm].copy(),
            "last_used": self._last_used[:hwm].copy(),
            "free": np.asarray(self._free, dtype=np.int64).reshape(len(self._free)),
            "fallback": self._fb_vec.copy(),
            "fallback_accumulator": self._fb_acc.copy(),
            "pending_ids": list(self._pending),
            "pending_counts": np.fromiter(
                self._pending.values(), dtype=np.int64, count=len(self._pending)
            ),
            "rng_state": rng_state,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> EmbeddingTable:
        kw: dict[str, Any] = {}
        for f in fields(TableConfig):
            v = np.asarray(state[f"cfg_{f.name}"]).item()
            kw[f.name] = float(v) if isinstance(getattr(_DEFAULT_CFG, f.name), float) else int(v)
        if kw["expire_after_ms"] < 0:
            kw["expire_after_ms"] = None
        t = cls(str(np.asarray(state["name"]).item()), TableConfig(**kw))
        vectors = np.asarray(state["vectors"], dtype=np.float32).reshape(-1, t.dim)
        hwm = len(vectors)
        cap = max(_INITIAL_CAPACITY, 1 << max(hwm - 1, 0).bit_length())
        t._vec = np.zeros((cap, t.dim), dtype=np.float32)
        t._vec[:hwm] = vectors
        t._acc = np.zeros((cap, t.dim), dtype=np.float32)
        t._acc[:hwm] = np.asarray(state["accumulators"], dtype=np.float32).reshape(hwm, t.dim)
        t._last_used = np.full(cap, _NEVER, dtype=np.int64)
        t._last_used[:hwm] = np.asarray(state["last_used"], dtype=np.int64)
        ids = [str(i) for i in _str_list(state["ids"])]
        rows = np.asarray(state["rows"], dtype=np.int64).reshape(-1).tolist()
        if len(ids) != len(rows):
            raise ValueError("state: ids and rows differ in length")
        t._id_of = [None] * hwm
        for id_, row in zip(ids, rows, strict=True):
            if not 0 <= row < hwm or t._id_of[row] is not None:
                raise ValueError(f"state: bad or shared row {row} for id {id_!r}")
            t._id_of[row] = id_
            t._row_of[id_] = row
            t._key_bytes += _str_bytes(id_)
        t._free = np.asarray(state["free"], dtype=np.int64).reshape(-1).tolist()
        if len(t._free) + len(ids) != hwm:
            raise ValueError("state: free rows and id rows do not cover the table")
        t._fb_vec = np.asarray(state["fallback"], dtype=np.float32).reshape(t.dim).copy()
        t._fb_acc = np.asarray(state["fallback_accumulator"], dtype=np.float32)
        t._fb_acc = t._fb_acc.reshape(t.dim).copy()
        counts = np.asarray(state["pending_counts"], dtype=np.int64).reshape(-1).tolist()
        for id_, c in zip(_str_list(state["pending_ids"]), counts, strict=True):
            t._pending[id_] = c
            t._pending_key_bytes += _str_bytes(id_)
        r = np.asarray(state["rng_state"], dtype=np.uint64).tolist()
        t._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (r[0] << 64) | r[1], "inc": (r[2] << 64) | r[3]},
            "has_uint32": r[4],
            "uinteger": r[5],
        }
        return t


def _str_list(x: Any) -> list[str]:
    """A list of str from a list or a (possibly empty, possibly float) numpy array."""
    if isinstance(x, np.ndarray):
        return [] if x.size == 0 else [str(i) for i in x.reshape(-1).tolist()]
    return [str(i) for i in x]


class EmbeddingTables:
    """One :class:`EmbeddingTable` per id type; kinds missing from ``configs`` get the
    default :class:`TableConfig`. Each table has its own seed, derived from ``seed``."""

    KINDS: ClassVar[tuple[str, ...]] = ("user", "video", "creator", "sound", "hashtag")

    def __init__(self, configs: Mapping[str, TableConfig], seed: int = 0) -> None:
        unknown = set(configs) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown table kinds {sorted(unknown)}; kinds: {self.KINDS}")
        self._tables: dict[str, EmbeddingTable] = {}
        for k, kind in enumerate(self.KINDS):
            table_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            self._tables[kind] = EmbeddingTable(kind, configs.get(kind, TableConfig()), table_seed)

    def __getitem__(self, kind: str) -> EmbeddingTable:
        try:
            return self._tables[kind]
        except KeyError:
            raise KeyError(f"no table {kind!r}; kinds: {self.KINDS}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def items(self) -> list[tuple[str, EmbeddingTable]]:
        return list(self._tables.items())

    def expire(self, now_ms: int) -> dict[str, int]:
        return {kind: t.expire(now_ms) for kind, t in self._tables.items()}

    def memory_bytes(self) -> dict[str, int]:
        return {kind: t.memory_bytes() for kind, t in self._tables.items()}

    def state_dict(self) -> dict[str, Any]:
        """``{kind: table.state_dict()}``."""
        return {kind: t.state_dict() for kind, t in self._tables.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> EmbeddingTables:
        unknown = set(state) - set(cls.KINDS)
        if unknown:
            raise ValueError(f"unknown table kinds {sorted(unknown)}; kinds: {cls.KINDS}")
        out = cls({})
        for kind, table_state in state.items():
            table = EmbeddingTable.from_state_dict(table_state)
            table.name = kind
            out._tables[kind] = table
        return out


# ---------------------------------------------------------------------- torch glue


MAX_TAGS = 8  # hashtags of a video pooled into its representation (the first ones)


def lookup_optional(
    table: TableReader,
    ids: Sequence[str | None],
    now_ms: int,
    *,
    admit: bool = False,
    touch: bool = False,
) -> NDArray[np.int64]:
    """:meth:`EmbeddingTable.lookup` of ids that may be missing (a video without a
    sound): a missing one reads as -1, the fallback."""
    rows = table.lookup([i or "" for i in ids], now_ms, admit=admit, touch=touch)
    rows[np.array([i is None for i in ids], dtype=bool)] = -1
    return rows


def lookup_padded(
    table: TableReader,
    lists: Sequence[Sequence[str]],
    width: int,
    now_ms: int,
    *,
    admit: bool = False,
    touch: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The rows of several id lists (a video's hashtags, a user's history) in one lookup,
    as an ``(n, width)`` array padded with -1, and each list's length. Lists must hold at
    most ``width`` ids (the caller chooses which: the first tags, the last views)."""
    counts = np.fromiter((len(ids) for ids in lists), dtype=np.int64, count=len(lists))
    if (counts > width).any():
        raise ValueError(f"a list holds more than {width} ids")
    flat = [i for ids in lists for i in ids]
    out = np.full((len(lists), width), -1, dtype=np.int64)
    if flat:
        # Row-major boolean assignment fills each list's first slots, list by list.
        out[np.arange(width) < counts[:, None]] = table.lookup(
            flat, now_ms, admit=admit, touch=touch
        )
    return out, counts


def gather(table: EmbeddingTable, rows: NDArray[np.int64]) -> torch.Tensor:
    """The vectors of ``rows`` (-1: the fallback) as a leaf tensor ``(n, dim)`` with
    ``requires_grad=True``, for a model's forward pass."""
    import torch

    return torch.from_numpy(table.vectors(rows)).requires_grad_(True)


def scatter_gradients(
    table: EmbeddingTable, rows: NDArray[np.int64], leaf: torch.Tensor, scale: float = 1.0
) -> None:
    """After ``backward()``: apply ``leaf.grad`` × ``scale`` to the table's rows
    (Adagrad). Does nothing if the leaf got no gradient.

    A model whose loss is the batch *mean* passes ``scale = batch size``: each row then
    moves by its own examples' gradient, not by a share of the batch's (Adagrad's
    initial accumulator would otherwise dwarf the 1/n-sized gradients and the rows would
    barely move)."""
    if leaf.grad is None:
        return
    grad = leaf.grad.detach().cpu().numpy().astype(np.float32, copy=False)
    if scale != 1.0:
        grad = grad * np.float32(scale)
    table.apply_gradients(rows, grad)
