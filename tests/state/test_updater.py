"""The learning step: events applied in log order to statistics, user state, trending,
co-engagement, and the ranker's training examples."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.rank.first_ranker import FEATURES
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import LogState
from fyp.types import Event, EventType, LoggedEvent, Video

T0 = 1_750_000_000_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
DURATION_MS = 20_000
VIDEO_RATE = FEATURES.index("video_rate")
LV, LIKE, SKIP, FINISH = (LABEL_INDEX[k] for k in ("long_view", "like", "skip", "finish"))


@dataclass
class Harness:
    """A LogState over six videos (creators a and b, sounds per video), fed LoggedEvents
    with consecutive offsets; every micro-batch the ranker learns from is kept."""

    state: LogState
    learned: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = field(
        default_factory=list
    )
    _offsets: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def row(self, video_id: str) -> int:
        return self.state.catalog.row_of[video_id]

    def apply(self, *events: Event) -> None:
        self.state.apply([LoggedEvent(next(self._offsets), e) for e in events])

    def examples(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Every example learned so far: features (n, L, F), labels (n, L)."""
        return (
            np.concatenate([x for x, _ in self.learned]),
            np.concatenate([y for _, y in self.learned]),
        )


_ids = itertools.count()


def view(user: str, video: str, ts: int, watch_ms: int = DURATION_MS) -> Event:
    return Event(f"e{next(_ids)}", user, video, EventType.VIEW, ts, watch_ms)


