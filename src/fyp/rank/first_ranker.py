"""The first ranker: one small online logistic regression per label, over transparent
features, learned from events as they arrive.

For a candidate video v and user u, every head k (long view, finish, like, ...) predicts

    P_k = sigmoid( w_k · x_k(u, v) )

with features x_k:
    video_rate   logit of v's smoothed rate of label k, shrunk towards its creator's
                 rate over everyone's views (itself shrunk towards the global rate): a
                 video with few views is judged by its creator's others, and for an
                 unknown video, creator and user P_k starts at the global rate
    user_lift    logit of u's smoothed rate of label k minus the global logit
    creator      u's long-view lift on v's creator (log-odds, decayed, shrunk to 0), plus
                 the lift of its finish rate this session over u's (finishes for, quick
                 skips against, fading within minutes: fyp.state.users)
    sound        the same for v's sound
    hashtags     the mean of the same over v's hashtags
    follows      1 if u follows v's creator
    fresh        exp(-age / 3 days)
    surface      logit of label k's smoothed rate on the surface the feed runs on, minus
                 the global logit (where in the app: :mod:`fyp.state.surfaces`)
    creator_rate the same lift for label k's smoothed rate over all views of v's
                 creator's videos, by everyone (:mod:`fyp.state.group_rates`): what a
                 new video of a known creator is likely to get
    hashtag_rate the mean of the same over v's hashtags
    duration     log(1 + v's length in seconds) minus that of a minute (0 when unknown)
    duration_sq  its square: how long people watch is not monotone in a video's length
                 (on KuaiRand the long-view rate peaks for videos of one to two minutes,
                 finishing falls with length), and a video's own rates say little until
                 it has views
    bias         1

The weights start where the model is "video rate times user and surface lift" (the
creator's and hashtags' rates and the duration's at 0) and move by Adagrad on every
labelled view. The value score is Σ_k value_weight_k × P_k (weights in config). Every
number is inspectable: :meth:`FirstRanker.explain` gives each feature's share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import TAGS_PER_VIDEO, CatalogIndex
from fyp.config import RankerConfig
from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.group_rates import GroupRates, rate_lifts, smoothed_rates
from fyp.state.slice_counts import Counts
from fyp.state.surfaces import SurfaceStats
from fyp.state.users import (
    AFFINITY_PRIOR,
    SESSION_CAP,
    SESSION_HALF_LIFE_MS,
    SESSION_PRIOR,
    Affinity,
    UserState,
    affinity_lift,
)
from fyp.state.videos import VideoStats
from fyp.types import DAY_MS, DEFAULT_SURFACE

F64 = npt.NDArray[np.float64]
FEATURES: tuple[str, ...] = (
    "video_rate",
    "user_lift",
    "creator",
    "sound",
    "hashtags",
    "follows",
    "fresh",
    "surface",
    "creator_rate",
    "hashtag_rate",
    "duration",
    "duration_sq",
    "bias",
)
N_FEATURES = len(FEATURES)
_FRESH_MS = 3 * 86_400_000
_KIND = 1 << 32  # key offset between kinds of entity in one lookup table
_MINUTE_LOG = float(np.log1p(60.0))  # the duration features are centred on a minute
_UNREAD: F64 = np.zeros(0)  # counts an example's inputs are taken without (filled in later)


def _logit(p: F64) -> F64:
    p = np.minimum(np.maximum(p, 1e-4), 1 - 1e-4)  # cheaper than np.clip on tiny arrays
    return np.log(p / (1 - p))


def _lookup(
    table: tuple[npt.NDArray[np.int64], F64], codes: npt.NDArray[np.int32] | npt.NDArray[np.int64]
) -> F64:
    """The value for each code in ``codes`` (any shape) from a sorted (codes, values)
    table; 0 for codes not in it (and for -1, "none")."""
    keys, values = table
    if len(keys) == 0:
        return np.zeros(codes.shape)
    i = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
    return np.where(keys[i] == codes, values[i], 0.0)


def _duration_features(duration_ms: F64) -> tuple[F64, F64]:
    """(duration, duration_sq) of videos ``duration_ms`` long; both 0 for an unknown
    length (0 or less), which leaves such a video's score to its other features."""
    known = duration_ms > 0
    centred = np.where(known, np.log1p(np.maximum(duration_ms, 0.0) / 1000.0) - _MINUTE_LOG, 0.0)
    return centred, centred * centred


