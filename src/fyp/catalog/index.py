"""The catalog in memory, as dense rows: what serving and learning index by.

Every video gets a row the first time it is upserted and keeps it; per-video arrays
elsewhere (statistics, trending scores) are indexed by the same row. Creators, sounds
and hashtags get integer codes too, so per-request work over hundreds of candidates is
array lookups rather than Python loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from fyp.types import Video

_NO_TIME = np.iinfo(np.int64).min
# Hashtags per video that ranking features look at (the first ones given).
TAGS_PER_VIDEO = 8


class Codes:
    """A growing str -> int code table."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.of)

    def code(self, key: str) -> int:
        c = self.of.get(key)
        if c is None:
            c = self.of[key] = len(self.of)
        return c


class CatalogIndex:
    def __init__(self, excluded_labels: Iterable[str] = ()) -> None:
        self.excluded_labels = frozenset(excluded_labels)
        self.videos: list[Video] = []
        self.row_of: dict[str, int] = {}
        self.rows_by_creator: dict[str, list[int]] = {}
        self.creators, self.sounds, self.hashtags = Codes(), Codes(), Codes()
        self._capacity = 0
        self.version = 0  # bumped by every upsert, so caches of derived data can check it
        self.created_at = np.zeros(0, dtype=np.int64)
        self.duration_ms = np.zeros(0, dtype=np.int64)
        # False where a label excludes the video from every feed (checked again per request).
        self.label_ok = np.zeros(0, dtype=bool)
        self.region_free = np.zeros(0, dtype=bool)  # True: no region restriction
        self.creator_code = np.zeros(0, dtype=np.int32)
        self.sound_code = np.zeros(0, dtype=np.int32)  # -1: no sound
        self.tag_codes = np.zeros((0, TAGS_PER_VIDEO), dtype=np.int32)  # -1 padded

    def __len__(self) -> int:
        return len(self.videos)

    def get(self, video_id: str) -> Video | None:
        row = self.row_of.get(video_id)
        return None if row is None else self.videos[row]

    def upsert(self, videos: Sequence[Video]) -> list[int]:
        """Add or replace videos; returns their rows."""
        needed = len(self.videos) + len(videos)
        if needed > self._capacity:
            self._grow(max(needed, 2 * self._capacity, 1024))
        self.version += 1
        rows: list[int] = []
        for v in videos:
            row = self.row_of.get(v.video_id)
            if row is None:
                row = len(self.videos)
                self.videos.append(v)
                self.row_of[v.video_id] = row
            else:
                old = self.videos[row]
                if old.creator_id != v.creator_id:
                    self.rows_by_creator[old.creator_id].remove(row)
                self.videos[row] = v
            row_list = self.rows_by_creator.setdefault(v.creator_id, [])
            if row not in row_list:
                row_list.append(row)
            self.created_at[row] = _NO_TIME if v.created_at is None else v.created_at
            self.duration_ms[row] = v.duration_ms
            self.label_ok[row] = not (self.excluded_labels & set(v.labels))
            self.region_free[row] = not v.regions
            self.creator_code[row] = self.creators.code(v.creator_id)
            self.sound_code[row] = -1 if v.sound_id is None else self.sounds.code(v.sound_id)
            tags = [self.hashtags.code(h) for h in v.hashtags[:TAGS_PER_VIDEO]]
            self.tag_codes[row] = -1
            self.tag_codes[row, : len(tags)] = tags
            rows.append(row)
        for creator in {v.creator_id for v in videos}:
            # Newest first, so "followed creators" reads the head of the list.
            self.rows_by_creator[creator].sort(key=lambda r: -int(self.created_at[r]))
        return rows

    def _grow(self, capacity: int) -> None:
        def grow(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            out = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.created_at = grow(self.created_at, _NO_TIME)  # type: ignore[assignment]
        self.duration_ms = grow(self.duration_ms, 0)  # type: ignore[assignment]
        self.label_ok = grow(self.label_ok, False)
        self.region_free = grow(self.region_free, False)
        self.creator_code = grow(self.creator_code, -1)  # type: ignore[assignment]
        self.sound_code = grow(self.sound_code, -1)  # type: ignore[assignment]
        self.tag_codes = grow(self.tag_codes, -1)  # type: ignore[assignment]
        self._capacity = capacity

    def shown_in(self, row: int, region: str) -> bool:
        """Whether the video may be shown in ``region``."""
        v = self.videos[row]
        return not v.regions or region in v.regions
