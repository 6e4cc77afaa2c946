"""Event ingestion: validate each event on its own, append the good ones durably.

Used by ``POST /v1/events`` and by every importer, so that an event means the same
thing whichever door it came in by."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, NotRequired

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from fyp.catalog.index import CatalogIndex
from fyp.config import LimitsConfig
from fyp.events.log import EventLog
from fyp.types import Event, EventType
from fyp.validation import Id, IdShape, describe, id_problem

# Ten times the longest video the catalog accepts (24 h): also keeps every integer far
# inside SQLite's 64-bit range, so no value can fail at the store after validation.
MAX_WATCH_MS = 10 * 24 * 3_600_000
Ts = Annotated[int, Field(strict=True, ge=0, le=2**53)]
WatchMs = Annotated[int, Field(strict=True, ge=0, le=MAX_WATCH_MS)]


class EventIn(BaseModel):
    """An event as a client sends it. Unknown fields are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id = Field(description="Unique per event; sending it again changes nothing.")
    user_id: Id
    video_id: Id
    type: EventType
    ts: Ts = Field(description="When it happened, Unix ms.")
    watch_ms: WatchMs | None = Field(
        None, description="How long the video was watched (view only), ms."
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


class _EventFields(TypedDict):
    """:class:`EventIn`'s fields, with the ids' shape only: a batch validated as a list
    of these is a dict per event, and calls no Python validator per id (the ids are
    checked afterwards in one pass). The same acceptance as EventIn, whose messages a
    batch that fails gets (tests/events/test_ingest.py compares the two)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    event_id: IdShape
    user_id: IdShape
    video_id: IdShape
    type: EventType
    ts: Ts
    watch_ms: NotRequired[WatchMs | None]
    request_id: NotRequired[IdShape | None]
    surface: NotRequired[IdShape | None]


# A batch's events validated in one call: the per-call overhead of pydantic, paid once
# per batch rather than per event. Only a batch that fails is validated again one event
# at a time, for each bad event's own reason (the message a client gets is the same).
_BATCH: TypeAdapter[list[_EventFields]] = TypeAdapter(list[_EventFields])


def _ids_fine(fields: _EventFields) -> bool:
    """Whether every id of the event passes :func:`id_problem` (the shape is checked)."""
    for key in ("event_id", "user_id", "video_id", "request_id", "surface"):
        value = fields.get(key)
        if value is not None and id_problem(value) is not None:  # type: ignore[arg-type]
            return False
    return True


def _admissible(e: EventIn, catalog: CatalogIndex, limits: LimitsConfig, now: int) -> Event | str:
    """The checks beyond the event's own fields: the catalog's and the deployment's."""
    return _admitted(
        e.event_id,
        e.user_id,
        e.video_id,
        e.type,
        e.ts,
        e.watch_ms,
        e.request_id,
        e.surface,
        catalog,
        limits,
        now,
    )


def _admitted(
    event_id: str,
    user_id: str,
    video_id: str,
    type: EventType,
    ts: int,
    watch_ms: int | None,
    request_id: str | None,
    surface: str | None,
    catalog: CatalogIndex,
    limits: LimitsConfig,
    now: int,
) -> Event | str:
    row = catalog.row_of.get(video_id)
    if row is None:
        return f"video_id: unknown video {video_id!r} (add it with POST /v1/videos first)"
    if type is EventType.VIEW:
        if watch_ms is None:
            return "watch_ms: required for view events"
        duration = int(catalog.duration_ms[row])
        if watch_ms > limits.max_watch_ratio * duration:
            return (
                f"watch_ms: {watch_ms} ms is more than {limits.max_watch_ratio:g}x the "
                f"video's duration ({duration} ms)"
            )
    if ts > now + limits.max_future_ms:
        return f"ts: {ts} is more than {limits.max_future_ms // 3_600_000} h in the future"
    return Event(event_id, user_id, video_id, type, ts, watch_ms, request_id, surface)


def validate_events(
    raw_events: Sequence[object], catalog: CatalogIndex, limits: LimitsConfig, now: int
) -> list[Event | str]:
    """:func:`validate_event` of each, in order."""
    try:
        rows = _BATCH.validate_python(list(raw_events))
    except ValidationError:
        rows = None
    if rows is None or not all(_ids_fine(f) for f in rows):
        return [validate_event(raw, catalog, limits, now) for raw in raw_events]
    return [
        _admitted(
            f["event_id"],
            f["user_id"],
            f["video_id"],
            f["type"],
            f["ts"],
            f.get("watch_ms"),
            f.get("request_id"),
            f.get("surface"),
            catalog,
            limits,
            now,
        )
        for f in rows
    ]


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
