"""The blocking client: :class:`FypClient`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from fyp.api.schemas import (
    ControlsOut,
    ErasureOut,
    EventsResponse,
    FeedResponse,
    Health,
    ModerationIn,
    ModerationOut,
    QueueOut,
    TokenOut,
    TokensRevokedOut,
    UserDetail,
    UserOut,
    VideosOut,
    VideosResponse,
    WhyOut,
)
from fyp.client import calls
from fyp.client.calls import Call, EventLike, RetryPolicy, VideoLike
from fyp.client.errors import ApiError, UnreachableError
from fyp.users.controls import ControlsIn, ProfileIn

T = TypeVar("T")


class FypClient:
    """The fyp HTTP API from Python, blocking; one per thread or shared (httpx's client
    is thread-safe). ``api_key``: a key (``fyp keys create``) or a user token, sent as
    ``Authorization: Bearer``. ``http``: an ``httpx.Client`` to send through instead of
    one of its own (its base URL and headers are used as they are; it is not closed).

    Every call is tried again, as ``retries`` says, when the server refuses for now (429,
    503: after its ``Retry-After``) or cannot be reached; and when the connection fails
    after the request was sent, for calls that may be sent twice (events, which are
    idempotent by ``event_id``; reads; updates). Errors are :class:`fyp.client.errors.
    ApiError` (with the API's message) or :class:`~fyp.client.errors.UnreachableError`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._own = http is None
        self.http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self.retries = retries or RetryPolicy()
        self._sleep = sleep

    def __enter__(self) -> FypClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def call(self, call: Call[T]) -> T:
        """Carry ``call`` out, trying again as the retry policy says."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call.outcome(self.http.send(call.request(self.http)))
            except (ApiError, httpx.TransportError) as err:
                if not calls.retryable(call, err):
                    raise _raised(call, err) from err
                retry_after = err.retry_after if isinstance(err, ApiError) else None
                wait = self.retries.delay(attempt, retry_after)
                if wait is None:
                    raise _raised(call, err) from err
            self._sleep(wait)

    # -- the routes ------------------------------------------------------------------------

    def health(self) -> Health:
        return self.call(calls.health())

    def feed(
        self, user_id: str, count: int | None = None, surface: str | None = None
    ) -> FeedResponse:
        return self.call(calls.feed(user_id, count, surface))

    def send_events(self, events: Sequence[EventLike], batch_size: int = 500) -> EventsResponse:
        """Send ``events`` in batches of ``batch_size`` (the server takes at most 5,000),
        one after the other; the result covers them all (a rejected item's ``index`` is
        into ``events``). Items the server rejects are in the result, not raised."""
        parts = [
            (start, self.call(calls.events(batch)))
            for start, batch in calls.chunks(events, batch_size)
        ]
        return calls.merge_events(parts)

    def upsert_videos(self, videos: Sequence[VideoLike], batch_size: int = 1_000) -> VideosResponse:
        parts = [
            (start, self.call(calls.videos(batch)))
            for start, batch in calls.chunks(videos, batch_size)
        ]
        return calls.merge_videos(parts)

    def get_videos(self, ids: Sequence[str]) -> VideosOut:
        return self.call(calls.get_videos(ids))

    def put_user(self, user_id: str, profile: ProfileIn | None = None) -> UserOut:
        return self.call(calls.put_user(user_id, profile or ProfileIn()))

    def get_user(self, user_id: str) -> UserDetail:
        return self.call(calls.get_user(user_id))

    def set_controls(self, user_id: str, controls: ControlsIn) -> ControlsOut:
        return self.call(calls.set_controls(user_id, controls))

    def why(self, user_id: str, video_id: str) -> WhyOut:
        return self.call(calls.why(user_id, video_id))

    def export_user(self, user_id: str) -> dict[str, Any]:
        return self.call(calls.export_user(user_id))

    def erase_user(self, user_id: str) -> ErasureOut:
        return self.call(calls.erase_user(user_id))

    def moderate(self, action: ModerationIn) -> ModerationOut:
        return self.call(calls.moderate(action))

    def moderation_queue(self, limit: int = 100) -> QueueOut:
        return self.call(calls.moderation_queue(limit))

    def issue_token(self, user_id: str, ttl_s: int | None = None) -> TokenOut:
        return self.call(calls.issue_token(user_id, ttl_s))

    def renew_token(self) -> TokenOut:
        return self.call(calls.renew_token())

    def revoke_tokens(self) -> TokensRevokedOut:
        return self.call(calls.revoke_tokens())


def _raised(call: Call[Any], err: Exception) -> Exception:
    if isinstance(err, httpx.TransportError):
        return UnreachableError(f"{call.route}: {type(err).__name__}: {err}", call.route)
    return err
