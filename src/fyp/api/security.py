"""Who may call what: API keys and their scopes, user tokens, and the rate limits (per
key, per user, per client address for failed authentication, per key for users created).

Each route declares its scope with ``Depends(guard.require("feed:read"))``; the
dependency answers 401 without a valid key, 403 with a key lacking the scope (or issued
for another region's users), and 429 with ``Retry-After`` past the key's rate, or from an
address past its failed authentications (checked first: such a request costs no key
lookup). Keys are looked up in the data directory's ``keys.db`` (made with ``fyp keys
create``), where only their hashes are kept.

A user token (``fyp.privacy.tokens``) stands for its issuing key narrowed to one user: it
is accepted only by the routes that declare ``require(scope, user_token=True)``, which
then call :meth:`Guard.own` with the user they touch. A token's request for another
user, or on a route it is not accepted on, is 403 and audited (``on_token_refused``). A
token never grants more than its key: the key must hold the route's scope too.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's signature.

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fyp.config import Settings
from fyp.privacy.keys import ApiKey, KeyStore
from fyp.privacy.ratelimit import limiters, limits_store, retry_after, take_in_turn
from fyp.privacy.tokens import TokenError, TokenSigner, UserToken, check, is_user_token
from fyp.types import now_ms

ANONYMOUS = "anonymous"  # the actor of every call when keys are not required
bearer = HTTPBearer(
    auto_error=False,
    description=(
        "An API key from `fyp keys create`, or a user token from `POST /v1/tokens`, "
        "as `Authorization: Bearer <key or token>`."
    ),
)
TOKEN_ACTOR_SUFFIX = "/token"  # the audit actor of a token's request: "<key_id>/token"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of a request: the actor named in the audit log."""

    key: ApiKey | None
    token: UserToken | None = None  # a user token's claims; None for a service key
    # (user, wait): the user's token of the route's per-user limit, taken with the key's
    # in one round trip (see ``Guard.require``'s ``takes_user``); None: not taken.
    user_taken: tuple[str, float] | None = None

    @property
    def user(self) -> str | None:
        """The one user a token is bound to; None for a service key (any user)."""
        return None if self.token is None else self.token.user_id

    @property
    def actor(self) -> str:
        """The key's id; for a token, ``<key id>/token`` (never the user: the audit log
        names users only as subjects, by their audit reference)."""
        if self.key is None:
            return ANONYMOUS
        return self.key.key_id + ("" if self.user is None else TOKEN_ACTOR_SUFFIX)


# Records a request refused to a user token (the audit log): the request, its caller,
# and what was refused.
TokenRefusal = Callable[[Request, Caller, Mapping[str, Any]], None]

# The user whose per-user limit a route takes (``Guard.user_wait``) for this request and
# caller once the guard lets it through, where the route surely reaches that take (its
# parameters valid, its own checks passed); None where it may not, or cannot tell. The
# guard then takes the user's token with the key's, in one round trip on Redis.
UserTaken = Callable[[Request, Caller], str | None]


def client_address(request: Request) -> str:
    """The address failed authentications are counted against. Behind a reverse proxy,
    uvicorn has already put the client's own address here, from ``X-Forwarded-For``, when
    the proxy's address is trusted (``FORWARDED_ALLOW_IPS``; loopback by default)."""
    return request.client.host if request.client is not None else "unknown"


