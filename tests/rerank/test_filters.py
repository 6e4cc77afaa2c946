"""Filters: each keeps some candidates and removes the others with a reason."""

from __future__ import annotations

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.rerank.filters import (
    EligibilityFilter,
    MutedFilter,
    NotInterestedFilter,
    SeenOrServedFilter,
)
from fyp.retrieve.base import FeedContext
from fyp.state.users import UserState, new_user
from fyp.state.videos import VideoStats
from fyp.types import Candidate, ModerationAction, Video
from fyp.users.controls import ControlsIn, UserControls

NOW = 1_750_000_000_000

VIDEOS = [
    Video("plain", "c1", 10_000, "s1"),
    Video("removed", "c1", 10_000, "s2", labels=("removed", "funny")),
    Video("br-only", "c2", 10_000, "s3", regions=("br",)),
    Video("local-ok", "c2", 10_000, "s4", regions=("br", "local")),
    Video("other-creator-same-sound", "c3", 10_000, "s1"),
    Video("no-sound", "c3", 10_000, None),
]


@pytest.fixture
def catalog() -> CatalogIndex:
    index = CatalogIndex(excluded_labels=("removed", "ineligible"))
    index.upsert(VIDEOS)
    return index


def ctx(
    user: UserState,
    region: str = "local",
    now: int = NOW,
    surface: str = "for_you",
    age: int = 18,
    controls: UserControls | None = None,
) -> FeedContext:
    return FeedContext(
        "req", "u1", user, 10, surface, region, now, surface, age, controls or UserControls()
    )


def eligibility(catalog: CatalogIndex) -> EligibilityFilter:
    stats = VideoStats()
    stats.ensure(len(catalog))
    return EligibilityFilter(catalog, stats)


def all_candidates(catalog: CatalogIndex) -> list[Candidate]:
    return [Candidate(row, v.video_id, "test", "") for row, v in enumerate(catalog.videos)]


def ids(cands: list[Candidate]) -> list[str]:
    return [c.video_id for c in cands]


def test_seen_or_served_removes_viewed_and_recently_served_videos(catalog: CatalogIndex) -> None:
    user = new_user(10, 8)
    user.viewed.add(0)
    user.remember_served([2, 0], capacity=10)
    result = SeenOrServedFilter().apply(ctx(user), all_candidates(catalog))
    assert ids(result.kept) == ["removed", "local-ok", "other-creator-same-sound", "no-sound"]
    assert [(c.video_id, why) for c, why in result.removed] == [
        ("plain", "viewed"),
        ("br-only", "served"),
    ]


def test_eligibility_removes_excluded_labels_and_other_regions(catalog: CatalogIndex) -> None:
    result = eligibility(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog))
    assert ids(result.kept) == ["plain", "local-ok", "other-creator-same-sound", "no-sound"]
    assert [(c.video_id, why) for c, why in result.removed] == [
        ("removed", "label:removed"),
        ("br-only", "region"),
    ]


def test_eligibility_depends_on_the_users_region(catalog: CatalogIndex) -> None:
    result = eligibility(catalog).apply(ctx(new_user(10, 8), "br"), all_candidates(catalog))
    assert "br-only" in ids(result.kept)
    result = eligibility(catalog).apply(ctx(new_user(10, 8), "pt"), all_candidates(catalog))
    assert "br-only" not in ids(result.kept)
    assert "local-ok" not in ids(result.kept)


def test_eligibility_follows_moderation_changes(catalog: CatalogIndex) -> None:
    catalog.upsert([Video("plain", "c1", 10_000, "s1", labels=("ineligible",))])
    catalog.upsert([Video("removed", "c1", 10_000, "s2")])  # reinstated
    result = eligibility(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog))
    assert "plain" not in ids(result.kept)
    assert "removed" in ids(result.kept)


def test_not_interested_removes_the_video_its_creator_and_its_sound(catalog: CatalogIndex) -> None:
    user = new_user(10, 8)
    user.not_interested_videos.add(0)
    user.muted_creators_until["c1"] = NOW + 1
    user.muted_sounds_until["s1"] = NOW + 1
    result = NotInterestedFilter(catalog).apply(ctx(user), all_candidates(catalog))
    assert ids(result.kept) == ["br-only", "local-ok", "no-sound"]
    assert [(c.video_id, why) for c, why in result.removed] == [
        ("plain", "video"),
        ("removed", "creator"),
        ("other-creator-same-sound", "sound"),
    ]


def test_creator_and_sound_mutes_expire(catalog: CatalogIndex) -> None:
    user = new_user(10, 8)
    user.not_interested_videos.add(0)
    user.muted_creators_until["c1"] = NOW
    user.muted_sounds_until["s1"] = NOW
    result = NotInterestedFilter(catalog).apply(ctx(user, now=NOW), all_candidates(catalog))
    # The marked video itself stays out; its creator and sound are back.
    assert ids(result.kept) == [v.video_id for v in VIDEOS[1:]]


