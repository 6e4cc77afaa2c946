"""What the offline evaluation compares: baselines and the engine, behind one interface.

A :class:`Method` is fitted on the training side of the split (:class:`~fyp.eval.protocol.
Catalog` and :class:`~fyp.eval.protocol.Train`) and then answers requests
(:class:`~fyp.eval.protocol.Requests`). It never receives the test outcomes: the harness
keeps them for the scorer, so no method can leak them, whatever it does.

Two questions:

* ``top_k(requests, k)``: for each ranking user, the best ``k`` catalog rows, excluding
  the rows they had in training (the protocol's "eligible videos"). Methods that cannot
  rank a whole catalog (the impression-feature regression) return None.
* ``score_impressions(requests)``: a score per logged test impression and label
  (``IMPRESSION_LABELS``); a method with one score for everything returns it under each.

The baselines here are small and standard, as the dataset README's reference figures
define them: random, most popular (training positives), time-decayed popular, item-item
cosine co-occurrence (ItemKNN), ALS on implicit feedback (the ``implicit`` library), and a
logistic regression on impression features. The engine's own rows live in
:mod:`fyp.eval.engine_methods`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from fyp.eval.protocol import IMPRESSION_LABELS, Catalog, Requests, Train
from fyp.types import DAY_MS

__all__ = [
    "ALS",
    "BASELINES",
    "ItemKNN",
    "LogisticRegression",
    "Method",
    "Popular",
    "PopularDecayed",
    "RandomMethod",
    "VectorMethod",
    "make_baseline",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Added to collaborative scores so that ties (a user with no usable history scores 0
# everywhere) fall back to popularity instead of to catalog order; small enough never to
# reorder two items the method itself tells apart.
_POPULARITY_TIE_BREAK = 1e-6
_LR_PRIOR = 20.0  # pseudo-views toward the global rate, for the regression's rates
_LR_L2 = 1e-3
_LR_STEPS = 25


class Method(ABC):
    name: str

    @abstractmethod
    def fit(self, catalog: Catalog, train: Train) -> None: ...

    @abstractmethod
    def top_k(self, requests: Requests, k: int) -> list[IntArray] | None: ...

    @abstractmethod
    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]: ...

    def scores_used(self) -> dict[str, str]:
        """Which of the method's outputs scored each impression label (for the report)."""
        return {label: "score" for label in IMPRESSION_LABELS}


def top_rows(scores: FloatArray, exclude: set[int], k: int) -> IntArray:
    """The ``k`` best rows of ``scores`` (ties by row, stable) not in ``exclude``."""
    s = scores.copy()
    if exclude:
        s[np.fromiter(exclude, dtype=np.int64, count=len(exclude))] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    # The k-th best score; ties at that score are broken by row, so the same rows come
    # back on every run (argpartition alone picks among ties arbitrarily).
    threshold = s[np.argpartition(-s, k - 1)[k - 1]]
    above = np.flatnonzero(s > threshold)
    chosen = np.concatenate([above, np.flatnonzero(s == threshold)[: k - len(above)]])
    return chosen[np.lexsort((chosen, -s[chosen]))].astype(np.int64)


def _impressions_by_user(requests: Requests) -> Iterator[tuple[str, IntArray]]:
    """Each user of the logged test impressions with the indices of their impressions."""
    order = np.argsort(requests.imp_user, kind="stable")
    users = requests.imp_user[order]
    if len(users) == 0:
        return
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield str(users[s]), order[s:e].astype(np.int64)


def _impression_groups(
    requests: Requests, by_surface: bool
) -> Iterator[tuple[str, str | None, IntArray]]:
    """The logged test impressions as (user, surface, indices): one group per user, or
    per user and page with ``by_surface`` (surface None when not split by it)."""
    surfaces = np.array(requests.imp_surface, dtype=np.str_) if by_surface else None
    for user, idx in _impressions_by_user(requests):
        if surfaces is None:
            yield user, None, idx
            continue
        for surface in np.unique(surfaces[idx]).tolist():
            yield user, surface, idx[surfaces[idx] == surface]


