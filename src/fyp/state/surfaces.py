"""Label rates per surface: where in the app a feed runs changes how people watch.

The same person watches differently on different pages of an app: on KuaiRand's logs
a long view is 3.6% of views on one tab and 35% or 46% on others, and the page is the
strongest single feature a boosted tree finds there (the data's README). The rankers
read it as a lift: the logit of the surface's smoothed rate of each label minus the
global logit, 0 for a surface with no views (or none yet: every page starts average).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.state.feedback import LABELS

F64 = npt.NDArray[np.float64]

# Surfaces come from clients: a handful in any app, but nothing stops a client sending a
# new name per event. Past this many, a new surface is not counted (its lift stays 0).
MAX_SURFACES = 256


def _logit(p: F64) -> F64:
    p = np.minimum(np.maximum(p, 1e-4), 1 - 1e-4)
    return np.log(p / (1 - p))


class SurfaceStats:
    """Views and label counts per surface, and the lift each surface gives each label."""

    def __init__(self) -> None:
        self.views: dict[str, float] = {}
        self.label_counts: dict[str, F64] = {}
        self._lifts: dict[str, F64] = {}
        self._zero = np.zeros(len(LABELS))

    def _counts(self, surface: str) -> F64 | None:
        counts = self.label_counts.get(surface)
        if counts is None and len(self.label_counts) < MAX_SURFACES:
            counts = self.label_counts[surface] = np.zeros(len(LABELS))
            self.views[surface] = 0.0
        return counts

    def add_view(self, surface: str) -> None:
        if self._counts(surface) is not None:
            self.views[surface] += 1.0

    def add_label(self, surface: str, k: int) -> None:
        counts = self._counts(surface)
        if counts is not None:
            counts[k] += 1.0

    def refresh(self, g: F64, g_logit: F64, prior_strength: float) -> None:
        """Recompute every surface's lift: each label's rate on it shrunk towards the
        global rates ``g`` by ``prior_strength`` pseudo-views, as a logit minus the global
        logit. Called with the global rates' refresh, at fixed points of the log, never
        lazily from a request: a replay must compute the same lifts as the live run."""
        self._lifts = {
            surface: _logit((counts + prior_strength * g) / (self.views[surface] + prior_strength))
            - g_logit
            for surface, counts in self.label_counts.items()
        }

    def lift(self, surface: str) -> F64:
        """(L,) as of the last :meth:`refresh`; 0 for a surface unknown then."""
        return self._lifts.get(surface, self._zero)
