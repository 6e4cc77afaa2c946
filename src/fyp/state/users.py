"""Per-user state: what they watched, what they were served, whom they follow, what
they told us they do not want, and their affinities to creators, sounds and hashtags."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from fyp.state.attribute_codes import AttributeCodes
from fyp.types import DEFAULT_SURFACE

# Dwell evidence of the session: finished views and quick skips of each creator, sound
# and hashtag, fading with this half-life. Their finish rate, against the person's own
# finish rate over the same minutes, adds a lift from the first view: what a newcomer
# skips comes less, what they finish comes more, and one bad card stops counting against
# a topic within the session. Against their own rate, so that a hashtag on everything
# (#fyp), skipped as often as the rest, tells nothing.
SESSION_HALF_LIFE_MS = 10 * 60_000
SESSION_PRIOR = 1.0  # pseudo-views at the person's session rate: one view is a hint
SESSION_CAP = 3.0  # log-odds either way, so a run of skips lowers a topic, not buries it


@dataclass(slots=True)
class Affinity:
    """Time-decayed views and positives of one user on one creator / sound / hashtag,
    and the session's finished views and quick skips of it (fading within minutes)."""

    views: float = 0.0
    positives: float = 0.0
    ts: int = 0  # Unix ms of the last update
    session_finishes: float = 0.0  # as of ``ts``
    session_views: float = 0.0  # finished views and quick skips, as of ``ts``

    def __reduce__(
        self,
    ) -> tuple[type[Affinity], tuple[float, float, int, float, float]]:
        # A checkpoint pickles hundreds of thousands of these (every user's creators,
        # sounds and hashtags): by their fields it takes a third of the default's time.
        return (
            Affinity,
            (self.views, self.positives, self.ts, self.session_finishes, self.session_views),
        )

    def decayed(self, now: int, half_life_ms: float) -> tuple[float, float]:
        f = 0.5 ** (max(now - self.ts, 0) / half_life_ms)
        return self.views * f, self.positives * f

    def session_fade(self, now: int) -> float:
        """How much of the session evidence (as of ``ts``) is left at ``now``."""
        return float(0.5 ** (max(now - self.ts, 0) / SESSION_HALF_LIFE_MS))

    def session_lift(self, now: int, user_rate: float) -> float:
        """:func:`session_lift` of this entity's session evidence at ``now``."""
        return session_lift(
            self.session_finishes, self.session_views, self.session_fade(now), user_rate
        )

    def add(
        self, positive: bool, ts: int, half_life_ms: float, finished: bool | None = None
    ) -> None:
        """One view (``positive``: a long one); ``finished``: True for a finished view,
        False for a quick skip, None for neither (it adds no session evidence)."""
        # :meth:`decayed` inlined: several of these per view, on the learning step's path.
        if ts > self.ts:
            f = 0.5 ** ((ts - self.ts) / half_life_ms)
            self.views = self.views * f + 1.0
            self.positives = self.positives * f + (1.0 if positive else 0.0)
            if self.session_views:
                g = 0.5 ** ((ts - self.ts) / SESSION_HALF_LIFE_MS)
                self.session_finishes *= g
                self.session_views *= g
            self.ts = ts
        else:
            self.views += 1.0
            self.positives += 1.0 if positive else 0.0
        if finished is not None:
            self.session_views += 1.0
            self.session_finishes += 1.0 if finished else 0.0


def session_lift(finishes: float, views: float, fade: float, user_rate: float) -> float:
    """Log-odds lift of an entity's session finish rate (``finishes`` of ``views``, each
    times ``fade``) over the person's ``user_rate``, shrunk by :data:`SESSION_PRIOR`
    pseudo-views and capped at :data:`SESSION_CAP`: 0 when nothing is known."""
    if not views:
        return 0.0
    p = (finishes * fade + SESSION_PRIOR * user_rate) / (views * fade + SESSION_PRIOR)
    return min(max(_logit(p) - _logit(user_rate), -SESSION_CAP), SESSION_CAP)