def test_filters_keep_everything_for_a_user_without_history(catalog: CatalogIndex) -> None:
    user = new_user(10, 8)
    cands = all_candidates(catalog)
    for f in (SeenOrServedFilter(), NotInterestedFilter(catalog)):
        result = f.apply(ctx(user), cands)
        assert ids(result.kept) == ids(cands)
        assert result.removed == []


def moderate(catalog: CatalogIndex, video_id: str, state: str | None, *labels: str) -> None:
    catalog.moderate([ModerationAction(video_id, state, labels or None, "test", "api", NOW)])


def test_each_surface_has_its_own_rules(catalog: CatalogIndex) -> None:
    moderate(catalog, "plain", "limited")
    moderate(catalog, "no-sound", None, "misinformation")
    cands = all_candidates(catalog)
    for_you = eligibility(catalog).apply(ctx(new_user(10, 8)), cands)
    assert ("plain", "state:limited") in [(c.video_id, w) for c, w in for_you.removed]
    assert ("no-sound", "label:misinformation") in [(c.video_id, w) for c, w in for_you.removed]
    # Limited: still reachable by the creator's followers; misinformation is not.
    following = eligibility(catalog).apply(ctx(new_user(10, 8), surface="following"), cands)
    assert "plain" in ids(following.kept)
    assert "no-sound" not in ids(following.kept)


def test_removed_and_pending_are_never_recommended(catalog: CatalogIndex) -> None:
    moderate(catalog, "plain", "removed")
    moderate(catalog, "no-sound", "pending")
    for surface in ("for_you", "following"):
        kept = ids(
            eligibility(catalog)
            .apply(ctx(new_user(10, 8), surface=surface), all_candidates(catalog))
            .kept
        )
        assert "plain" not in kept and "no-sound" not in kept
    moderate(catalog, "no-sound", "approved")  # reviewed: back
    assert "no-sound" in ids(
        eligibility(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog)).kept
    )


def test_moderation_survives_a_re_upload(catalog: CatalogIndex) -> None:
    moderate(catalog, "plain", None, "graphic")
    catalog.upsert([Video("plain", "c1", 10_000, "s1", caption="edited")])
    assert catalog.labels[catalog.row_of["plain"]] == ("graphic",)
    assert "plain" not in ids(
        eligibility(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog)).kept
    )


@pytest.mark.parametrize(("age", "served"), [(13, False), (16, False), (18, True)])
def test_mature_content_needs_an_adult(catalog: CatalogIndex, age: int, served: bool) -> None:
    moderate(catalog, "plain", None, "mature")
    result = eligibility(catalog).apply(ctx(new_user(10, 8), age=age), all_candidates(catalog))
    assert ("plain" in ids(result.kept)) is served
    if not served:
        assert ("plain", "age:mature") in [(c.video_id, w) for c, w in result.removed]


def test_a_struck_creators_new_uploads_are_capped() -> None:
    catalog = CatalogIndex()
    catalog.upsert(
        [Video(f"old{i}", "liar", 10_000, created_at=NOW - 10_000 + i) for i in range(2)]
    )
    for i in range(2):
        moderate(catalog, f"old{i}", None, "misinformation")  # two strikes, at NOW
    catalog.upsert([Video("new", "liar", 10_000, created_at=NOW + 1), Video("other", "ok", 10_000)])
    stats = VideoStats()
    stats.ensure(len(catalog))
    f = EligibilityFilter(catalog, stats)
    cap = catalog.policy.strikes.impression_cap
    assert "new" in ids(f.apply(ctx(new_user(10, 8)), all_candidates(catalog)).kept)
    stats.exposures[catalog.row_of["new"]] = cap
    result = f.apply(ctx(new_user(10, 8)), all_candidates(catalog))
    assert ("new", "creator_strikes") in [(c.video_id, w) for c, w in result.removed]
    assert "other" in ids(result.kept)
    # Not on the creator's followers' surface.
    assert "new" in ids(
        f.apply(ctx(new_user(10, 8), surface="following"), all_candidates(catalog)).kept
    )


def test_muted_creators_hashtags_and_keywords() -> None:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video("a", "ana", 10_000, hashtags=("#Café",)),
            Video("b", "bo", 10_000, caption="My CAT sleeps"),
            Video("c", "cy", 10_000, caption="category theory"),
            Video("d", "dee", 10_000, caption="fast food review"),
            Video("e", "eve", 10_000, caption="fast, then food"),
        ]
    )
    controls = UserControls().updated(
        ControlsIn(
            mute_keywords=["cat", "Fast Food"], mute_hashtags=["cafe"], mute_creators=["eve"]
        )
    )
    result = MutedFilter(catalog).apply(
        ctx(new_user(10, 8), controls=controls), all_candidates(catalog)
    )
    assert ids(result.kept) == ["c"]  # "category" is not the word "cat"
    assert [(c.video_id, w) for c, w in result.removed] == [
        ("a", "hashtag"),
        ("b", "keyword"),
        ("d", "keyword"),
        ("e", "creator"),
    ]
