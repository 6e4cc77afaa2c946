"""Who may call what: API keys and their scopes, per-key and per-user rate limits.

Each route declares its scope with ``Depends(guard.require("feed:read"))``; the
dependency answers 401 without a valid key, 403 with a key lacking the scope (or issued
for another region's users), and 429 with ``Retry-After`` past the key's rate. Keys are
looked up in the data directory's ``keys.db`` (made with ``fyp keys create``), where
only their hashes are kept.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's signature.

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fyp.config import Settings
from fyp.privacy.keys import ApiKey, SqliteKeyStore
from fyp.privacy.ratelimit import RateLimiter

ANONYMOUS = "anonymous"  # the actor of every call when keys are not required
bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `fyp keys create`, as `Authorization: Bearer <key>`.",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of a request: the actor named in the audit log."""

    key: ApiKey | None

    @property
    def actor(self) -> str:
        return ANONYMOUS if self.key is None else self.key.key_id


def retry_after(wait_s: float) -> int:
    """Whole seconds to tell a rate-limited client to wait (at least 1)."""
    return max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else 3600


def too_many(wait_s: float, what: str) -> HTTPException:
    seconds = retry_after(wait_s)
    return HTTPException(
        429,
        f"rate limit of {what} exceeded; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


class Guard:
    def __init__(self, settings: Settings, keys: SqliteKeyStore | None) -> None:
        self.settings = settings
        self.keys = keys
        auth = settings.auth
        self.per_key = RateLimiter(auth.key_rate_per_s, auth.key_burst)
        self.per_user = RateLimiter(auth.user_rate_per_s, auth.user_burst)
        self.refused: dict[str, int] = {}  # why -> count, for /metrics

    def _refuse(self, status: int, why: str, detail: str) -> HTTPException:
        self.refused[why] = self.refused.get(why, 0) + 1
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, detail, headers=headers)

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Caller:
        """The caller, whatever the route's scope; raises 401 / 429."""
        if self.keys is None:
            return Caller(None)
        if credentials is None:
            raise self._refuse(
                401,
                "missing",
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(an operator makes one with 'fyp keys create')",
            )
        key = self.keys.authenticate(credentials.credentials)
        if key is None:
            raise self._refuse(401, "invalid", "the API key is not valid (unknown or revoked)")
        wait = self.per_key.take(key.key_id)
        if wait > 0:
            self.refused["rate_limited"] = self.refused.get("rate_limited", 0) + 1
            raise too_many(wait, f"key {key.key_id}")
        return Caller(key)

    def metrics_access(self, loopback: bool):  # type: ignore[no-untyped-def]
        """The dependency of ``/metrics``: open on a loopback bind, else any valid key."""

        async def dependency(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            if not loopback:
                self.authenticate(credentials)

        return dependency

    def require(self, scope: str):  # type: ignore[no-untyped-def]
        """The dependency of a route that needs ``scope``. Async, so FastAPI runs it on
        the event loop: a sync dependency would go through a thread pool on every
        request (a thread hop and GIL hand-offs for microseconds of work)."""

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Caller:
            caller = self.authenticate(credentials)
            request.state.caller = caller  # for the error handlers' audit records
            key = caller.key
            if key is None:
                return caller
            if not key.allows(scope):
                raise self._refuse(
                    403,
                    "scope",
                    f"this key ({key.key_id}) lacks the scope {scope!r}; "
                    f"it has {sorted(key.scopes)}",
                )
            if key.region is not None and key.region != self.settings.region:
                raise self._refuse(
                    403,
                    "region",
                    f"this key ({key.key_id}) is for region {key.region!r}'s users; this "
                    f"deployment serves {self.settings.region!r}",
                )
            return caller

        return dependency

    def user_wait(self, user_id: str) -> float:
        """Seconds ``user_id`` must wait (0: go ahead): their feed requests and events."""
        return self.per_user.take(user_id)
