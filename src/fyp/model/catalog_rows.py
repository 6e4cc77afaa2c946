"""The learned ranker's embedding rows of catalog videos (the video's, its creator's, its
sound's and its first hashtags'), kept between a serving replica's requests.

A request's ranker batch looks up several ids per candidate (about a dozen for each of
the few dozen re-ranked), one dict lookup at a time in Python; the same videos come
back request after request, and a replica's tables change only when a published update
is applied. So the rows are kept per catalog row and looked up again only when they may
have changed:

- the catalog changed (a video's creator, sound or hashtags may be new): all of them;
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
        self._catalog_version = -1
        # Per item table: the table object read and its (ids_added, ids_removed) then.
        self._seen: dict[str, tuple[CountedTable, int, int]] = {}
        # Per catalog row: video, creator, sound, then MAX_TAGS hashtag rows (-1 padded).
        self._rows: I64 = np.zeros((0, 3 + MAX_TAGS), dtype=np.int64)
        self._tags = np.zeros(0, dtype=np.int64)  # hashtags pooled (at most MAX_TAGS)
        self._known = np.zeros(0, dtype=bool)
        self._missing = np.zeros(0, dtype=bool)  # an id of the video's without a row

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
        reset = catalog.version != self._catalog_version
        stale_missing = False
        for name in ITEM_TABLES:
            t = tables[name]
            seen = self._seen.get(name)
            if seen is None or seen[0] is not t or seen[2] != t.ids_removed:
                reset = True
            elif seen[1] != t.ids_added:
                stale_missing = True
            self._seen[name] = (t, t.ids_added, t.ids_removed)
        n = len(catalog)
        if reset or len(self._known) < n:
            grown = max(n, 2 * len(self._known)) if len(self._known) < n else len(self._known)
            if grown != len(self._known):
                self._rows = np.zeros((grown, 3 + MAX_TAGS), dtype=np.int64)
                self._tags = np.zeros(grown, dtype=np.int64)
                self._known = np.zeros(grown, dtype=bool)
                self._missing = np.zeros(grown, dtype=bool)
            if reset:
                self._known[:] = False
            self._catalog_version = catalog.version
        elif stale_missing:
            self._known &= ~self._missing

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


def _row_of(table: CountedTable, id_: str, now: int) -> int:
    """One id's row (-1: none)."""
    return int(table.lookup([id_], now)[0])
