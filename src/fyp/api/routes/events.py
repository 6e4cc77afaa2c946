"""``POST /v1/events``: a batch of events, each validated on its own, the valid ones
durably stored before the answer; a user token's events only of its own user, each user's
within their rate limit."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from fyp.api.inputs import batch_items, json_response, read_json
from fyp.api.live import LiveStats
from fyp.api.openapi import json_body
from fyp.api.running import Running
from fyp.api.schemas import EventBatch, EventsResponse, RejectedItem
from fyp.api.security import Caller, Guard
from fyp.config import Settings
from fyp.engine import Engine
from fyp.events.ingest import IngestResult, Rejected
from fyp.privacy.ratelimit import retry_after


def _own_events(items: list[object], user: str | None) -> tuple[list[int], list[Rejected]]:
    """Which items a caller bound to ``user`` (a user token) may send, by index, and
    the others refused; every item for a service key (``user`` None). An item without a
    string ``user_id`` is left to validation, which rejects it."""
    if user is None:
        return list(range(len(items))), []
    own: list[int] = []
    foreign: list[Rejected] = []
    for i, item in enumerate(items):
        other = item.get("user_id") if isinstance(item, dict) else None
        if isinstance(other, str) and other != user:
            eid = item.get("event_id") if isinstance(item, dict) else None
            reason = "user_id: not this user token's user; a token sends its own user's events"
            foreign.append(Rejected(i, eid if isinstance(eid, str) else None, reason, "forbidden"))
        else:
            own.append(i)
    return own, foreign


def _with_foreign(result: IngestResult, own: list[int], foreign: list[Rejected]) -> IngestResult:
    """``result`` of ingesting the items at ``own``, indexed in the whole batch, with the
    ``foreign`` items' refusals among its rejections."""
    if not foreign:
        return result
    moved = [dataclasses.replace(r, index=own[r.index]) for r in result.rejected]
    rejected = sorted(moved + foreign, key=lambda r: r.index)
    return dataclasses.replace(result, rejected=rejected)


def _ingest(
    engine: Engine, batch: Sequence[object], user_limit: Callable[[str], float]
) -> tuple[IngestResult, int]:
    """The batch ingested, and the log's end after it (a worker thread's work)."""
    result = engine.ingest(batch, user_limit=user_limit)
    # (from the append's own answer where the log gives it: on Redis, asking again was
    # a round trip answered only after the server's next fsync)
    end = result.log_end
    return result, engine.event_log.last_offset() if end is None else end


def _reason_kind(reason: str) -> str:
    """A bounded label for metrics: the field the reason names (``video_id``, ``ts``...)."""
    head = reason.split(":", 1)[0].split(".", 1)[0]
    return head if len(head) <= 32 and head.replace("_", "").isalnum() else "other"


def events_router(settings: Settings, guard: Guard, running: Running, live: LiveStats) -> APIRouter:
    """The events' route, over ``running``'s engine; an accepted batch wakes its
    learning loop."""
    router = APIRouter()
    UserEventsWrite = Annotated[  # noqa: N806
        Caller, Depends(guard.require("events:write", user_token=True))
    ]
    eng = running.eng
    metrics = running.metrics

    @router.post(
        "/v1/events",
        response_model=EventsResponse,
        tags=["events"],
        openapi_extra=json_body(EventBatch),
        responses={
            422: {"model": EventsResponse, "description": "some events rejected"},
            403: {"model": EventsResponse, "description": "a user token's, all of others"},
            413: {"description": "batch or body too large; nothing stored"},
            421: {"model": EventsResponse, "description": "every event's user is not homed here"},
            429: {"model": EventsResponse, "description": "every event's user is rate-limited"},
        },
    )
    async def post_events(request: Request, caller: UserEventsWrite) -> Response:
        """Record a batch of events. Each is validated on its own; the valid ones are
        durably stored (fsynced) before this returns, even when others are rejected (then
        the status is 422 and ``rejected`` says which and why). Sending the same
        ``event_id`` again changes nothing, so a failed batch can simply be retried.
        With a user token, events of other users are refused (403 if all are)."""
        items = batch_items(
            await read_json(request, settings.limits.max_body_bytes),
            "events",
            settings.limits.max_batch_events,
        )
        own, foreign = _own_events(items, caller.user)
        if foreign:
            guard.token_refused(request, caller, events_refused=len(foreign))
        waits: list[float] = []
        # Each event counts one against its user's limit: taken for the whole batch at
        # once (one round trip where the limits are on Redis), in order, then handed out
        # per event as validation lets each through.
        senders: list[str] = []
        for i in own:
            item = items[i]
            sender = item.get("user_id") if isinstance(item, dict) else None
            if isinstance(sender, str):
                senders.append(sender)
        taken: dict[str, deque[float]] = {}
        for user_id, wait in zip(senders, await guard.user_waits(senders), strict=True):
            taken.setdefault(user_id, deque()).append(wait)

        def user_limit(user_id: str) -> float:
            # Called from the ingest thread: only this request's tokens, taken above for
            # every event with a user id (the limiter itself is the event loop's). None
            # left would break that count: refused then, never let through unlimited.
            queue = taken.get(user_id)
            wait = queue.popleft() if queue else 1.0
            waits.append(wait)
            return wait

        # Validation and the append (an fsync) off the event loop: feeds go on meanwhile.
        batch = [items[i] for i in own]
        # (the log's end read there too: on Redis a round trip, which on the loop held
        # every request meanwhile)
        ingested, log_end = await asyncio.to_thread(_ingest, eng(), batch, user_limit)
        result = _with_foreign(ingested, own, foreign)
        if result.accepted:
            running.learning_loop().wake()
            live.events_accepted(result.accepted, log_end)
        residency = sum(r.kind == "residency" for r in result.rejected)
        if residency:
            running.refused(request, {"events_refused": residency})
        metrics.events.labels("accepted").inc(result.accepted)
        metrics.events.labels("duplicate").inc(result.duplicates)
        metrics.events.labels("rejected").inc(len(result.rejected))
        for r in result.rejected:
            metrics.events_rejected.labels(_reason_kind(r.reason)).inc()
        body = EventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                RejectedItem(index=r.index, id=r.event_id, reason=r.reason) for r in result.rejected
            ],
        )
        if result.rejected:
            body.detail = (
                f"{len(result.rejected)} of {len(items)} events rejected; the others were stored"
            )
        if residency and residency == len(items):
            body.detail = "every event is of a user not homed in this deployment; none stored"
            return json_response(body, 421)
        if foreign and len(foreign) == len(items):
            body.detail = "every event is of another user than this token's; none stored"
            return json_response(body, 403)
        limited = [r for r in result.rejected if r.kind == "rate_limited"]
        if limited and len(limited) == len(items):
            response = json_response(body, 429)
            # The longest of the waits the events' reasons name: then all may be retried.
            response.headers["Retry-After"] = str(retry_after(max(waits)))
            return response
        return json_response(body, 422 if result.rejected else 200)

    return router