def _session(a: Affinity) -> tuple[float, float]:
    return a.session_finishes, a.session_views


def _session_lifts(finishes: F64, views: F64, fade: F64, rate: F64) -> F64:
    """:func:`fyp.state.users.session_lift` of many entities at once."""
    p = (finishes * fade + SESSION_PRIOR * rate) / (views * fade + SESSION_PRIOR)
    lift = np.clip(_logit(p) - _logit(rate), -SESSION_CAP, SESSION_CAP)
    out: F64 = np.where(views > 0, lift, 0.0)
    return out


@dataclass(slots=True)
class ExampleInputs:
    """What the features of one training example read, copied when the example opens:
    the state moves on before its micro-batch is learned, and the features of a whole
    batch are computed at once (:meth:`FirstRanker.example_batch_features`), which costs
    a fraction of computing them per view, where most of the learning step's time went.
    The global rates and the surface's lift are the (never mutated) arrays of the last
    refresh."""

    now: int
    user_counts: tuple[float, ...]  # (L,) the user's label counts
    user_views: float
    video_counts: F64  # (L,) a copy of the video's label counts
    video_views: float
    # (kind, views, positives, last update ms, session finishes, session views) of each
    # of the user's affinities the video touches: kind 0 its creator, 1 its sound, 2 one
    # of its shown hashtags
    affinities: tuple[tuple[int, float, float, int, float, float], ...]
    shown_tags: int  # hashtags the mean runs over (unknown ones count as 0)
    follows: bool
    created_at: int
    surface_lift: F64  # (L,)
    rates: tuple[F64, F64]  # global rates and their logits
    session_rate: float = 0.5  # the user's finish rate this session
    duration_ms: float = 0.0  # the video's length (0: unknown)
    # label counts then views of the video's creator (L + 1,) and of each of its
    # hashtags (TAGS_PER_VIDEO, L + 1; zeros past the last), and how many hashtags it
    # has: :class:`fyp.state.group_rates.GroupRates`
    creator_counts: F64 = field(default_factory=lambda: np.zeros(len(LABELS) + 1))
    tag_counts: F64 = field(default_factory=lambda: np.zeros((TAGS_PER_VIDEO, len(LABELS) + 1)))
    n_tags: int = 0


@dataclass(frozen=True, slots=True)
class Scored:
    """Per-candidate predictions (n, L) and value scores (n,)."""

    probabilities: F64
    values: F64
    features: F64  # (n, L, F)


