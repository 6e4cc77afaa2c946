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

A request reads the rates and lifts of its candidates' creators and hashtags from a
table per code (:class:`LiftTable`) rather than from the counts: a thousand candidates
name a few thousand creators and hashtags, and computing their logits per request cost
more than the rest of the first ranker's features. The table is the same function of
the same counts and global rates as computing them from the counts (to the bit): it is
rebuilt when the global rates are refreshed and, between, only the codes counted since
are recomputed, on the next read. The learning step copies counts when an example
opens and computes the same function for its micro-batch (cheaper there: a view would
otherwise recompute the table rows it touched, one numpy call each).
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
    of the log, one numpy call's overhead is more than all the work. Every code counted
    is added to ``touched`` (what a :class:`LiftTable` must recompute); a writer that
    changes ``counts`` some other way must add the codes it changed too."""

    def __init__(self) -> None:
        self.counts = np.zeros((2, _VIEWS + 1))
        self.touched: set[int] = set()

    def __setstate__(self, state: dict[str, object]) -> None:
        # A checkpoint from before the lift tables has no ``touched``: nothing is owed
        # to a table that is built whole on its first read.
        self.__dict__.update(state)
        self.__dict__.setdefault("touched", set())

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
        self.touched.add(code)

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
        self.touched.update(codes.tolist())


class LiftTable:
    """:func:`smoothed_rates` and :func:`rate_lifts` of every code of a :class:`_Counts`,
    row for row (row c + 1 for code c; the first and last rows those of no views), for
    one prior: the global rates ``g``, their logits and the prior strength. Kept current
    lazily by :meth:`current`: all rows when the prior or the table's size changes (the
    global rates are refreshed at fixed points of the log, as new arrays), else only
    the rows of the codes counted since the last read.

    Each row is computed by the same element-wise numpy operations, on the same
    numbers, as computing it from copied counts, so both give the same bits."""

    def __init__(self, counts: _Counts) -> None:
        self.source = counts
        self.rates: F64 = np.zeros((0, _VIEWS))
        self.lifts: F64 = np.zeros((0, _VIEWS))
        self._prior: tuple[F64, F64, float] | None = None

    # Derived from the counts: a checkpoint holds the counts only, and the table is
    # built whole on its first read after a restore.
    def __getstate__(self) -> dict[str, object]:
        return {"source": self.source}

    def __setstate__(self, state: dict[str, object]) -> None:
        source = state["source"]
        assert isinstance(source, _Counts)
        self.__init__(source)  # type: ignore[misc]

    def current(self, g: F64, g_logit: F64, prior_strength: float) -> tuple[F64, F64]:
        """The (rates, lifts) tables for this prior, brought up to date."""
        src = self.source
        prior = self._prior
        counts = src.counts
        if (
            prior is None
            or prior[0] is not g
            or prior[1] is not g_logit
            or prior[2] != prior_strength
            or len(self.lifts) != len(counts)
        ):
            src.touched.clear()
            self.rates = smoothed_rates(counts, g, prior_strength)
            self.lifts = rate_lifts(counts, g, g_logit, prior_strength)
            self._prior = (g, g_logit, prior_strength)
        elif src.touched:
            rows = np.fromiter(src.touched, dtype=np.intp, count=len(src.touched)) + 1
            src.touched.clear()
            changed = counts[rows]
            self.rates[rows] = smoothed_rates(changed, g, prior_strength)
            self.lifts[rows] = rate_lifts(changed, g, g_logit, prior_strength)
        return self.rates, self.lifts


class GroupRates:
    """Views and label counts of each creator and each hashtag, by the catalog's codes.
    A video's hashtags are the ones ranking looks at (its first
    :data:`~fyp.catalog.index.TAGS_PER_VIDEO`; one given twice counts once)."""

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog
        self.creators = _Counts()
        self.hashtags = _Counts()
        self.creator_table = LiftTable(self.creators)
        self.hashtag_table = LiftTable(self.hashtags)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "creator_table" not in state:  # a checkpoint from before the lift tables
            self.creator_table = LiftTable(self.creators)
            self.hashtag_table = LiftTable(self.hashtags)

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

    def creator_rates_and_lifts(
        self, rows: npt.NDArray[np.intp], g: F64, g_logit: F64, prior_strength: float
    ) -> tuple[F64, F64]:
        """(n, L) :func:`smoothed_rates` and (n, L) :func:`rate_lifts` of ``rows``'
        creators (those of no views for one unknown), from the table."""
        rates, lifts = self.creator_table.current(g, g_logit, prior_strength)
        at = self.catalog.creator_code[rows] + 1
        return rates.take(at, axis=0, mode="clip"), lifts.take(at, axis=0, mode="clip")

    def hashtag_lifts(
        self, rows: npt.NDArray[np.intp], g: F64, g_logit: F64, prior_strength: float
    ) -> F64:
        """(n, L) the mean :func:`rate_lifts` over each row's hashtags (0 for none), from
        the table. Summed a hashtag slot at a time, in slot order (a padded slot adds
        0, which changes no bits)."""
        _, lifts = self.hashtag_table.current(g, g_logit, prior_strength)
        tags = self.catalog.tag_codes[rows]  # (n, T), -1 padded
        per_slot = lifts.take(tags.T + 1, axis=0, mode="clip")  # (T, n, L)
        out: F64 = per_slot[0].copy()
        for slot in per_slot[1:]:
            out += slot
        out /= np.maximum((tags >= 0).sum(axis=1), 1)[:, None]
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
