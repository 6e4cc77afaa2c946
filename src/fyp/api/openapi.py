"""The app's OpenAPI document, made to describe what the API answers: every error status
an operation can return, each with the one error body (:class:`ErrorOut`), declared here
once and applied to every operation by what it takes (a key, parameters, a user id)
rather than listed route by route. ``tests/api/test_schemathesis.py`` keeps it true: it
checks every generated request's status, content type, headers and body against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from fyp.api.schemas import ErrorOut, EventBatch, VideoBatch

_REF = "#/components/schemas/{model}"
ERROR_REF = _REF.format(model=ErrorOut.__name__)
# Routes that take any valid key, whatever its scopes: never a 403.
ANY_KEY = frozenset({"/metrics"})

Operation = dict[str, Any]


def _always(path: str, op: Operation) -> bool:
    return True


def _keyed(path: str, op: Operation) -> bool:
    return bool(op.get("security"))


def _scoped(path: str, op: Operation) -> bool:
    return _keyed(path, op) and path not in ANY_KEY


def _takes_input(path: str, op: Operation) -> bool:
    return bool(op.get("parameters")) or "requestBody" in op


def _names_a_user(path: str, op: Operation) -> bool:
    return any(p.get("name") == "user_id" for p in op.get("parameters", ()))


def _declared(path: str, op: Operation) -> bool:
    return False  # only where the route declares it (its own cases), given the body here


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    description: str
    applies: Callable[[str, Operation], bool]
    retry_after: bool = False  # the answer may carry a Retry-After header
    retry_after_always: bool = False  # ... and always does (the header is "required")


# What each error status means, and which operations can answer it.
ERRORS: dict[int, ErrorStatus] = {
    400: ErrorStatus(
        "Malformed JSON, or a path or query string that is not UTF-8 once percent-decoded.",
        _always,
    ),
    401: ErrorStatus("No valid API key: missing, unknown or revoked.", _keyed),
    403: ErrorStatus("The key lacks the route's scope, or is for another region's users.", _scoped),
    404: ErrorStatus("Not found (the route says what).", _declared),
    413: ErrorStatus("The body or the batch is over its limit; nothing was stored.", _declared),
    409: ErrorStatus(
        "The user's erasure was accepted and is not complete: nothing of theirs is read or "
        "stored until it is (then the id is a new, empty user).",
        _names_a_user,
    ),
    421: ErrorStatus(
        "The user is not homed in this deployment (another region's): nothing was stored.",
        _names_a_user,
    ),
    422: ErrorStatus(
        "A parameter or the body is invalid; `detail` says which and why.", _takes_input
    ),
    429: ErrorStatus(
        "A rate limit (the key's or the user's) was exceeded; retry after `Retry-After`.",
        _keyed,
        retry_after=True,
        retry_after_always=True,
    ),
    503: ErrorStatus(
        "Storage unavailable (a full, read-only, unwritable or failing disk), named with "
        "the route; nothing of the failed write was stored. Retry after `Retry-After`.",
        _always,
        retry_after=True,
    ),
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a JSON body the route parses itself (each item validated on
    its own, so FastAPI must not reject the whole batch for one bad item)."""
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _error_content(existing: dict[str, Any] | None) -> dict[str, Any]:
    """The error body's content, or, where the route documents a body of its own for the
    status (a batch's 422), either one."""
    schema: dict[str, Any] = {"$ref": ERROR_REF}
    own = ((existing or {}).get("application/json") or {}).get("schema")
    if own and own != schema:
        schema = {"anyOf": [own, schema]}
    return {"application/json": {"schema": schema}}


def document_errors(spec: dict[str, Any]) -> None:
    """Give every operation the error responses it can answer (see :data:`ERRORS`)."""
    for path, item in spec.get("paths", {}).items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            for status, error in ERRORS.items():
                declared = responses.get(str(status))
                if declared is None and not error.applies(path, op):
                    continue
                response = declared or {"description": error.description}
                # FastAPI's own 422 says its body is a list: ours can be a sentence too.
                if status == 422 and response.get("description") == "Validation Error":
                    response = {"description": error.description}
                response["content"] = _error_content(response.get("content"))
                if error.retry_after:
                    response.setdefault("headers", {})["Retry-After"] = {
                        "description": "Seconds to wait before retrying.",
                        "required": error.retry_after_always,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                responses[str(status)] = response
            # A status a route declares of its own (a token route's 409, an erasure's):
            # its body is the one error body too.
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and "content" not in response:
                    response["content"] = _error_content(None)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    text = json.dumps(spec["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, replaced
        if f'/{unused}"' not in text:
            schemas.pop(unused, None)


def install_openapi(app: FastAPI) -> None:
    """``app.openapi``: FastAPI's document, with the hand-parsed request bodies' schemas
    and every operation's error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _, defs = models_json_schema(
                [(EventBatch, "validation"), (VideoBatch, "validation"), (ErrorOut, "validation")],
                ref_template=_REF,
            )
            spec.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            document_errors(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
