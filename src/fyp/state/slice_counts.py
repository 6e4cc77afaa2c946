"""The label counts and views a stretch of the fold adds, applied at once.

Every view and action of the log adds to the counts of its video, of the video's creator
and of each of its hashtags (:class:`~fyp.state.videos.VideoStats`,
:class:`~fyp.state.group_rates.GroupRates`), and every example the fold opens reads them
as they are at that moment, before its own event adds anything. Done event by event, that
is a handful of numpy calls on single elements per event, each costing more than its
arithmetic. Here a stretch of the fold (a call of
:meth:`~fyp.state.updater.LogState.apply`) records its additions and its reads in order,
and :meth:`SliceCounts.resolve` then answers every read with the counts at the start of
the stretch plus the additions recorded before it (a prefix sum per video, creator and
hashtag), and applies the additions. The numbers are the same as adding one at a time:
counts are whole numbers, exact in float64 in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import TAGS_PER_VIDEO, CatalogIndex
from fyp.state.feedback import LABELS
from fyp.state.group_rates import GroupRates, distinct_tags
from fyp.state.videos import VideoStats

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_L = len(LABELS)
VIEW_COLUMN = _L  # the column of a view, after the label counts
_TICK_BITS = 32


R = TypeVar("R")  # what a read is made for (the fold's: an example)


@dataclass(frozen=True, slots=True)
class Counts:
    """The counts of n reads: the video's label counts (n, L) and views (n,), its
    creator's label counts then views (n, L + 1), and its hashtags' (n, T, L + 1)."""

    video_counts: F64
    video_views: F64
    creator_counts: F64
    tag_counts: F64


class SliceCounts(Generic[R]):
    """Additions to the counts and reads of them, in fold order, not yet applied."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._tick = 0
        # additions: one per event that counts, each with its columns (flattened)
        self._add_tick: list[int] = []
        self._add_row: list[int] = []
        self._col_of: list[int] = []  # addition index of each column
        self._col: list[int] = []
        # reads
        self._read_tick: list[int] = []
        self._read_row: list[int] = []
        self._readers: list[R] = []

    def __len__(self) -> int:
        return len(self._add_tick) + len(self._read_tick)

    def add(self, row: int, columns: list[int]) -> None:
        """An event of video ``row`` counts one in each of ``columns`` (label indices,
        and :data:`VIEW_COLUMN` for a view), now."""
        if not columns:
            return
        i = len(self._add_tick)
        self._add_tick.append(self._tick)
        self._tick += 1
        self._add_row.append(row)
        self._col_of += [i] * len(columns)
        self._col += columns

    def read(self, row: int, reader: R) -> None:
        """``reader`` is to be told the counts of video ``row`` (and of its creator and
        hashtags) as they are now."""
        self._read_tick.append(self._tick)
        self._tick += 1
        self._read_row.append(row)
        self._readers.append(reader)

    def drop_reads(self, keep: Callable[[R], bool]) -> None:
        """Only the reads whose reader ``keep`` accepts are answered (an erased user's
        examples, which must not outlive the erasure here, in a checkpoint); the
        additions stay, as counts not kept per user do."""
        kept = [i for i, reader in enumerate(self._readers) if keep(reader)]
        if len(kept) < len(self._readers):
            self._read_tick = [self._read_tick[i] for i in kept]
            self._read_row = [self._read_row[i] for i in kept]
            self._readers = [self._readers[i] for i in kept]

    def resolve(
        self, stats: VideoStats, groups: GroupRates, catalog: CatalogIndex
    ) -> tuple[list[R], Counts | None]:
        """The readers of the reads so far, in order, and their counts (row i: reader
        i's), then the additions applied; empties this. The counts are None where there
        was no read."""
        readers = self._readers
        if not readers and not self._add_tick:
            return readers, None
        counts = self.counts(stats, groups, catalog) if readers else None
        self._apply(stats, groups)
        self._clear()
        return readers, counts

    def counts(self, stats: VideoStats, groups: GroupRates, catalog: CatalogIndex) -> Counts:
        """The counts of each read so far, as they were when it was made."""
        rows = np.array(self._read_row, dtype=np.int64)
        ticks = np.array(self._read_tick, dtype=np.int64)
        video = stats.label_counts[rows]
        views = stats.views[rows]
        creator_codes = catalog.creator_code[rows].astype(np.int64)
        creator = groups.creators.rows(creator_codes)
        tag_codes = catalog.tag_codes[rows].astype(np.int64)  # (n, T), -1 padded
        tags = groups.hashtags.rows(tag_codes)
        if self._add_tick:
            add_rows = np.array(self._add_row, dtype=np.int64)
            add_ticks = np.array(self._add_tick, dtype=np.int64)
            delta = self._delta()
            before = _before(add_rows, add_ticks, delta, rows, ticks)
            video += before[:, :_L]
            views += before[:, _L]
            add_creators = catalog.creator_code[add_rows].astype(np.int64)
            creator += _before(add_creators, add_ticks, delta, creator_codes, ticks)
            owner, codes = distinct_tags(catalog, add_rows)
            n = len(rows)
            flat = _before(
                codes,
                add_ticks[owner],
                delta[owner],
                tag_codes.reshape(-1),
                np.repeat(ticks, TAGS_PER_VIDEO),
            )
            tags += flat.reshape(n, TAGS_PER_VIDEO, _L + 1)
        return Counts(video, views, creator, tags)

    def _delta(self) -> F64:
        """(additions, L + 1): what each addition adds, by column."""
        delta = np.zeros((len(self._add_tick), _L + 1))
        delta[self._col_of, self._col] = 1.0  # an addition's columns are distinct
        return delta

    def _apply(self, stats: VideoStats, groups: GroupRates) -> None:
        if not self._add_tick:
            return
        rows = np.array(self._add_row, dtype=np.int64)
        delta = self._delta()
        np.add.at(stats.label_counts, rows, delta[:, :_L])
        np.add.at(stats.views, rows, delta[:, _L])
        groups.add_many(rows, delta)


def _before(keys: I64, ticks: I64, delta: F64, read_keys: I64, read_ticks: I64) -> F64:
    """(reads, L + 1): for each read, the sum of the ``delta`` rows of the additions of
    its key made before it (by tick); additions and reads with a key < 0 count nothing."""
    out = np.zeros((len(read_keys), delta.shape[1]))
    kept = keys >= 0
    if not kept.any():
        return out
    combined = (keys[kept] << _TICK_BITS) | ticks[kept]
    order = np.argsort(combined, kind="stable")
    combined = combined[order]
    cum = np.zeros((len(combined) + 1, delta.shape[1]))
    np.cumsum(delta[kept][order], axis=0, out=cum[1:])
    known = read_keys >= 0
    k = np.where(known, read_keys, 0)
    hi = np.searchsorted(combined, (k << _TICK_BITS) | read_ticks, side="left")
    lo = np.searchsorted(combined, k << _TICK_BITS, side="left")
    out[known] = (cum[hi] - cum[lo])[known]
    return out
