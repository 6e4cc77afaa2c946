"""Video upserts: validate each video on its own; the good ones are stored."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fyp.attributes import MAX_ATTRIBUTES, AttributesIn, as_attributes
from fyp.types import Video
from fyp.validation import Id, describe


class VideoIn(BaseModel):
    """A video as a client sends it. Unknown fields are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video_id: Id
    creator_id: Id
    duration_ms: int = Field(strict=True, gt=0, le=24 * 3_600_000, description="Length, ms.")
    sound_id: Id | None = None
    hashtags: list[Id] = Field(default_factory=list, max_length=64)
    caption: str = Field("", max_length=4000)
    language: Id | None = None
    regions: list[Id] = Field(
        default_factory=list,
        max_length=300,
        description="Where it may be shown; empty: everywhere.",
    )
    created_at: int | None = Field(
        None, strict=True, ge=0, le=2**53, description="Upload time, Unix ms."
    )
    labels: list[Id] = Field(default_factory=list, max_length=64)
    attributes: AttributesIn = Field(
        default_factory=dict,
        description=(
            f'Categories the app knows of the video, name -> short value (e.g. {{"type": '
            f'"ad", "upload_type": "duet"}}): at most {MAX_ATTRIBUTES}, as for a user\'s.'
        ),
    )

    def to_video(self) -> Video:
        return Video(
            self.video_id,
            self.creator_id,
            self.duration_ms,
            self.sound_id,
            tuple(self.hashtags),
            self.caption,
            self.language,
            tuple(self.regions),
            self.created_at,
            tuple(self.labels),
            as_attributes(self.attributes),
        )


def validate_videos(raw: Sequence[object]) -> tuple[list[Video], list[tuple[int, str | None, str]]]:
    """(valid videos, rejected as (index, video_id, reason))."""
    good: list[Video] = []
    bad: list[tuple[int, str | None, str]] = []
    for i, item in enumerate(raw):
        try:
            good.append(VideoIn.model_validate(item).to_video())
        except ValidationError as err:
            vid = item.get("video_id") if isinstance(item, dict) else None
            bad.append((i, vid if isinstance(vid, str) else None, describe(err)))
    return good, bad
