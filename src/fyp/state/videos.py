"""Per-video statistics (views and label counts) and regional trending scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fyp.state.feedback import LABELS

F64 = npt.NDArray[np.float64]


class VideoStats:
    """Counts per video row: views, and for each label how many views carried it."""

    def __init__(self) -> None:
        self.views = np.zeros(0, dtype=np.float64)
        self.label_counts = np.zeros((0, len(LABELS)), dtype=np.float64)
        self.exposures = np.zeros(0, dtype=np.int64)  # times served
        self.total_views = 0.0
        self.total_labels = np.zeros(len(LABELS), dtype=np.float64)

    def ensure(self, n_rows: int) -> None:
        if n_rows <= len(self.views):
            return
        cap = max(n_rows, 2 * len(self.views), 1024)
        views = np.zeros(cap, dtype=np.float64)
        views[: len(self.views)] = self.views
        counts = np.zeros((cap, len(LABELS)), dtype=np.float64)
        counts[: len(self.label_counts)] = self.label_counts
        exposures = np.zeros(cap, dtype=np.int64)
        exposures[: len(self.exposures)] = self.exposures
        self.views, self.label_counts, self.exposures = views, counts, exposures

    def global_rates(self) -> F64:
        """The rate of each label over all views, with a weak prior so it is never 0 or 1."""
        return (self.total_labels + 0.5) / (self.total_views + 1.0)

    def smoothed_rates(
        self, rows: npt.NDArray[np.intp] | int, prior_strength: float, g: F64 | None = None
    ) -> F64:
        """(n, L) for an array of rows, (L,) for one row: each video's label rates shrunk
        towards ``g`` (by default the current global rates; or (n, L), a prior per row)
        by ``prior_strength`` pseudo-views, so a video with few views is judged by its
        prior."""
        g = self.global_rates() if g is None else g
        v = self.views[rows]
        v = v[:, None] if isinstance(v, np.ndarray) else v
        return (self.label_counts[rows] + prior_strength * g) / (v + prior_strength)


@dataclass(slots=True)
class _Leaders:
    """A region's current top rows: ``rows`` holds at least every row that can be in
    the top ``capacity`` (rows join when their score passes ``floor``)."""

    capacity: int
    rows: set[int]
    floor: float
    ordered: list[int] | None  # rows best first, or None when it needs re-sorting


class Trending:
    """Time-decayed engagement per video, kept per region.

    A score decays by half every ``half_life_ms``. Rather than decaying every score at
    every tick, each increment is scaled up by exp((t - t_ref) / tau): the ranking is the
    same, and only a rare renormalisation keeps the numbers finite.

    Scores only ever grow (decay being folded into the scale), so the top list changes
    only when a row's score passes the current k-th score: each region keeps its leaders
    and re-sorts those few on the next read, instead of scanning the catalog per request.
    """

    def __init__(self, half_life_ms: float) -> None:
        self.tau = half_life_ms / math.log(2)
        self.t_ref: float | None = None
        self.scores: dict[str, F64] = {}
        self._leaders: dict[str, _Leaders] = {}

    def add(self, region: str, row: int, weight: float, ts: int, n_rows: int) -> None:
        if self.t_ref is None:
            self.t_ref = float(ts)
        x = (ts - self.t_ref) / self.tau
        if x > 50.0:
            # Renormalise before exp() overflows: divide every score by exp(x).
            scale = math.exp(-x)
            for scores in self.scores.values():
                scores *= scale
            for leaders in self._leaders.values():
                leaders.floor *= scale
            self.t_ref = float(ts)
            x = 0.0
        old = self.scores.get(region)
        arr = old
        if old is None or len(old) < n_rows:
            arr = np.zeros(max(n_rows, 1024, 0 if old is None else 2 * len(old)))
            if old is not None:
                arr[: len(old)] = old
            self.scores[region] = arr
        assert arr is not None
        arr[row] += weight * math.exp(max(x, -50.0))
        kept = self._leaders.get(region)
        if kept is not None and (row in kept.rows or arr[row] > kept.floor):
            kept.rows.add(row)
            kept.ordered = None

    def at(self, region: str, rows: npt.NDArray[np.intp], now: int) -> F64:
        """The decayed scores of ``rows`` in ``region`` as of ``now`` (0 where none)."""
        arr = self.scores.get(region)
        if arr is None or self.t_ref is None:
            return np.zeros(len(rows))
        known = rows < len(arr)
        out: F64 = np.where(known, arr[np.minimum(rows, len(arr) - 1)], 0.0)
        return out * math.exp(max(-(now - self.t_ref) / self.tau, -700.0))

    def top(self, region: str, k: int) -> list[int]:
        """Rows of the ``k`` highest-scoring videos in ``region`` (score > 0), best first."""
        arr = self.scores.get(region)
        if arr is None or k <= 0:
            return []
        found = self._leaders.get(region)
        if found is not None and found.capacity >= k:
            leaders = found
        else:
            # First read, or a longer list than kept: one scan of every score.
            cap = min(k, len(arr))
            idx = np.argpartition(-arr, cap - 1)[:cap]
            leaders = _Leaders(k, set(idx[arr[idx] > 0].tolist()), 0.0, None)
            self._leaders[region] = leaders
        if leaders.ordered is None:
            rows = np.fromiter(leaders.rows, dtype=np.intp, count=len(leaders.rows))
            rows = rows[np.argsort(-arr[rows], kind="stable")][: leaders.capacity]
            leaders.rows = set(rows.tolist())
            full = len(rows) == leaders.capacity
            leaders.floor = float(arr[rows[-1]]) if full else 0.0
            leaders.ordered = rows.tolist()
        return leaders.ordered[:k]
