"""How the page scorer (:mod:`fyp.rank.page_scorer`) learns from the engine's own log:
features of one period, positives of the next.

Every ``retrain_hours`` of event time (at ``offset_hours`` past each multiple of it
since the epoch), at a *boundary*:

1. the pools taken at the previous boundary are labelled: a candidate is a positive if
   its user went on to engage with it (a long view, like, share, follow or comment: the
   state's record of the user's positives, less those they had when the pool was taken);
   pools with a positive are kept, each with its positives and a sample of the rest;
   users who arrived during the period label the pool a newcomer got on their surface
   (a blank state's, taken at the same boundary), so the scorer learns for them too;
2. the scorer is retrained on the labelled pools of the last ``keep_periods`` periods
   (once there are ``min_groups``) and swapped in;
3. new pools are taken: the candidate pool the pipeline builds for each of up to
   ``snapshot_users`` users active in the period just ended, with its features as
   serving computes them at that moment.

So the scorer learns what a person does *after* features like the ones it is served
with, rather than what they did among what they were shown. Users who refresh their
personalisation or are erased leave the pending and labelled pools (a forget listener
of the state); the model itself holds no per-user data.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fyp.config import ScorerConfig
from fyp.rank.page_scorer import PageScoredRanker, PageScorer
from fyp.retrieve.base import FeedContext
from fyp.state.feedback import LABELS
from fyp.state.updater import LogState
from fyp.state.users import new_user
from fyp.types import LoggedEvent

if TYPE_CHECKING:
    from fyp.pipeline import FeedPipeline

F32 = npt.NDArray[np.float32]
_HOUR_MS = 3_600_000


@dataclass(slots=True)
class _Pool:
    user_id: str
    rows: npt.NDArray[np.int64]
    x: F32
    positives_before: frozenset[int]


@dataclass(slots=True)
class _Labelled:
    """One period's labelled pools, concatenated."""

    user_ids: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    xs: list[F32] = field(default_factory=list)
    ys: list[F32] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Retrain:
    """What one boundary did (logged by the engine; the last twenty kept here)."""

    at_ms: int
    labelled_pools: int  # pools of the period just ended with a positive
    trained_groups: int  # pools the scorer was trained on (0: not retrained)
    fit_s: float
    weights: tuple[float, ...]  # the scorer's weights after it (empty: untrained)
    snapshot_users: int
    snapshot_s: float


