"""Label rates per creator and per hashtag, over every user's views of their videos.

A video's own rates say nothing until it has views; its creator's and its hashtags' do:
a creator whose videos people watch to the end makes a new video likely watched too. The
first ranker reads them as lifts, like the surface's (:mod:`fyp.state.surfaces`): the
logit of the creator's (a hashtag's) smoothed rate of each label minus the global logit,
0 for one with no views.

Counts are folded from the log in offset order with the videos' own (not decayed, as
those are not), so every process that folds the log holds them and a replay rebuilds
them. They are aggregates over users, kept like the videos' counts: an erasure leaves
them (:meth:`fyp.state.updater.LogState.erase_user`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import TAGS_PER_VIDEO, CatalogIndex
from fyp.state.feedback import LABELS

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_VIEWS = len(LABELS)  # the column of the views, after the label counts


def smoothed_rates(counts: F64, g: F64, prior_strength: float) -> F64:
    """(..., L) rates from (..., L + 1) rows of label counts then views, shrunk towards
    ``g`` by ``prior_strength`` pseudo-views (``g`` itself for a row with none)."""
    out: F64 = (counts[..., :_VIEWS] + prior_strength * g) / (counts[..., _VIEWS:] + prior_strength)
    return out


def rate_lifts(counts: F64, g: F64, g_logit: F64, prior_strength: float) -> F64:
    """(..., L) lifts from (..., L + 1) rows of label counts then views: the logit of the
    :func:`smoothed_rates` minus ``g_logit``; 0 where there are no views."""
    p = np.minimum(np.maximum(smoothed_rates(counts, g, prior_strength), 1e-4), 1 - 1e-4)
    out: F64 = np.where(counts[..., _VIEWS:] > 0, np.log(p / (1 - p)) - g_logit, 0.0)
    return out


class _Counts:
    """Label counts then views, (L + 1,), of code c in row c + 1. The first and the last
    row stay 0: the rows read for "none" (-1) and for any code given after the table last
    grew (clipped to the last). Updated a code at a time with Python ints: on every view
    of the log, one numpy call's overhead is more than all the work."""

    def __init__(self) -> None:
        self.counts = np.zeros((2, _VIEWS + 1))

    def rows(self, codes: npt.NDArray[np.int32] | npt.NDArray[np.int64]) -> F64:
        """Copies of the rows of ``codes`` (any shape; -1 and unknown codes read 0)."""
        out: F64 = self.counts.take(codes + 1, axis=0, mode="clip")
        return out

    def add(self, code: int, columns: list[int]) -> None:
        """Count one view's ``columns`` for ``code``."""
        if code + 2 >= len(self.counts):
            grown = np.zeros((max(code + 3, 2 * len(self.counts), 1024), _VIEWS + 1))
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        row = self.counts[code + 1]
        for column in columns:
            row[column] += 1.0

    def add_rows(self, codes: I64, delta: F64) -> None:
        """Add each row of ``delta`` (n, L + 1) to the counts of its code in ``codes``
        (n,), in that order: the table grows as :meth:`add` of each in turn would grow
        it (only a code above every earlier one can grow it)."""
        if not len(codes):
            return
        n = len(self.counts)
        if int(codes.max()) + 2 >= n:
            run = np.maximum.accumulate(codes)
            rising = np.ones(len(codes), dtype=bool)
            rising[1:] = run[1:] > run[:-1]
            for code in codes[rising].tolist():
                if code + 2 >= n:
                    n = max(code + 3, 2 * n, 1024)
            grown = np.zeros((n, _VIEWS + 1))
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        np.add.at(self.counts, codes + 1, delta)


class GroupRates:
    """Views and label counts of each creator and each hashtag, by the catalog's codes.
    A video's hashtags are the ones ranking looks at (its first
    :data:`~fyp.catalog.index.TAGS_PER_VIDEO`; one given twice counts once)."""

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog
        self.creators = _Counts()
        self.hashtags = _Counts()

    def add(self, row: int, labels: list[int], view: bool) -> None:
        """Count a view of ``row`` (with ``view``) and the labels ``labels`` it carries."""
        columns = [*labels, _VIEWS] if view else labels
        if not columns:
            return
        cat = self.catalog
        creator = int(cat.creator_code[row])
        if creator >= 0:
            self.creators.add(creator, columns)
        for tag in dict.fromkeys(cat.tag_codes[row].tolist()):
            if tag >= 0:
                self.hashtags.add(tag, columns)

    def add_many(self, rows: I64, delta: F64) -> None:
        """:meth:`add` of many views and actions at once: each of ``rows`` counts its row
        of ``delta`` (n, L + 1: label counts then the view), in order."""
        creators = self.catalog.creator_code[rows].astype(np.int64)
        known = creators >= 0
        self.creators.add_rows(creators[known], delta[known])
        owner, tags = distinct_tags(self.catalog, rows)
        self.hashtags.add_rows(tags, delta[owner])

    def of_row(self, row: int) -> tuple[F64, F64, int]:
        """Copies of the counts of ``row``'s creator, (L + 1,), and of its hashtags,
        (TAGS_PER_VIDEO, L + 1) with zeros past its last, as they are now (a training
        example's inputs), and how many hashtags it has."""
        cat = self.catalog
        creators = self.creators.counts
        creator = creators[min(int(cat.creator_code[row]) + 1, len(creators) - 1)].copy()
        tags = self.hashtags.rows(cat.tag_codes[row])
        return creator, tags, min(len(cat.videos[row].hashtags), TAGS_PER_VIDEO)

    def creator_counts(self, rows: npt.NDArray[np.intp]) -> F64:
        """(n, L + 1) counts of ``rows``' creators (0 for one unknown)."""
        return self.creators.rows(self.catalog.creator_code[rows])

    def hashtag_lifts(
        self, rows: npt.NDArray[np.intp], g: F64, g_logit: F64, prior_strength: float
    ) -> F64:
        """(n, L) the mean :func:`rate_lifts` over each row's hashtags (0 for none).
        Computed for the hashtags there are, not for every padded slot: a request's
        candidates have a few each."""
        tags = self.catalog.tag_codes[rows]  # (n, T), -1 padded
        shown = tags >= 0
        of_row = np.nonzero(shown)[0]
        lifts = rate_lifts(self.hashtags.rows(tags[shown]), g, g_logit, prior_strength)
        n = len(tags)
        out = np.empty((n, _VIEWS))
        for k in range(_VIEWS):
            out[:, k] = np.bincount(of_row, lifts[:, k], minlength=n)
        out /= np.maximum(shown.sum(axis=1), 1)[:, None]
        return out


def distinct_tags(catalog: CatalogIndex, rows: I64) -> tuple[I64, I64]:
    """(owner, code): each distinct hashtag code of each of ``rows`` (as :meth:`GroupRates.add`
    counts them: one given twice counts once), with the index of its row in ``rows``; rows
    in order, and each row's codes in its order."""
    codes = catalog.tag_codes[rows].astype(np.int64)  # (n, T), -1 padded
    repeated = np.zeros(codes.shape, dtype=bool)
    for j in range(1, codes.shape[1]):
        repeated[:, j] = (codes[:, :j] == codes[:, j : j + 1]).any(axis=1)
    kept = (codes >= 0) & ~repeated
    owner = np.nonzero(kept)[0]
    return owner, codes[kept]
