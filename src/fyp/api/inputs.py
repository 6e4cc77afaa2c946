"""What the routes read from a request, and how they answer a model: ids in paths and
queries (checked as the project's ids), a JSON body within its size limit, a batch's
list, the app's check that a request's target is UTF-8."""

# No ``from __future__ import annotations``: FastAPI reads the aliases below in route
# signatures.

from typing import Annotated, Any

import orjson
from fastapi import HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from fyp.api.errors import route_template
from fyp.validation import ID_PATTERN, ID_RULE, MAX_ID_CHARS, CheckedId, utf8_problem

ID_RULES: dict[str, Any] = {
    "min_length": 1,
    "max_length": MAX_ID_CHARS,
    "pattern": ID_PATTERN,
    "description": ID_RULE,
}
IdPath = Annotated[str, Path(**ID_RULES), CheckedId]
IdQuery = Annotated[str, Query(**ID_RULES), CheckedId]
# The routes that look a user up (Running.known): their 404 (the body: fyp.api.openapi).
NOT_KNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown user: create it with PUT /v1/users/{user_id} first"}
}


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body; 413 past ``max_bytes`` (checked while streaming, so a
    lying or absent Content-Length does not get a large body through), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None


async def utf8_target(request: Request) -> None:
    """The app's first dependency: a path or query string that is not UTF-8 once
    percent-decoded is refused (400) before any route reads it, since the server hands
    the routes its text with the bad bytes replaced (two ids would become one)."""
    raw_path = request.scope.get("raw_path")
    for raw, what in ((raw_path, "path"), (request.scope.get("query_string"), "query string")):
        problem = utf8_problem(raw, what) if isinstance(raw, bytes) else None
        if problem is not None:
            raise HTTPException(400, problem)


def batch_items(body: Any, key: str, limit: int) -> list[object]:
    """The list under ``key`` of a batch's body (``{"videos": [...]}``): 422 if the body
    is not such an object, 413 past ``limit`` items."""
    if not isinstance(body, dict) or key not in body:
        raise HTTPException(422, f'body must be a JSON object with a "{key}" list')
    items = body[key]
    if not isinstance(items, list):
        raise HTTPException(422, f'"{key}" must be a list, got {type(items).__name__}')
    extra = set(body) - {key}
    if extra:
        raise HTTPException(422, f"unknown top-level fields: {sorted(extra)}")
    if len(items) > limit:
        raise HTTPException(413, f"{len(items)} {key} in one batch; the limit is {limit}")
    return items


def json_response(body: BaseModel, status: int) -> Response:
    """``body`` as a JSON response with ``status`` (a route whose status varies)."""
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


def asked(request: Request) -> dict[str, Any]:
    """What a refused request asked, for its audit record: the method and the route's
    template."""
    return {"method": request.method, "route": route_template(request)}
