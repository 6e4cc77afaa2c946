"""The learned ranker's embedding rows of catalog videos (the video's, its creator's, its
sound's and its first hashtags'), kept between a serving replica's requests.

A request's ranker batch looks up several ids per candidate (about a dozen for each of
the few dozen re-ranked), one dict lookup at a time in Python; the same videos come
back request after request, and a replica's tables change only when a published update
is applied. So the rows are kept per catalog row and looked up again only when they may
have changed:

- a catalog row holds another video object (an upload replaced it; catalog videos are
  frozen and replaced whole, never mutated): that row's, checked when the row is next
  read after a catalog change (a catalog change elsewhere, an upload or a moderation
  action, leaves the other rows alone: moderation is not in these rows at all);
- the catalog index itself was replaced: all of them;
- a table was replaced (a snapshot) or lost ids (expiry, erasure: a freed row may now
  hold another id): all of them;
- a table gained ids: those of the videos with an id that had no row (it may have one
  now); an id's row never moves while the id stays.

What :func:`rank_batch` returns is what :func:`fyp.model.serving.rank_rows` returns for
the same tables (tests hold the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.model.embeddings import MAX_TAGS, TableReader, lookup_optional, lookup_padded
from fyp.model.serving import RankBatch
from fyp.types import Video

I64 = npt.NDArray[np.int64]

# The item tables a ranker batch reads per video, in the cache's column order.
ITEM_TABLES = ("video", "creator", "sound", "hashtag")


class CountedTable(TableReader, Protocol):
    """A table that counts the changes of its ids (:class:`fyp.model.replica.ReplicaTable`)."""

    @property
    def ids_added(self) -> int: ...

    @property
    def ids_removed(self) -> int: ...


class CatalogRankRows:
    """See the module's doc. Serving only: it reads, never admits or touches."""

    def __init__(self) -> None:
        self._catalog: CatalogIndex | None = None
        # Per item table: the table object read and its (ids_added, ids_removed) then.
        self._seen: dict[str, tuple[CountedTable, int, int]] = {}
        # Per catalog row: video, creator, sound, then MAX_TAGS hashtag rows (-1 padded).
        self._rows: I64 = np.zeros((0, 3 + MAX_TAGS), dtype=np.int64)
        self._tags = np.zeros(0, dtype=np.int64)  # hashtags pooled (at most MAX_TAGS)
        self._known = np.zeros(0, dtype=bool)
        self._missing = np.zeros(0, dtype=bool)  # an id of the video's without a row
        # Per catalog row: the video its rows were built from, and the catalog version at
        # which the row last held that video (a row read at another version is checked).
        self._videos: list[Video | None] = []
        self._checked = np.zeros(0, dtype=np.int64)

    def rank_batch(
        self,
        tables: Mapping[str, CountedTable],
        catalog: CatalogIndex,
        rows: Sequence[int],
        user_id: str,
        surface: str,
        now: int,
    ) -> RankBatch:
        """The ranker's rows for ``user_id`` and catalog ``rows`` on ``surface``."""
        self._check(tables, catalog)
        idx = np.asarray(rows, dtype=np.intp)
        self._check_videos(catalog, idx)
        todo = idx[~self._known[idx]]
        if len(todo):
            self._fill(tables, catalog, np.unique(todo), now)
        got = self._rows[idx]
        n = len(idx)
        out = {
            "user": np.repeat(_row_of(tables["user"], user_id, now), n),
            "video": got[:, 0],
            "creator": got[:, 1],
            "surface": np.repeat(_row_of(tables["surface"], surface, now), n),
            "sound": got[:, 2],
        }
        counts = self._tags[idx]
        tag_mask = (np.arange(MAX_TAGS) < counts[:, None]).astype(np.float32)
        return RankBatch(out, got[:, 3:], tag_mask)

    def _check(self, tables: Mapping[str, CountedTable], catalog: CatalogIndex) -> None:
        """Forget what may have changed since the last request (see the module's doc)."""
        reset = catalog is not self._catalog
        stale_missing = False
        for name in ITEM_TABLES:
            t = tables[name]
            seen = self._seen.get(name)
            if seen is None or seen[0] is not t or seen[2] != t.ids_removed:
                reset = True
            elif seen[1] != t.ids_added:
                stale_missing = True
            self._seen[name] = (t, t.ids_added, t.ids_removed)
        self._catalog = catalog
        if len(self._known) < len(catalog):
            self._grow(max(len(catalog), 2 * len(self._known)))
        if reset:
            self._known[:] = False
        elif stale_missing:
            self._known &= ~self._missing

    def _check_videos(self, catalog: CatalogIndex, idx: npt.NDArray[np.intp]) -> None:
        """Forget the rows of ``idx`` whose catalog row holds another video than the one
        they were built from; only rows not yet checked at this catalog version are."""
        version = catalog.version
        unchecked = idx[self._known[idx] & (self._checked[idx] != version)]
        if not len(unchecked):
            return
        videos, built_from = catalog.videos, self._videos
        replaced = [r for r in unchecked.tolist() if videos[r] is not built_from[r]]
        self._known[replaced] = False
        self._checked[unchecked] = version

    def _grow(self, n: int) -> None:
        """Room for ``n`` catalog rows; what is kept stays (catalog rows are only appended)."""
        old = len(self._known)

        def grow(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            out = np.zeros((n, *a.shape[1:]), dtype=a.dtype)
            out[:old] = a
            return out

        self._rows = grow(self._rows)  # type: ignore[assignment]
        self._tags = grow(self._tags)  # type: ignore[assignment]
        self._known = grow(self._known)
        self._missing = grow(self._missing)
        self._checked = grow(self._checked)  # type: ignore[assignment]
        self._videos.extend([None] * (n - old))

    def _fill(
        self, tables: Mapping[str, CountedTable], catalog: CatalogIndex, idx: I64, now: int
    ) -> None:
        videos = [catalog.videos[r] for r in idx.tolist()]
        rows = np.empty((len(idx), 3 + MAX_TAGS), dtype=np.int64)
        rows[:, 0] = tables["video"].lookup([v.video_id for v in videos], now)
        rows[:, 1] = tables["creator"].lookup([v.creator_id for v in videos], now)
        sounds = [v.sound_id for v in videos]
        rows[:, 2] = lookup_optional(tables["sound"], sounds, now)
        tag_rows, counts = lookup_padded(
            tables["hashtag"], [v.hashtags[:MAX_TAGS] for v in videos], MAX_TAGS, now
        )
        rows[:, 3:] = tag_rows
        has_sound = np.array([s is not None for s in sounds], dtype=bool)
        real_tags = np.arange(MAX_TAGS) < counts[:, None]
        missing = (rows[:, 0] < 0) | (rows[:, 1] < 0) | (has_sound & (rows[:, 2] < 0))
        missing |= ((tag_rows < 0) & real_tags).any(axis=1)
        self._rows[idx] = rows
        self._tags[idx] = counts
        self._missing[idx] = missing
        self._known[idx] = True
        self._checked[idx] = catalog.version
        for r, v in zip(idx.tolist(), videos, strict=True):
            self._videos[r] = v


def _row_of(table: CountedTable, id_: str, now: int) -> int:
    """One id's row (-1: none)."""
    return int(table.lookup([id_], now)[0])
