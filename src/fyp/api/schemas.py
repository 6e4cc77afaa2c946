"""Request and response bodies of the HTTP API (what OpenAPI documents)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fyp.catalog.ingest import VideoIn
from fyp.events.ingest import EventIn


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


class FeedItemOut(BaseModel):
    video_id: str
    position: int
    source: str = Field(description="The candidate source that proposed it.")
    reason: str = Field(description="Why it is here, in words.")
    score: float = Field(description="The ranker's value score.")


class FeedResponse(BaseModel):
    request_id: str = Field(description="Send it back with the events this feed leads to.")
    surface: str
    items: list[FeedItemOut]


class Health(BaseModel):
    status: str
    region: str
    videos: int
    events: int
    learning_lag: int = Field(description="Events in the log not yet learned from.")
