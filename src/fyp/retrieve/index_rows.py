"""The catalog row of each slot of the ANN index, and the slot of each catalog row, as
arrays kept up with both: two-tower retrieval maps a search's answers to candidates, and
the user's watches to their item vectors, by indexing these rather than by looking up a
string id per answer.

Kept up, not rebuilt: slots that took or gave up an id since the last read (the index
says which: :meth:`~fyp.model.ann.ItemIndex.slots_changed_since`) and catalog rows added
since (rows are only ever appended, and a row keeps its video id) are all that is
looked up again. Another index object (a serving replica gets one with every snapshot)
or a cleared one starts every entry as unknown, and an entry is looked up when first
read: reading a whole index of a million slots in the request that meets it would
hold that request (and those queued behind it) for a long moment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fyp.catalog.index import CatalogIndex
    from fyp.model.ann import ItemIndex

I64 = npt.NDArray[np.int64]
_UNKNOWN = -2  # not looked up yet (-1: looked up, none)


class IndexRows:
    """:meth:`rows_of` slots and :meth:`slots_of` catalog rows, after :meth:`update`."""

    def __init__(self) -> None:
        self._slot_row: I64 = np.full(0, _UNKNOWN, dtype=np.int64)
        self._row_slot: I64 = np.full(0, _UNKNOWN, dtype=np.int64)
        self._index: ItemIndex | None = None
        self._catalog: CatalogIndex | None = None
        self._epoch = -1
        self._mark = 0
        self._rows = 0  # catalog rows met

    def update(self, index: ItemIndex, catalog: CatalogIndex) -> None:
        """Catch up with ``index``'s slots and ``catalog``'s rows."""
        if index is not self._index or index.epoch != self._epoch or catalog is not self._catalog:
            self._index, self._epoch, self._catalog = index, index.epoch, catalog
            self._slot_row = np.full(index.slot_count, _UNKNOWN, dtype=np.int64)
            self._row_slot = np.full(len(catalog), _UNKNOWN, dtype=np.int64)
            _, self._mark = index.slots_changed_since(0)
            self._rows = len(catalog)
            return
        changed, mark = index.slots_changed_since(self._mark)
        if len(changed) == 0 and self._rows == len(catalog):
            return
        self._fit(index.slot_count, len(catalog))
        row_of = catalog.row_of
        for slot in changed.tolist():
            old = int(self._slot_row[slot])
            if old >= 0 and self._row_slot[old] == slot:
                self._row_slot[old] = -1
            video_id = index.id_at(slot)
            row = -1 if video_id is None else row_of.get(video_id, -1)
            self._slot_row[slot] = row
            if row >= 0:
                self._row_slot[row] = slot
        videos = catalog.videos
        for row in range(self._rows, len(catalog)):
            at = index.slot_of(videos[row].video_id)
            self._row_slot[row] = -1 if at is None else at
            if at is not None:
                self._slot_row[at] = row
        self._mark, self._rows = mark, len(catalog)

    def rows_of(self, slots: I64) -> I64:
        """The catalog row of each slot (-1: a free slot, or a video not in the catalog)."""
        rows = self._slot_row[slots]
        unknown = np.flatnonzero(rows == _UNKNOWN)
        if len(unknown):
            assert self._index is not None and self._catalog is not None
            index, row_of = self._index, self._catalog.row_of
            for k in unknown.tolist():
                slot = int(slots[k])
                video_id = index.id_at(slot)
                row = -1 if video_id is None else row_of.get(video_id, -1)
                self._slot_row[slot] = rows[k] = row
                if row >= 0:
                    self._row_slot[row] = slot
        return rows

    def slots_of(self, rows: I64) -> I64:
        """The slot of each catalog row's video (-1: not in the index)."""
        slots = self._row_slot[rows]
        unknown = np.flatnonzero(slots == _UNKNOWN)
        if len(unknown):
            assert self._index is not None and self._catalog is not None
            index, videos = self._index, self._catalog.videos
            for k in unknown.tolist():
                row = int(rows[k])
                at = index.slot_of(videos[row].video_id)
                slot = -1 if at is None else at
                self._row_slot[row] = slots[k] = slot
                if slot >= 0:
                    self._slot_row[slot] = row
        return slots

    def _fit(self, slots: int, rows: int) -> None:
        # Grown entries are unknown; update() then sets those of the rows it met.
        if slots > len(self._slot_row):
            grown = np.full(max(slots, 2 * len(self._slot_row)), _UNKNOWN, dtype=np.int64)
            grown[: len(self._slot_row)] = self._slot_row
            self._slot_row = grown
        if rows > len(self._row_slot):
            grown = np.full(max(rows, 2 * len(self._row_slot)), _UNKNOWN, dtype=np.int64)
            grown[: len(self._row_slot)] = self._row_slot
            self._row_slot = grown