def too_many(wait_s: float, what: str, detail: str | None = None) -> HTTPException:
    """429 with ``Retry-After``; ``detail`` (default: the limit of ``what`` exceeded) is
    followed by the wait it names."""
    seconds = retry_after(wait_s)
    return HTTPException(
        429,
        f"{detail or f'rate limit of {what} exceeded'}; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


class Guard:
    def __init__(self, settings: Settings, keys: KeyStore | None) -> None:
        self.settings = settings
        self.keys = keys
        auth = settings.auth
        # In this process, or shared by every API process on a Redis server.
        limiter = limiters(limits_store(auth.rate_limits, settings.event_log))
        self.per_key = limiter("key", auth.key_rate_per_s, auth.key_burst)
        self.per_user = limiter("user", auth.user_rate_per_s, auth.user_burst)
        self.failed_auth = limiter(
            "failed_auth", auth.failed_auth_rate_per_s, auth.failed_auth_burst
        )
        self.creations = limiter(
            "creations",
            auth.user_creations_per_key / auth.user_creation_window_s,
            auth.user_creations_per_key,
        )
        self.refused: dict[str, int] = {}  # why -> count, for /metrics
        # Set when the engine is open (its pseudonym secret): until then a token is 401.
        self.tokens: TokenSigner | None = None
        self.on_token_refused: TokenRefusal | None = None
        # When a user's profile was created (None: no such user, or being erased), from
        # the engine: a token of an erased user stops, even if the id is created again.
        self.user_born: Callable[[str], int | None] | None = None

    def _count(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    def _refuse(self, status: int, why: str, detail: str) -> HTTPException:
        self._count(why)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, detail, headers=headers)

    async def _failed(self, address: str, why: str, detail: str) -> HTTPException:
        await self.failed_auth.take(address)
        return self._refuse(401, why, detail)

    async def close(self) -> None:
        """The limiters' connections closed (the server is stopping)."""
        for limiter in (self.per_key, self.per_user, self.failed_auth, self.creations):
            await limiter.close()

    async def authenticate(
        self,
        credentials: HTTPAuthorizationCredentials | None,
        address: str,
        user_next: Callable[[Caller], str | None] | None = None,
    ) -> Caller:
        """The caller, whatever the route's scope; raises 401 / 429. ``address``: the
        client's, which failed authentications (a bad key or a bad token alike) are
        counted against. ``user_next``: the user whose per-user token the route takes
        next, given the caller (None: none), taken with the key's (``Caller.user_taken``)."""
        if self.keys is None:
            return Caller(None)
        # A valid key is served whatever its address's failures (the address may be a
        # proxy's or a NAT's, shared with the callers who fail), so a key this process
        # holds, or a good token, is checked first, from memory, and the failures are
        # asked for only otherwise: on Redis, that question was a round trip of every
        # request, answered after the event log's fsyncs.
        why, detail = (
            "missing",
            "an API key is required: send 'Authorization: Bearer <key>' "
            "(an operator makes one with 'fyp keys create')",
        )
        if credentials is not None and is_user_token(credentials.credentials):
            try:
                key, token = self._token(credentials.credentials)
            except TokenError as err:
                why, detail = "token", str(err)
            else:
                return await self._within_key_rate(key, token, user_next)
        elif credentials is not None:
            held = self.keys.authenticate(credentials.credentials, ask_about_unknown=False)
            if held is not None:
                return await self._within_key_rate(held, None, user_next)
        # Checked before the lookup: from an address past its failures, an unknown key id
        # is refused from memory.
        wait = await self.failed_auth.wait(address)
        if credentials is not None and not is_user_token(credentials.credentials):
            looked_up = self.keys.authenticate(credentials.credentials, ask_about_unknown=wait == 0)
            if looked_up is not None:
                return await self._within_key_rate(looked_up, None, user_next)
            why, detail = "invalid", "the API key is not valid (unknown or revoked)"
        if wait > 0:
            self._count("failed_auth_limited")
            raise too_many(wait, f"requests without a valid API key from {address}")
        raise await self._failed(address, why, detail)

    async def _within_key_rate(
        self,
        key: ApiKey,
        token: UserToken | None,
        user_next: Callable[[Caller], str | None] | None,
    ) -> Caller:
        """The caller, once ``key``'s rate allows the request (else 429). A token's
        requests count against its key's rate: the key's limit bounds what one client (a
        backend and the users it issued tokens to) asks of the server. The user
        ``user_next`` names (if any) has their token taken too, once the key's was, in
        the same round trip: the route would take it next."""
        caller = Caller(key, token)
        user = None if user_next is None else user_next(caller)
        if user is None:
            waits: list[float | None] = [await self.per_key.take(key.key_id), None]
        else:
            waits = await take_in_turn([(self.per_key, key.key_id), (self.per_user, user)])
        wait, user_wait = waits
        assert wait is not None  # (the first is always asked)
        if wait > 0:
            self._count("rate_limited")
            raise too_many(wait, f"key {key.key_id}")
        if user is None or user_wait is None:
            return caller
        return Caller(key, token, (user, user_wait))

    def _token(self, credential: str) -> tuple[ApiKey, UserToken]:
        """The issuing key and the claims of a good token; TokenError saying why not.
        A forged token fails its signature before any key is looked up."""
        assert self.keys is not None
        if self.tokens is None:
            raise TokenError("user tokens are not accepted yet (the server is starting)")
        token = self.tokens.read(credential)
        key = check(token, self.keys.lookup(token.key_id), now_ms())
        if self.user_born is not None and self.user_born(token.user_id) != token.born:
            raise TokenError(
                "the user this token was issued for no longer exists (erased, or created "
                "again since): ask the app for a new one"
            )
        return key, token

    def token_refused(self, request: Request, caller: Caller, **facts: Any) -> None:
        """Count and audit something refused to a user token (a request, or some of the
        events of a batch)."""
        self.refused["token_forbidden"] = self.refused.get("token_forbidden", 0) + 1
        if self.on_token_refused is not None:
            self.on_token_refused(request, caller, facts)

    def forbid(self, request: Request, caller: Caller, detail: str, **facts: Any) -> HTTPException:
        """403 for a request a user token may not make, recorded in the audit log."""
        self.token_refused(request, caller, **facts)
        return HTTPException(403, detail)

    def own(self, request: Request, caller: Caller, user_id: str) -> None:
        """403 (audited) unless ``caller`` may act for ``user_id``: a service key may for
        any user, a token only for its own."""
        if caller.user is not None and caller.user != user_id:
            raise self.forbid(
                request,
                caller,
                "this user token is for another user: it is accepted only for its own "
                "user's feed, events, controls, why, profile and export",
                asked_for=user_id,
            )

    def metrics_access(self, public: bool):  # type: ignore[no-untyped-def]
        """The dependency of ``/metrics``: open when configured so
        (``auth.metrics_public``), else any valid key, whatever its scopes."""

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            if not public:
                caller = await self.authenticate(credentials, client_address(request))
                if caller.user is not None:
                    raise self.forbid(
                        request, caller, "a user token is not accepted on /metrics: it needs a key"
                    )

        return dependency

    def _not_allowed(self, caller: Caller, scope: str, user_token: bool) -> tuple[str, str] | None:
        """Why ``caller`` may not call a route that needs ``scope`` (``user_token``: one
        that accepts tokens): what to count ("token": refused to a token, audited) and
        the detail; None: it may."""
        key = caller.key
        if key is None:
            return None
        if caller.user is not None and not user_token:
            return (
                "token",
                "a user token is not accepted on this route: it needs a service key "
                f"with the scope {scope!r}",
            )
        if not key.allows(scope):
            whose = "this key" if caller.user is None else "the key that issued this token"
            detail = (
                f"{whose} ({key.key_id}) lacks the scope {scope!r}; it has {sorted(key.scopes)}"
            )
            return ("token" if caller.user is not None else "scope", detail)
        if key.region is not None and key.region != self.settings.region:
            return (
                "region",
                f"this key ({key.key_id}) is for region {key.region!r}'s users; this "
                f"deployment serves {self.settings.region!r}",
            )
        return None

    def require(  # type: ignore[no-untyped-def]
        self, scope: str, *, user_token: bool = False, takes_user: UserTaken | None = None
    ):
        """The dependency of a route that needs ``scope``; ``user_token``: a user token
        is accepted too (the route then checks the user with :meth:`own`);
        ``takes_user``: the route then takes a user's per-user token
        (:meth:`user_wait`), which the guard takes with the key's where it can (one round
        trip, not two, where the limits are on Redis). Async, so FastAPI runs it on the
        event loop: a sync dependency would go through a thread pool on every request (a
        thread hop and GIL hand-offs for microseconds of work)."""

        async def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Caller:
            user_next = None
            if takes_user is not None:
                route_user = takes_user

                def user_next(caller: Caller) -> str | None:
                    # Only where this guard lets the caller through: else the route never
                    # takes the user's token, and neither may the guard.
                    if self._not_allowed(caller, scope, user_token) is not None:
                        return None
                    return route_user(request, caller)

            caller = await self.authenticate(credentials, client_address(request), user_next)
            request.state.caller = caller  # for the error handlers' audit records
            refused = self._not_allowed(caller, scope, user_token)
            if refused is None:
                return caller
            why, detail = refused
            if why == "token":
                raise self.forbid(request, caller, detail)
            raise self._refuse(403, why, detail)

        return dependency

    async def user_wait(self, user_id: str, caller: Caller | None = None) -> float:
        """Seconds ``user_id`` must wait (0: go ahead): their feed requests and events.
        Taken already, with the key's, where ``caller`` says so (``user_taken``)."""
        if caller is not None and caller.user_taken is not None:
            taken_for, wait = caller.user_taken
            if taken_for == user_id:
                return wait
        return await self.per_user.take(user_id)

    async def user_waits(self, user_ids: Sequence[str]) -> list[float]:
        """:meth:`user_wait` for each in turn (a user may come again: an event batch),
        at once (one round trip where the limits are on Redis)."""
        return await self.per_user.take_each(user_ids)

    async def check_creation(self, caller: Caller) -> None:
        """429 if ``caller`` may create no more users now. Checked before a ``PUT`` of an
        unknown user; the token is spent only by :meth:`created_user`, once the user was
        created, so an update (or a refused request) costs none."""
        wait = await self.creations.wait(caller.actor)
        if wait > 0:
            auth = self.settings.auth
            self._count("user_creation_limited")
            raise too_many(
                wait,
                "user creation",
                f"{caller.actor} has created the users it may: at most "
                f"{auth.user_creations_per_key:,} per {auth.user_creation_window_s:g} s "
                f"(auth.user_creations_per_key); updates of existing users still work",
            )

    async def created_user(self, caller: Caller) -> None:
        await self.creations.take(caller.actor)
