"""The counts a slice of the fold adds and reads, done at once: the same numbers as one
event at a time."""

from __future__ import annotations

import pickle
import random

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.state.feedback import LABELS
from fyp.state.group_rates import GroupRates
from fyp.state.updater import LogState
from fyp.types import DEFAULT_SURFACE, Event, EventType, LoggedEvent, Video

T0 = 1_750_000_000_000
_TYPES = [EventType.VIEW] * 6 + [EventType.LIKE, EventType.SHARE, EventType.REPORT]


def _catalog(rng: random.Random) -> CatalogIndex:
    catalog = CatalogIndex()
    videos = []
    for i in range(40):
        # Repeated hashtags, none, more than ranking reads; creators with one video or many.
        tags = tuple(f"#{rng.randrange(30)}" for _ in range(rng.choice([0, 1, 2, 5, 9])))
        creator = f"c{rng.randrange(12)}" if i % 7 else ""
        videos.append(Video(f"v{i}", creator, rng.choice([0, 8_000, 30_000]), hashtags=tags))
    catalog.upsert(videos)
    return catalog


def _log(rng: random.Random, n: int) -> list[LoggedEvent]:
    events, ts = [], T0
    for offset in range(1, n + 1):
        ts += rng.choice([0, 1_000, 20_000, 400_000])  # some past the label window
        type_ = rng.choice(_TYPES)
        watch = rng.choice([500, 10_000, 40_000]) if type_ is EventType.VIEW else None
        user, video = f"u{rng.randrange(8)}", f"v{rng.randrange(42)}"  # two not in it
        events.append(LoggedEvent(offset, Event(f"e{offset}", user, video, type_, ts, watch)))
    return events


