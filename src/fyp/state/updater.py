"""The learning loop's step: apply logged events, in offset order, to the in-memory state.

A view becomes a training example for the ranker: its features are taken *before* the
view updates any statistic (so an example never sees its own outcome), and its labels are
completed by the user's explicit actions on the same video (like, share, follow, comment,
not interested) until the user's next view or ``label_window_ms`` later.

Everything here depends on the order of the log only, never on how it was cut into
calls of :meth:`FeedState.apply`: examples close event by event and the ranker learns in
fixed micro-batches carried across calls, so a restart that replays the log rebuilds
exactly the state the live engine had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.config import Settings
from fyp.rank.first_ranker import FirstRanker
from fyp.state.coengagement import CoEngagement
from fyp.state.feedback import ACTION_LABEL, ENGAGEMENT_WEIGHT, LABEL_INDEX, LABELS, view_labels
from fyp.state.users import Affinity, UserState, new_user
from fyp.state.videos import Trending, VideoStats
from fyp.types import EventType, LoggedEvent

_DAY_MS = 86_400_000


@dataclass(slots=True)
class _Pending:
    row: int
    ts: int
    features: npt.NDArray[np.float64]  # (L, F)
    labels: npt.NDArray[np.float64]  # (L,)


class FeedState:
    """Everything the serving loop reads, and the learning step that updates it."""

    def __init__(self, settings: Settings, catalog: CatalogIndex) -> None:
        self.settings = settings
        self.catalog = catalog
        self.stats = VideoStats()
        self.trending = Trending(settings.sources.trending_half_life_hours * 3_600_000)
        self.coengagement = CoEngagement(settings.sources.coengagement_neighbours)
        self.users: dict[str, UserState] = {}
        self.ranker = FirstRanker(settings.ranker, catalog, self.stats)
        self.applied_offset = 0
        self.skipped_events = 0  # events whose video left the catalog
        self.label_window_ms = 10 * 60_000
        self.micro_batch = 64
        self._half_life_ms = settings.ranker.affinity_half_life_days * _DAY_MS
        # user -> their last view's example, oldest view first (dict order)
        self._pending: dict[str, _Pending] = {}
        self._examples: list[_Pending] = []

    def user(self, user_id: str) -> UserState:
        u = self.users.get(user_id)
        if u is None:
            u = new_user(self.settings.feed.history_size, len(LABELS))
            self.users[user_id] = u
        return u

    def region_of(self, user: UserState) -> str:
        return user.region or self.settings.region

    # -- the learning step -------------------------------------------------------------

    def apply(self, events: Sequence[LoggedEvent]) -> None:
        """Apply events (offset order) and train the ranker on the examples they complete."""
        self.stats.ensure(len(self.catalog))
        for logged in events:
            e = logged.event
            self.applied_offset = logged.offset
            self._close_older_than(e.ts - self.label_window_ms)
            row = self.catalog.row_of.get(e.video_id)
            if row is None:
                self.skipped_events += 1
                continue
            user = self.user(e.user_id)
            if e.type is EventType.VIEW:
                self._apply_view(e.user_id, user, row, e.ts, e.watch_ms or 0)
            elif e.type in ACTION_LABEL:
                self._apply_action(e.user_id, user, row, e.ts, ACTION_LABEL[e.type])
        self._train()

    def _apply_view(self, user_id: str, user: UserState, row: int, ts: int, watch_ms: int) -> None:
        pending = self._pending.get(user_id)
        if pending is not None and pending.row != row:
            self._examples.append(self._pending.pop(user_id))
            pending = None
        long_view, finish, skip = view_labels(
            watch_ms, int(self.catalog.duration_ms[row]), self.settings.feedback
        )
        if pending is None:
            x = self.ranker.example_features(user, row, ts)
            pending = _Pending(row, ts, x, np.zeros(len(LABELS)))
            self._pending[user_id] = pending
        for name, on in (("long_view", long_view), ("finish", finish), ("skip", skip)):
            if on:
                k = LABEL_INDEX[name]
                pending.labels[k] = 1.0
                self.stats.label_counts[row, k] += 1
                self.stats.total_labels[k] += 1
                user.label_counts[k] += 1
        self.stats.views[row] += 1
        self.stats.total_views += 1
        if self.stats.total_views <= 256 or self.stats.total_views % 256 == 0:
            self.ranker.refresh_global_rates()
        user.views += 1
        user.history.append(row)
        user.viewed.add(row)
        video = self.catalog.videos[row]
        hl = self._half_life_ms
        _affinity(user.creators, video.creator_id).add(long_view, ts, hl)
        if video.sound_id:
            _affinity(user.sounds, video.sound_id).add(long_view, ts, hl)
        for tag in video.hashtags:
            _affinity(user.hashtags, tag).add(long_view, ts, hl)
        if long_view:
            self._positive(user, row, ts, ENGAGEMENT_WEIGHT["long_view"])

    def _apply_action(self, user_id: str, user: UserState, row: int, ts: int, label: str) -> None:
        k = LABEL_INDEX[label]
        pending = self._pending.get(user_id)
        if pending is not None and pending.row == row:
            if pending.labels[k]:
                return  # the same action twice on one view counts once
            pending.labels[k] = 1.0
        self.stats.label_counts[row, k] += 1
        self.stats.total_labels[k] += 1
        user.label_counts[k] += 1
        video = self.catalog.videos[row]
        if label == "not_interested":
            until = ts + int(self.settings.feed.not_interested_days * _DAY_MS)
            user.not_interested_videos.add(row)
            user.muted_creators_until[video.creator_id] = until
            if video.sound_id:
                user.muted_sounds_until[video.sound_id] = until
            # Counts as two unrewarding views of the creator: "less like this".
            for _ in range(2):
                _affinity(user.creators, video.creator_id).add(False, ts, self._half_life_ms)
            return
        if label == "follow":
            user.follows.add(video.creator_id)
        aff = _affinity(user.creators, video.creator_id)
        aff.positives += 1.0
        self._positive(user, row, ts, ENGAGEMENT_WEIGHT[label])

    def _positive(self, user: UserState, row: int, ts: int, weight: float) -> None:
        region = self.region_of(user)
        self.trending.add(region, row, weight, ts, len(self.catalog))
        if row not in user.recent_positives:
            seeds = list(user.recent_positives)[-self.settings.sources.coengagement_seeds :]
            self.coengagement.add_positive(row, seeds)
            user.recent_positives.append(row)

    def _close_older_than(self, ts: int) -> None:
        while self._pending:
            user_id, oldest = next(iter(self._pending.items()))
            if oldest.ts >= ts:
                break
            self._examples.append(self._pending.pop(user_id))

    def _train(self, everything: bool = False) -> None:
        """Learn from closed examples in micro-batches of a fixed size; the remainder
        waits for the next call (or goes now with ``everything``)."""
        size = self.micro_batch
        while len(self._examples) >= size or (everything and self._examples):
            batch, self._examples = self._examples[:size], self._examples[size:]
            self.ranker.learn(
                np.stack([p.features for p in batch]), np.stack([p.labels for p in batch])
            )

    def flush_all(self) -> None:
        """Close every pending example and learn from all of them now (end of a replay)."""
        self._examples.extend(self._pending.values())
        self._pending.clear()
        self._train(everything=True)

    # -- serving-side bookkeeping --------------------------------------------------------

    def record_served(self, user_id: str, rows: list[int]) -> None:
        self.stats.ensure(len(self.catalog))
        self.user(user_id).remember_served(rows, self.settings.feed.served_memory)
        for row in rows:
            self.stats.exposures[row] += 1


def _affinity(table: dict[str, Affinity], key: str) -> Affinity:
    a = table.get(key)
    if a is None:
        a = table[key] = Affinity()
    return a