@dataclass(slots=True)
class UserState:
    history: deque[int]  # rows of recent views, oldest first
    served: deque[int]  # rows recently served, oldest first
    history_ts: deque[int] = field(default_factory=deque)  # Unix ms of each ``history`` view
    served_set: dict[int, int] = field(default_factory=dict)  # row -> times in ``served``
    viewed: set[int] = field(default_factory=set)
    recent_positives: deque[int] = field(default_factory=lambda: deque(maxlen=50))
    follows: set[str] = field(default_factory=set)
    not_interested_videos: set[int] = field(default_factory=set)
    muted_creators_until: dict[str, int] = field(default_factory=dict)  # by not_interested
    muted_sounds_until: dict[str, int] = field(default_factory=dict)
    creators: dict[str, Affinity] = field(default_factory=dict)
    sounds: dict[str, Affinity] = field(default_factory=dict)
    hashtags: dict[str, Affinity] = field(default_factory=dict)
    views: float = 0.0
    label_counts: list[float] = field(default_factory=list)
    region: str | None = None
    first_seen: int | None = None  # Unix ms of the user's first event
    last_surface: str = DEFAULT_SURFACE  # where in the app their last view was
    # The session's finished views and quick skips over everything, as of ``session_ts``
    # (fading as each affinity's do): the rate each entity's session evidence is against.
    session_finishes: float = 0.0
    session_views: float = 0.0
    session_ts: int = 0
    # The profile's attributes (what the app told of the user, kept by a refresh), coded
    # by LogState.user_attributes: read them through LogState.user_attribute.
    attributes: AttributeCodes = ()

    def add_session_view(self, finished: bool, ts: int) -> None:
        if ts > self.session_ts:
            g = 0.5 ** ((ts - self.session_ts) / SESSION_HALF_LIFE_MS)
            self.session_finishes *= g
            self.session_views *= g
            self.session_ts = ts
        self.session_views += 1.0
        self.session_finishes += 1.0 if finished else 0.0

    def session_rate(self, now: int) -> float:
        """The person's finish rate over the session's finished views and skips at
        ``now`` (half a pseudo-view each way: a half when nothing is known)."""
        g: float = 0.5 ** (max(now - self.session_ts, 0) / SESSION_HALF_LIFE_MS)
        return (self.session_finishes * g + 0.5) / (self.session_views * g + 1.0)

    def standout_hashtags(self, now: int, min_lift: float = 1.0) -> list[str]:
        """The hashtags finished this session (half a finish left, at least) whose
        session lift is at least ``min_lift``, the highest first: what the person is
        watching to the end right now."""
        rate = self.session_rate(now)
        # A fade is at most 1, so fewer than half a finish before it fails without
        # computing it: most of a person's hashtags have no finish this session.
        lifted = [
            (lift, tag)
            for tag, a in self.hashtags.items()
            if a.session_finishes >= 0.5
            and a.session_finishes * a.session_fade(now) >= 0.5
            and (lift := a.session_lift(now, rate)) >= min_lift
        ]
        return [tag for _, tag in sorted(lifted, reverse=True)]

    def forget_served(self, rows: list[int]) -> None:
        """Take the last time each of ``rows`` was served out of the served memory (cards
        a client never showed: they may be served again)."""
        drop: dict[int, int] = {}
        for row in rows:
            drop[row] = drop.get(row, 0) + 1
        kept: deque[int] = deque()
        for row in reversed(self.served):
            if drop.get(row, 0) > 0:
                drop[row] -= 1
                n = self.served_set[row] - 1
                if n:
                    self.served_set[row] = n
                else:
                    del self.served_set[row]
            else:
                kept.appendleft(row)
        self.served = kept

    def remember_served(self, rows: list[int], capacity: int) -> None:
        for row in rows:
            self.served.append(row)
            self.served_set[row] = self.served_set.get(row, 0) + 1
        while len(self.served) > capacity:
            old = self.served.popleft()
            n = self.served_set[old] - 1
            if n:
                self.served_set[old] = n
            else:
                del self.served_set[old]


def new_user(history_size: int, n_labels: int) -> UserState:
    return UserState(
        history=deque(maxlen=history_size),
        served=deque(),
        history_ts=deque(maxlen=history_size),
        label_counts=[0.0] * n_labels,
    )


def forget_personalisation(user: UserState, n_labels: int) -> None:
    """On "refresh", drop what was learned of the user's tastes — history, affinities,
    engagement rates, the positives that seed co-engagement — keeping what they told us
    (follows, "not interested" and its suppressions) and what they have seen (so the
    fresh feed does not repeat it)."""
    user.history.clear()
    user.history_ts.clear()
    user.recent_positives.clear()
    user.creators.clear()
    user.sounds.clear()
    user.hashtags.clear()
    user.views = 0.0
    user.label_counts = [0.0] * n_labels
    user.session_finishes = user.session_views = 0.0


# Pseudo-views that shrink a user's rate on one creator / sound / hashtag to their
# overall rate: one long view of a creator is a hint, not a verdict.
AFFINITY_PRIOR = 3.0


def affinity_lift(
    aff: Affinity | None,
    base_rate: float,
    now: int,
    half_life_ms: float,
    prior: float = AFFINITY_PRIOR,
    session_rate: float = 0.5,
) -> float:
    """Log-odds lift of this user's positive rate on one entity over their overall rate,
    shrunk by ``prior`` pseudo-views, plus :func:`session_lift` of the session's dwell
    evidence on it against their ``session_rate``: 0 when nothing is known."""
    if aff is None:
        return 0.0
    views, positives = aff.decayed(now, half_life_ms)
    p = (positives + prior * base_rate) / (views + prior)
    return _logit(p) - _logit(base_rate) + aff.session_lift(now, session_rate)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))