def act(user: str, video: str, type: EventType, ts: int) -> Event:
    return Event(f"e{next(_ids)}", user, video, type, ts)


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Harness:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video(f"{c}{i}", c, DURATION_MS, sound_id=f"snd-{c}{i}", hashtags=(f"#{c}",))
            for c in "ab"
            for i in range(3)
        ]
    )
    state = LogState(load_settings(environ={}), catalog)
    state.micro_batch = 1  # learn from each example as soon as it closes, to inspect it
    harness = Harness(state)
    learn = state.ranker.learn

    def recording_learn(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> None:
        harness.learned.append((x.copy(), y.copy()))
        learn(x, y)

    monkeypatch.setattr(state.ranker, "learn", recording_learn)
    return harness


def test_a_view_counts_towards_the_video_the_user_and_the_global_totals(h: Harness) -> None:
    h.apply(view("u1", "a0", T0), view("u1", "a1", T0 + 1, watch_ms=500))
    a0, a1 = h.row("a0"), h.row("a1")
    stats, user = h.state.stats, h.state.users["u1"]
    assert stats.views[a0] == stats.views[a1] == 1
    assert stats.total_views == 2
    assert stats.label_counts[a0, LV] == stats.label_counts[a0, FINISH] == 1
    assert stats.label_counts[a1, SKIP] == 1 and stats.label_counts[a1, LV] == 0
    assert user.views == 2
    assert user.label_counts[LV] == 1 and user.label_counts[SKIP] == 1
    assert list(user.history) == [a0, a1]
    assert user.viewed == {a0, a1}
    assert h.state.applied_offset == 2


def test_an_example_never_sees_its_own_outcome(h: Harness) -> None:
    # The very first view of a0 is a long view; the example it makes must have been
    # featurised before that view was counted: a0's rate was still the global prior.
    h.apply(view("u1", "a0", T0), view("u1", "a1", T0 + 1))
    x, y = h.examples()
    assert len(x) == 1  # the a0 example, closed by the next view
    assert y[0, LV] == 1
    assert x[0, :, VIDEO_RATE] == pytest.approx(np.zeros(x.shape[1]), abs=1e-9)
    # ... whereas a later viewer of a0 is featurised with u1's long view counted.
    h.apply(view("u2", "a0", T0 + 2), view("u2", "a2", T0 + 3))
    x, _ = h.examples()
    assert x[1, LV, VIDEO_RATE] > 0.01


def test_a_like_after_the_view_sets_the_like_label_of_that_views_example(h: Harness) -> None:
    h.apply(
        view("u1", "a0", T0),
        act("u1", "a0", EventType.LIKE, T0 + 1),
        view("u1", "b0", T0 + 2),
    )
    h.state.flush_all()
    _, y = h.examples()
    assert y[:, LIKE].tolist() == [1.0, 0.0]  # a0 liked, b0 not


def test_the_label_join_holds_across_micro_batches(h: Harness) -> None:
    h.apply(view("u1", "a0", T0))
    h.apply(act("u1", "a0", EventType.SHARE, T0 + MINUTE_MS))
    h.apply(view("u1", "a1", T0 + 2 * MINUTE_MS))
    _, y = h.examples()
    assert y[0, LABEL_INDEX["share"]] == 1


def test_an_action_on_another_video_does_not_label_the_pending_example(h: Harness) -> None:
    h.apply(view("u1", "a0", T0), act("u1", "b2", EventType.LIKE, T0 + 1))
    h.state.flush_all()
    _, y = h.examples()
    assert y[0, LIKE] == 0
    assert h.state.stats.label_counts[h.row("b2"), LIKE] == 1  # still counted for b2


def test_the_same_action_twice_on_one_view_counts_once(h: Harness) -> None:
    h.apply(
        view("u1", "a0", T0),
        act("u1", "a0", EventType.LIKE, T0 + 1),
        act("u1", "a0", EventType.LIKE, T0 + 2),
    )
    assert h.state.stats.label_counts[h.row("a0"), LIKE] == 1
    assert h.state.users["u1"].label_counts[LIKE] == 1


def test_a_rewatch_continues_the_same_example(h: Harness) -> None:
    h.apply(view("u1", "a0", T0, watch_ms=500), view("u1", "a0", T0 + 1))
    h.state.flush_all()
    x, y = h.examples()
    assert len(x) == 1
    assert y[0, SKIP] == 1 and y[0, LV] == 1
    assert h.state.stats.views[h.row("a0")] == 2


def test_a_pending_example_closes_after_the_label_window(h: Harness) -> None:
    h.apply(view("u1", "a0", T0))
    h.apply(view("u2", "b0", T0 + 5 * MINUTE_MS))
    assert h.state.ranker.examples_seen == 0  # still waiting for u1's like or share
    h.apply(view("u2", "b0", T0 + 11 * MINUTE_MS))
    assert h.state.ranker.examples_seen == 1  # u1's; u2's rewatch is still open
    h.state.flush_all()
    assert h.state.ranker.examples_seen == 2


def test_the_label_window_holds_an_example_open_up_to_its_last_millisecond(
    h: Harness,
) -> None:
    """A like exactly ``label_window_ms`` after the view still joins the open example (no
    late correction); one millisecond later the example has closed, and it is one."""
    window = h.state.label_window_ms
    h.apply(view("u1", "a0", T0))
    h.apply(act("u1", "a0", EventType.LIKE, T0 + window))
    assert h.state.ranker.examples_seen == 0 and h.state.late_corrections == 0
    h.state.flush_all()
    _, y = h.examples()
    assert y[:, LIKE].tolist() == [1.0]
    h.apply(view("u2", "b0", T0 + 2 * window))
    h.apply(act("u2", "b0", EventType.LIKE, T0 + 3 * window + 1))
    _, y = h.examples()
    assert y[:, LIKE].tolist() == [1.0, 0.0, 1.0]  # b0 closed unliked, then its correction
    assert h.state.late_corrections == 1


def test_long_views_and_likes_feed_trending_and_co_engagement(h: Harness) -> None:
    h.apply(
        view("u1", "a0", T0),
        act("u1", "b0", EventType.LIKE, T0 + 1),
        view("u1", "a1", T0 + 2, watch_ms=500),  # a skip: no positive
    )
    a0, b0, a1 = h.row("a0"), h.row("b0"), h.row("a1")
    user = h.state.users["u1"]
    assert list(user.recent_positives) == [a0, b0]
    assert set(h.state.trending.top("local", 10)) == {a0, b0}
    assert h.state.trending.top("local", 10)[0] == b0  # a like weighs more than a long view
    assert [r for r, _ in h.state.coengagement.neighbours(a0)] == [b0]
    assert h.state.coengagement.neighbours(a1) == []


def test_views_teach_creator_sound_and_hashtag_affinities(h: Harness) -> None:
    h.apply(view("u1", "a0", T0), view("u1", "b0", T0 + 1, watch_ms=100))
    user = h.state.users["u1"]
    assert (user.creators["a"].views, user.creators["a"].positives) == (1.0, 1.0)
    assert (user.creators["b"].views, user.creators["b"].positives) == (1.0, 0.0)
    assert user.sounds["snd-a0"].positives == 1.0
    assert user.hashtags["#b"].positives == 0.0


def test_follow_adds_the_creator_to_the_users_follows(h: Harness) -> None:
    h.apply(act("u1", "b1", EventType.FOLLOW, T0))
    assert h.state.users["u1"].follows == {"b"}
    # No view of b yet: nothing to make positive (an affinity stays a rate).
    assert h.state.users["u1"].creators["b"].positives == 0.0
    h.apply(view("u1", "b2", T0 + 1, watch_ms=500), act("u1", "b2", EventType.FOLLOW, T0 + 2))
    assert h.state.users["u1"].creators["b"].positives == 1.0


def test_many_actions_after_one_view_make_one_positive_not_five(h: Harness) -> None:
    """Regression: like + share + comment + follow after one view once gave the creator
    5 positives out of 1 view, saturating the creator feature at the logit clamp."""
    h.apply(
        view("u1", "a0", T0, watch_ms=500),
        *(
            act("u1", "a0", t, T0 + i + 1)
            for i, t in enumerate(
                [EventType.LIKE, EventType.SHARE, EventType.COMMENT, EventType.FOLLOW]
            )
        ),
    )
    aff = h.state.users["u1"].creators["a"]
    assert aff.views == 1.0 and aff.positives == 1.0


def test_a_like_sent_before_its_view_joins_the_example_and_never_leaks_into_it(
    h: Harness,
) -> None:
    """Regression: an app sends the like during playback and the view (with watch_ms)
    when the user swipes on. The like used to update the statistics first, so the view's
    features already contained it, and its example lost the like label."""
    h.apply(act("u1", "a0", EventType.LIKE, T0), view("u1", "a0", T0 + 5, watch_ms=20_000))
    h.state.flush_all()
    x, y = h.examples()
    assert len(x) == 1
    assert y[0, LIKE] == 1 and y[0, LV] == 1
    # Nothing had happened before the like: had the like been counted first, the
    # video's like rate and the user's lift would already show it.
    assert np.allclose(x[0][:, VIDEO_RATE], 0.0)
    assert np.allclose(x[0][:, FEATURES.index("user_lift")], 0.0)


def test_an_event_from_the_future_does_not_hold_other_users_examples_open(h: Harness) -> None:
    """Regression: examples closed in insertion order, so one view stamped 23 h ahead
    kept every later example open past its label window."""
    h.apply(view("u1", "a0", T0 + 23 * 60 * MINUTE_MS))
    h.apply(view("u2", "b0", T0))
    h.apply(view("u3", "b1", T0 + 11 * MINUTE_MS))  # u2's window (10 min) has passed
    assert h.state.ranker.examples_seen == 1


def test_not_interested_mutes_the_video_creator_and_sound_for_the_configured_time(
    h: Harness,
) -> None:
    h.apply(view("u1", "a0", T0, watch_ms=500), act("u1", "a0", EventType.NOT_INTERESTED, T0 + 1))
    user = h.state.users["u1"]
    until = T0 + 1 + 30 * DAY_MS
    assert user.not_interested_videos == {h.row("a0")}
    assert user.muted_creators_until == {"a": until}
    assert user.muted_sounds_until == {"snd-a0": until}
    assert user.creators["a"].positives == 0
    assert user.creators["a"].views == pytest.approx(3)  # the view and two "less like this"
    assert h.state.trending.top("local", 5) == []


def test_a_report_changes_no_statistic(h: Harness) -> None:
    h.apply(act("u1", "a0", EventType.REPORT, T0))
    assert h.state.stats.total_labels.sum() == 0
    assert h.state.stats.total_views == 0
    assert h.state.applied_offset == 1


def test_an_event_whose_video_is_not_in_the_catalog_is_skipped_and_counted(h: Harness) -> None:
    h.apply(view("u1", "gone", T0), view("u1", "a0", T0 + 1))
    assert h.state.skipped_events == 1
    assert h.state.applied_offset == 2
    assert h.state.stats.total_views == 1


def test_record_served_counts_exposures_and_fills_served_memory(h: Harness) -> None:
    a0, b0 = h.row("a0"), h.row("b0")
    h.state.record_served("u1", [a0, b0])
    h.state.record_served("u2", [a0])
    assert h.state.stats.exposures[a0] == 2
    assert h.state.stats.exposures[b0] == 1
    assert set(h.state.users["u1"].served_set) == {a0, b0}


def test_a_user_takes_the_deployment_region_until_told_otherwise(h: Harness) -> None:
    user = h.state.user("u1")
    assert h.state.region_of(user) == "local"
    user.region = "br"
    assert h.state.region_of(user) == "br"


def test_a_late_like_corrects_the_closed_example_once(h: Harness) -> None:
    """The user swipes on (the example closes as a long view without a like), then likes
    the first video two minutes later: a corrected copy is learned with the like; a second
    like adds nothing; a like after the late window is no correction."""
    h.apply(view("u", "a0", T0), view("u", "b0", T0 + MINUTE_MS))
    _, labels = h.examples()
    assert len(labels) == 1 and labels[0, LIKE] == 0 and labels[0, LV] == 1
    h.apply(act("u", "a0", EventType.LIKE, T0 + 2 * MINUTE_MS))
    _, labels = h.examples()
    assert len(labels) == 2 and labels[1, LIKE] == 1 and labels[1, LV] == 1
    assert h.state.late_corrections == 1
    assert h.state.stats.label_counts[h.row("a0"), LIKE] == 1  # statistics count it once
    h.apply(act("u", "a0", EventType.LIKE, T0 + 3 * MINUTE_MS))
    assert len(h.examples()[1]) == 2 and h.state.late_corrections == 1
    # The user's current video is not "late": a like on b0 joins its open example.
    h.apply(act("u", "b0", EventType.LIKE, T0 + 3 * MINUTE_MS))
    assert h.state.late_corrections == 1
    # Far later: not a correction of an example of another day.
    h.apply(view("u", "a1", T0 + 4 * MINUTE_MS), view("u", "a2", T0 + 5 * MINUTE_MS))
    h.apply(act("u", "a1", EventType.SHARE, T0 + 2 * DAY_MS))
    assert h.state.late_corrections == 1


def test_a_late_like_leaves_the_example_waiting_for_its_micro_batch_as_it_closed(
    h: Harness,
) -> None:
    """A late like whose example still waits in the queue for its micro-batch: that
    example is learned as it closed (no like), then the corrected copy, as when it had
    been learned already, so what is learned does not depend on how the log is cut into
    calls of ``apply`` (a replay learns what the live engine learned).

    Mutation it catches: the correction setting the like on the closed example itself
    (it did: learned with the like when still queued, without when learned already)."""
    h.state.micro_batch = 2
    for cut in ([3], [1, 1, 1]):
        h.learned.clear()
        user = f"u{len(cut)}"
        events = [
            view(user, "a0", T0),
            view(user, "b0", T0 + MINUTE_MS),
            act(user, "a0", EventType.LIKE, T0 + 2 * MINUTE_MS),
        ]
        for n in cut:
            h.apply(*events[:n])
            del events[:n]
        _, labels = h.examples()
        assert labels[:, LIKE].tolist() == [0.0, 1.0], cut


def test_a_state_pickled_under_its_old_name_loads() -> None:
    """Regression: checkpoints written before the rename pickled the class as
    ``fyp.state.updater.FeedState``; without that name an upgraded server failed to start
    on them (pickle's AttributeError) instead of restoring them."""
    catalog = CatalogIndex()
    catalog.upsert([Video("a0", "a", DURATION_MS)])
    state = LogState(load_settings(environ={}), catalog)
    state.apply([LoggedEvent(1, view("u1", "a0", T0))])
    LogState.__qualname__ = "FeedState"  # as an older version wrote it
    try:
        old = pickle.dumps(state, protocol=5)
    finally:
        LogState.__qualname__ = "LogState"
    assert b"FeedState" in old and b"LogState" not in old
    restored = pickle.loads(old)
    assert type(restored) is LogState
    assert restored.applied_offset == 1 and set(restored.users) == {"u1"}