class PageScorerTrainer:
    def __init__(self, cfg: ScorerConfig, scorer: PageScorer) -> None:
        self.cfg = cfg
        self.scorer = scorer
        self.period_ms = int(cfg.retrain_hours * _HOUR_MS)
        self.offset_ms = int(cfg.offset_hours * _HOUR_MS) % self.period_ms
        self.next_at: int | None = None
        self.pending: dict[str, _Pool] = {}
        # A newcomer's pool on each surface (a blank state's), for those who arrive
        # during the period: what they engage with labels it for them.
        self.newcomer_pools: dict[str, _Pool] = {}
        self.pending_at: int | None = None
        self.periods: deque[_Labelled] = deque(maxlen=cfg.keep_periods)
        self.retrains: deque[Retrain] = deque(maxlen=20)

    # -- the schedule ----------------------------------------------------------------

    def due(self, now: int) -> bool:
        """Whether ``now`` (event time, Unix ms) has reached the next boundary; the first
        call sets the schedule (the first boundary after it)."""
        if self.next_at is None:
            self._advance(now)
            return False
        return now >= self.next_at

    def before(self, batch: Sequence[LoggedEvent]) -> int:
        """How many of ``batch``'s events (log order) come before the next boundary: the
        learning step applies those, then does the boundary's work. The first batch
        sets the schedule."""
        if not batch:
            return 0
        if self.next_at is None:
            self._advance(batch[0].event.ts)
        next_at = self.next_at
        assert next_at is not None
        for i, logged in enumerate(batch):
            if logged.event.ts >= next_at:
                return i
        return len(batch)

    def skip(self, now: int) -> None:
        """Pass the boundary by (nothing to score pools with): the next one after ``now``."""
        self._advance(now)

    def _advance(self, now: int) -> None:
        """The next boundary strictly after ``now``."""
        offset = self.offset_ms
        self.next_at = ((now - offset) // self.period_ms + 1) * self.period_ms + offset

    # -- a boundary --------------------------------------------------------------------

    def label(self, state: LogState) -> int:
        """Label the pending pools with what their users engaged with since; keep those
        with a positive (with a seeded sample of the rest). Returns how many."""
        rng = np.random.default_rng([self.cfg.seed, self.next_at or 0])
        out = _Labelled()
        for uid, pool in self.pending.items():
            user = state.users.get(uid)
            if user is not None:
                self._add(out, uid, pool, set(user.recent_positives) - pool.positives_before, rng)
        since = self.pending_at
        if since is not None and self.newcomer_pools:
            for uid, user in state.users.items():
                first = user.first_seen
                blank = self.newcomer_pools.get(user.last_surface)
                if first is not None and first >= since and blank is not None:
                    self._add(out, uid, blank, set(user.recent_positives), rng)
        self.pending = {}
        self.newcomer_pools = {}
        self.periods.append(out)
        return len(out.sizes)

    def _add(
        self, out: _Labelled, uid: str, pool: _Pool, new: set[int], rng: np.random.Generator
    ) -> None:
        """The pool as a training group if the user engaged with any of it: its positives
        and a sample of the rest, shuffled (ties keep the pool's order when the weights
        are chosen, so positives first would reward weights that leave them tied)."""
        if not new:
            return
        y = np.fromiter((r in new for r in pool.rows.tolist()), dtype=bool, count=len(pool.rows))
        if not y.any():
            return
        neg = np.flatnonzero(~y)
        if len(neg) > self.cfg.negatives_per_group:
            neg = rng.choice(neg, self.cfg.negatives_per_group, replace=False)
        keep = rng.permutation(np.concatenate([np.flatnonzero(y), neg]))
        out.user_ids.append(uid)
        out.sizes.append(len(keep))
        out.xs.append(pool.x[keep])
        out.ys.append(y[keep].astype(np.float32))

    def fit(self, at_ms: int) -> int:
        """Retrain on the kept periods' pools, if there are enough; returns how many."""
        sizes = [s for p in self.periods for s in p.sizes]
        if len(sizes) < self.cfg.min_groups:
            return 0
        x = np.concatenate([x for p in self.periods for x in p.xs])
        y = np.concatenate([y for p in self.periods for y in p.ys])
        fresh = PageScorer()
        fresh.fit(x, y, sizes, at_ms)
        # Swapped whole: a request reads the old weights or the new ones.
        scorer = self.scorer
        scorer.weights, scorer.trained_at = fresh.weights, fresh.trained_at
        scorer.groups, scorer.examples = fresh.groups, fresh.examples
        scorer.fit_ndcg, scorer.fit_seconds = fresh.fit_ndcg, fresh.fit_seconds
        return len(sizes)

    def choose_users(self, state: LogState, now: int) -> list[str]:
        """Up to ``snapshot_users`` users with a view in the last period, a seeded draw
        (the same users for the same log)."""
        since = now - self.period_ms
        active = [
            uid for uid, u in state.users.items() if u.history_ts and u.history_ts[-1] >= since
        ]
        limit = self.cfg.snapshot_users
        if len(active) <= limit:
            return sorted(active)
        salt = f"{self.cfg.seed}:{now // self.period_ms}:".encode()

        def draw(uid: str) -> bytes:
            return hashlib.blake2b(salt + uid.encode(), digest_size=8).digest()

        return sorted(active, key=draw)[:limit]

    def snapshot(
        self, pipeline: FeedPipeline, ranker: PageScoredRanker, users: list[str], now: int
    ) -> None:
        """Take the pools of ``users`` as the pipeline builds them now, with their
        features (personalised users only: the others' feed is not ranked)."""
        count = self.cfg.pool_count
        self.pending_at = now
        for uid in users:
            user = pipeline.state.users.get(uid)
            if user is None:
                continue
            ctx = pipeline.context(uid, count, user.last_surface, now, request_id=f"scorer-{uid}")
            if not ctx.controls.personalized:
                continue
            rows = [c.row for c in pipeline.candidates(ctx)]
            if not rows:
                continue
            x = ranker.features_of(ctx, rows).astype(np.float32)
            self.pending[uid] = _Pool(
                uid, np.asarray(rows, dtype=np.int64), x, frozenset(user.recent_positives)
            )

    def snapshot_newcomers(
        self, pipeline: FeedPipeline, ranker: PageScoredRanker, now: int
    ) -> None:
        """A blank state's pool on each surface seen so far, with its features."""
        state = pipeline.state
        region = state.settings.region
        for surface in sorted(state.surface_trending.scores):
            user = new_user(state.settings.feed.history_size, len(LABELS))
            user.region = region
            ctx = FeedContext(
                f"scorer-newcomer-{surface}",
                "",
                user,
                self.cfg.pool_count,
                surface,
                region,
                now,
                state.settings.policy.surface_policy(surface),
            )
            rows = [c.row for c in pipeline.candidates(ctx)]
            if rows:
                x = ranker.features_of(ctx, rows).astype(np.float32)
                self.newcomer_pools[surface] = _Pool(
                    "", np.asarray(rows, dtype=np.int64), x, frozenset()
                )

    def boundary(
        self,
        state: LogState,
        pipeline: FeedPipeline,
        ranker: PageScoredRanker,
        now: int,
        locked: Any,
        chunk: int = 100,
    ) -> Retrain:
        """One boundary's work (see the module docstring). ``locked``: a context manager
        that holds the state still (the engine's lock); it is taken for labelling and
        for each ``chunk`` users' pools, not for the fit, so serving goes on meanwhile."""
        with locked:
            labelled = self.label(state)
        trained = self.fit(now)
        start = time.perf_counter()
        with locked:
            users = self.choose_users(state, now)
            self.snapshot_newcomers(pipeline, ranker, now)
        for i in range(0, len(users), chunk):
            with locked:
                self.snapshot(pipeline, ranker, users[i : i + chunk], now)
        self._advance(now)
        done = Retrain(
            now,
            labelled,
            trained,
            self.scorer.fit_seconds if trained else 0.0,
            () if self.scorer.weights is None else tuple(self.scorer.weights.tolist()),
            len(self.pending),
            time.perf_counter() - start,
        )
        self.retrains.append(done)
        return done

    # -- users -------------------------------------------------------------------------

    def forget(self, user_id: str, erase: bool) -> None:
        """A user who refreshes or is erased: their pools go (a state forget listener)."""
        self.pending.pop(user_id, None)
        for p in self.periods:
            if user_id in p.user_ids:
                i = p.user_ids.index(user_id)
                del p.user_ids[i], p.sizes[i], p.xs[i], p.ys[i]
