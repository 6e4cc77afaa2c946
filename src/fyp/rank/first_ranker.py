"""The first ranker: one small online logistic regression per label, over transparent
features, learned from events as they arrive.

For a candidate video v and user u, every head k (long view, finish, like, ...) predicts

    P_k = sigmoid( w_k · x_k(u, v) )

with features x_k:
    video_rate   logit of v's smoothed rate of label k (shrunk towards the global rate)
    user_lift    logit of u's smoothed rate of label k minus the global logit
    creator      u's long-view lift on v's creator (log-odds, decayed, shrunk to 0)
    sound        the same for v's sound
    hashtags     the mean of the same over v's hashtags
    follows      1 if u follows v's creator
    fresh        exp(-age / 3 days)
    bias         1

The weights start where the model is "video rate times user lift" and move by Adagrad
on every labelled view. The value score is Σ_k value_weight_k × P_k (weights in config).
Every number is inspectable: :meth:`FirstRanker.explain` gives each feature's share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.config import RankerConfig
from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.users import UserState, affinity_lift
from fyp.state.videos import VideoStats

F64 = npt.NDArray[np.float64]
FEATURES: tuple[str, ...] = (
    "video_rate",
    "user_lift",
    "creator",
    "sound",
    "hashtags",
    "follows",
    "fresh",
    "bias",
)
N_FEATURES = len(FEATURES)
_FRESH_MS = 3 * 86_400_000
_DAY_MS = 86_400_000


def _logit(p: F64) -> F64:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class Scored:
    """Per-candidate predictions (n, L) and value scores (n,)."""

    probabilities: F64
    values: F64
    features: F64  # (n, L, F)


class FirstRanker:
    def __init__(self, cfg: RankerConfig, catalog: CatalogIndex, stats: VideoStats) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.stats = stats
        self.half_life_ms = cfg.affinity_half_life_days * _DAY_MS
        n_labels = len(LABELS)
        self.weights = np.zeros((n_labels, N_FEATURES))
        self.weights[:, FEATURES.index("video_rate")] = 1.0
        self.weights[:, FEATURES.index("user_lift")] = 1.0
        self.weights[:, FEATURES.index("creator")] = 0.5
        self.weights[:, FEATURES.index("sound")] = 0.2
        self.weights[:, FEATURES.index("hashtags")] = 0.3
        self.weights[:, FEATURES.index("follows")] = 0.5
        self._grad_sq = np.full_like(self.weights, 1e-2)
        self.value_weights = np.zeros(n_labels)
        for name, w in cfg.value_weights.items():
            if name not in LABEL_INDEX:
                raise ValueError(f"ranker.value_weights: unknown label {name!r}; known: {LABELS}")
            self.value_weights[LABEL_INDEX[name]] = w
        self.examples_seen = 0

    # -- features ----------------------------------------------------------------------

    def features(self, user: UserState, rows: Sequence[int], now: int) -> F64:
        """(n, L, F) feature tensor for ``rows`` as seen by ``user`` at ``now`` (Unix ms)."""
        idx = np.asarray(rows, dtype=np.intp)
        n, n_labels = len(idx), len(LABELS)
        g_logit = _logit(self.stats.global_rates())  # (L,)
        x = np.zeros((n, n_labels, N_FEATURES))
        x[:, :, 0] = _logit(self.stats.smoothed_rates(idx, self.cfg.prior_strength)) - g_logit
        x[:, :, 1] = self._user_lift(user, g_logit)[None, :]
        shared = np.array([self._affinities(user, int(r), now) for r in idx]).reshape(n, 4)
        x[:, :, 2:6] = shared[:, None, :]
        created = self.catalog.created_at[idx]
        age = np.maximum(now - created, 0).astype(np.float64)
        fresh = np.where(created > 0, np.exp(-age / _FRESH_MS), 0.0)
        x[:, :, 6] = fresh[:, None]
        x[:, :, 7] = 1.0
        return x

    def _user_lift(self, user: UserState, g_logit: F64) -> F64:
        g = self.stats.global_rates()
        counts = np.asarray(user.label_counts, dtype=np.float64)
        p = (counts + self.cfg.prior_strength * g) / (user.views + self.cfg.prior_strength)
        return _logit(p) - g_logit

    def _affinities(self, user: UserState, row: int, now: int) -> tuple[float, float, float, float]:
        v = self.catalog.videos[row]
        base = self._user_long_view_rate(user)
        hl = self.half_life_ms
        creator = affinity_lift(user.creators.get(v.creator_id), base, now, hl)
        sound = affinity_lift(user.sounds.get(v.sound_id), base, now, hl) if v.sound_id else 0.0
        if v.hashtags:
            tags = sum(affinity_lift(user.hashtags.get(h), base, now, hl) for h in v.hashtags)
            tags /= len(v.hashtags)
        else:
            tags = 0.0
        follows = 1.0 if v.creator_id in user.follows else 0.0
        return creator, sound, tags, follows

    def _user_long_view_rate(self, user: UserState) -> float:
        i = LABEL_INDEX["long_view"]
        g = float(self.stats.global_rates()[i])
        m = self.cfg.prior_strength
        return (user.label_counts[i] + m * g) / (user.views + m)

    # -- scoring -----------------------------------------------------------------------

    def score(self, user: UserState, rows: Sequence[int], now: int) -> Scored:
        x = self.features(user, rows, now)
        z = np.einsum("nlf,lf->nl", x, self.weights)
        p = 1.0 / (1.0 + np.exp(-z))
        return Scored(p, p @ self.value_weights, x)

    def explain(self, features: F64) -> dict[str, float]:
        """Each feature's contribution to the value score for one candidate's (L, F)
        features: Σ_k value_weight_k × P_k × (1 - P_k) × w_kf × x_kf (a first-order share)."""
        z = np.einsum("lf,lf->l", features, self.weights)
        p = 1.0 / (1.0 + np.exp(-z))
        share = (self.value_weights * p * (1 - p))[:, None] * self.weights * features
        total = share.sum(axis=0)
        return {name: float(total[i]) for i, name in enumerate(FEATURES) if name != "bias"}

    # -- learning ----------------------------------------------------------------------

    def learn(self, features: F64, labels: F64) -> None:
        """One Adagrad step on a micro-batch: features (n, L, F), labels (n, L) in {0, 1}."""
        if len(features) == 0:
            return
        z = np.einsum("nlf,lf->nl", features, self.weights)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = np.einsum("nl,nlf->lf", p - labels, features) / len(features)
        self._grad_sq += grad * grad
        self.weights -= self.cfg.learning_rate * grad / np.sqrt(self._grad_sq)
        self.examples_seen += len(features)

    def log_loss(self, features: F64, labels: F64) -> float:
        z = np.einsum("nlf,lf->nl", features, self.weights)
        p = np.clip(1.0 / (1.0 + np.exp(-z)), 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
