"""Label counts per creator and per hashtag, folded from the log, read as lifts."""

from __future__ import annotations

import itertools
import pickle

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.group_rates import GroupRates, rate_lifts, smoothed_rates
from fyp.state.updater import LogState
from fyp.types import Event, EventType, LoggedEvent, Video

T0 = 1_750_000_000_000
DURATION_MS = 20_000
LV, LIKE, SKIP = (LABEL_INDEX[k] for k in ("long_view", "like", "skip"))
VIEWS = len(LABELS)
_ids = itertools.count()


def _state() -> LogState:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video("a0", "a", DURATION_MS, hashtags=("#x", "#y")),
            Video("a1", "a", DURATION_MS, hashtags=("#x", "#x")),
            Video("b0", "b", DURATION_MS),
        ]
    )
    return LogState(load_settings(environ={}), catalog)


def _apply(state: LogState, *events: tuple[str, str, EventType, int | None]) -> None:
    state.apply(
        [
            LoggedEvent(
                state.applied_offset + i + 1,
                Event(f"e{next(_ids)}", user, video, type, T0 + i, watch),
            )
            for i, (user, video, type, watch) in enumerate(events)
        ]
    )


def _counts(state: LogState, kind: str, key: str) -> list[float]:
    cat = state.catalog
    codes = cat.creators if kind == "creator" else cat.hashtags
    table = state.groups.creators if kind == "creator" else state.groups.hashtags
    return table.rows(np.array([codes.of[key]]))[0].tolist()


def test_views_and_actions_count_towards_the_videos_creator_and_each_hashtag_once() -> None:
    state = _state()
    _apply(
        state,
        ("u1", "a0", EventType.VIEW, DURATION_MS),  # a long view (and a finish)
        ("u1", "a0", EventType.LIKE, None),
        ("u2", "a1", EventType.VIEW, 500),  # a skip; #x twice on the video counts once
        ("u2", "b0", EventType.VIEW, DURATION_MS),
    )
    a = _counts(state, "creator", "a")
    assert a[VIEWS] == 2 and a[LV] == 1 and a[LIKE] == 1 and a[SKIP] == 1
    assert _counts(state, "creator", "b")[VIEWS] == 1
    x, y = _counts(state, "hashtag", "#x"), _counts(state, "hashtag", "#y")
    assert x[VIEWS] == 2 and x[LV] == 1 and x[SKIP] == 1 and x[LIKE] == 1
    assert y[VIEWS] == 1 and y[LV] == 1 and y[SKIP] == 0


def test_an_erasure_leaves_the_aggregates_as_the_videos_own_counts() -> None:
    state = _state()
    _apply(state, ("u1", "a0", EventType.VIEW, DURATION_MS))
    before = _counts(state, "creator", "a")
    state.erase_user("u1")
    assert _counts(state, "creator", "a") == before
    assert state.stats.views[state.catalog.row_of["a0"]] == 1


def test_a_creator_with_more_long_views_lifts_them_a_new_one_is_zero_and_few_views_shrink() -> None:
    g = np.full(len(LABELS), 0.3)
    g_logit = np.log(g / (1 - g))
    rows = np.zeros((4, VIEWS + 1))
    rows[0, [LV, VIEWS]] = [90, 100]  # a creator people long-view
    rows[1, [LV, VIEWS]] = [5, 100]  # one they skip
    rows[2, [LV, VIEWS]] = [2, 2]  # two long views out of two: little evidence
    lifts = rate_lifts(rows, g, g_logit, prior_strength=20.0)
    assert lifts[0, LV] > 1.0 and lifts[1, LV] < -1.0
    assert 0 < lifts[2, LV] < lifts[0, LV]
    assert lifts[3].tolist() == [0.0] * len(LABELS)


def test_lifts_of_rows_read_zero_for_unknown_codes_and_average_the_hashtags() -> None:
    catalog = CatalogIndex()
    catalog.upsert([Video("v0", "c0", DURATION_MS, hashtags=("#hot", "#cold"))])
    groups = GroupRates(catalog)
    for i in range(100):
        groups.add(0, [LV] if i % 2 == 0 else [], view=True)  # c0, #hot, #cold: 50%
    g = np.full(len(LABELS), 0.3)
    g_logit = np.log(g / (1 - g))
    # A video added since: a new creator and one new hashtag beside a known one.
    catalog.upsert([Video("v1", "c-new", DURATION_MS, hashtags=("#hot", "#new"))])
    rows = np.array([0, 1])
    creator = rate_lifts(groups.creator_counts(rows), g, g_logit, 20.0)
    hashtag = groups.hashtag_lifts(rows, g, g_logit, 20.0)
    assert creator[0, LV] > 0.5 and creator[1].tolist() == [0.0] * len(LABELS)
    assert hashtag[1, LV] == np.float64(hashtag[0, LV] / 2)  # the new one counts as 0
    past = np.array([-1, len(groups.creators.counts) + 5])  # none, and past the table
    assert groups.creators.rows(past).tolist() == [[0.0] * (VIEWS + 1)] * 2


