"""Filters: each keeps some candidates and removes the others with a reason."""

from __future__ import annotations

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.rerank.filters import EligibilityFilter, NotInterestedFilter, SeenOrServedFilter
from fyp.retrieve.base import FeedContext
from fyp.state.users import UserState, new_user
from fyp.types import Candidate, Video

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


def ctx(user: UserState, region: str = "local", now: int = NOW) -> FeedContext:
    return FeedContext("req", "u1", user, 10, "for_you", region, now)


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
        ("plain", "already viewed"),
        ("br-only", "served recently"),
    ]


def test_eligibility_removes_excluded_labels_and_other_regions(catalog: CatalogIndex) -> None:
    result = EligibilityFilter(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog))
    assert ids(result.kept) == ["plain", "local-ok", "other-creator-same-sound", "no-sound"]
    assert [(c.video_id, why) for c, why in result.removed] == [
        ("removed", "label removed"),
        ("br-only", "not available in region local"),
    ]


def test_eligibility_depends_on_the_users_region(catalog: CatalogIndex) -> None:
    result = EligibilityFilter(catalog).apply(ctx(new_user(10, 8), "br"), all_candidates(catalog))
    assert "br-only" in ids(result.kept)
    result = EligibilityFilter(catalog).apply(ctx(new_user(10, 8), "pt"), all_candidates(catalog))
    assert "br-only" not in ids(result.kept)
    assert "local-ok" not in ids(result.kept)


def test_eligibility_follows_moderation_changes(catalog: CatalogIndex) -> None:
    catalog.upsert([Video("plain", "c1", 10_000, "s1", labels=("ineligible",))])
    catalog.upsert([Video("removed", "c1", 10_000, "s2")])  # reinstated
    result = EligibilityFilter(catalog).apply(ctx(new_user(10, 8)), all_candidates(catalog))
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
        ("plain", "marked not interested"),
        ("removed", "creator of a video marked not interested"),
        ("other-creator-same-sound", "sound of a video marked not interested"),
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