class VectorMethod(Method):
    """A method that scores the whole catalog for a user at a time: ranking is the best
    rows of that vector; an impression's score is its row's entry (as of the user's first
    test request, which is also as of each impression: nothing after training moves it)."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {}

    @abstractmethod
    def user_scores(self, user: str, at_ms: int) -> FloatArray: ...

    def fit(self, catalog: Catalog, train: Train) -> None:
        self.seen = train.seen

    def top_k(self, requests: Requests, k: int) -> list[IntArray]:
        return [
            top_rows(self.user_scores(u, int(at)), self.seen.get(u, set()), k)
            for u, at in zip(requests.users, requests.at_ms.tolist(), strict=True)
        ]

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        out = np.zeros(len(requests.imp_row))
        for user, idx in _impressions_by_user(requests):
            at = int(requests.imp_time_ms[idx].min())
            out[idx] = self.user_scores(user, at)[requests.imp_row[idx]]
        return {label: out for label in IMPRESSION_LABELS}


class RandomMethod(VectorMethod):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.n = 0

    def fit(self, catalog: Catalog, train: Train) -> None:
        super().fit(catalog, train)
        self.n = len(catalog)

    def user_scores(self, user: str, at_ms: int) -> FloatArray:
        # Seeded by the user, so a user's list is the same whichever question is asked.
        return np.random.default_rng([self.seed, int(user) if user.isdigit() else 0]).random(self.n)


class Popular(VectorMethod):
    """Training positives per video."""

    name = "popular"

    def __init__(self) -> None:
        super().__init__()
        self.counts = np.zeros(0)

    def fit(self, catalog: Catalog, train: Train) -> None:
        super().fit(catalog, train)
        self.counts = np.bincount(train.row[train.positive], minlength=len(catalog)).astype(
            np.float64
        )

    def user_scores(self, user: str, at_ms: int) -> FloatArray:
        return self.counts


class PopularDecayed(VectorMethod):
    """Training positives per video, each weighted by exp(−age / 1 day) at the end of
    training."""

    name = "popular_decayed"

    def __init__(self, scale_days: float = 1.0) -> None:
        super().__init__()
        self.scale_ms = scale_days * DAY_MS
        self.weights = np.zeros(0)

    def fit(self, catalog: Catalog, train: Train) -> None:
        super().fit(catalog, train)
        pos = train.positive
        age = (train.end_ms - train.time_ms[pos]).astype(np.float64)
        self.weights = np.bincount(
            train.row[pos], weights=np.exp(-age / self.scale_ms), minlength=len(catalog)
        ).astype(np.float64)

    def user_scores(self, user: str, at_ms: int) -> FloatArray:
        return self.weights


def _user_item_matrix(
    catalog: Catalog, train: Train, keep: NDArray[np.bool_]
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Users × videos, 1 where the user had a kept training row on the video (repeats
    count once), and each user's matrix row."""
    users = train.user[keep]
    index = {u: i for i, u in enumerate(dict.fromkeys(users.tolist()))}
    rows = np.array([index[u] for u in users.tolist()], dtype=np.int64)
    m = sp.csr_matrix(
        (np.ones(len(rows)), (rows, train.row[keep])),
        shape=(len(index), len(catalog)),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, index


class ItemKNN(VectorMethod):
    """Item-to-item cosine similarity of co-occurring training positives; a user's score
    for a video is its summed similarity to the videos they engaged with. Users with no
    training positive get popularity order (the tie-break)."""

    name = "itemknn"

    def __init__(self) -> None:
        super().__init__()
        self.sim = sp.csr_matrix((0, 0))
        self.user_items = sp.csr_matrix((0, 0))
        self.user_index: dict[str, int] = {}
        self.tie_break = np.zeros(0)

    def fit(self, catalog: Catalog, train: Train) -> None:
        super().fit(catalog, train)
        x, self.user_index = _user_item_matrix(catalog, train, train.positive)
        co = (x.T @ x).tocsr()
        norms = np.sqrt(co.diagonal())
        norms[norms == 0] = 1.0
        inv = sp.diags(1.0 / norms)
        sim = (inv @ co @ inv).tolil()
        sim.setdiag(0.0)
        self.sim = sim.tocsr()
        self.user_items = x
        pop = np.asarray(x.sum(axis=0)).ravel()
        self.tie_break = _POPULARITY_TIE_BREAK * pop / max(pop.max(), 1.0)

    def user_scores(self, user: str, at_ms: int) -> FloatArray:
        i = self.user_index.get(user)
        if i is None:
            return self.tie_break
        return np.asarray((self.user_items[i] @ self.sim).todense()).ravel() + self.tie_break


class ALS(VectorMethod):
    """Matrix factorisation by alternating least squares (the ``implicit`` library) of
    implicit feedback: every video a user was shown in training. Users with no training
    rows have no factors: all zeros.

    The choices (every impression rather than positives only; regularisation 10) were
    made on a validation split, train up to 2022-04-28 and test 04-29, where they gave
    Recall@50 .126 against .049 for positives at implicit's default 0.01; see
    ``docs/evaluation.md``. Nothing was chosen on a test day."""

    name = "als"

    def __init__(
        self, factors: int = 64, regularization: float = 10.0, iterations: int = 15, seed: int = 0
    ) -> None:
        super().__init__()
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.user_factors = np.zeros((0, factors))
        self.item_factors = np.zeros((0, factors))
        self.user_index: dict[str, int] = {}

    def fit(self, catalog: Catalog, train: Train) -> None:
        super().fit(catalog, train)
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        everything = np.ones(len(train.row), dtype=np.bool_)
        x, self.user_index = _user_item_matrix(catalog, train, everything)
        with threadpool_limits(1, "blas"):  # checked when the model is made, and needed to fit
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=1,  # reproducible: the same factors for the same seed
            )
            model.fit(x.astype(np.float32), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)

    def user_scores(self, user: str, at_ms: int) -> FloatArray:
        i = self.user_index.get(user)
        if i is None:
            return np.zeros(len(self.item_factors))
        scores: FloatArray = self.item_factors @ self.user_factors[i]
        return scores


