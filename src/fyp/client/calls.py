"""The routes as calls, shared by the sync and the async client: what to send, which
statuses are a result, how to read it, whether it may be sent again; and the retry
policy. The clients only carry calls out (``fyp.client.sync``, ``fyp.client.aio``)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from fyp.api.schemas import (
    ControlsOut,
    ErasureOut,
    EventsResponse,
    FeedResponse,
    Health,
    ModerationIn,
    ModerationOut,
    QueueOut,
    RejectedItem,
    TokenIn,
    TokenOut,
    TokensRevokedOut,
    UserDetail,
    UserOut,
    VideosOut,
    VideosResponse,
    WhyOut,
)
from fyp.catalog.ingest import VideoIn
from fyp.client.errors import ApiError, FypError, api_error
from fyp.events.ingest import EventIn
from fyp.users.controls import ControlsIn, ProfileIn

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

EventLike = EventIn | Mapping[str, Any]
VideoLike = VideoIn | Mapping[str, Any]

# Statuses the server gives when it did not do what was asked and will soon: a rate
# limit (429), a storage fault or a store's server down (503). Any call is sent again.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request. ``route``: the template, for messages (never the path, which can
    hold a user's id). ``results``: the statuses read as a result by ``read``; any other
    is an :class:`ApiError`. ``idempotent``: sending it twice does what sending it once
    does (events by ``event_id``, a PUT, a GET), so a request whose answer was lost (the
    connection dropped after it was sent) is sent again; others are sent again only
    when the server cannot have acted on them (refused to connect, 429, 503)."""

    method: str
    route: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    results: frozenset[int] = frozenset({200})
    idempotent: bool = True

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(self.method, self.path, params=self.params, json=self.json)

    def outcome(self, response: httpx.Response) -> T:
        """The result of ``response``, else the :class:`ApiError` it is."""
        if response.status_code in self.results:
            try:
                return self.read(response)
            except ValueError as err:  # (pydantic's ValidationError is one)
                raise FypError(
                    f"{self.route}: an answer the client cannot read "
                    f"(HTTP {response.status_code}): {err}",
                    self.route,
                ) from None
        raise error_of(self.route, response)


def error_of(route: str, response: httpx.Response) -> ApiError:
    try:
        detail: Any = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    return api_error(route, response.status_code, detail, retry_after_s(response))