def _fold(catalog: CatalogIndex, events: list[LoggedEvent], cut: list[int]) -> LogState:
    state = LogState(load_settings(environ={}), catalog)
    state.micro_batch = 8
    learned: list[npt.NDArray[np.float64]] = []
    learn = state.ranker.learn

    def recording(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> None:
        learned.append(x.copy())
        learn(x, y)

    state.ranker.learn = recording  # type: ignore[method-assign]
    state.learned = learned  # type: ignore[attr-defined]
    start = 0
    for size in cut:
        state.apply(events[start : start + size])
        start += size
    return state


def test_a_slice_folds_to_the_same_counts_features_and_weights_as_one_event_at_a_time() -> None:
    rng = random.Random(7)
    catalog = _catalog(rng)
    events = _log(rng, 600)
    one_by_one = _fold(catalog, events, [1] * len(events))
    sliced = _fold(catalog, events, [256, 3, 200, 141])
    a, b = one_by_one, sliced
    assert np.array_equal(a.stats.views, b.stats.views)
    assert np.array_equal(a.stats.label_counts, b.stats.label_counts)
    # The tables grew to the same sizes, not only to the same counts.
    assert np.array_equal(a.groups.creators.counts, b.groups.creators.counts)
    assert np.array_equal(a.groups.hashtags.counts, b.groups.hashtags.counts)
    learned_a, learned_b = a.learned, b.learned  # type: ignore[attr-defined]
    assert len(learned_a) == len(learned_b) > 10
    for x, y in zip(learned_a, learned_b, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.ranker.weights, b.ranker.weights)
    assert a.stats.views.sum() > 100 and a.groups.hashtags.counts.sum() > 100


def test_a_pending_examples_counts_are_read_as_they_were_when_it_opened() -> None:
    catalog = CatalogIndex()
    catalog.upsert([Video("a0", "a", 20_000, hashtags=("#x",)), Video("a1", "a", 20_000)])
    state = LogState(load_settings(environ={}), catalog)
    views = [
        LoggedEvent(i + 1, Event(f"e{i}", f"u{i}", "a0", EventType.VIEW, T0 + i, 20_000))
        for i in range(3)
    ]
    state.apply(views)
    # Each user's example of a0 is open still; the third one opened after two views.
    third = state._pending["u2"]
    assert third.video_views == 2.0 and third.inputs.video_views == 2.0
    # Its features read the video's, creator a's and #x's counts after two views: as
    # computed from counts copied then, one event at a time.
    reference = LogState(load_settings(environ={}), catalog)
    reference.apply(views[:2])
    row = catalog.row_of["a0"]
    then = reference.ranker.example_inputs(reference.user("u2"), row, T0 + 2)
    assert then.creator_counts[len(LABELS)] == 2.0 and then.tag_counts[0, len(LABELS)] == 2.0
    assert third.features is not None
    assert np.array_equal(third.features, reference.ranker.example_batch_features([then])[0])
    assert state.stats.views[row] == 3.0


def test_add_many_counts_and_grows_as_adding_one_at_a_time() -> None:
    rng = random.Random(3)
    catalog = CatalogIndex()
    # One creator and one hashtag per video: codes in row order.
    catalog.upsert([Video(f"v{i}", f"c{i}", 1, hashtags=(f"#{i}", f"#{i}")) for i in range(2500)])
    one, many = GroupRates(catalog), GroupRates(catalog)
    # A table grown for one high code, then for a higher one: its size depends on both.
    rows = np.array([1500, 2100, *(rng.randrange(2500) for _ in range(300))], dtype=np.int64)
    delta = np.zeros((len(rows), len(LABELS) + 1))
    for i, row in enumerate(rows.tolist()):
        columns = sorted(rng.sample(range(len(LABELS) + 1), rng.randrange(1, 4)))
        delta[i, columns] = 1.0
        one.add(row, [c for c in columns if c < len(LABELS)], view=len(LABELS) in columns)
    many.add_many(rows, delta)
    assert one.creators.counts.shape == many.creators.counts.shape
    assert np.array_equal(one.creators.counts, many.creators.counts)
    assert np.array_equal(one.hashtags.counts, many.hashtags.counts)


def test_a_state_checkpointed_before_slice_counts_existed_loads_and_folds() -> None:
    rng = random.Random(11)
    catalog = _catalog(rng)
    events = _log(rng, 120)
    state = LogState(load_settings(environ={}), catalog)
    state.micro_batch = 8  # as _fold's
    state.apply(events[:60])
    del state.__dict__["_counts_due"]  # as the code before pickled it
    restored: LogState = pickle.loads(pickle.dumps(state))
    restored.apply(events[60:])
    reference = _fold(catalog, events, [60, 60])
    assert np.array_equal(restored.stats.views, reference.stats.views)
    assert np.array_equal(restored.ranker.weights, reference.ranker.weights)


def test_an_erased_users_example_is_not_kept_by_an_apply_that_raised_midway() -> None:
    """Regression: an apply that raised after a view of the user opened an example and
    before the slice's counts were answered left that example among the reads due;
    erase_user did not drop it, so a checkpoint written before the next apply pickled
    the erased user's example (their id, their video, their features)."""
    catalog = _catalog(random.Random(3))
    state = LogState(load_settings(environ={}), catalog)
    gone = "user-to-erase"
    events = [
        LoggedEvent(1, Event("e1", gone, "v1", EventType.VIEW, T0, 10_000)),
        LoggedEvent(2, Event("e2", "kept", "v2", EventType.VIEW, T0 + 1, 10_000)),
        LoggedEvent(3, Event("e3", "kept", "v3", EventType.LIKE, T0 + 2)),
    ]

    def fails(*args: object) -> None:
        raise RuntimeError("a fault midway through the slice")

    state._apply_action = fails  # type: ignore[method-assign]
    try:
        state.apply(events)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the apply was to raise")
    del state._apply_action  # (the class's again)
    state.erase_user(gone)
    assert gone.encode() not in pickle.dumps(state)
    state.apply([LoggedEvent(4, Event("e4", "kept", "v4", EventType.VIEW, T0 + 3, 10_000))])
    assert "kept" in state.users and gone not in state.users


def _everything(state: LogState, told: list[object]) -> list[object]:
    """What a fold leaves that a cut could change: the counts, the users, trending,
    co-engagement, the surfaces, the weights, and what the listeners were told."""
    users = sorted(
        (
            u,
            list(s.history),
            s.views,
            list(s.label_counts),
            list(s.recent_positives),
            sorted((k, a.views, a.positives, a.ts, a.session_views) for k, a in s.creators.items()),
            sorted((k, a.views, a.positives, a.ts) for k, a in s.hashtags.items()),
        )
        for u, s in state.users.items()
    )
    trending = sorted((r, a.tolist()) for r, a in state.trending.scores.items())
    return [
        state.stats.views.tolist(),
        state.stats.label_counts.tolist(),
        state.groups.creators.counts.tolist(),
        state.groups.hashtags.counts.tolist(),
        users,
        trending,
        sorted((k, sorted(v.items())) for k, v in state.coengagement._co.items()),
        sorted((s, c.tolist()) for s, c in state.surfaces.label_counts.items()),
        state.ranker.weights.tolist(),
        state.late_corrections,
        told,
    ]


def test_random_cuts_fold_to_the_state_and_the_examples_of_one_event_at_a_time() -> None:
    """The slice's counts answered at once must give every example the counts of its
    own moment: an example read after an addition of a later event (a batch-order bug)
    changes its features, which the listeners' copy shows, whatever else hides it."""
    rng = random.Random(23)
    catalog = _catalog(rng)
    events = _log(rng, 500)

    def fold(cut: list[int]) -> list[object]:
        told: list[object] = []
        state = LogState(load_settings(environ={}), catalog)
        state.micro_batch = 8
        state.example_listeners.append(
            lambda batch: told.extend(
                (e.user_id, e.row, e.labels.tolist(), e.video_views, e.late, e.features.tolist())
                for e in batch
                if e.features is not None
            )
        )
        start = 0
        for size in cut:
            state.apply(events[start : start + size])
            start += size
        assert len(told) > 50
        return _everything(state, told)

    reference = fold([1] * len(events))
    for _ in range(3):
        cut, left = [], len(events)
        while left:
            cut.append(min(left, rng.choice([1, 2, 7, 40, 130, 300])))
            left -= cut[-1]
        assert fold(cut) == reference
    assert fold([len(events)]) == reference


def test_each_example_reads_the_counts_copied_when_it_opened() -> None:
    """Against counts copied event by event (the code before the slices): a read that
    saw an addition made after it (its own view's, say) is caught here, where a
    comparison of cuts with each other is not (every cut answers reads the same way)."""
    rng = random.Random(5)
    catalog = _catalog(rng)
    events = _log(rng, 400)
    state = LogState(load_settings(environ={}), catalog)
    state.stats.ensure(len(catalog))  # (what apply does first)
    checked = 0
    for logged in events:
        e = logged.event
        row = catalog.row_of.get(e.video_id)
        before = state._pending.get(e.user_id)
        then = None
        if row is not None and (before is None or before.row != row):
            user = state.user(e.user_id)
            then = state.ranker.example_inputs(user, row, e.ts, e.surface or DEFAULT_SURFACE)
        state.apply([logged])
        opened = state._pending.get(e.user_id)
        if then is not None and opened is not None and opened is not before:
            assert opened.features is not None
            expected = state.ranker.example_batch_features([then])[0]
            assert np.array_equal(opened.features, expected)
            checked += 1
    assert checked > 100
