"""``POST /v1/tokens`` and ``DELETE /v1/tokens``: user tokens (``fyp.privacy.tokens``),
issued and revoked by a service key with the scope ``tokens:issue``; ``POST
/v1/tokens/renew``: a token exchanged by its holder for a fresh one."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from fyp.api.running import Running
from fyp.api.schemas import TokenIn, TokenOut, TokensRevokedOut
from fyp.api.security import Caller, Guard
from fyp.config import Settings
from fyp.privacy.keys import ApiKey
from fyp.types import now_ms


def _issuer(caller: Caller) -> ApiKey:
    if caller.key is None:
        raise HTTPException(
            409,
            "user tokens are issued by API keys, and this server asks for none "
            "(auth.required is false): its routes are open without a token",
        )
    return caller.key


def tokens_router(settings: Settings, guard: Guard, running: Running) -> APIRouter:
    """The token routes, over ``running``'s engine."""
    router = APIRouter()
    issues = Annotated[Caller, Depends(guard.require("tokens:issue"))]
    renews = Annotated[Caller, Depends(guard.require("tokens:issue", user_token=True))]
    auth = settings.auth
    eng = running.eng

    def token_out(key: ApiKey, user_id: str, expires_at: int, renewable_until: int) -> TokenOut:
        assert guard.tokens is not None  # set when the engine opened, before serving
        born = eng().born(user_id)
        if born is None:  # erased since it was checked (or renewed): none for it
            raise HTTPException(409, f"user {user_id!r} is being erased")
        token = guard.tokens.issue(key, user_id, born, expires_at, renewable_until)
        return TokenOut(
            token=token, user_id=user_id, expires_at=expires_at, renewable_until=renewable_until
        )

    @router.post(
        "/v1/tokens",
        response_model=TokenOut,
        tags=["tokens"],
        responses={404: {"description": "unknown user"}, 409: {"description": "no keys"}},
    )
    async def issue_token(body: TokenIn, caller: issues) -> TokenOut:
        """A token for one user, for the user's own client (the web player, an app): it
        reads and writes that user's feed, events, controls, why, profile and export, and
        nothing else, with at most the issuing key's scopes. Signed, not stored; refused
        once expired, or once its key is revoked or revokes its tokens (``DELETE``)."""
        key = _issuer(caller)
        running.known(body.user_id)
        ttl_s = auth.token_ttl_s if body.ttl_s is None else body.ttl_s
        if ttl_s > auth.token_max_ttl_s:
            raise HTTPException(
                422, f"ttl_s: {ttl_s} s is over the limit of {auth.token_max_ttl_s} s"
            )
        ttl_s = min(ttl_s, auth.token_max_ttl_s)  # a default set above the maximum
        now = now_ms()
        return token_out(key, body.user_id, now + ttl_s * 1000, now + auth.token_session_s * 1000)

    @router.post(
        "/v1/tokens/renew",
        response_model=TokenOut,
        tags=["tokens"],
        responses={400: {"description": "not a user token"}, 403: {"description": "not renewable"}},
    )
    async def renew_token(caller: renews) -> TokenOut:
        """A fresh token of the same user, for the token sent (not yet expired): a
        client renews before its token expires, until the ``renewable_until`` its issuer
        allowed; after that, the issuer gives the user a new token."""
        key, token = _issuer(caller), caller.token
        if token is None:
            raise HTTPException(
                400, "send the user token to renew; a key issues with POST /v1/tokens"
            )
        now = now_ms()
        if now >= token.renewable_until:
            raise HTTPException(
                403,
                "this user token may no longer be renewed (its session ended); "
                "ask the app for a new one",
            )
        expires_at = min(
            now + min(auth.token_ttl_s, auth.token_max_ttl_s) * 1000, token.renewable_until
        )
        return token_out(key, token.user_id, expires_at, token.renewable_until)

    @router.delete("/v1/tokens", response_model=TokensRevokedOut, tags=["tokens"])
    async def revoke_tokens(caller: issues) -> TokensRevokedOut:
        """Revoke every token this key has issued so far (the key itself keeps working,
        and issues new ones): at once in this process, within seconds in others. Audited."""
        key = _issuer(caller)
        assert guard.keys is not None  # a caller with a key: keys are on
        # Revoked first, then recorded (as `fyp keys revoke` does): a revocation the
        # audit log failed to record still protects the user.
        epoch = guard.keys.revoke_tokens(key.key_id)
        if epoch is None:  # revoked between authentication and now
            raise HTTPException(401, f"the API key {key.key_id} is revoked")
        eng().audit.append(
            "key.revoke_tokens", caller.actor, details={"key_id": key.key_id, "epoch": epoch}
        )
        return TokensRevokedOut(key_id=key.key_id, token_epoch=epoch)

    return router
