"""The ANN slots' catalog rows and the catalog rows' slots, kept up incrementally, equal
what reading the index and the catalog whole gives, through adds, removals, reused slots
and videos that reach the catalog after the index."""

from __future__ import annotations

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.model.ann import ItemIndex
from fyp.retrieve.index_rows import IndexRows
from fyp.types import Video


def _expected(index: ItemIndex, catalog: CatalogIndex) -> tuple[list[int], list[int]]:
    slot_row = [catalog.row_of.get(index.id_at(s) or "", -1) for s in range(index.slot_count)]
    row_slot = [index.slot_of(v.video_id) for v in catalog.videos]
    return slot_row, [-1 if s is None else s for s in row_slot]


def _check(rows: IndexRows, index: ItemIndex, catalog: CatalogIndex) -> None:
    rows.update(index, catalog)
    slot_row, row_slot = _expected(index, catalog)
    assert rows.rows_of(np.arange(index.slot_count)).tolist() == slot_row
    assert rows.slots_of(np.arange(len(catalog))).tolist() == row_slot


def _peek(
    rows: IndexRows, index: ItemIndex, catalog: CatalogIndex, rng: np.random.Generator
) -> None:
    """Read a few entries only (the rest stay unknown until later)."""
    rows.update(index, catalog)
    slot_row, row_slot = _expected(index, catalog)
    if index.slot_count:
        some = rng.choice(index.slot_count, size=min(3, index.slot_count), replace=False)
        assert rows.rows_of(some).tolist() == [slot_row[s] for s in some]
    if len(catalog):
        some = rng.choice(len(catalog), size=min(3, len(catalog)), replace=False)
        assert rows.slots_of(some).tolist() == [row_slot[r] for r in some]


def test_kept_up_equals_read_whole_through_random_changes() -> None:
    rng = np.random.default_rng(3)
    _walk(rng)


def test_kept_up_with_few_entries_read_between_changes() -> None:
    for seed in range(5):
        _walk(np.random.default_rng(100 + seed), check_every=6)


def _walk(rng: np.random.Generator, check_every: int = 3) -> None:
    index = ItemIndex(4, exact_below=10**9)
    catalog = CatalogIndex()
    rows = IndexRows()
    _check(rows, index, catalog)
    for step in range(60):
        ids = [f"v{i}" for i in rng.choice(80, size=int(rng.integers(1, 8)), replace=False)]
        what = rng.integers(3)
        if what == 0:  # learned vectors: some of these videos are not in the catalog yet
            index.upsert(ids, rng.normal(size=(len(ids), 4)))
        elif what == 1:  # removals free slots, which later adds reuse
            index.remove(ids)
        else:
            catalog.upsert([Video(i, "c", 1_000) for i in ids])
        if step % check_every == 0:
            _check(rows, index, catalog)
        elif step % 2 == 1:
            _peek(rows, index, catalog, rng)
    _check(rows, index, catalog)
    assert (rows.rows_of(np.arange(index.slot_count)) >= 0).sum() > 5  # the walk met both
    fresh = IndexRows()  # entries first read after every change: looked up then
    _peek(fresh, index, catalog, rng)
    _check(fresh, index, catalog)


def test_a_cleared_or_another_index_is_read_whole() -> None:
    catalog = CatalogIndex()
    catalog.upsert([Video(f"v{i}", "c", 1_000) for i in range(5)])
    index = ItemIndex(2, exact_below=10**9)
    index.upsert(["v1", "v3"], np.ones((2, 2)))
    rows = IndexRows()
    _check(rows, index, catalog)
    index.clear()
    index.upsert(["v4"], np.ones((1, 2)))
    _check(rows, index, catalog)
    other = ItemIndex(2, exact_below=10**9)
    other.upsert(["v0", "v2"], np.ones((2, 2)))
    _check(rows, other, catalog)
