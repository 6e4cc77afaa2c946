"""Domain types shared across the engine: videos, events, impressions, candidates.

These are plain dataclasses, free of I/O and of HTTP concerns; the API has its own
schemas (``fyp.api.schemas``) and the stores their own rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


class EventType(StrEnum):
    """What a user did with a video. ``view`` carries ``watch_ms``."""

    VIEW = "view"
    LIKE = "like"
    COMMENT = "comment"
    SHARE = "share"
    FOLLOW = "follow"  # follows the video's creator
    NOT_INTERESTED = "not_interested"
    REPORT = "report"


DEFAULT_SURFACE = "for_you"
DAY_MS = 86_400_000

Attributes = tuple[tuple[str, str], ...]
"""Categorical attributes the app sent (:mod:`fyp.attributes`): (name, value) pairs,
sorted by name."""


@dataclass(frozen=True, slots=True)
class Video:
    """A video in the catalog. Times in Unix ms, durations in ms."""

    video_id: str
    creator_id: str
    duration_ms: int
    sound_id: str | None = None
    hashtags: tuple[str, ...] = ()
    caption: str = ""
    language: str | None = None
    regions: tuple[str, ...] = ()  # empty: may be shown everywhere
    created_at: int | None = None
    labels: tuple[str, ...] = ()
    attributes: Attributes = ()

    def __reduce__(self) -> tuple[type[Video], tuple[object, ...]]:
        # A checkpoint pickles every video of the catalog: by its fields, which is
        # several times faster than the default for a slotted, frozen dataclass.
        return (
            Video,
            (
                self.video_id,
                self.creator_id,
                self.duration_ms,
                self.sound_id,
                self.hashtags,
                self.caption,
                self.language,
                self.regions,
                self.created_at,
                self.labels,
                self.attributes,
            ),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One validated user event, as stored in the event log."""

    event_id: str
    user_id: str
    video_id: str
    type: EventType
    ts: int  # Unix ms, when it happened on the client
    watch_ms: int | None = None
    request_id: str | None = None
    surface: str | None = None


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event with its position in the durable log (offsets start at 1, increase)."""

    offset: int
    event: Event


@dataclass(frozen=True, slots=True)
class Impression:
    """One video served at one position of one feed response."""

    request_id: str
    user_id: str
    video_id: str
    position: int
    source: str
    score: float
    surface: str
    ts: int  # Unix ms, when it was served
    reason: str = ""
    # The ranker's strongest signals for this item then, (name, contribution), strongest
    # first: what "why this video" answers from later.
    signals: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Candidate:
    """A video proposed for a feed, carried through filters, ranker and re-rankers.

    ``row`` is the video's dense row in the in-memory catalog index; ``source`` is the
    source credited in the response (the first to propose it).
    """

    row: int
    video_id: str
    source: str
    reason: str
    source_score: float = 0.0
    score: float = 0.0
    signals: tuple[tuple[str, float], ...] = ()  # set for served items (fyp.rank.explain)
    # (the first ranker's (n, L, F) features of the request, this one's index), once ranked
    features: tuple[Any, int] | None = None


@dataclass(frozen=True, slots=True)
class ModerationAction:
    """One moderation decision on a video, as kept in the moderation history.

    ``state`` / ``labels`` are None where the action left them unchanged; ``labels``,
    when given, is the video's whole label set from then on. ``actor`` is who decided:
    ``api`` (a moderator through ``POST /v1/moderation``) or ``reports`` (the automatic
    review queue)."""

    video_id: str
    state: str | None
    labels: tuple[str, ...] | None
    reason: str
    actor: str
    ts: int  # Unix ms


@dataclass(frozen=True, slots=True)
class FilterCount:
    """How many candidates one filter rule removed on one surface on one day (UTC)."""

    day: int  # Unix ms of the day's start (a multiple of DAY_MS)
    surface: str
    filter: str  # e.g. eligibility, muted, not_interested, seen_or_served, sequence
    rule: str  # e.g. state:limited, label:misinformation, age:mature, keyword
    count: int


@dataclass(frozen=True, slots=True)
class UserProfile:
    """What a user (through the app) told us about themselves. ``age_band`` is one of
    ``13-15``, ``16-17``, ``18+``, or None (unknown: treated as the youngest)."""

    user_id: str
    age_band: str | None = None
    language: str | None = None
    region: str | None = None
    created_at: int = 0  # Unix ms
    updated_at: int = 0
    attributes: Attributes = ()
