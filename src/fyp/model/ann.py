"""An item-vector index for two-tower retrieval: approximate top-k by inner product,
updated in place as item vectors change.

``ItemIndex`` keeps every item's vector in a dense float32 matrix (one slot per item,
freed slots reused) and, once the index is large enough for it to pay, a faiss
``IndexIVFFlat`` (inner product) over the same slots. Below ``exact_below`` items it
searches the matrix by brute force instead: exact, and fast enough at that size
(``bench/ann.py`` measured the crossover). Both paths return the same thing: the top
``k`` item ids per query and their exact inner products, best first.

Why faiss IVF (``bench/ann.py``, 100,000 × 64 unnormalised clustered vectors, 2 cores,
k=100): HNSW graphs (faiss and usearch alike, also with the MIPS-to-L2 reduction) did not
reach recall@100 0.95 on unnormalised inner-product data at any setting tried, while
IVFFlat with 1,024 lists and nprobe 32 reached 0.98 at about 0.1 ms per single query
(exact search: 0.7 ms with faiss, 2 ms with numpy). IVF removes and adds vectors in
place (a changed vector costs microseconds), and its lists are re-clustered (a rebuild,
about a second at 100k) once it has had as many upserts as it had items when they were
trained (it has doubled, or churned through itself), or when a caller says every vector
moved (``upsert(..., recluster=True)``: the model was retrained); ``rebuild()`` forces one.

With ``background=True`` a re-clustering runs in a worker thread (faiss releases the GIL
while it trains and adds), on a snapshot of the vectors: meanwhile searches use the old
lists (or exact search), and changes go to both; when the new lists are ready the next
call swaps them in and replays onto them the slots changed since the snapshot. A
re-clustering that falls due while one is running first waits for it, so the builds start
at the same points whatever the timing, and :meth:`settle` (waiting for the one running)
leaves the same index as building in place would have. At 100k items a build takes about
a second, which in place is a second in which the engine's lock serves no feed.

Thread-safety: none for callers (they hold the engine lock around every call, searches
included); the worker touches only its own snapshot and the faiss objects it builds.

Memory: the matrix (4·dim bytes per item) plus, in IVF mode, faiss' own copy of the
vectors and an 8-byte id per item.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import faiss
import numpy as np
from numpy.typing import NDArray

Metric = Literal["ip", "cos"]

#: Below this many items, search is exact (brute force over the matrix): see bench/ann.py.
EXACT_BELOW = 20_000
#: The IVF is dropped again only when the index shrinks well below the threshold.
_HYSTERESIS = 0.5
#: Re-cluster the IVF lists once the index has had as many upserts (new ids or changed
#: vectors) as it had items when they were trained: it has then doubled, or churned.
_TRAIN_POINTS_PER_LIST = 64
_MIN_POINTS_PER_LIST = 39  # faiss' k-means minimum
_STATE_VERSION = 1
_DIRECT_MAP_HASHTABLE = 2  # faiss.DirectMap.Hashtable (not in faiss' type stubs)


class ItemIndex:
    """Top-k inner-product search over item vectors keyed by string video id.

    ``upsert`` adds new ids and replaces the vectors of known ones; ``remove`` forgets
    ids; ``search`` takes one query ``(dim,)`` or a batch ``(q, dim)``.

    ``metric="cos"`` L2-normalises vectors and queries (then inner product is cosine).
    ``nlist``: IVF lists (default: the power of two nearest ``4·sqrt(n)`` at training,
    at most ``n / 39``); ``nprobe``: lists scanned per query (default ``max(32,
    nlist / 32)``: 32 of 1,024 lists gave recall@100 0.98 at 100k in ``bench/ann.py``).
    ``exact_below``: brute force below this many items (0: IVF at any size that can
    train it; a huge number: always exact). Labels inside faiss are int64 slot numbers.
    """

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "ip",
        nlist: int | None = None,
        nprobe: int | None = None,
        exact_below: int = EXACT_BELOW,
        seed: int = 0,
        background: bool = False,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if metric not in ("ip", "cos"):
            raise ValueError(f"metric must be 'ip' or 'cos', got {metric!r}")
        self.dim = dim
        self.metric: Metric = metric
        self.nlist = nlist
        self.nprobe = nprobe
        self.exact_below = exact_below
        self.seed = seed
        self.background = background
        self.clear()

    # ------------------------------------------------------------------ size, membership

    def __len__(self) -> int:
        return len(self._id_slot)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._id_slot

    @property
    def is_approximate(self) -> bool:
        """True when searches go through the IVF (else exact brute force)."""
        self._poll()
        return self._ivf is not None

    @property
    def building(self) -> bool:
        """True while a background re-clustering runs (or waits to be swapped in)."""
        return self._build is not None

    def ids(self) -> list[str]:
        return list(self._id_slot)

    def vector(self, item_id: str) -> NDArray[np.float32]:
        """A copy of the stored vector of ``item_id`` (normalised under ``metric="cos"``)."""
        return np.array(self._vectors[self._id_slot[item_id]], dtype=np.float32)

    # -- by slot: what a caller that keeps its own numbers per slot reads (such as the
    # catalog row of each: fyp.retrieve.index_rows), so that a search's answers need no
    # lookup by string id.

    @property
    def epoch(self) -> int:
        """Changes when every slot changes at once (:meth:`clear`): a caller's record of
        the slots is then to be rebuilt whole, not updated."""
        return self._epoch

    @property
    def slot_count(self) -> int:
        """Slots in use or freed: every slot number is below this."""
        return len(self._slot_id)

    def id_at(self, slot: int) -> str | None:
        """The id held in ``slot`` (None: a free slot)."""
        return self._slot_id[slot]

    def slot_of(self, item_id: str) -> int | None:
        return self._id_slot.get(item_id)

    def slots_changed_since(self, mark: int) -> tuple[NDArray[np.int64], int]:
        """The slots that took or gave up an id after ``mark`` (a mark this returned
        before, in this :attr:`epoch`), in slot order, and the mark to pass next time."""
        if mark >= self._stamp:
            return np.zeros(0, dtype=np.int64), self._stamp
        n = len(self._slot_id)
        changed = np.flatnonzero(self._slot_stamp[:n] > mark).astype(np.int64)
        return changed, self._stamp

    def vectors_at(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """The stored vectors of ``slots`` (zeros where a slot is -1)."""
        found = slots >= 0
        out = np.zeros((len(slots), self.dim), dtype=np.float32)
        out[found] = self._vectors[slots[found]]
        return out

    def vectors_of(self, ids: Sequence[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """The stored vectors of ``ids`` (zeros where an id is not in the index) and
        which ids are."""
        slots = np.fromiter((self._id_slot.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        found = slots >= 0
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        out[found] = self._vectors[slots[found]]
        return out, found

    # ------------------------------------------------------------------ changes

    def clear(self) -> None:
        """Forget every item (the configuration stays)."""
        self._vectors: NDArray[np.float32] = np.zeros((0, self.dim), dtype=np.float32)
        self._alive: NDArray[np.bool_] = np.zeros(0, dtype=bool)  # slot -> holds an item
        self._slot_id: list[str | None] = []  # slot -> id (None: free)
        self._id_slot: dict[str, int] = {}
        self._free: list[int] = []  # free slots, reused last-in first-out
        # When each slot last took or gave up an id (a count of such changes): what
        # slots_changed_since reads. The epoch tells a caller that all slots changed.
        self._slot_stamp: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._stamp = 0
        self._epoch = getattr(self, "_epoch", -1) + 1
        self._ivf: faiss.IndexIVFFlat | None = None  # labels are slots
        self._trained_size = 0  # items when the IVF lists were (last started being) trained
        self._changes = 0  # upserted vectors since then
        self._build: _Build | None = None  # a background re-clustering (its result unused)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: NDArray[np.floating[Any]],
        *,
        recluster: bool = False,
        lists: bool = True,
    ) -> None:
        """Add ``ids`` with ``vectors`` (shape ``(len(ids), dim)``); an id already present
        gets its new vector (and is found at its new place only). Within one call a
        repeated id keeps its last vector. ``recluster``: the vectors moved as a whole
        (a retrained model): the IVF lists are re-clustered on them rather than updated.
        ``lists=False``: the vectors are stored (searches score with them) but the IVF
        lists wait for a :meth:`recluster` the caller makes once it has stored them all
        (new ids are not found until then, moved ones are found at their old place)."""
        self._poll()
        x = self._as_matrix(vectors, "vectors")
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids but {len(x)} vectors")
        if len(ids) == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("vectors must be finite")
        last = {item_id: row for row, item_id in enumerate(ids)}  # the last one wins
        if len(last) != len(ids):
            ids = list(last)
            x = x[list(last.values())]
        if self.metric == "cos":
            x = _normalised(x)
        replaced: list[int] = []
        slots = np.empty(len(ids), dtype=np.int64)
        for i, item_id in enumerate(ids):
            slot = self._id_slot.get(item_id)
            if slot is None:
                slot = self._new_slot(item_id)
            else:
                replaced.append(slot)
            slots[i] = slot
        self._vectors[slots] = x
        self._alive[slots] = True
        if self._build is not None:
            self._build.dirty.update(slots.tolist())
        if not lists:
            return
        if self._ivf is None and self._build is None:  # exact search
            if len(self) >= self.exact_below:
                self._recluster()
            return
        # Counted against the lists, also while the first build runs and none are in
        # place yet (so builds start at the same points whatever the timing).
        self._changes += len(slots)
        if recluster or self._changes >= self._trained_size:
            self._recluster()
            return
        if self._ivf is None:
            return  # the first build runs: the dirty slots above reach its lists
        if replaced:
            _remove_ids(self._ivf, replaced)
        self._ivf.add_with_ids(x, slots)

    def remove(self, ids: Iterable[str]) -> int:
        """Forget ``ids`` (unknown ones are ignored); returns how many were removed."""
        self._poll()
        slots = []
        for item_id in ids:
            slot = self._id_slot.pop(item_id, None)
            if slot is None:
                continue
            self._slot_id[slot] = None
            self._alive[slot] = False
            self._stamp += 1
            self._slot_stamp[slot] = self._stamp
            self._free.append(slot)
            slots.append(slot)
        if not slots:
            return 0
        if self._build is not None:
            self._build.dirty.update(slots)
        if len(self) < self.exact_below * _HYSTERESIS:
            self._ivf = None
            self._build = None
        elif self._ivf is not None:
            _remove_ids(self._ivf, slots)
        return len(slots)

    def rebuild(self) -> None:
        """Re-cluster the IVF lists on the current vectors and re-add them all (or go
        back to exact search if the index is now small), here and now, whatever
        ``background`` says. About a second at 100k × 64."""
        self._build = None  # superseded
        snapshot = self._begin_clustering()
        if snapshot is None:
            return
        slots, x, nlist = snapshot
        self._quantizer, self._ivf = _build_ivf(
            x, slots, nlist, self._nprobe(nlist), self.seed
        )  # the IVF does not own its quantizer: both are kept

    def settle(self) -> None:
        """Wait for a background re-clustering, if one runs, and swap it in."""
        build = self._build
        if build is None:
            return
        build.thread.join()
        self._build = None
        if build.error is not None:
            raise RuntimeError("re-clustering the index failed") from build.error
        assert build.ivf is not None and build.quantizer is not None
        ivf = build.ivf
        dirty = np.fromiter(sorted(build.dirty), dtype=np.int64, count=len(build.dirty))
        if len(dirty):
            # Slots changed since the snapshot: their old place goes, their vector now
            # (if they still hold an item) comes in.
            _remove_ids(ivf, dirty.tolist())
            live = dirty[self._alive[dirty]]
            if len(live):
                ivf.add_with_ids(np.ascontiguousarray(self._vectors[live]), live)
        self._quantizer, self._ivf = build.quantizer, ivf

    def recluster(self) -> None:
        """Re-cluster the IVF lists on the vectors stored now (in place, or in the
        background), if the index is large enough for them: after ``lists=False``
        upserts, or whenever every vector moved."""
        if self._ivf is not None or len(self) >= self.exact_below:
            self._recluster()

    def _recluster(self) -> None:
        """A re-clustering fell due: in place, or in the background (after the one
        running, so that builds start at the same points whatever the timing)."""
        if not self.background:
            self.rebuild()
            return
        self.settle()
        snapshot = self._begin_clustering()
        if snapshot is None:
            return
        slots, x, nlist = snapshot
        self._build = _Build(x, slots, nlist, self._nprobe(nlist), self.seed)

    def _poll(self) -> None:
        if self._build is not None and not self._build.thread.is_alive():
            self.settle()

    def _begin_clustering(self) -> tuple[NDArray[np.int64], NDArray[np.float32], int] | None:
        """The live slots, a copy of their vectors and the lists to cluster them into,
        with the change count started again from them; None (and exact search) when the
        index is too small for an IVF."""
        n = len(self)
        nlist = self._nlist(n)
        if n < self.exact_below * _HYSTERESIS or nlist < 2:
            self._ivf = None
            return None
        self._trained_size = n
        self._changes = 0
        slots = np.fromiter(self._id_slot.values(), dtype=np.int64, count=n)
        return slots, self._vectors[slots], nlist  # fancy indexing copies

    # ------------------------------------------------------------------ search

    def search(
        self, query: NDArray[np.floating[Any]], k: int
    ) -> tuple[list[list[str]], list[NDArray[np.float32]]]:
        """The top ``k`` ids per query by inner product, best first, and their scores (the
        exact inner products, float32). ``query`` is ``(dim,)`` or ``(q, dim)``; the
        result always has one row per query (a single query gives one row). Rows hold
        ``min(k, len(self))`` ids (in IVF mode, rarely, fewer: when the lists probed hold
        fewer). A ``k`` so large that the lists probed would hold fewer than ``2k``
        vectors on average is answered exactly."""
        found, scores = self.search_slots(query, k)
        slot_id = self._slot_id
        return [[slot_id[i] or "" for i in row.tolist()] for row in found], scores

    def search_slots(
        self, query: NDArray[np.floating[Any]], k: int
    ) -> tuple[list[NDArray[np.int64]], list[NDArray[np.float32]]]:
        """:meth:`search`, answering with the slots of the ids found (:meth:`id_at`)."""
        self._poll()
        q = self._as_matrix(query, "query")
        if self.metric == "cos":
            q = _normalised(q)
        k = min(k, len(self))
        if k <= 0 or len(q) == 0:
            empty = [np.zeros(0, np.int64) for _ in range(len(q))]
            return empty, [np.zeros(0, np.float32) for _ in range(len(q))]
        ivf = self._ivf
        if ivf is not None and 2 * k * ivf.nlist <= len(self) * ivf.nprobe:
            _, found = ivf.search(q, k)
            slots = np.asarray(found, dtype=np.int64)
        else:
            slots = self._search_exact(q, k)
        out: list[NDArray[np.int64]] = []
        scores: list[NDArray[np.float32]] = []
        for r, row in enumerate(slots):
            row = row[row >= 0]
            s = self._vectors[row] @ q[r]
            order = np.argsort(-s, kind="stable")
            out.append(row[order])
            scores.append(s[order].astype(np.float32, copy=False))
        return out, scores

    def _search_exact(self, q: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        n = len(self._slot_id)
        scores = q @ self._vectors[:n].T
        if self._free:
            scores[:, ~self._alive[:n]] = -np.inf
        if k < n:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (len(q), n))
        return np.asarray(part, dtype=np.int64)  # search() sorts them (and cuts dead slots)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, *, include_index: bool = True) -> dict[str, Any]:
        """Everything needed to restore the index: config, ids by slot, the vectors and
        (unless ``include_index=False``; then it is rebuilt on load) the serialised faiss
        index, as bytes. Plain Python and numpy values. A background build is waited for."""
        self.settle()
        n = len(self._slot_id)
        blob = None
        if include_index and self._ivf is not None:
            blob = faiss.serialize_index(self._ivf).tobytes()
        return {
            "version": _STATE_VERSION,
            "dim": self.dim,
            "metric": self.metric,
            "config": {
                "nlist": self.nlist,
                "nprobe": self.nprobe,
                "exact_below": self.exact_below,
                "seed": self.seed,
                "background": self.background,
            },
            "slot_ids": list(self._slot_id),
            "vectors": self._vectors[:n].copy(),
            "index": blob,
            "trained_size": self._trained_size,
            "changes": self._changes,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ItemIndex:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown ItemIndex state version {state.get('version')!r}")
        index = cls(int(state["dim"]), metric=state["metric"], **state["config"])
        slot_ids: list[str | None] = list(state["slot_ids"])
        vectors = np.asarray(state["vectors"], dtype=np.float32).reshape(-1, index.dim)
        if len(vectors) != len(slot_ids):
            raise ValueError("state: slot_ids and vectors differ in length")
        index._vectors = vectors.copy()
        index._slot_id = slot_ids
        index._alive = np.array([s is not None for s in slot_ids], dtype=bool)
        index._slot_stamp = np.zeros(len(slot_ids), dtype=np.int64)
        index._id_slot = {s: i for i, s in enumerate(slot_ids) if s is not None}
        index._free = [i for i, s in enumerate(slot_ids) if s is None][::-1]
        blob = state.get("index")
        if blob:
            ivf = faiss.deserialize_index(np.frombuffer(bytes(blob), dtype=np.uint8))
            if isinstance(ivf, faiss.IndexIVFFlat) and ivf.ntotal == len(index):
                index._ivf = ivf
                index._trained_size = int(state.get("trained_size", len(index)))
                index._changes = int(state.get("changes", 0))
                return index
        if len(index) >= index.exact_below:
            index.rebuild()
        return index

    # ------------------------------------------------------------------ internals

    def _nlist(self, n: int) -> int:
        if self.nlist is not None:
            want = self.nlist
        else:
            want = 1 << max(round(float(np.log2(max(4.0 * np.sqrt(n), 1.0)))), 0)
        return int(min(want, n // _MIN_POINTS_PER_LIST))

    def _nprobe(self, nlist: int) -> int:
        return int(min(self.nprobe or max(32, nlist // 32), nlist))

    def _new_slot(self, item_id: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._slot_id[slot] = item_id
        else:
            slot = len(self._slot_id)
            if slot == len(self._vectors):
                self._grow(max(64, 2 * len(self._vectors)))
            self._slot_id.append(item_id)
        self._id_slot[item_id] = slot
        self._stamp += 1
        self._slot_stamp[slot] = self._stamp
        return slot

    def _grow(self, capacity: int) -> None:
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[: len(self._vectors)] = self._vectors
        alive = np.zeros(capacity, dtype=bool)
        alive[: len(self._alive)] = self._alive
        stamp = np.zeros(capacity, dtype=np.int64)
        stamp[: len(self._slot_stamp)] = self._slot_stamp
        self._vectors, self._alive, self._slot_stamp = vectors, alive, stamp

    def _as_matrix(self, a: NDArray[np.floating[Any]], what: str) -> NDArray[np.float32]:
        x = np.asarray(a, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (dim,) or (n, {self.dim}), got {x.shape}")
        return np.ascontiguousarray(x)


def _build_ivf(
    x: NDArray[np.float32], slots: NDArray[np.int64], nlist: int, nprobe: int, seed: int
) -> tuple[faiss.IndexFlatIP, faiss.IndexIVFFlat]:
    """IVF lists clustered on (a seeded sample of) ``x``, holding ``x`` under ``slots``."""
    dim = x.shape[1]
    rng = np.random.default_rng(seed)
    n_train = min(len(x), _TRAIN_POINTS_PER_LIST * nlist)
    train = x if n_train == len(x) else x[rng.choice(len(x), size=n_train, replace=False)]
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(train)
    ivf.set_direct_map_type(_DIRECT_MAP_HASHTABLE)  # removals by id without a scan
    ivf.nprobe = nprobe
    ivf.add_with_ids(x, slots)
    return quantizer, ivf


class _Build:
    """A re-clustering running in a worker thread, on a snapshot of the vectors;
    ``dirty``: the slots changed since, replayed onto the result when it is swapped in."""

    def __init__(
        self, x: NDArray[np.float32], slots: NDArray[np.int64], nlist: int, nprobe: int, seed: int
    ) -> None:
        self.dirty: set[int] = set()
        self.quantizer: faiss.IndexFlatIP | None = None
        self.ivf: faiss.IndexIVFFlat | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run,
            args=(x, slots, nlist, nprobe, seed),
            name="fyp-ivf-build",
            daemon=True,
        )
        self.thread.start()

    def _run(
        self, x: NDArray[np.float32], slots: NDArray[np.int64], nlist: int, nprobe: int, seed: int
    ) -> None:
        try:
            self.quantizer, self.ivf = _build_ivf(x, slots, nlist, nprobe, seed)
        except BaseException as exc:  # re-raised by settle(), in the caller's thread
            self.error = exc


def _normalised(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


def _remove_ids(ivf: faiss.IndexIVFFlat, slots: list[int]) -> None:
    ids = np.asarray(slots, dtype=np.int64)
    # The hashtable direct map takes an IDSelectorArray; ``ids`` outlives the call.
    ivf.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