class FirstRanker:
    def __init__(
        self,
        cfg: RankerConfig,
        catalog: CatalogIndex,
        stats: VideoStats,
        surfaces: SurfaceStats,
        groups: GroupRates | None = None,
    ) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.stats = stats
        self.surfaces = surfaces
        self.groups = GroupRates(catalog) if groups is None else groups
        self.half_life_ms = cfg.affinity_half_life_days * DAY_MS
        n_labels = len(LABELS)
        self.weights = np.zeros((n_labels, N_FEATURES))
        self.weights[:, FEATURES.index("video_rate")] = 1.0
        self.weights[:, FEATURES.index("user_lift")] = 1.0
        self.weights[:, FEATURES.index("creator")] = 0.5
        self.weights[:, FEATURES.index("sound")] = 0.2
        self.weights[:, FEATURES.index("hashtags")] = 0.3
        self.weights[:, FEATURES.index("follows")] = 0.5
        self.weights[:, FEATURES.index("surface")] = 1.0
        self._grad_sq = np.full_like(self.weights, 1e-2)
        self.value_weights = np.zeros(n_labels)
        for name, w in cfg.value_weights.items():  # names checked by RankerConfig
            self.value_weights[LABEL_INDEX[name]] = w
        self.examples_seen = 0
        self._global: tuple[F64, F64] = (np.zeros(0), np.zeros(0))
        self.refresh_global_rates()

    def refresh_global_rates(self) -> None:
        """Recompute the label rates over all views. They move slowly, so the learning
        step calls this at fixed points of the log (not per example or request), which
        keeps a replay identical to the live run."""
        g = self.stats.global_rates()
        self._global = (g, _logit(g))
        self.surfaces.refresh(g, self._global[1], self.cfg.prior_strength)

    def _global_rates(self) -> tuple[F64, F64]:
        return self._global

    # -- features ----------------------------------------------------------------------

    def features(
        self, user: UserState, rows: Sequence[int], now: int, surface: str = DEFAULT_SURFACE
    ) -> F64:
        """(n, L, F) feature tensor for ``rows`` as seen by ``user`` at ``now`` (Unix ms)
        on ``surface``."""
        idx = np.asarray(rows, dtype=np.intp)
        n, n_labels = len(idx), len(LABELS)
        g, g_logit = self._global_rates()  # (L,)
        m = self.cfg.prior_strength
        stats = self.stats
        x = np.zeros((n, n_labels, N_FEATURES))
        creator_rates, creator_lifts = self.groups.creator_rates_and_lifts(idx, g, g_logit, m)
        x[:, :, 0] = _logit(stats.smoothed_rates(idx, m, creator_rates))
        x[:, :, 1] = self._user_lift(user, g, g_logit)[None, :]
        x[:, :, 2:6] = self._affinities(user, idx, now)[:, None, :]
        created = self.catalog.created_at[idx]
        age = np.maximum(now - created, 0).astype(np.float64)
        fresh = np.where(created > 0, np.exp(-age / _FRESH_MS), 0.0)
        x[:, :, 6] = fresh[:, None]
        x[:, :, 7] = self.surfaces.lift(surface)[None, :]
        x[:, :, 8] = creator_lifts
        x[:, :, 9] = self.groups.hashtag_lifts(idx, g, g_logit, m)
        duration, duration_sq = _duration_features(self.catalog.duration_ms[idx].astype(np.float64))
        x[:, :, 10] = duration[:, None]
        x[:, :, 11] = duration_sq[:, None]
        x[:, :, 12] = 1.0
        return x

    def example_inputs(
        self,
        user: UserState,
        row: int,
        now: int,
        surface: str = DEFAULT_SURFACE,
        *,
        counts: bool = True,
    ) -> ExampleInputs:
        """What :meth:`features` of ``row`` for ``user`` at ``now`` on ``surface`` reads,
        copied: the learning step takes these for every view, before the view changes
        anything. ``counts=False``: without the video's, its creator's and its hashtags'
        counts (``video_counts``, ``video_views``, ``creator_counts``, ``tag_counts``),
        which the caller fills in (the fold reads them for many examples at once:
        :mod:`fyp.state.slice_counts`)."""
        video = self.catalog.videos[row]
        found: list[tuple[int, float, float, int, float, float]] = []
        shown_tags = 0
        follows = False
        if user.creators or user.follows:  # else every affinity is 0 (as in features)
            if (a := user.creators.get(video.creator_id)) is not None:
                found.append((0, a.views, a.positives, a.ts, *_session(a)))
            if video.sound_id is not None and (a := user.sounds.get(video.sound_id)) is not None:
                found.append((1, a.views, a.positives, a.ts, *_session(a)))
            shown = video.hashtags[:TAGS_PER_VIDEO]
            shown_tags = len(shown)
            hashtags = user.hashtags
            for h in shown:
                if (a := hashtags.get(h)) is not None:
                    found.append((2, a.views, a.positives, a.ts, *_session(a)))
            follows = video.creator_id in user.follows
        if counts:
            video_counts, video_views = (
                self.stats.label_counts[row].copy(),
                float(self.stats.views[row]),
            )
            creator_counts, tag_counts, n_tags = self.groups.of_row(row)
        else:
            video_counts = creator_counts = tag_counts = _UNREAD
            video_views = 0.0
            n_tags = min(len(video.hashtags), TAGS_PER_VIDEO)
        return ExampleInputs(
            now,
            tuple(user.label_counts),
            user.views,
            video_counts,
            video_views,
            tuple(found),
            shown_tags,
            follows,
            int(self.catalog.created_at[row]),
            self.surfaces.lift(surface),
            self._global,
            user.session_rate(now),
            float(self.catalog.duration_ms[row]),
            creator_counts,
            tag_counts,
            n_tags,
        )

    def example_batch_features(
        self, inputs: Sequence[ExampleInputs], counts: Counts | None = None
    ) -> F64:
        """(n, L, F): :meth:`features` of each example as it was when its inputs were
        taken — the same numbers, computed for a micro-batch at once. ``counts``: the
        videos', creators' and hashtags' counts of all of them, read at once
        (:mod:`fyp.state.slice_counts`), in place of each input's own."""
        n, n_labels = len(inputs), len(LABELS)
        m = self.cfg.prior_strength
        g = np.array([e.rates[0] for e in inputs]).reshape(n, n_labels)
        g_logit = np.array([e.rates[1] for e in inputs]).reshape(n, n_labels)
        user_views = np.array([e.user_views for e in inputs])[:, None]
        now = np.array([e.now for e in inputs], dtype=np.float64)
        # (from a flat run of floats: a fraction of the time of an array of tuples)
        user_counts = np.fromiter(
            chain.from_iterable([e.user_counts for e in inputs]), np.float64, n * n_labels
        ).reshape(n, n_labels)
        if counts is None:
            video_views = np.array([e.video_views for e in inputs])[:, None]
            video_counts = np.array([e.video_counts for e in inputs]).reshape(n, n_labels)
            creator_counts = np.stack([e.creator_counts for e in inputs])
            tags = np.stack([e.tag_counts for e in inputs])  # (n, T, L + 1)
        else:
            video_views = counts.video_views[:, None]
            video_counts = counts.video_counts
            creator_counts = counts.creator_counts
            tags = counts.tag_counts
        x = np.zeros((n, n_labels, N_FEATURES))
        creator_rates = smoothed_rates(creator_counts, g, m)
        x[:, :, 0] = _logit((video_counts + m * creator_rates) / (video_views + m))
        user_rates = (user_counts + m * g) / (user_views + m)
        x[:, :, 1] = _logit(user_rates) - g_logit
        affinity = np.zeros((n, 4))
        flat = [(i, *a) for i, e in enumerate(inputs) for a in e.affinities]
        if flat:
            # Times in ms and counts are exact in float64.
            a = np.array(flat, dtype=np.float64)
            at = a[:, 0].astype(np.intp)
            base = user_rates[at, LABEL_INDEX["long_view"]]
            decay = 0.5 ** (np.maximum(now[at] - a[:, 4], 0.0) / self.half_life_ms)
            p = (a[:, 3] * decay + AFFINITY_PRIOR * base) / (a[:, 2] * decay + AFFINITY_PRIOR)
            fade = 0.5 ** (np.maximum(now[at] - a[:, 4], 0.0) / SESSION_HALF_LIFE_MS)
            rate = np.array([e.session_rate for e in inputs])[at]
            session = _session_lifts(a[:, 5], a[:, 6], fade, rate)
            lift = _logit(p) - _logit(base) + session
            np.add.at(affinity, (at, a[:, 1].astype(np.intp)), lift)
        affinity[:, 2] /= np.maximum(np.array([e.shown_tags for e in inputs]), 1)
        affinity[:, 3] = [e.follows for e in inputs]
        x[:, :, 2:6] = affinity[:, None, :]
        created = np.array([e.created_at for e in inputs], dtype=np.float64)
        fresh = np.where(created > 0, np.exp(-np.maximum(now - created, 0.0) / _FRESH_MS), 0.0)
        x[:, :, 6] = fresh[:, None]
        x[:, :, 7] = np.array([e.surface_lift for e in inputs]).reshape(n, n_labels)
        x[:, :, 8] = rate_lifts(creator_counts, g, g_logit, m)
        per_tag = rate_lifts(tags, g[:, None, :], g_logit[:, None, :], m)  # (n, T, L)
        n_tags = np.maximum([e.n_tags for e in inputs], 1)
        x[:, :, 9] = per_tag.sum(axis=1) / n_tags[:, None]
        duration, duration_sq = _duration_features(np.array([e.duration_ms for e in inputs]))
        x[:, :, 10] = duration[:, None]
        x[:, :, 11] = duration_sq[:, None]
        x[:, :, 12] = 1.0
        return x

    def example_features(
        self, user: UserState, row: int, now: int, surface: str = DEFAULT_SURFACE
    ) -> F64:
        """(L, F): :meth:`features` of one row by way of :meth:`example_inputs`, as the
        learning step computes them."""
        x: F64 = self.example_batch_features([self.example_inputs(user, row, now, surface)])[0]
        return x

    def _user_lift(self, user: UserState, g: F64, g_logit: F64) -> F64:
        counts = np.asarray(user.label_counts, dtype=np.float64)
        p = (counts + self.cfg.prior_strength * g) / (user.views + self.cfg.prior_strength)
        return _logit(p) - g_logit

    def _affinities(self, user: UserState, idx: npt.NDArray[np.intp], now: int) -> F64:
        """(n, 4): creator, sound and mean hashtag lift, and follows, per row.

        Two paths, one result: a direct loop for a request's few rows, and
        one lookup table over the user's known creators, sounds, hashtags and followed
        creators for a request's hundreds of candidates (each of the user's known
        entities is evaluated once, not once per candidate)."""
        if not (user.creators or user.follows):
            return np.zeros((len(idx), 4))  # a user with no history: every affinity is 0
        base = self._user_long_view_rate(user)
        if len(idx) <= 16:
            return self._affinities_direct(user, idx, now, base)
        cat = self.catalog
        n = len(idx)
        tags = cat.tag_codes[idx]  # (n, TAGS_PER_VIDEO), -1 padded
        # One key space for the four kinds (codes are int32; -1, "none", lands on a key
        # of no kind, so it is never found): creator, sound, hashtags, followed creator.
        t0, t1 = 2 * n, (2 + TAGS_PER_VIDEO) * n
        queries = np.empty(t1 + n, dtype=np.int64)
        queries[:n] = cat.creator_code[idx]
        queries[n:t0] = cat.sound_code[idx]
        queries[n:t0] += _KIND
        queries[t0:t1] = tags.reshape(-1)
        queries[t0:t1] += 2 * _KIND
        queries[t1:] = queries[:n]
        queries[t1:] += 3 * _KIND
        found = _lookup(self._lift_table(user, base, now), queries)
        n_tags = np.maximum((tags >= 0).sum(axis=1), 1)
        out = np.empty((n, 4))
        out[:, 0] = found[:n]
        out[:, 1] = found[n : 2 * n]
        out[:, 2] = found[t0:t1].reshape(n, TAGS_PER_VIDEO).sum(1) / n_tags
        out[:, 3] = found[t1:]
        return out

    def _lift_table(
        self, user: UserState, base: float, now: int
    ) -> tuple[npt.NDArray[np.int64], F64]:
        """The user's known creators, sounds and hashtags, and followed creators, as one
        table (keys sorted, values): :func:`affinity_lift` of each known entity computed
        all at once, and 1.0 for each followed creator. A key is kind x _KIND + code."""
        cat = self.catalog
        known: list[tuple[int, float, float, int, float, float]] = []
        for kind, entities, codes in (
            (0, user.creators, cat.creators.of),
            (_KIND, user.sounds, cat.sounds.of),
            (2 * _KIND, user.hashtags, cat.hashtags.of),
        ):
            known += [
                (kind + c, a.views, a.positives, a.ts, a.session_finishes, a.session_views)
                for key, a in entities.items()
                if (c := codes.get(key)) is not None
            ]
        followed = [
            3 * _KIND + c for f in user.follows if (c := cat.creators.of.get(f)) is not None
        ]
        keys = np.empty(len(known) + len(followed), dtype=np.int64)
        values = np.ones(len(keys))
        if known:
            k = np.array(known, dtype=np.float64)  # keys and ms times are exact in float64
            keys[: len(known)] = k[:, 0]
            views, positives, ts = k[:, 1], k[:, 2], k[:, 3]
            age = np.maximum(now - ts, 0.0)
            decay = 0.5 ** (age / self.half_life_ms)
            p = (positives * decay + AFFINITY_PRIOR * base) / (views * decay + AFFINITY_PRIOR)
            fade = 0.5 ** (age / SESSION_HALF_LIFE_MS)
            rate = np.full(len(known), user.session_rate(now))
            lift = _logit(p) - _logit(np.array([base]))[0]
            values[: len(known)] = lift + _session_lifts(k[:, 4], k[:, 5], fade, rate)
        keys[len(known) :] = followed
        order = np.argsort(keys)
        return keys[order], values[order]

    def _affinities_direct(
        self, user: UserState, idx: npt.NDArray[np.intp], now: int, base: float
    ) -> F64:
        out = np.zeros((len(idx), 4))
        hl = self.half_life_ms
        videos = self.catalog.videos
        creators, sounds, hashtags = user.creators, user.sounds, user.hashtags
        rate = user.session_rate(now)
        for i, r in enumerate(idx.tolist()):
            v = videos[r]
            if (a := creators.get(v.creator_id)) is not None:
                out[i, 0] = affinity_lift(a, base, now, hl, session_rate=rate)
            if v.sound_id is not None and (a := sounds.get(v.sound_id)) is not None:
                out[i, 1] = affinity_lift(a, base, now, hl, session_rate=rate)
            if v.hashtags:
                shown = v.hashtags[:TAGS_PER_VIDEO]
                lifts = [
                    affinity_lift(hashtags.get(h), base, now, hl, session_rate=rate) for h in shown
                ]
                out[i, 2] = sum(lifts) / len(shown)
            if v.creator_id in user.follows:
                out[i, 3] = 1.0
        return out

    def _user_long_view_rate(self, user: UserState) -> float:
        i = LABEL_INDEX["long_view"]
        g = float(self._global_rates()[0][i])
        m = self.cfg.prior_strength
        return (user.label_counts[i] + m * g) / (user.views + m)

    # -- scoring -----------------------------------------------------------------------

    def score(
        self, user: UserState, rows: Sequence[int], now: int, surface: str = DEFAULT_SURFACE
    ) -> Scored:
        x = self.features(user, rows, now, surface)
        p = 1.0 / (1.0 + np.exp(-self.logits(x)))
        return Scored(p, p @ self.value_weights, x)

    def logits(self, features: F64) -> F64:
        """(..., L) logits of each head for (..., L, F) features, with today's weights."""
        z: F64 = np.einsum("...lf,lf->...l", features, self.weights)
        return z

    def explain(self, features: F64) -> dict[str, float]:
        """Each feature's contribution to the value score for one candidate's (L, F)
        features: Σ_k value_weight_k × P_k × (1 - P_k) × w_kf × x_kf (a first-order share)."""
        total = self.contributions(features[None])[0]
        return {name: float(total[i]) for i, name in enumerate(FEATURES) if name != "bias"}

    def contributions(self, features: F64) -> F64:
        """:meth:`explain` for n candidates at once: (n, L, F) features -> (n, F)
        contributions, in :data:`FEATURES` order."""
        z = np.einsum("nlf,lf->nl", features, self.weights)
        p = 1.0 / (1.0 + np.exp(-z))
        # Against an average video: the video's rates count by how far they are from
        # the global rates, not by their absolute (always negative) log-odds.
        centred = features.copy()
        centred[:, :, 0] -= self._global_rates()[1]
        slope = self.value_weights * p * (1 - p)  # (n, L)
        out: F64 = ((slope[:, :, None] * self.weights[None]) * centred).sum(axis=1)
        return out

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
