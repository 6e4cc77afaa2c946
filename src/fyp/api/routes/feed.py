"""``GET /v1/feed``: the next page of a user's feed, each card with its source, reason
and score; or, with ``after`` and ``shown``, the rest of an earlier page replaced.

The route is declared to FastAPI as usual (its parameters, their rules and the OpenAPI
document come from the declaration), and its common requests (``user_id``, maybe
``count`` and ``surface``, each plain) are answered by a hand-written handler in front
of FastAPI's (:mod:`fyp.api.fast_route`): the feed is the route a server answers most,
and FastAPI's per-request dependency solving cost about as much CPU as the rest of the
HTTP path. Every other request (``after``, a repeated or unusual parameter, a value
FastAPI would refuse) goes to FastAPI, whose answers and 422s stay the reference."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures (the
# settings' limits, in this module's closure).

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from fyp.api.fast_route import fast_route_class
from fyp.api.inputs import IdQuery, utf8_target
from fyp.api.live import LiveStats
from fyp.api.running import Running
from fyp.api.schemas import FeedResponse
from fyp.api.security import Caller, Guard, bearer, too_many
from fyp.config import Settings
from fyp.engine import UnknownPageError
from fyp.types import DEFAULT_SURFACE
from fyp.validation import MAX_ID_CHARS

# The parameters the hand-written handler reads; a request with any other parameter
# (the route's ``after`` and ``shown``, or one FastAPI would ignore) goes to FastAPI.
_PLAIN_PARAMS = frozenset({"user_id", "count", "surface"})
_MAX_COUNT_DIGITS = 6  # past this, FastAPI's parser decides
_PAGE_PARAMS = _PLAIN_PARAMS | {"after", "shown"}  # every parameter the route declares
_MAX_AFTER_CHARS = 128  # the route's own bound on ``after`` (its Query below)


def plain_id(value: str) -> bool:
    """Whether ``value`` is an id that FastAPI's rules (``IdQuery``) accept, judged
    conservatively: printable ASCII (always in normal form NFC), 1 to ``MAX_ID_CHARS``
    characters, no space at either end. Any other id goes to FastAPI, which accepts or
    refuses it with its own message."""
    return (
        0 < len(value) <= MAX_ID_CHARS
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )


def plain_count(value: str, max_count: int) -> int | None:
    """``value`` as a count FastAPI accepts (an int in 1..``max_count``), where it is
    written in plain ASCII digits; None for anything else (FastAPI then decides)."""
    if not (0 < len(value) <= _MAX_COUNT_DIGITS and value.isascii() and value.isdigit()):
        return None
    n = int(value)
    return n if 1 <= n <= max_count else None


def unique_params(request: Request) -> dict[str, str] | None:
    """The request's query parameters, None if one is repeated (FastAPI's rule then
    applies: the last)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            return None
        params[name] = value
    return params


def user_served(request: Request, caller: Caller, max_count: int) -> str | None:
    """The user whose feed limit the route takes for this request, where it surely
    reaches that take: parameters FastAPI accepts (judged as :func:`plain_id` judges),
    the caller's own user, ``after`` and ``shown`` together. None otherwise: the route
    then takes the user's token itself, if it gets that far."""
    params = unique_params(request)
    if params is None or not _PAGE_PARAMS.issuperset(params):
        return None
    user_id = params.get("user_id")
    if user_id is None or not plain_id(user_id):
        return None
    if not plain_id(params.get("surface", DEFAULT_SURFACE)):
        return None
    count = params.get("count")
    if count is not None and plain_count(count, max_count) is None:
        return None
    after, shown = params.get("after"), params.get("shown")
    if (after is None) != (shown is None):
        return None
    if after is not None and not (
        plain_id(after)
        and len(after) <= _MAX_AFTER_CHARS
        and shown is not None
        and 0 < len(shown) <= _MAX_COUNT_DIGITS
        and shown.isascii()
        and shown.isdigit()
    ):
        return None
    if caller.user is not None and caller.user != user_id:
        return None
    return user_id


def feed_router(settings: Settings, guard: Guard, running: Running, live: LiveStats) -> APIRouter:
    """The feed's route, over ``running``'s engine."""
    eng = running.eng
    max_count, default_count = settings.feed.max_count, settings.feed.default_count
    # The user's feed limit is taken with the key's, where the route will take it.
    authorise = guard.require(
        "feed:read",
        user_token=True,
        takes_user=lambda request, caller: user_served(request, caller, max_count),
    )
    UserFeedRead = Annotated[Caller, Depends(authorise)]  # noqa: N806

    async def serve(
        request: Request,
        caller: Caller,
        user_id: str,
        count: int | None,
        surface: str,
        after: str | None,
        shown: int | None,
    ) -> Response:
        """The route's work once its parameters are read and the caller known."""
        guard.own(request, caller, user_id)
        if (after is None) != (shown is None):
            raise HTTPException(
                422,
                "after and shown go together: the page to replace the rest of, and how "
                "many of its cards were shown",
            )
        wait = await guard.user_wait(user_id, caller)
        if wait > 0:
            raise too_many(wait, "feed requests for this user")
        t0 = time.perf_counter()
        try:
            f = eng().feed(user_id, count, surface, after=after, shown=shown or 0)
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

    async def plain_feed(request: Request) -> Response | None:
        """A plain request's answer, or None (before anything with a side effect) for
        FastAPI to answer. Does what FastAPI does for the declared route: the app's
        dependency (:func:`utf8_target`), then the caller's authentication, then the
        route."""
        params = unique_params(request)
        if params is None:
            return None
        user_id = params.get("user_id")
        if user_id is None or not plain_id(user_id):
            return None
        surface = params.get("surface", DEFAULT_SURFACE)
        if not plain_id(surface) or not _PLAIN_PARAMS.issuperset(params):
            return None
        raw_count = params.get("count")
        count = default_count if raw_count is None else plain_count(raw_count, max_count)
        if count is None:
            return None
        await utf8_target(request)
        caller = await authorise(request, await bearer(request))
        return await serve(request, caller, user_id, count, surface, None, None)

    router = APIRouter(route_class=fast_route_class(plain_feed))

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
                max_length=_MAX_AFTER_CHARS,
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
        given = after is None or "count" in request.query_params
        return await serve(
            request, caller, user_id, count if given else None, surface, after, shown
        )

    return router