def retry_after_s(response: httpx.Response) -> float | None:
    """The seconds ``Retry-After`` asks for (a number of seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is tried again. A ``Retry-After`` is honoured (up
    to ``max_retry_after_s``: past that the error is raised at once, as the server asks
    for longer than this caller will wait); without one, exponential backoff from
    ``backoff_s``, doubling up to ``max_backoff_s``, with jitter (so that clients the
    same fault stopped do not come back at the same instant)."""

    attempts: int = 5  # in all, the first included
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` from 1), or None:
        give up."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        backoff = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)


NO_RETRIES = RetryPolicy(attempts=1)


def retryable(call: Call[Any], error: BaseException) -> bool:
    """Whether ``error`` (an httpx error, or the :class:`ApiError` of an answer) may be
    met by sending ``call`` again."""
    if isinstance(error, ApiError):
        return error.status_code in RETRY_STATUSES
    # Not connected: nothing was sent. Anything later: the request may have been
    # carried out, its answer lost.
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    return call.idempotent and isinstance(error, httpx.TransportError)


# -- the routes ---------------------------------------------------------------------------


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def _seg(value: str) -> str:
    """A path segment: a user id may hold any character but surrounding space."""
    return quote(value, safe="")


def _payload(item: BaseModel | Mapping[str, Any]) -> Any:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", exclude_none=True)
    return dict(item)


def health() -> Call[Health]:
    # 503 is an answer too: the learning loop stopped (``status`` says so).
    return Call("GET", "GET /healthz", "/healthz", _model(Health), results=frozenset({200, 503}))


def feed(user_id: str, count: int | None, surface: str | None) -> Call[FeedResponse]:
    params = {"user_id": user_id, "count": count, "surface": surface}
    return Call(
        "GET",
        "GET /v1/feed",
        "/v1/feed",
        _model(FeedResponse),
        params={k: v for k, v in params.items() if v is not None},
        # Not sent twice when its answer is lost: each feed is recorded as impressions
        # (what the next page leaves out), so a second one would skip a page.
        idempotent=False,
    )


def events(batch: Sequence[EventLike]) -> Call[EventsResponse]:
    """One batch; sent again safely, as events are idempotent by ``event_id`` (what the
    first try stored is counted as ``duplicates`` by the second)."""
    return _batch_call(
        "POST /v1/events", "/v1/events", {"events": [_payload(e) for e in batch]}, EventsResponse
    )


def videos(batch: Sequence[VideoLike]) -> Call[VideosResponse]:
    """One batch; an upsert, so sent again safely."""
    return _batch_call(
        "POST /v1/videos", "/v1/videos", {"videos": [_payload(v) for v in batch]}, VideosResponse
    )


def _batch_call(route: str, path: str, body: Any, model: type[M]) -> Call[M]:
    def read(response: httpx.Response) -> M:
        body = response.json()
        # A 422 is a batch's result when some items were rejected (the rest stored); one
        # without the counts is the request refused whole (FastAPI's validation).
        if response.status_code == 422 and not (isinstance(body, dict) and "rejected" in body):
            raise error_of(route, response)
        return model.model_validate(body)

    return Call("POST", route, path, read, json=body, results=frozenset({200, 422}))


def merge_events(parts: Sequence[tuple[int, EventsResponse]]) -> EventsResponse:
    """The result of a sequence sent as several batches, each given with the index of
    its first item: rejected items' ``index`` is into the whole sequence."""
    rejected = [
        RejectedItem(index=start + r.index, id=r.id, reason=r.reason)
        for start, part in parts
        for r in part.rejected
    ]
    total = sum(p.accepted + p.duplicates for _, p in parts) + len(rejected)
    return EventsResponse(
        accepted=sum(p.accepted for _, p in parts),
        duplicates=sum(p.duplicates for _, p in parts),
        rejected=rejected,
        detail=f"{len(rejected)} of {total} events rejected; the rest were stored"
        if rejected
        else None,
    )


def merge_videos(parts: Sequence[tuple[int, VideosResponse]]) -> VideosResponse:
    rejected = [
        RejectedItem(index=start + r.index, id=r.id, reason=r.reason)
        for start, part in parts
        for r in part.rejected
    ]
    total = sum(p.upserted for _, p in parts) + len(rejected)
    return VideosResponse(
        upserted=sum(p.upserted for _, p in parts),
        rejected=rejected,
        detail=f"{len(rejected)} of {total} videos rejected; the rest were stored"
        if rejected
        else None,
    )


def get_videos(ids: Sequence[str]) -> Call[VideosOut]:
    return Call(
        "GET", "GET /v1/videos", "/v1/videos", _model(VideosOut), params={"ids": ",".join(ids)}
    )


def put_user(user_id: str, profile: ProfileIn) -> Call[UserOut]:
    return Call(
        "PUT",
        "PUT /v1/users/{user_id}",
        f"/v1/users/{_seg(user_id)}",
        _model(UserOut),
        json=_payload(profile),
        results=frozenset({200, 201}),
    )


def get_user(user_id: str) -> Call[UserDetail]:
    return Call("GET", "GET /v1/users/{user_id}", f"/v1/users/{_seg(user_id)}", _model(UserDetail))


def set_controls(user_id: str, controls: ControlsIn) -> Call[ControlsOut]:
    return Call(
        "POST",
        "POST /v1/users/{user_id}/controls",
        f"/v1/users/{_seg(user_id)}/controls",
        _model(ControlsOut),
        json=_payload(controls),
        # each field sets a value (and a refresh forgets what is learned: twice is once)
        idempotent=True,
    )


def why(user_id: str, video_id: str) -> Call[WhyOut]:
    return Call(
        "GET",
        "GET /v1/users/{user_id}/why/{video_id}",
        f"/v1/users/{_seg(user_id)}/why/{_seg(video_id)}",
        _model(WhyOut),
    )


def export_user(user_id: str) -> Call[dict[str, Any]]:
    return Call(
        "GET",
        "GET /v1/users/{user_id}/export",
        f"/v1/users/{_seg(user_id)}/export",
        _json_object,
    )


def erase_user(user_id: str) -> Call[ErasureOut]:
    # Not idempotent for the client: a second request after a first that completed is
    # a 404 (no such user), so one whose answer was lost is not sent again.
    return Call(
        "DELETE",
        "DELETE /v1/users/{user_id}",
        f"/v1/users/{_seg(user_id)}",
        _model(ErasureOut),
        idempotent=False,
    )


def moderate(action: ModerationIn) -> Call[ModerationOut]:
    return Call(
        "POST",
        "POST /v1/moderation",
        "/v1/moderation",
        _model(ModerationOut),
        json=_payload(action),
    )


def moderation_queue(limit: int) -> Call[QueueOut]:
    return Call(
        "GET",
        "GET /v1/moderation/queue",
        "/v1/moderation/queue",
        _model(QueueOut),
        params={"limit": limit},
    )


def issue_token(user_id: str, ttl_s: int | None) -> Call[TokenOut]:
    return Call(
        "POST",
        "POST /v1/tokens",
        "/v1/tokens",
        _model(TokenOut),
        json=_payload(TokenIn(user_id=user_id, ttl_s=ttl_s)),
        idempotent=False,  # harmless twice, but each is a new token: the caller decides
    )


def renew_token() -> Call[TokenOut]:
    return Call(
        "POST", "POST /v1/tokens/renew", "/v1/tokens/renew", _model(TokenOut), idempotent=False
    )


def revoke_tokens() -> Call[TokensRevokedOut]:
    return Call("DELETE", "DELETE /v1/tokens", "/v1/tokens", _model(TokensRevokedOut))


def chunks(items: Sequence[T], size: int) -> list[tuple[int, Sequence[T]]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    return [(start, items[start : start + size]) for start in range(0, len(items), size)]
