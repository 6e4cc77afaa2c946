"""The asyncio client: :class:`AsyncFypClient` (the same calls as :class:`fyp.client.
sync.FypClient`, awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
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


class AsyncFypClient:
    """The fyp HTTP API from Python, for asyncio: the calls, retries and errors of
    :class:`fyp.client.sync.FypClient`, awaited. ``http``: an ``httpx.AsyncClient`` to
    send through instead of one of its own (not closed by :meth:`aclose`)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._own = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s)
        self.retries = retries or RetryPolicy()
        self._sleep = sleep

    async def __aenter__(self) -> AsyncFypClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def call(self, call: Call[T]) -> T:
        """Carry ``call`` out, trying again as the retry policy says."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call.outcome(await self.http.send(call.request(self.http)))
            except (ApiError, httpx.TransportError) as err:
                if not calls.retryable(call, err):
                    raise _raised(call, err) from err
                retry_after = err.retry_after if isinstance(err, ApiError) else None
                wait = self.retries.delay(attempt, retry_after)
                if wait is None:
                    raise _raised(call, err) from err
            await self._sleep(wait)

    # -- the routes ------------------------------------------------------------------------

    async def health(self) -> Health:
        return await self.call(calls.health())

    async def feed(
        self, user_id: str, count: int | None = None, surface: str | None = None
    ) -> FeedResponse:
        return await self.call(calls.feed(user_id, count, surface))

    async def send_events(
        self, events: Sequence[EventLike], batch_size: int = 500
    ) -> EventsResponse:
        """Send ``events`` in batches of ``batch_size`` (the server takes at most 5,000),
        one after the other; the result covers them all (a rejected item's ``index`` is
        into ``events``). Items the server rejects are in the result, not raised."""
        parts = [
            (start, await self.call(calls.events(batch)))
            for start, batch in calls.chunks(events, batch_size)
        ]
        return calls.merge_events(parts)

    async def upsert_videos(
        self, videos: Sequence[VideoLike], batch_size: int = 1_000
    ) -> VideosResponse:
        parts = [
            (start, await self.call(calls.videos(batch)))
            for start, batch in calls.chunks(videos, batch_size)
        ]
        return calls.merge_videos(parts)

    async def get_videos(self, ids: Sequence[str]) -> VideosOut:
        return await self.call(calls.get_videos(ids))

    async def put_user(self, user_id: str, profile: ProfileIn | None = None) -> UserOut:
        return await self.call(calls.put_user(user_id, profile or ProfileIn()))

    async def get_user(self, user_id: str) -> UserDetail:
        return await self.call(calls.get_user(user_id))

    async def set_controls(self, user_id: str, controls: ControlsIn) -> ControlsOut:
        return await self.call(calls.set_controls(user_id, controls))

    async def why(self, user_id: str, video_id: str) -> WhyOut:
        return await self.call(calls.why(user_id, video_id))

    async def export_user(self, user_id: str) -> dict[str, Any]:
        return await self.call(calls.export_user(user_id))

    async def erase_user(self, user_id: str) -> ErasureOut:
        return await self.call(calls.erase_user(user_id))

    async def moderate(self, action: ModerationIn) -> ModerationOut:
        return await self.call(calls.moderate(action))

    async def moderation_queue(self, limit: int = 100) -> QueueOut:
        return await self.call(calls.moderation_queue(limit))

    async def issue_token(self, user_id: str, ttl_s: int | None = None) -> TokenOut:
        return await self.call(calls.issue_token(user_id, ttl_s))

    async def renew_token(self) -> TokenOut:
        return await self.call(calls.renew_token())

    async def revoke_tokens(self) -> TokensRevokedOut:
        return await self.call(calls.revoke_tokens())


def _raised(call: Call[Any], err: Exception) -> Exception:
    if isinstance(err, httpx.TransportError):
        return UnreachableError(f"{call.route}: {type(err).__name__}: {err}", call.route)
    return err
