"""Event ingestion: validate each event on its own, append the good ones durably.

Used by ``POST /v1/events`` and by every importer, so that an event means the same
thing whichever door it came in by."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fyp.catalog.index import CatalogIndex
from fyp.config import LimitsConfig
from fyp.events.log import EventLog
from fyp.types import Event, EventType
from fyp.validation import Id, describe

# Ten times the longest video the catalog accepts (24 h): also keeps every integer far
# inside SQLite's 64-bit range, so no value can fail at the store after validation.
MAX_WATCH_MS = 10 * 24 * 3_600_000


class EventIn(BaseModel):
    """An event as a client sends it. Unknown fields are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id = Field(description="Unique per event; sending it again changes nothing.")
    user_id: Id
    video_id: Id
    type: EventType
    ts: int = Field(strict=True, ge=0, le=2**53, description="When it happened, Unix ms.")
    watch_ms: int | None = Field(
        None,
        strict=True,
        ge=0,
        le=MAX_WATCH_MS,
        description="How long the video was watched (view only), ms.",
    )
    request_id: Id | None = Field(None, description="The feed response this came from.")
    surface: Id | None = Field(None, description="Where in the app, e.g. for_you.")


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    event_id: str | None
    reason: str
    kind: str = "invalid"  # or the gate's: "residency", "rate_limited"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A valid event the deployment will not take: ``kind`` says why, for the caller."""

    kind: str
    reason: str


# Runs on each valid event before it is stored: the event to store (the engine's gate
# puts the user's pseudonym in place of the id), or why it is refused.
Gate = Callable[[Event], "Event | Refusal"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejected] = field(default_factory=list)
    log_end: int | None = None  # the log's end as the append left it (AppendResult.end)


def validate_event(
    raw: object, catalog: CatalogIndex, limits: LimitsConfig, now: int
) -> Event | str:
    """The event, or why it is rejected."""
    try:
        e = EventIn.model_validate(raw)
    except ValidationError as err:
        return describe(err)
    return _admissible(e, catalog, limits, now)


# A batch's events validated in one call: the per-call overhead of pydantic, paid once
# per batch rather than per event. Only a batch that fails is validated again one event
# at a time, for each bad event's own reason (the message a client gets is the same).
_BATCH: TypeAdapter[list[EventIn]] = TypeAdapter(list[EventIn])


def _admissible(e: EventIn, catalog: CatalogIndex, limits: LimitsConfig, now: int) -> Event | str:
    """The checks beyond the event's own fields: the catalog's and the deployment's."""
    row = catalog.row_of.get(e.video_id)
    if row is None:
        return f"video_id: unknown video {e.video_id!r} (add it with POST /v1/videos first)"
    if e.type is EventType.VIEW:
        if e.watch_ms is None:
            return "watch_ms: required for view events"
        duration = int(catalog.duration_ms[row])
        if e.watch_ms > limits.max_watch_ratio * duration:
            return (
                f"watch_ms: {e.watch_ms} ms is more than {limits.max_watch_ratio:g}x the "
                f"video's duration ({duration} ms)"
            )
    if e.ts > now + limits.max_future_ms:
        return f"ts: {e.ts} is more than {limits.max_future_ms // 3_600_000} h in the future"
    return Event(
        e.event_id, e.user_id, e.video_id, e.type, e.ts, e.watch_ms, e.request_id, e.surface
    )


def validate_events(
    raw_events: Sequence[object], catalog: CatalogIndex, limits: LimitsConfig, now: int
) -> list[Event | str]:
    """:func:`validate_event` of each, in order."""
    try:
        models = _BATCH.validate_python(list(raw_events))
    except ValidationError:
        return [validate_event(raw, catalog, limits, now) for raw in raw_events]
    return [_admissible(e, catalog, limits, now) for e in models]


def ingest(
    raw_events: Sequence[object],
    catalog: CatalogIndex,
    log: EventLog,
    limits: LimitsConfig,
    now: int,
    gate: Gate | None = None,
) -> IngestResult:
    """Validate each event (and pass it through ``gate``); append the valid ones in one
    durable write."""
    good: list[Event] = []
    rejected: list[Rejected] = []
    checked = validate_events(raw_events, catalog, limits, now)
    for i, (raw, result) in enumerate(zip(raw_events, checked, strict=True)):
        if isinstance(result, str):
            eid = raw.get("event_id") if isinstance(raw, Mapping) else None
            rejected.append(Rejected(i, eid if isinstance(eid, str) else None, result))
            continue
        admitted = result if gate is None else gate(result)
        if isinstance(admitted, Refusal):
            rejected.append(Rejected(i, result.event_id, admitted.reason, admitted.kind))
        else:
            good.append(admitted)
    appended = log.append(good)
    return IngestResult(
        accepted=len(appended.accepted),
        duplicates=len(appended.duplicates),
        rejected=rejected,
        log_end=appended.end,
    )