def _fit_logistic(x: FloatArray, y: NDArray[np.bool_]) -> FloatArray:
    """Weights (with a bias last) of an L2-regularised logistic regression, by Newton's
    method: four features need nothing bigger."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    t = y.astype(np.float64)
    for _ in range(_LR_STEPS):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - t) / len(t) + _LR_L2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(t) + _LR_L2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


class LogisticRegression(Method):
    """P(label) from the video's and the user's training long-view rates (smoothed toward
    the global rate) and log duration: a strong, simple impression baseline. Training
    rows use leave-one-out rates, so a row's own label is never among its features."""

    name = "lr"

    def __init__(self) -> None:
        self.weights: dict[str, FloatArray] = {}
        self.mean = np.zeros(3)
        self.std = np.ones(3)
        self.video_lv: tuple[FloatArray, FloatArray] = (np.zeros(0), np.zeros(0))
        self.user_lv: dict[str, tuple[float, float]] = {}
        self.global_rate = 0.0
        self.durations = np.zeros(0)

    def _rate(self, hits: FloatArray, n: FloatArray) -> FloatArray:
        return (hits + _LR_PRIOR * self.global_rate) / (n + _LR_PRIOR)

    def _features(
        self, video_rate: FloatArray, user_rate: FloatArray, rows: IntArray
    ) -> FloatArray:
        x = np.column_stack([video_rate, user_rate, np.log1p(self.durations[rows] / 1000.0)])
        return (x - self.mean) / self.std

    def fit(self, catalog: Catalog, train: Train) -> None:
        self.durations = np.array([v.duration_ms for v in catalog.videos], dtype=np.float64)
        y = train.long_view.astype(np.float64)
        self.global_rate = float(y.mean()) if len(y) else 0.0
        n_v = np.bincount(train.row, minlength=len(catalog)).astype(np.float64)
        h_v = np.bincount(train.row, weights=y, minlength=len(catalog)).astype(np.float64)
        self.video_lv = (h_v, n_v)
        users, inverse = np.unique(train.user, return_inverse=True)
        n_u = np.bincount(inverse).astype(np.float64)
        h_u = np.bincount(inverse, weights=y)
        self.user_lv = {
            u: (float(h), float(n)) for u, h, n in zip(users.tolist(), h_u, n_u, strict=True)
        }
        # Leave-one-out: each training row's rates without the row itself.
        video_rate = self._rate(h_v[train.row] - y, n_v[train.row] - 1)
        user_rate = self._rate(h_u[inverse] - y, n_u[inverse] - 1)
        raw = np.column_stack([video_rate, user_rate, np.log1p(self.durations[train.row] / 1000.0)])
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0) + 1e-12
        x = (raw - self.mean) / self.std
        labels = {
            "long_view": train.long_view,
            "finish": train.frame["finish"].to_numpy().astype(bool),
            "like": train.frame["is_like"].to_numpy() != 0,
            "click": train.frame["is_click"].to_numpy() != 0,
        }
        self.weights = {name: _fit_logistic(x, y_l) for name, y_l in labels.items()}

    def top_k(self, requests: Requests, k: int) -> None:
        return None  # an impression model: it ranks what was shown, not the catalog

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        h_v, n_v = self.video_lv
        rows = requests.imp_row
        video_rate = self._rate(h_v[rows], n_v[rows])
        stats = [self.user_lv.get(u, (0.0, 0.0)) for u in requests.imp_user.tolist()]
        user_rate = self._rate(np.array([h for h, _ in stats]), np.array([n for _, n in stats]))
        x = self._features(video_rate, user_rate, rows)
        xb = np.hstack([x, np.ones((len(x), 1))])
        return {label: 1.0 / (1.0 + np.exp(-(xb @ w))) for label, w in self.weights.items()}

    def scores_used(self) -> dict[str, str]:
        return {label: f"P({label})" for label in IMPRESSION_LABELS}


BASELINES: tuple[str, ...] = ("random", "popular", "popular_decayed", "itemknn", "als", "lr")


def make_baseline(name: str, seed: int) -> Method:
    if name == "random":
        return RandomMethod(seed)
    if name == "popular":
        return Popular()
    if name == "popular_decayed":
        return PopularDecayed()
    if name == "itemknn":
        return ItemKNN()
    if name == "als":
        return ALS(seed=seed)
    if name == "lr":
        return LogisticRegression()
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
