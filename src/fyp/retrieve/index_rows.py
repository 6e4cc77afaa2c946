"""The catalog row of each slot of the ANN index, and the slot of each catalog row, as
arrays kept up with both: two-tower retrieval maps a search's answers to candidates, and
the user's watches to their item vectors, by indexing these rather than by looking up a
string id per answer.

Kept up, not rebuilt: slots that took or gave up an id since the last read (the index
says which: :meth:`~fyp.model.ann.ItemIndex.slots_changed_since`) and catalog rows added
since (rows are only ever appended, and a row keeps its video id) are all that is
looked up again; another index object, or a cleared one, is read whole."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fyp.catalog.index import CatalogIndex
    from fyp.model.ann import ItemIndex

I64 = npt.NDArray[np.int64]


class IndexRows:
    """``slot_row[slot]``: the catalog row of the video in ``slot`` (-1: a free slot, or a
    video not in the catalog); ``row_slot[row]``: the slot of the row's video (-1: not in
    the index). Call :meth:`update` before reading them."""

    def __init__(self) -> None:
        self.slot_row: I64 = np.full(0, -1, dtype=np.int64)
        self.row_slot: I64 = np.full(0, -1, dtype=np.int64)
        self._index: ItemIndex | None = None
        self._catalog: CatalogIndex | None = None
        self._epoch = -1
        self._mark = 0
        self._rows = 0  # catalog rows read

    def update(self, index: ItemIndex, catalog: CatalogIndex) -> None:
        """Catch up with ``index``'s slots and ``catalog``'s rows."""
        if index is not self._index or index.epoch != self._epoch or catalog is not self._catalog:
            self._index, self._epoch, self._catalog = index, index.epoch, catalog
            self.slot_row = np.full(0, -1, dtype=np.int64)
            self.row_slot = np.full(0, -1, dtype=np.int64)
            self._mark, self._rows = 0, 0
            self._fit(index.slot_count, len(catalog))
            row_of = catalog.row_of
            for slot in range(index.slot_count):
                self._place(slot, index.id_at(slot), row_of)
            _, self._mark = index.slots_changed_since(0)
            self._rows = len(catalog)
            return
        changed, mark = index.slots_changed_since(self._mark)
        if len(changed) == 0 and self._rows == len(catalog):
            return
        self._fit(index.slot_count, len(catalog))
        row_of = catalog.row_of
        for slot in changed.tolist():
            self._place(slot, index.id_at(slot), row_of)
        videos = catalog.videos
        for row in range(self._rows, len(catalog)):
            at = index.slot_of(videos[row].video_id)
            if at is not None:
                self.slot_row[at] = row
                self.row_slot[row] = at
        self._mark, self._rows = mark, len(catalog)

    def _place(self, slot: int, video_id: str | None, row_of: dict[str, int]) -> None:
        old = int(self.slot_row[slot])
        if old >= 0 and self.row_slot[old] == slot:
            self.row_slot[old] = -1
        row = -1 if video_id is None else row_of.get(video_id, -1)
        self.slot_row[slot] = row
        if row >= 0:
            self.row_slot[row] = slot

    def _fit(self, slots: int, rows: int) -> None:
        if slots > len(self.slot_row):
            grown = np.full(max(slots, 2 * len(self.slot_row)), -1, dtype=np.int64)
            grown[: len(self.slot_row)] = self.slot_row
            self.slot_row = grown
        if rows > len(self.row_slot):
            grown = np.full(max(rows, 2 * len(self.row_slot)), -1, dtype=np.int64)
            grown[: len(self.row_slot)] = self.row_slot
            self.row_slot = grown
