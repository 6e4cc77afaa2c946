"""The learning loop's step: apply logged events, in offset order, to the in-memory state.

A view becomes a training example for the ranker: its features are taken *before* the
view updates any statistic (so an example never sees its own outcome), and its labels are
completed by the user's explicit actions on the same video (like, share, follow, comment,
not interested) until the user's next view or ``label_window_ms`` later. An action that
comes later still (within ``late_window_ms``) on the video of the user's last closed
example is a late outcome: a corrected copy of that example is learned too.

Everything here depends on the order of the log only, never on how it was cut into
calls of :meth:`LogState.apply`: examples close event by event and the ranker learns in
fixed micro-batches carried across calls, so a restart that replays the log rebuilds
exactly the state the live engine had.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.config import Settings
from fyp.privacy.fraud import FraudGuard
from fyp.rank.first_ranker import ExampleInputs, FirstRanker
from fyp.safety.reports import ReportCounter
from fyp.state.attribute_codes import AttributeVocabulary
from fyp.state.coengagement import CoEngagement
from fyp.state.feedback import ACTION_LABEL, ENGAGEMENT_WEIGHT, LABEL_INDEX, LABELS, view_labels
from fyp.state.group_rates import GroupRates
from fyp.state.slice_counts import VIEW_COLUMN, SliceCounts
from fyp.state.surfaces import SurfaceStats
from fyp.state.users import Affinity, UserState, forget_personalisation, new_user
from fyp.state.videos import Trending, VideoStats
from fyp.types import DAY_MS, DEFAULT_SURFACE, Attributes, EventType, LoggedEvent


@dataclass(slots=True)
class Example:
    """One impression joined with its outcomes: the context when it opened (before the
    view or action that opened it changed anything) and the labels that followed."""

    user_id: str
    row: int
    ts: int
    seq: int  # order of opening, to tell a live heap entry from a stale one
    inputs: ExampleInputs  # what the first ranker's features read then
    labels: npt.NDArray[np.float64]  # (L,)
    surface: str
    video_views: float  # evidence then: the video's views and the user's
    user_views: float
    history: tuple[int, ...]  # the user's recent views before this one, oldest first
    viewed: bool = False  # only examples with a view are learned from
    late: bool = False  # a correction: an action that came after the example had closed
    # (L, F): the first ranker's features from ``inputs``, computed with the rest of the
    # micro-batch the example is learned in (None until then)
    features: npt.NDArray[np.float64] | None = None

    def compact(self) -> None:
        """Own copies of its arrays that are views: a slice's counts and features are
        computed for the whole slice at once (:meth:`LogState._resolve_counts`), and an
        example kept after it closed (each user's last, for late actions) would keep the
        whole slice's arrays alive with it, one slice per kept user at worst."""
        if self.features is not None and self.features.base is not None:
            self.features = self.features.copy()
        x = self.inputs
        if x.video_counts.base is not None:
            x.video_counts = x.video_counts.copy()
        if x.creator_counts.base is not None:
            x.creator_counts = x.creator_counts.copy()
        if x.tag_counts.base is not None:
            x.tag_counts = x.tag_counts.copy()


# What the learned models are told of each closed example, in log order.
ExampleListener = Callable[[Sequence[Example]], None]
# Told of each user whose personalisation is forgotten ("refresh", at that log point) or
# who is erased (the flag: then nothing of theirs may be learned first).
ForgetListener = Callable[[str, bool], None]
_HISTORY_IN_EXAMPLE = 20
_LONG_VIEW, _FINISH, _SKIP = (LABEL_INDEX[n] for n in ("long_view", "finish", "skip"))


class LogState:
    """The state the event log builds, applied in offset order (:meth:`apply`, through
    ``applied_offset``): the videos' statistics and trending, co-engagement, each user's
    state, the first ranker and the joiner of its examples, reports and the fraud guard.
    The same log gives the same state, however it was cut into calls, so a replay (or a
    checkpoint plus the rest of the log) rebuilds it, and every process that folds the log
    (a server, a learner) holds an equal one. The serving loop reads it."""

    # Users erased from this state so far: a fold that read events without the engine's
    # lock applies them only if none was erased meanwhile (Engine.apply_fold). A class
    # default, so that a state pickled before the count existed reads 0.
    erasures: int = 0

    def __init__(self, settings: Settings, catalog: CatalogIndex) -> None:
        self.settings = settings
        self.catalog = catalog
        self.stats = VideoStats()
        self.surfaces = SurfaceStats()
        self.groups = GroupRates(catalog)  # the same per creator and per hashtag
        self.trending = Trending(settings.sources.trending_half_life_hours * 3_600_000)
        # The same per surface (where in the app: a tab, a page), all regions together.
        self.surface_trending = Trending(settings.sources.trending_half_life_hours * 3_600_000)
        self.coengagement = CoEngagement(settings.sources.coengagement_neighbours)
        self.users: dict[str, UserState] = {}
        self.user_attributes = AttributeVocabulary()  # codes of the users' attributes
        self.ranker = FirstRanker(settings.ranker, catalog, self.stats, self.surfaces, self.groups)
        self.applied_offset = 0
        self.skipped_events = 0  # events of videos this catalog does not hold (a foreign log)
        self.label_window_ms = int(settings.ranker.label_window_s * 1000)
        self.micro_batch = settings.ranker.micro_batch
        self._half_life_ms = settings.ranker.affinity_half_life_days * DAY_MS
        # user -> the example of the video they are on; a heap of (ts, seq, user) finds
        # the ones whose label window has passed, whatever order timestamps come in
        self._pending: dict[str, Example] = {}
        self._by_time: list[tuple[int, int, str]] = []
        self._seq = 0
        self._examples: list[Example] = []
        # Each user's last closed (viewed) example, for actions that come after it closed
        # (a like sent minutes later): at most ``late_examples_kept``, oldest dropped.
        self._closed: OrderedDict[str, Example] = OrderedDict()
        self.late_window_ms = int(settings.ranker.late_window_s * 1000)
        self.late_corrections = 0
        # Called with each micro-batch of closed examples, after the first ranker learns
        # from it: the learned models' joiner feed (fyp.model.online).
        self.example_listeners: list[ExampleListener] = []
        self.forget_listeners: list[ForgetListener] = []
        self.reports = ReportCounter(settings.policy.reports)
        self.fraud = FraudGuard(settings.privacy.max_actions_per_minute)
        # (log offset, user): forget the user's personalisation once the log is applied
        # up to that offset ("refresh" asks at the log's end when it is asked)
        self._refresh_marks: list[tuple[int, str]] = []
        self.refreshes_done = 0
        # The videos', creators' and hashtags' counts the events of an apply add, and the
        # ones its examples read, done at once (empty between calls of apply).
        self._counts_due: SliceCounts[Example] = SliceCounts()

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "_counts_due" not in state:  # a checkpoint of the code before
            self._counts_due = SliceCounts()

    def _resolve_counts(self) -> None:
        """The counts of the examples opened since the last call, and their first-ranker
        features, for all of them at once (they depend only on the inputs taken when each
        opened; one call over a slice costs a fraction of one per micro-batch). The
        counts go into the features straight from the slice's arrays: an example keeps
        its features and its video's views, not the counts (their inputs' stay unread)."""
        opened, counts = self._counts_due.resolve(self.stats, self.groups, self.catalog)
        if counts is not None:
            x = self.ranker.example_batch_features([p.inputs for p in opened], counts)
            closed = self._closed
            views = counts.video_views.tolist()
            for p, features, video_views in zip(opened, x, views, strict=True):
                p.features = features
                p.video_views = p.inputs.video_views = video_views
                if closed.get(p.user_id) is p:  # kept: not the slice's arrays with it
                    p.compact()

    def user(self, user_id: str) -> UserState:
        u = self.users.get(user_id)
        if u is None:
            u = new_user(self.settings.feed.history_size, len(LABELS))
            self.users[user_id] = u
        return u

    def set_user_attributes(self, user_id: str, attributes: Attributes) -> None:
        """The user's profile attributes, as the models read them."""
        user = self.user(user_id)
        codes = self.user_attributes.encode(attributes)
        self.user_attributes.hold(codes)
        self.user_attributes.release(user.attributes)
        user.attributes = codes

    def user_attribute(self, user: UserState, name: str) -> int:
        """The code of ``user``'s value of attribute ``name``
        (:data:`~fyp.state.attribute_codes.NO_VALUE` where they have none)."""
        return self.user_attributes.value_code(user.attributes, name)

    def region_of(self, user: UserState) -> str:
        return user.region or self.settings.region

    def schedule_refresh(self, user_id: str, log_offset: int) -> None:
        """Forget ``user_id``'s personalisation in the learning step, once every event up
        to ``log_offset`` is applied: events the user sent before asking are forgotten,
        the ones after shape the new feed. A replay reaches the same point in the log."""
        heapq.heappush(self._refresh_marks, (log_offset, user_id))

    def refresh_due(self) -> bool:
        """Whether a refresh waits only for the learning step (no event to apply first)."""
        return bool(self._refresh_marks) and self._refresh_marks[0][0] <= self.applied_offset

    def _forget(self, user_id: str) -> None:
        """Refresh: the user's personalisation, and the examples of their old tastes not
        yet learned from, go. Full micro-batches are learned first, so what is dropped
        does not depend on how the log was cut."""
        user = self.users.get(user_id)
        if user is not None:
            forget_personalisation(user, len(LABELS))
        self._train()
        self._drop_examples(user_id, erase=False)
        self.refreshes_done += 1

    def _drop_examples(self, user_id: str, erase: bool) -> None:
        """The user's open, closed and queued examples, and the learned models' (the
        listeners'). The open one's heap entry goes stale: its seq no longer matches."""
        self._pending.pop(user_id, None)
        self._closed.pop(user_id, None)
        self._examples = [x for x in self._examples if x.user_id != user_id]
        for listener in self.forget_listeners:
            listener(user_id, erase)

    def erase_user(self, user_id: str) -> None:
        """Erasure: everything held of the user goes — their state, their open and queued
        examples, their reports' weight, the learned models' rows (the listeners) — as
        if they had never been here. Aggregates that are not kept per user (the view
        counts of a video, its creator and its hashtags, its co-engagement neighbours, the
        ranker's weights) stay."""
        self.erasures += 1
        self._drop_examples(user_id, erase=True)  # not trained on first: nothing is learned now
        # (reads of counts still due hold the user's examples where an apply raised
        # before answering them: a checkpoint written before the next apply would too)
        self._counts_due.drop_reads(lambda x: x.user_id != user_id)
        user = self.users.pop(user_id, None)
        if user is not None:
            self.user_attributes.release(user.attributes)
        self._by_time = [x for x in self._by_time if x[2] != user_id]
        heapq.heapify(self._by_time)
        self._refresh_marks = [x for x in self._refresh_marks if x[1] != user_id]
        heapq.heapify(self._refresh_marks)
        self.reports.forget_user(user_id)
        self.fraud.forget_user(user_id)

    def _refreshes_up_to(self, offset: int) -> None:
        marks = self._refresh_marks
        while marks and marks[0][0] <= offset:
            self._forget(heapq.heappop(marks)[1])

    # -- the learning step -------------------------------------------------------------

    def apply(self, events: Sequence[LoggedEvent], through: int | None = None) -> None:
        """Apply events (offset order) and train the ranker on the examples they complete;
        ``through``: the log offset applied up to when no event is left before it (the
        offsets of deleted events)."""
        self.stats.ensure(len(self.catalog))
        for logged in events:
            e = logged.event
            if self._refresh_marks:
                self._refreshes_up_to(logged.offset - 1)
            self.applied_offset = logged.offset
            self._close_older_than(e.ts - self.label_window_ms)
            row = self.catalog.row_of.get(e.video_id)
            if row is None:
                self.skipped_events += 1
                continue
            user = self.user(e.user_id)
            if user.first_seen is None or e.ts < user.first_seen:
                user.first_seen = e.ts
            surface = e.surface or DEFAULT_SURFACE
            if not self.fraud.admit(e.user_id, e.type, e.ts):
                continue  # logged, never trained on
            if e.type is EventType.VIEW:
                self._apply_view(e.user_id, user, row, e.ts, e.watch_ms or 0, surface)
            elif e.type in ACTION_LABEL:
                self._apply_action(e.user_id, user, row, e.ts, ACTION_LABEL[e.type], surface)
            elif e.type is EventType.REPORT:
                self._resolve_counts()  # the video's views now
                age = e.ts - user.first_seen
                self.reports.add(row, e.user_id, age, float(self.stats.views[row]))
        if through is not None and through > self.applied_offset:
            self.applied_offset = through
        if self._refresh_marks:
            self._refreshes_up_to(self.applied_offset)
        self._train()

    def _apply_view(
        self, user_id: str, user: UserState, row: int, ts: int, watch_ms: int, surface: str
    ) -> None:
        pending = self._example_for(user_id, user, row, ts, surface)
        pending.viewed = True
        long_view, finish, skip = view_labels(
            watch_ms, int(self.catalog.duration_ms[row]), self.settings.feedback
        )
        stats = self.stats
        columns: list[int] = []
        if long_view or finish or skip:
            for k, on in ((_LONG_VIEW, long_view), (_FINISH, finish), (_SKIP, skip)):
                if on:
                    columns.append(k)
                    pending.labels[k] = 1.0
                    stats.total_labels[k] += 1
                    self.surfaces.add_label(surface, k)
                    user.label_counts[k] += 1
        columns.append(VIEW_COLUMN)
        self._counts_due.add(row, columns)
        self.surfaces.add_view(surface)
        stats.total_views += 1
        if stats.total_views <= 256 or stats.total_views % 256 == 0:
            self.ranker.refresh_global_rates()
        user.views += 1
        user.history.append(row)
        user.history_ts.append(ts)
        user.viewed.add(row)
        video = self.catalog.videos[row]
        hl = self._half_life_ms
        # Watch time as evidence from the first view: for what was finished, against
        # what was skipped (fading within the session: fyp.state.users).
        ev = True if finish else False if skip else None
        if ev is not None:
            user.add_session_view(ev, ts)
        _affinity(user.creators, video.creator_id).add(long_view, ts, hl, ev)
        if video.sound_id:
            _affinity(user.sounds, video.sound_id).add(long_view, ts, hl, ev)
        hashtags = user.hashtags
        for tag in video.hashtags:
            a = hashtags.get(tag)
            if a is None:
                a = hashtags[tag] = Affinity()
            a.add(long_view, ts, hl, ev)
        user.last_surface = surface
        if long_view:
            self._positive(user, row, ts, ENGAGEMENT_WEIGHT["long_view"], surface)

    def _example_for(
        self, user_id: str, user: UserState, row: int, ts: int, surface: str
    ) -> Example:
        """The open example of ``user`` on ``row``, opened now (features taken before this
        event changes anything) unless it is open already. An app sends a like during
        playback and the view (with its watch time) when the user swipes on, so either
        may come first; both land in one example."""
        pending = self._pending.get(user_id)
        if pending is not None and pending.row == row:
            return pending
        if pending is not None:
            self._close(user_id)
        self._seq += 1
        x = self.ranker.example_inputs(user, row, ts, surface, counts=False)
        history: tuple[int, ...] = ()
        if self.example_listeners:
            h = user.history
            # A long history (up to feed.history_size) is read from its end.
            history = (
                tuple(h)[-_HISTORY_IN_EXAMPLE:]
                if len(h) <= 2 * _HISTORY_IN_EXAMPLE
                else tuple(islice(reversed(h), _HISTORY_IN_EXAMPLE))[::-1]
            )
        pending = Example(
            user_id,
            row,
            ts,
            self._seq,
            x,
            np.zeros(len(LABELS)),
            surface,
            0.0,  # read with the counts
            user.views,
            history,
        )
        self._counts_due.read(row, pending)
        self._pending[user_id] = pending
        heapq.heappush(self._by_time, (ts, self._seq, user_id))
        return pending

    def _close(self, user_id: str) -> None:
        pending = self._pending.pop(user_id)
        if pending.viewed:  # an action with no view of the video is no impression outcome
            self._examples.append(pending)
            closed = self._closed
            closed[user_id] = pending
            closed.move_to_end(user_id)
            pending.compact()  # (its counts and features: views of its slice's, if resolved)
            while len(closed) > self.settings.ranker.late_examples_kept:
                closed.popitem(last=False)

    def _late(self, user_id: str, row: int, ts: int) -> Example | None:
        """The user's closed example of ``row``, if an action at ``ts`` on it is a late
        outcome of that impression (within ``late_window_ms``, and not of a video the user
        is on now)."""
        pending = self._pending.get(user_id)
        if pending is not None and pending.row == row:
            return None
        closed = self._closed.get(user_id)
        if closed is None or closed.row != row or ts - closed.ts > self.late_window_ms:
            return None
        return closed

    def _apply_action(
        self, user_id: str, user: UserState, row: int, ts: int, label: str, surface: str
    ) -> None:
        k = LABEL_INDEX[label]
        late = self._late(user_id, row, ts)
        if late is not None:
            if late.labels[k]:
                return  # the same action twice on one video counts once
            # Its example was learned, or is queued to be, as a negative for this label:
            # learn a corrected copy too (the fake negative stays; the correction
            # outweighs it as the same features come back with the positive). The copy
            # only: the example may still wait in _examples for its micro-batch, and
            # whether it does depends on how the log was cut into calls of apply, so
            # changing it would make a replay learn other labels than the live engine.
            if late.features is None:
                self._resolve_counts()  # its features (of its counts), copied with it
            labels = late.labels.copy()
            labels[k] = 1.0
            self._seq += 1
            corrected = dataclasses.replace(late, labels=labels, seq=self._seq, late=True)
            self._examples.append(corrected)
            self._closed[user_id] = corrected  # what a further late action corrects
            self.late_corrections += 1
        else:
            pending = self._example_for(user_id, user, row, ts, surface)
            if pending.labels[k]:
                return  # the same action twice on one video counts once
            pending.labels[k] = 1.0
        self._counts_due.add(row, [k])
        self.stats.total_labels[k] += 1
        self.surfaces.add_label(surface, k)
        user.label_counts[k] += 1
        video = self.catalog.videos[row]
        if label == "not_interested":
            until = ts + int(self.settings.feed.not_interested_days * DAY_MS)
            user.not_interested_videos.add(row)
            user.muted_creators_until[video.creator_id] = until
            if video.sound_id:
                user.muted_sounds_until[video.sound_id] = until
            # Counts as two unrewarding views of the creator and one of each hashtag:
            # "less like this", fading with the affinities' half-life.
            for _ in range(2):
                _affinity(user.creators, video.creator_id).add(False, ts, self._half_life_ms)
            for tag in video.hashtags:
                _affinity(user.hashtags, tag).add(False, ts, self._half_life_ms)
            return
        if label == "follow":
            user.follows.add(video.creator_id)
        # An explicit action makes the user's view of this creator a positive one: at most
        # one positive per view, so the affinity stays a rate (liking, sharing and
        # following after one view must not read as five positives out of one).
        aff = _affinity(user.creators, video.creator_id)
        aff.positives = min(aff.positives + 1.0, aff.views)
        self._positive(user, row, ts, ENGAGEMENT_WEIGHT[label], surface)

    def _positive(self, user: UserState, row: int, ts: int, weight: float, surface: str) -> None:
        region = self.region_of(user)
        self.trending.add(region, row, weight, ts, len(self.catalog))
        self.surface_trending.add(surface, row, weight, ts, len(self.catalog))
        if row not in user.recent_positives:
            n = self.settings.sources.coengagement_seeds
            seeds = list(user.recent_positives)[-n:] if n > 0 else []
            self.coengagement.add_positive(row, seeds)
            user.recent_positives.append(row)

    def _close_older_than(self, ts: int) -> None:
        heap = self._by_time
        while heap and heap[0][0] < ts:
            _, seq, user_id = heapq.heappop(heap)
            pending = self._pending.get(user_id)
            if pending is not None and pending.seq == seq:  # else closed already
                self._close(user_id)

    def _train(self, everything: bool = False) -> None:
        """Learn from closed examples in micro-batches of a fixed size; the remainder
        waits for the next call (or goes now with ``everything``)."""
        self._resolve_counts()
        size = self.micro_batch
        while len(self._examples) >= size or (everything and self._examples):
            batch, self._examples = self._examples[:size], self._examples[size:]
            features = self.batch_features(batch)
            self.ranker.learn(features, np.stack([p.labels for p in batch]))
            for listener in self.example_listeners:
                listener(batch)

    def batch_features(self, batch: Sequence[Example]) -> npt.NDArray[np.float64]:
        """(n, L, F) for a micro-batch, kept on each example (a late correction may copy
        one whose features were computed already)."""
        todo = [p for p in batch if p.features is None]
        if todo:
            x = self.ranker.example_batch_features([p.inputs for p in todo])
            for p, features in zip(todo, x, strict=True):
                p.features = features
        computed: list[npt.NDArray[np.float64]] = []
        for p in batch:
            assert p.features is not None  # every one: above, or for an earlier batch
            computed.append(p.features)
        return np.stack(computed)

    def flush_all(self) -> None:
        """Close every pending example and learn from all of them now, without waiting
        for their label windows: for a caller that must have every example learned (a
        test, a one-off fit). The engine never calls it — a live state keeps its open
        examples, so that replaying the log rebuilds exactly the same state."""
        for user_id in list(self._pending):
            self._close(user_id)
        self._by_time.clear()
        self._train(everything=True)

    # -- serving-side bookkeeping --------------------------------------------------------

    def record_served(self, user_id: str, rows: list[int]) -> None:
        self.record_served_to(self.user(user_id), rows)

    def record_served_to(self, user: UserState, rows: list[int]) -> None:
        self.stats.ensure(len(self.catalog))
        user.remember_served(rows, self.settings.feed.served_memory)
        for row in rows:
            self.stats.exposures[row] += 1

    def withdraw_served(self, user: UserState, rows: list[int]) -> None:
        """Undo :meth:`record_served_to` for ``rows`` a client never showed."""
        user.forget_served(rows)
        for row in rows:
            if self.stats.exposures[row] > 0:
                self.stats.exposures[row] -= 1


def _affinity(table: dict[str, Affinity], key: str) -> Affinity:
    a = table.get(key)
    if a is None:
        a = table[key] = Affinity()
    return a


# Checkpoints written before this class was named LogState pickled it as FeedState: the
# name still resolves, so such a checkpoint loads instead of failing the start.
FeedState = LogState
