"""A typed Python client of the fyp HTTP API, for an app backend, the simulator and the
benchmarks: :class:`FypClient` (blocking) and :class:`AsyncFypClient` (asyncio).

    from fyp.client import FypClient

    with FypClient("http://127.0.0.1:8000", api_key) as fyp:
        page = fyp.feed("u1", count=10)
        fyp.send_events([{"event_id": "e1", "user_id": "u1", "video_id": page.items[0]
                          .video_id, "type": "view", "ts": 1_750_000_000_000,
                          "watch_ms": 12_000, "request_id": page.request_id}])

Results are the API's own response models (``fyp.api.schemas``); errors carry the API's
message (``fyp.client.errors``); calls are tried again on 429, 503 and lost connections
where that is safe (``fyp.client.calls.RetryPolicy``)."""

from fyp.client.aio import AsyncFypClient
from fyp.client.calls import NO_RETRIES, RetryPolicy
from fyp.client.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    FypError,
    InvalidRequestError,
    NotFoundError,
    NotHomedError,
    PayloadTooLargeError,
    RateLimitedError,
    UnavailableError,
    UnreachableError,
)
from fyp.client.sync import FypClient

__all__ = [
    "NO_RETRIES",
    "ApiError",
    "AsyncFypClient",
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "FypClient",
    "FypError",
    "InvalidRequestError",
    "NotFoundError",
    "NotHomedError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RetryPolicy",
    "UnavailableError",
    "UnreachableError",
]
