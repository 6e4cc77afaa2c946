"""A route whose common requests skip FastAPI's per-request machinery.

FastAPI solves a route's dependencies and validates its parameters through pydantic on
every request: for ``GET /v1/feed`` that machinery costs the server more CPU than the
route's own work besides the pipeline. A :func:`fast_route_class` route keeps
everything FastAPI derives from the route's declaration (the OpenAPI document, the
error responses, the validation of every other request) and puts a hand-written
handler in front: it answers the requests whose shape it recognises and hands every
other request, unchanged, to FastAPI's own handler.

The contract of the hand-written handler: it returns None, before it has done anything
with a side effect (a rate limit's token, an audit record), for every request it does
not recognise as one FastAPI would accept; for the others it does what the declared
route does, with the same answers and errors. So a request with a malformed or unusual
parameter always gets FastAPI's own 422.
"""

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

FastHandler = Callable[[Request], Awaitable[Response | None]]


def fast_route_class(fast: FastHandler) -> type[APIRoute]:
    """An :class:`APIRoute` class whose requests go to ``fast`` first, and to FastAPI's
    handler of the declared route where ``fast`` returns None. Give it to the router
    (``APIRouter(route_class=...)``) of the one route ``fast`` is written for."""

    class FastRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            declared = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response = await fast(request)
                return response if response is not None else await declared(request)

            return handler

    return FastRoute
