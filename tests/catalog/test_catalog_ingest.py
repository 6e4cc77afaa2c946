"""Video upserts: each video is judged on its own; the good ones come back as Videos."""

from __future__ import annotations

from typing import Any

import pytest

from fyp.catalog.ingest import validate_videos
from fyp.types import Video


def payload(video_id: str = "v1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"video_id": video_id, "creator_id": "c1", "duration_ms": 10_000}
    body.update(changes)
    return body


def test_a_full_payload_becomes_the_same_video() -> None:
    raw = payload(
        sound_id="s1",
        hashtags=["#a", "#b"],
        caption="hi",
        language="en",
        regions=["br"],
        created_at=5,
        labels=["sensitive"],
    )
    good, bad = validate_videos([raw])
    assert bad == []
    assert good == [
        Video("v1", "c1", 10_000, "s1", ("#a", "#b"), "hi", "en", ("br",), 5, ("sensitive",))
    ]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (payload(duration_ms=0), "duration_ms"),
        (payload(duration_ms=1.5), "duration_ms"),
        (payload(duration_ms="10"), "duration_ms"),
        (payload(video_id=""), "video_id"),
        (payload(creator_id=" c1"), "creator_id"),
        (payload(created_at=-1), "created_at"),
        (payload(hashtags=["ok", ""]), "hashtags.1"),
        (payload(regions="br"), "regions"),
        (payload(caption="x" * 4_001), "caption"),
        (payload(rating=5), "rating"),
    ],
)
def test_a_bad_video_is_rejected_naming_the_field_and_the_rest_are_kept(
    raw: dict[str, Any], field: str
) -> None:
    good, bad = validate_videos([payload("ok-1"), raw, payload("ok-2")])
    assert [v.video_id for v in good] == ["ok-1", "ok-2"]
    ((index, video_id, reason),) = bad
    assert index == 1
    assert video_id == raw["video_id"]
    assert reason.startswith(f"{field}:"), reason
