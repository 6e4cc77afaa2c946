"""Request and response bodies of the HTTP API (what OpenAPI documents)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fyp.catalog.ingest import VideoIn
from fyp.events.ingest import EventIn
from fyp.safety.labels import ModerationState
from fyp.validation import Id


class ValidationIssue(BaseModel):
    """One thing wrong with a request, as FastAPI's validation reports it."""

    loc: list[str | int] = Field(description='Where: e.g. ["query", "user_id"].')
    msg: str = Field(description="What is wrong, in words.")
    type: str = Field(description="The kind of error, e.g. missing, id_invalid.")
    input: Any = Field(None, description="The value refused, as received.")
    ctx: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    """Every error's body (4xx, 503): ``detail`` says what is wrong."""

    detail: str | list[ValidationIssue] = Field(
        description="A sentence, or (for a request FastAPI's validation refused: a bad "
        "parameter or JSON body) one item per thing wrong."
    )


class EventBatch(BaseModel):
    events: list[EventIn] = Field(description="At most 5,000 events; each validated on its own.")


class RejectedItem(BaseModel):
    index: int = Field(description="Position of the item in the request's list.")
    id: str | None = Field(None, description="Its event_id or video_id, when it had one.")
    reason: str


class EventsResponse(BaseModel):
    accepted: int = Field(description="Newly stored (durable: fsynced before this response).")
    duplicates: int = Field(description="event_id already stored; nothing changed.")
    rejected: list[RejectedItem]
    detail: str | None = Field(None, description="Set when some events were rejected (422).")


class VideoBatch(BaseModel):
    videos: list[VideoIn]


class VideosResponse(BaseModel):
    upserted: int
    rejected: list[RejectedItem]
    detail: str | None = None


class Signal(BaseModel):
    name: str = Field(description="e.g. creator_affinity, video_engagement, freshness.")
    weight: float = Field(description="Its contribution to the value score (or a factor).")


class FeedItemOut(BaseModel):
    video_id: str
    position: int
    source: str = Field(description="The candidate source that proposed it.")
    reason: str = Field(description="Why it is here, in words.")
    score: float = Field(description="The ranker's value score.")
    signals: list[Signal] = Field(description="The strongest signals behind the score.")


class FeedResponse(BaseModel):
    request_id: str = Field(description="Send it back with the events this feed leads to.")
    surface: str
    items: list[FeedItemOut]


class LearnedModelsHealth(BaseModel):
    """The learned models this server serves, as published by the learner process."""

    version: int = Field(description="The model version served (0: none yet).")
    age_s: float | None = Field(description="Seconds since the learner published it.")
    versions_behind: int = Field(description="Versions published and not applied yet.")
    learner: str = Field(description='"up", or "down" (the last models are served).')
    learner_offset: int = Field(description="Events the learner has learned from.")
    learner_lag: int = Field(description="Events in the log the learner has not learned from.")
    learner_restarts: int


class Health(BaseModel):
    status: str
    region: str
    videos: int
    events: int
    learning_lag: int = Field(description="Events in the log not yet learned from.")
    learned_models: LearnedModelsHealth | None = None
    changes_lag_s: float | None = Field(
        None,
        description="Seconds for which other processes' changes may not be in force here "
        "(0 while their notices are read; absent where there is one process).",
    )


class UserOut(BaseModel):
    user_id: str
    age_band: str | None
    language: str | None
    region: str | None
    created_at: int
    updated_at: int
    attributes: dict[str, str] = Field(description="Categories the app sent, name -> value.")


class ControlsOut(BaseModel):
    user_id: str
    mute_keywords: list[str]
    mute_hashtags: list[str]
    mute_creators: list[str]
    topics: dict[str, str]
    personalized: bool
    refreshed: bool = Field(False, description="This request forgot the learned personalisation.")


class UserDetail(BaseModel):
    profile: UserOut | None
    controls: ControlsOut


class WhyOut(BaseModel):
    user_id: str
    video_id: str
    served_at: int = Field(description="When it was last served to this user, Unix ms.")
    request_id: str
    position: int
    surface: str
    source: str
    reason: str
    score: float
    signals: list[Signal]


class ModerationIn(BaseModel):
    """Set a video's moderation state and/or its labels (the whole label set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video_id: Id
    state: ModerationState | None = None
    labels: list[Id] | None = Field(None, max_length=64)
    reason: str = Field(min_length=1, max_length=2000, description="Kept with the decision.")


class ModerationOut(BaseModel):
    video_id: str
    state: str
    labels: list[str]
    reason: str
    actor: str
    ts: int


class QueueItem(BaseModel):
    video_id: str
    creator_id: str
    caption: str
    state: str
    labels: list[str]
    reporters: int
    report_weight: float
    last_reason: str | None


class QueueOut(BaseModel):
    items: list[QueueItem]


class ErasureOut(BaseModel):
    user_id: str
    erased: bool
    events: int = Field(description="Events deleted.")
    impressions: int = Field(description="Impressions deleted.")
    checkpoint_rewritten: bool = Field(description="The learning checkpoint, without the user.")


class AuditRecordOut(BaseModel):
    seq: int
    ts: int
    action: str
    actor: str
    outcome: str
    subject: str | None = Field(description="An opaque reference, never a user id.")
    details: dict[str, Any]
    prev: str
    hash: str


class AuditOut(BaseModel):
    records: list[AuditRecordOut]


class VideoOut(BaseModel):
    video_id: str
    creator_id: str
    duration_ms: int
    sound_id: str | None
    hashtags: list[str]
    caption: str
    created_at: int | None
    attributes: dict[str, str] = Field(description="Categories the app sent, name -> value.")


class VideosOut(BaseModel):
    videos: list[VideoOut]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="The user the token acts for; created beforehand.")
    ttl_s: int | None = Field(
        None,
        ge=1,
        description="Seconds the token lasts: at most `auth.token_max_ttl_s` (default "
        "1 day); unset: `auth.token_ttl_s` (default 15 minutes).",
    )


class TokenOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    user_id: str
    expires_at: int = Field(description="Unix ms; refused (401) from then on.")
    renewable_until: int = Field(
        description="Unix ms: until then the token's holder may renew it before it expires."
    )


class TokensRevokedOut(BaseModel):
    key_id: str
    token_epoch: int = Field(description="Tokens issued before this epoch are refused.")
