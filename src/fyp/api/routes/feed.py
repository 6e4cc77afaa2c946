"""``GET /v1/feed``: the next page of a user's feed, each card with its source, reason
and score; or, with ``after`` and ``shown``, the rest of an earlier page replaced."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures (the
# settings' limits, in this module's closure).

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from fyp.api.inputs import IdQuery
from fyp.api.live import LiveStats
from fyp.api.running import Running
from fyp.api.schemas import FeedResponse
from fyp.api.security import Caller, Guard, too_many
from fyp.config import Settings
from fyp.engine import UnknownPageError
from fyp.types import DEFAULT_SURFACE


def feed_router(settings: Settings, guard: Guard, running: Running, live: LiveStats) -> APIRouter:
    """The feed's route, over ``running``'s engine."""
    router = APIRouter()
    UserFeedRead = Annotated[  # noqa: N806
        Caller, Depends(guard.require("feed:read", user_token=True))
    ]
    eng = running.eng

    @router.get(
        "/v1/feed",
        response_model=FeedResponse,
        tags=["feed"],
        responses={404: {"description": "after: no such page was served to this user"}},
    )
    async def feed(
        request: Request,
        caller: UserFeedRead,
        user_id: IdQuery,
        count: Annotated[int, Query(ge=1, le=settings.feed.max_count)] = (
            settings.feed.default_count
        ),
        surface: IdQuery = DEFAULT_SURFACE,
        after: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                description="The request_id of a page of which only the first `shown` cards "
                "were shown: the rest is withdrawn and this page takes its place, ranked "
                "with what was learned since (`count` defaults to the cards withdrawn).",
            ),
        ] = None,
        shown: Annotated[
            int | None,
            Query(ge=0, description="With `after`: how many of that page's cards were shown."),
        ] = None,
    ) -> Response:
        """The next ``count`` videos for ``user_id``, each with its source, reason and
        score. Served items are recorded as impressions under ``request_id``. With
        ``after`` and ``shown``: the rest of an earlier page, re-ranked (and replaced where
        something better now fits), the cards not shown no longer recorded as served."""
        guard.own(request, caller, user_id)
        if (after is None) != (shown is None):
            raise HTTPException(
                422,
                "after and shown go together: the page to replace the rest of, and how "
                "many of its cards were shown",
            )
        wait = await guard.user_wait(user_id)
        if wait > 0:
            raise too_many(wait, "feed requests for this user")
        t0 = time.perf_counter()
        try:
            f = eng().feed(
                user_id,
                count if after is None or "count" in request.query_params else None,
                surface,
                after=after,
                shown=shown or 0,
            )
        except UnknownPageError as err:
            raise HTTPException(404, str(err)) from None
        live.feed_served((time.perf_counter() - t0) * 1000.0, (i.source for i in f.items))
        # Serialised straight from the domain objects: the response model documents the
        # shape, and re-validating what the engine just built would only cost time.
        body = {
            "request_id": f.request_id,
            "surface": f.surface,
            "items": [
                {
                    "video_id": i.video_id,
                    "position": i.position,
                    "source": i.source,
                    "reason": i.reason,
                    "score": i.score,
                    "signals": [{"name": n, "weight": w} for n, w in i.signals],
                }
                for i in f.items
            ],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return router
