"""The first ranker: transparent features, per-label logistic heads, Σ weight × P."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import RankerConfig, load_settings
from fyp.rank.first_ranker import FEATURES, N_FEATURES
from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.updater import LogState
from fyp.state.users import new_user
from fyp.types import Video

NOW = 1_750_000_000_000
DAY_MS = 86_400_000
F = {name: i for i, name in enumerate(FEATURES)}


def small_state(**ranker: Any) -> LogState:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video("new", "c1", 10_000, "s1", ("#a",), created_at=NOW),
            Video("3-days", "c1", 10_000, "s2", (), created_at=NOW - 3 * DAY_MS),
            Video("undated", "c2", 10_000, None, ()),
        ]
    )
    settings = load_settings(overrides={"ranker": ranker} if ranker else None, environ={})
    state = LogState(settings, catalog)
    state.stats.ensure(len(catalog))  # as the engine does on every upsert
    return state


def test_an_unknown_label_in_value_weights_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="'likes'"):
        RankerConfig(value_weights={"likes": 1.0})


def test_a_new_user_on_unseen_videos_has_only_freshness_duration_and_bias() -> None:
    state = small_state()
    x = state.ranker.features(new_user(10, len(LABELS)), [0, 1, 2], NOW)
    assert x.shape == (3, len(LABELS), N_FEATURES)
    names = (
        "video_rate",
        "user_lift",
        "creator",
        "sound",
        "hashtags",
        "follows",
        "surface",
        "creator_rate",
        "hashtag_rate",
    )
    for name in names:
        assert x[:, :, F[name]] == pytest.approx(np.zeros((3, len(LABELS))), abs=1e-9), name
    assert x[:, 0, F["fresh"]] == pytest.approx([1.0, math.exp(-1.0), 0.0])
    ten_seconds = math.log1p(10.0) - math.log1p(60.0)  # log length, centred on a minute
    assert x[:, 0, F["duration"]] == pytest.approx([ten_seconds] * 3)
    assert x[:, 0, F["duration_sq"]] == pytest.approx([ten_seconds**2] * 3)
    assert (x[:, :, F["bias"]] == 1).all()


def test_an_unknown_duration_gives_no_duration_feature() -> None:
    state = small_state()
    state.catalog.duration_ms[0] = 0
    x = state.ranker.features(new_user(10, len(LABELS)), [0], NOW)
    assert x[0, :, F["duration"]].tolist() == [0.0] * len(LABELS)
    assert x[0, :, F["duration_sq"]].tolist() == [0.0] * len(LABELS)


def test_a_planted_duration_effect_is_learned_and_reaches_unseen_videos() -> None:
    """People watch one-minute videos to the end and skip five-second and ten-minute
    ones: the long-view head learns a curve over the length (a bump, not a slope), so
    among videos nobody has seen yet the one-minute one gets the highest P(long view)."""
    from fyp.types import Event, EventType, LoggedEvent

    lengths = {"short": 5_000, "minute": 60_000, "long": 600_000}
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video(f"{kind}{i}", f"c{kind}{i}", ms, None, (), created_at=NOW)
            for i in range(40)
            for kind, ms in lengths.items()
        ]
        + [
            Video(f"unseen-{kind}", "c-unseen", ms, None, (), created_at=NOW)
            for kind, ms in lengths.items()
        ]
    )
    state = LogState(load_settings(environ={}), catalog)
    state.stats.ensure(len(catalog))
    events = []
    ts = NOW
    for i in range(40):
        for kind, ms in lengths.items():
            for u in range(4):
                ts += 1_000
                watch = ms if kind == "minute" else 1_000  # a long view, or a skip
                e = Event(f"e{ts}", f"u{u}", f"{kind}{i}", EventType.VIEW, ts, watch, None, "feed")
                events.append(LoggedEvent(len(events) + 1, e))
    state.apply(events)
    state.flush_all()
    k = LABEL_INDEX["long_view"]
    w = state.ranker.weights[k]
    assert w[F["duration_sq"]] < 0  # the curve bends down on both sides of its peak
    user = new_user(10, len(LABELS))
    unseen = [catalog.row_of[f"unseen-{kind}"] for kind in lengths]
    p = dict(zip(lengths, state.ranker.score(user, unseen, ts).probabilities[:, k], strict=True))
    assert p["minute"] > p["short"] + 0.05
    assert p["minute"] > p["long"] + 0.05


def test_the_surface_feature_is_the_surfaces_lift_and_moves_predictions() -> None:
    """Views on one page end in long views, on another in skips: the same user and video
    get a higher P(long view) on the first (KuaiRand's pages differ tenfold)."""
    from fyp.types import Event, EventType, LoggedEvent

    state = small_state()
    events = []
    for i in range(300):
        surface, watch = ("tab1", 10_000) if i % 2 else ("tab0", 0)
        e = Event(f"e{i}", f"u{i % 7}", "undated", EventType.VIEW, NOW + i, watch, None, surface)
        events.append(LoggedEvent(i + 1, e))
    state.apply(events)
    user = new_user(10, len(LABELS))
    k = LABEL_INDEX["long_view"]
    on = {s: state.ranker.features(user, [0], NOW, s) for s in ("tab1", "tab0", "elsewhere")}
    assert on["tab1"][0, k, F["surface"]] == state.surfaces.lift("tab1")[k] > 0
    assert on["tab0"][0, k, F["surface"]] < 0
    assert on["elsewhere"][0, :, F["surface"]].tolist() == [0.0] * len(LABELS)
    p = {s: state.ranker.score(user, [0], NOW, s).probabilities[0, k] for s in on}
    assert p["tab1"] > p["elsewhere"] > p["tab0"]
    assert np.allclose(state.ranker.example_features(user, 0, NOW, "tab0"), on["tab0"][0])


def test_following_the_creator_sets_the_follows_feature() -> None:
    state = small_state()
    user = new_user(10, len(LABELS))
    user.follows.add("c1")
    x = state.ranker.features(user, [0, 2], NOW)
    assert x[:, 0, F["follows"]].tolist() == [1.0, 0.0]


def test_the_value_score_is_the_weighted_sum_of_the_predictions() -> None:
    state = small_state()
    user = new_user(10, len(LABELS))
    scored = state.ranker.score(user, [0, 1, 2], NOW)
    assert scored.probabilities.shape == (3, len(LABELS))
    assert ((scored.probabilities > 0) & (scored.probabilities < 1)).all()
    weights = np.zeros(len(LABELS))
    for name, w in RankerConfig().value_weights.items():
        weights[LABEL_INDEX[name]] = w
    assert scored.values == pytest.approx(scored.probabilities @ weights)


def test_by_default_a_video_watched_long_outranks_one_only_liked_more() -> None:
    # Issue 19: at a long-view weight of 1 the like term (weight 2) reordered pages
    # against long views; P(like) says little about watching long (docs/evaluation.md).
    weights = np.zeros(len(LABELS))
    for name, w in RankerConfig().value_weights.items():
        weights[LABEL_INDEX[name]] = w
    watched, liked = np.zeros(len(LABELS)), np.zeros(len(LABELS))
    watched[LABEL_INDEX["long_view"]], watched[LABEL_INDEX["like"]] = 0.45, 0.01
    liked[LABEL_INDEX["long_view"]], liked[LABEL_INDEX["like"]] = 0.30, 0.10
    assert watched @ weights > liked @ weights


def test_value_weights_come_from_config() -> None:
    state = small_state(value_weights={"like": 1.0})
    scored = state.ranker.score(new_user(10, len(LABELS)), [0, 1], NOW)
    assert scored.values == pytest.approx(scored.probabilities[:, LABEL_INDEX["like"]])


def test_learning_moves_predictions_towards_the_labels_and_lowers_the_loss() -> None:
    state = small_state()
    ranker = state.ranker
    rng = np.random.default_rng(0)
    x = np.zeros((64, len(LABELS), N_FEATURES))
    x[:, :, F["creator"]] = rng.normal(size=(64, 1))
    x[:, :, F["bias"]] = 1.0
    y = (x[:, :, F["creator"]] > 0).astype(np.float64)  # positive creator lift: positive
    before = ranker.log_loss(x, y)
    for _ in range(200):
        ranker.learn(x, y)
    assert ranker.log_loss(x, y) < before
    assert ranker.examples_seen == 64 * 200
    assert (ranker.weights[:, F["creator"]] > 0.5).all()  # started at 0.5, grew


def test_learning_from_nothing_changes_nothing() -> None:
    state = small_state()
    before = state.ranker.weights.copy()
    state.ranker.learn(np.zeros((0, len(LABELS), N_FEATURES)), np.zeros((0, len(LABELS))))
    assert (state.ranker.weights == before).all()
    assert state.ranker.examples_seen == 0


@pytest.mark.parametrize("group", ["creator", "hashtag"])
def test_a_planted_creator_or_hashtag_effect_reaches_an_unseen_video_of_it(group: str) -> None:
    """Everyone long-views the videos of half the creators (hashtags) and skips the
    others', each video seen by a few people: the long-view head learns the group's rate,
    so of two videos nobody has seen yet, the one from a long-viewed creator (with a
    long-viewed hashtag) gets the higher P(long view)."""
    from fyp.types import Event, EventType, LoggedEvent

    def video(video_id: str, g: int) -> Video:
        # The other grouping distinct per video, so only ``group`` carries the effect.
        creator = f"c{g}" if group == "creator" else f"c-{video_id}"
        tags = (f"#t{g}",) if group == "hashtag" else (f"#{video_id}",)
        return Video(video_id, creator, 20_000, None, tags, created_at=NOW)

    groups, per_group = 10, 40
    catalog = CatalogIndex()
    catalog.upsert(
        [video(f"g{g}-v{i}", g) for g in range(groups) for i in range(per_group)]
        + [video(f"g{g}-unseen", g) for g in range(2)]
    )
    state = LogState(load_settings(environ={}), catalog)
    state.stats.ensure(len(catalog))
    events = []
    ts = NOW
    for i in range(per_group):
        for g in range(groups):
            for u in range(3):
                ts += 1_000
                watch = 20_000 if g % 2 == 0 else 500  # even groups long-viewed
                e = Event(f"e{ts}", f"u{u}", f"g{g}-v{i}", EventType.VIEW, ts, watch, None, "feed")
                events.append(LoggedEvent(len(events) + 1, e))
    state.apply(events)
    state.flush_all()
    k = LABEL_INDEX["long_view"]
    assert state.ranker.weights[k, F[f"{group}_rate"]] > 0.05  # learned, the right way
    user = new_user(10, len(LABELS))
    liked, skipped = catalog.row_of["g0-unseen"], catalog.row_of["g1-unseen"]
    scored = state.ranker.score(user, [liked, skipped], ts)
    x = scored.features[:, k, F[f"{group}_rate"]]
    assert x[0] > 1.0 and x[1] < -1.0
    own = scored.features[:, k, F["video_rate"]]  # both unseen: each one's prior
    if group == "creator":  # its creator's rate
        assert own[0] > own[1] + 1.0
    else:  # the global rate
        assert own[0] == pytest.approx(own[1])
    p = scored.probabilities[:, k]
    assert p[0] > p[1] + 0.2
    assert state.ranker.explain(scored.features[0])[f"{group}_rate"] > 0


# -- known answer, through the engine ------------------------------------------------------


@pytest.fixture
def taste(kit: Any, engine: Any) -> Any:
    """User ``u`` long-views five of c0's videos and skips five of c1's."""
    events = []
    for i in range(5):
        events.append(kit.view("u", f"c0-v{i}", watch_ms=20_000))
        events.append(kit.view("u", f"c1-v{i}", watch_ms=300))
    kit.run(engine, events)
    return engine


def test_a_creator_the_user_long_views_outranks_one_they_skip(kit: Any, taste: Any) -> None:
    state = taste.state
    user = state.users[taste.pseudonym("u")]
    rows_a = [state.catalog.row_of[f"c0-v{i}"] for i in range(5, 10)]  # unseen ones
    rows_b = [state.catalog.row_of[f"c1-v{i}"] for i in range(5, 10)]
    a = state.ranker.score(user, rows_a, kit.NOW)
    b = state.ranker.score(user, rows_b, kit.NOW)
    assert a.values.min() > b.values.max()
    assert (a.features[:, 0, F["creator"]] > 0).all()
    assert (b.features[:, 0, F["creator"]] < 0).all()
    assert state.ranker.explain(a.features[0])["creator"] > 0
    assert state.ranker.explain(b.features[0])["creator"] < 0
    assert "bias" not in state.ranker.explain(a.features[0])


def test_in_the_feed_the_long_viewed_creator_comes_first_and_above_the_skipped_one(
    kit: Any, taste: Any
) -> None:
    feed = taste.feed("u", count=10, now=kit.NOW)
    by_creator: dict[str, list[tuple[int, float]]] = {}
    for item in feed.items:
        by_creator.setdefault(kit.creator_of(item.video_id), []).append((item.position, item.score))
    assert len(feed.items) == 10
    assert kit.creator_of(feed.items[0].video_id) == "c0"
    assert len(by_creator["c0"]) >= 2  # as many as the per-creator cap allows
    c1 = by_creator.get("c1", [])
    if c1:  # the skipped creator only fills in after the others, and scores below c0
        assert min(s for _, s in by_creator["c0"]) > max(s for _, s in c1)
        assert min(p for p, _ in by_creator["c0"]) < min(p for p, _ in c1)


def test_the_learning_path_computes_the_same_features_as_serving(kit: Any, taste: Any) -> None:
    """``example_features`` (one row, every view) must agree with ``features`` (a batch,
    every request), or the ranker would learn on numbers it never sees when serving."""
    state = taste.state
    ranker = state.ranker
    for user_id in (taste.pseudonym("u"), "someone-new"):
        user = state.user(user_id)
        rows = list(range(len(state.catalog)))
        batch = ranker.features(user, rows, kit.NOW)
        for r in rows:
            assert np.allclose(ranker.example_features(user, r, kit.NOW), batch[r])
    known = ranker.features(state.user(taste.pseudonym("u")), rows, kit.NOW)
    for name in ("creator", "creator_rate", "hashtag_rate"):  # the check compares something
        assert np.abs(known[:, :, F[name]]).max() > 0.1, name


def test_an_examples_inputs_keep_its_features_as_they_were_when_it_opened(
    kit: Any, taste: Any
) -> None:
    """The learning step takes each view's inputs then and computes the features a
    micro-batch later: what happens in between (more views, likes, a follow, a global
    refresh) must not reach them."""
    state = taste.state
    ranker = state.ranker
    user = state.user(taste.pseudonym("u"))
    rows = list(range(len(state.catalog)))
    pairs = [(r, "tab1" if r % 2 else "feed") for r in rows]
    before = np.stack([ranker.features(user, [r], kit.NOW, s)[0] for r, s in pairs])
    inputs = [ranker.example_inputs(user, r, kit.NOW, s) for r, s in pairs]
    events = [kit.act("u", "c1-v0", "follow")]
    for i in range(300):
        events.append(kit.view(f"w{i % 9}", f"c{i % 4}-v{i % 10}", watch_ms=20_000 * (i % 2)))
        events.append(kit.view("u", f"c{i % 3}-v{i % 10}", watch_ms=20_000 * (i % 3 == 0)))
    kit.run(taste, events)
    now = ranker.features(user, rows, kit.NOW)
    assert not np.allclose(now, before)
    assert now[:, 0, F["follows"]].max() == 1.0 and before[:, 0, F["follows"]].max() == 0.0
    np.testing.assert_allclose(ranker.example_batch_features(inputs), before, rtol=1e-9, atol=1e-12)
