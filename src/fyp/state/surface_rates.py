"""Label counts of each video and each creator per surface: how a video does on the page
the feed runs on, beyond how it does everywhere and how that page does.

A page's lift (:mod:`fyp.state.surfaces`) says that people long-view less on one tab
than on another, for every video alike; but a video made for one page can do better
there than its overall rate and the page's lift together say (on KuaiRand a video's long
views are counted over pages whose base rates differ tenfold, and users see videos on
several). The first ranker reads these counts as lifts over that combination
(:mod:`fyp.rank.first_ranker`).

Counts are folded from the log in offset order, per view and per action, immediately
(an example reads them when it opens, before its own event adds anything), so every
process that folds the log holds them and a replay rebuilds them. Like the videos' and
creators' own counts (:mod:`fyp.state.group_rates`) they are aggregates over users: an
erasure leaves them. At most :data:`~fyp.state.surfaces.MAX_SURFACES` surfaces are
counted (a client could send a new name per event); the others read as no views.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.state.feedback import LABELS
from fyp.state.group_rates import _Counts
from fyp.state.surfaces import MAX_SURFACES

F64 = npt.NDArray[np.float64]
_WIDTH = len(LABELS) + 1  # label counts, then views


class SurfaceRates:
    """Per surface: label counts then views (L + 1) of each video (by catalog row) and of
    each creator (by the catalog's creator code)."""

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog
        self.videos: dict[str, _Counts] = {}
        self.creators: dict[str, _Counts] = {}
        self._none = np.zeros(_WIDTH)

    def add(self, surface: str, row: int, columns: list[int]) -> None:
        """Count one event of video ``row`` on ``surface``: one in each of ``columns``
        (label indices, and :data:`~fyp.state.slice_counts.VIEW_COLUMN` for a view)."""
        videos = self.videos.get(surface)
        if videos is None:
            if len(self.videos) >= MAX_SURFACES:
                return
            videos = self.videos[surface] = _Counts()
            self.creators[surface] = _Counts()
        videos.add(row, columns)
        creator = int(self.catalog.creator_code[row])
        if creator >= 0:
            self.creators[surface].add(creator, columns)
        # Nothing reads the touched codes (no lift table is kept of these): keep the
        # sets from growing with every code counted.
        videos.touched.clear()
        self.creators[surface].touched.clear()

    def of_row(self, surface: str, row: int) -> tuple[F64, F64]:
        """Copies of the counts (L + 1,) of video ``row`` and of its creator on
        ``surface``, as they are now (a training example's inputs)."""
        videos = self.videos.get(surface)
        if videos is None:
            return self._none.copy(), self._none.copy()
        creator = np.array([self.catalog.creator_code[row]], dtype=np.int64)
        return (
            videos.rows(np.array([row], dtype=np.int64))[0],
            self.creators[surface].rows(creator)[0],
        )

    def rows(self, surface: str, rows: npt.NDArray[np.intp]) -> tuple[F64, F64]:
        """(n, L + 1) counts of ``rows`` and (n, L + 1) of their creators on ``surface``
        (zeros for none)."""
        videos = self.videos.get(surface)
        if videos is None:
            zeros = np.zeros((len(rows), _WIDTH))
            return zeros, zeros.copy()
        return (
            videos.rows(rows.astype(np.int64)),
            self.creators[surface].rows(self.catalog.creator_code[rows].astype(np.int64)),
        )