def _reference(state: LogState, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The creators' rates and lifts and the hashtags' mean lifts of ``rows`` computed
    from the counts, each hashtag's lift added in slot order (a request's old path)."""
    g, g_logit = state.ranker._global_rates()
    m = state.settings.ranker.prior_strength
    groups = state.groups
    creator = groups.creator_counts(rows)
    hashtag = np.zeros((len(rows), len(LABELS)))
    for i, row in enumerate(rows.tolist()):
        shown = [t for t in state.catalog.tag_codes[row].tolist() if t >= 0]
        lifts = rate_lifts(groups.hashtags.rows(np.array(shown, dtype=np.int64)), g, g_logit, m)
        for k in range(len(LABELS)):
            total = 0.0
            for lift in lifts[:, k].tolist():
                total += lift
            hashtag[i, k] = total / max(len(shown), 1)
    return smoothed_rates(creator, g, m), rate_lifts(creator, g, g_logit, m), hashtag


def test_the_lift_tables_equal_the_lifts_of_the_counts_bit_for_bit_after_every_fold() -> None:
    """Read between refreshes of the global rates (the codes counted since are
    recomputed), across them (every row) and after the tables grow: always the same
    bits as computing from the counts. A writer of the counts that did not mark what it
    changed would fail here."""
    rng = np.random.default_rng(7)
    catalog = CatalogIndex()
    tags = [f"#t{k}" for k in range(12)]
    videos = [
        Video(
            f"v{i}",
            f"c{i % 9}",
            DURATION_MS,
            hashtags=tuple(rng.choice(tags, size=i % 5, replace=False).tolist()),
        )
        for i in range(60)
    ]
    catalog.upsert(videos)
    state = LogState(load_settings(environ={}), catalog)
    rows = np.arange(len(videos) + 1) % len(videos)
    g0 = state.ranker._global_rates()[0]
    for chunk in range(40):
        watches = rng.integers(100, 2 * DURATION_MS, size=37)
        _apply(
            state,
            *[
                (f"u{rng.integers(20)}", f"v{rng.integers(len(videos))}", EventType.VIEW, int(w))
                for w in watches
            ],
            (f"u{chunk}", f"v{chunk}", EventType.LIKE, None),
        )
        if chunk == 20:  # a video of a new creator and a new hashtag: the tables grow
            catalog.upsert([Video("late", "c-late", DURATION_MS, hashtags=("#late", "#t0"))])
            rows = np.append(rows, catalog.row_of["late"])
        g, g_logit = state.ranker._global_rates()
        m = state.settings.ranker.prior_strength
        rates, lifts = state.groups.creator_rates_and_lifts(rows, g, g_logit, m)
        hashtag = state.groups.hashtag_lifts(rows, g, g_logit, m)
        ref_rates, ref_lifts, ref_hashtag = _reference(state, rows)
        assert np.array_equal(rates, ref_rates) and np.array_equal(lifts, ref_lifts), chunk
        assert np.array_equal(hashtag, ref_hashtag), chunk
    assert state.groups.creators.counts[:, VIEWS].sum() == 40 * 37
    assert not np.array_equal(state.ranker._global_rates()[0], g0)  # refreshed meanwhile


def test_a_restored_state_rebuilds_its_lift_tables_from_the_counts() -> None:
    """A checkpoint holds the counts, not the tables derived from them (nor does one
    written before the tables existed): the first read after a restore builds them."""
    state = _state()
    _apply(state, ("u1", "a0", EventType.VIEW, DURATION_MS), ("u2", "a1", EventType.VIEW, 500))
    rows = np.arange(3)
    g, g_logit = state.ranker._global_rates()
    m = state.settings.ranker.prior_strength
    before = state.groups.hashtag_lifts(rows, g, g_logit, m)
    restored = pickle.loads(pickle.dumps(state))
    assert len(restored.groups.hashtag_table.lifts) == 0
    g, g_logit = restored.ranker._global_rates()
    assert np.array_equal(restored.groups.hashtag_lifts(rows, g, g_logit, m), before)
    # As pickled before the tables existed: no tables, no touched codes.
    groups = pickle.loads(pickle.dumps(state)).groups
    del groups.creator_table, groups.hashtag_table
    del groups.creators.touched, groups.hashtags.touched
    legacy = pickle.loads(pickle.dumps(groups))
    assert np.array_equal(legacy.hashtag_lifts(rows, g, g_logit, m), before)
    legacy.add(0, [LV], view=True)
    assert legacy.hashtags.touched == {0, 1}  # a0's #x and #y
