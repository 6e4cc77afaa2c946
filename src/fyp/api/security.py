"""Who may call what: API keys and their scopes, and the rate limits (per key, per user,
per client address for failed authentication, per key for users created).

Each route declares its scope with ``Depends(guard.require("feed:read"))``; the
dependency answers 401 without a valid key, 403 with a key lacking the scope (or issued
for another region's users), and 429 with ``Retry-After`` past the key's rate, or from an
address past its failed authentications (checked first: such a request costs no key
lookup). Keys are looked up in the data directory's ``keys.db`` (made with ``fyp keys
create``), where only their hashes are kept.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's signature.

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fyp.config import Settings
from fyp.privacy.keys import ApiKey, SqliteKeyStore
from fyp.privacy.ratelimit import RateLimiter, retry_after

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


def client_address(request: Request) -> str:
    """The address failed authentications are counted against. Behind a reverse proxy,
    uvicorn has already put the client's own address here, from ``X-Forwarded-For``, when
    the proxy's address is trusted (``FORWARDED_ALLOW_IPS``; loopback by default)."""
    return request.client.host if request.client is not None else "unknown"


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
        self.failed_auth = RateLimiter(auth.failed_auth_rate_per_s, auth.failed_auth_burst)
        self.creations = RateLimiter(
            auth.user_creations_per_key / auth.user_creation_window_s,
            auth.user_creations_per_key,
        )
        self.refused: dict[str, int] = {}  # why -> count, for /metrics

    def _count(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    def _refuse(self, status: int, why: str, detail: str) -> HTTPException:
        self._count(why)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, detail, headers=headers)

    def _failed(self, address: str, why: str, detail: str) -> HTTPException:
        self.failed_auth.take(address)
        return self._refuse(401, why, detail)

    def authenticate(
        self, credentials: HTTPAuthorizationCredentials | None, address: str
    ) -> Caller:
        """The caller, whatever the route's scope; raises 401 / 429. ``address``: the
        client's, which failed authentications are counted against."""
        if self.keys is None:
            return Caller(None)
        # Checked before the lookup: from an address past its failures, an unknown key id
        # is refused from memory. A valid key is still served there: the address may be
        # a proxy's or a NAT's, shared with the callers who fail.
        wait = self.failed_auth.wait(address)
        key = None
        if credentials is not None:
            key = self.keys.authenticate(credentials.credentials, ask_about_unknown=wait == 0)
        if key is None and wait > 0:
            self._count("failed_auth_limited")
            raise too_many(wait, f"requests without a valid API key from {address}")
        if credentials is None:
            raise self._failed(
                address,
                "missing",
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(an operator makes one with 'fyp keys create')",
            )
        if key is None:
            raise self._failed(address, "invalid", "the API key is not valid (unknown or revoked)")
        wait = self.per_key.take(key.key_id)
        if wait > 0:
            self._count("rate_limited")
            raise too_many(wait, f"key {key.key_id}")
        return Caller(key)

    def metrics_access(self, public: bool):  # type: ignore[no-untyped-def]
        """The dependency of ``/metrics``: open when configured so
        (``auth.metrics_public``), else any valid key, whatever its scopes."""

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            if not public:
                self.authenticate(credentials, client_address(request))

        return dependency

    def require(self, scope: str):  # type: ignore[no-untyped-def]
        """The dependency of a route that needs ``scope``. Async, so FastAPI runs it on
        the event loop: a sync dependency would go through a thread pool on every
        request (a thread hop and GIL hand-offs for microseconds of work)."""

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Caller:
            caller = self.authenticate(credentials, client_address(request))
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

    def check_creation(self, caller: Caller) -> None:
        """429 if ``caller`` may create no more users now. Checked before a ``PUT`` of an
        unknown user; the token is spent only by :meth:`created_user`, once the user was
        created, so an update (or a refused request) costs none."""
        wait = self.creations.wait(caller.actor)
        if wait > 0:
            auth = self.settings.auth
            self._count("user_creation_limited")
            seconds = retry_after(wait)
            raise HTTPException(
                429,
                f"{caller.actor} has created the users it may: at most "
                f"{auth.user_creations_per_key:,} per {auth.user_creation_window_s:g} s "
                f"(auth.user_creations_per_key); updates of existing users still work; "
                f"retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    def created_user(self, caller: Caller) -> None:
        self.creations.take(caller.actor)
