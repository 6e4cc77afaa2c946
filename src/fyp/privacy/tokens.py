"""User tokens: short-lived, signed, bound to one user, for the clients that must not hold
a service key (the web player, a mobile app talking to the engine directly).

A service key with the scope ``tokens:issue`` asks ``POST /v1/tokens`` for a token of one
user, and hands it to that user's client, which sends it as ``Authorization: Bearer
fyt_...``. The token is accepted on that user's routes only (``fyp.api.security``).

Nothing is stored per token: a token carries what it grants (the issuing key, the user,
the key's token epoch, when the user was created, the expiry), signed with HMAC-SHA256
under a secret derived from the pseudonym secret, which is kept outside the data
directory, so a copy of the data cannot mint tokens. A token stops working when it
expires, when its user is erased (even if created again), when its key is revoked, or
when its key's token epoch moves past the one it carries (``DELETE /v1/tokens``, ``fyp
keys revoke-tokens``): one row changes, whatever the number of tokens out there.

A token lasts minutes, so that one left in a log or a history is soon useless; a client
that is still in use exchanges it for a fresh one before it expires (``POST
/v1/tokens/renew``), up to the end of the session its issuer allowed (``renewable_until``):
past that, or once expired, only the issuer can give the user a new one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from fyp.privacy.keys import ApiKey
from fyp.privacy.pseudonym import Pseudonyms

TOKEN_PREFIX = "fyt_"
# Ours are at most ~330 characters (a 128-character id, JSON-escaped, in base64); a
# longer one is refused before any work.
MAX_TOKEN_CHARS = 1_024
_PURPOSE = "user-tokens-v1"  # the subkey's label: a new format gets a new label


@dataclass(frozen=True, slots=True)
class UserToken:
    key_id: str  # the key that issued it
    user_id: str
    epoch: int  # the key's token epoch when it was issued
    # When the user's profile was created (Unix ms): the token is theirs, not the id's,
    # and dies with them (an erased user's id created again is a new, empty user).
    born: int
    expires_at: int  # Unix ms
    # Until when it may be exchanged for a fresh token (POST /v1/tokens/renew), Unix ms:
    # a client renews its short-lived token, for a session no longer than this.
    renewable_until: int


class TokenError(ValueError):
    """Why a token is refused; the message is said to the client (401)."""


def is_user_token(credential: str) -> bool:
    return credential.startswith(TOKEN_PREFIX)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class TokenSigner:
    """Makes and reads tokens under one secret: ``fyt_<payload>.<signature>``, the payload
    a base64url JSON array ``[key_id, user_id, epoch, born, expires_at, renewable_until]``
    (readable by the client, which learns its user and expiry from it; it is not secret),
    the signature base64url HMAC-SHA256 over the payload's text."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a token secret must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def of(cls, pseudonyms: Pseudonyms) -> TokenSigner:
        """The signer of the deployment whose pseudonym secret ``pseudonyms`` holds."""
        return cls(pseudonyms.subkey(_PURPOSE))

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), "sha256").digest())

    def issue(
        self, key: ApiKey, user_id: str, born: int, expires_at: int, renewable_until: int
    ) -> str:
        claims = [key.key_id, user_id, key.token_epoch, born, expires_at, renewable_until]
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{TOKEN_PREFIX}{payload}.{self._signature(payload)}"

    def read(self, token: str) -> UserToken:
        """What a genuine token says (not yet whether it is still good: :func:`check`);
        :class:`TokenError` if it is malformed or its signature does not match."""
        if len(token) > MAX_TOKEN_CHARS or not is_user_token(token):
            raise TokenError("the user token is malformed")
        payload, dot, signature = token[len(TOKEN_PREFIX) :].partition(".")
        if not dot or not payload.isascii():
            raise TokenError("the user token is malformed")
        # Compared as text: decoding first would let base64's leniency (padding, stray
        # characters) give one signature many spellings.
        if not hmac.compare_digest(
            signature.encode("ascii", "replace"), self._signature(payload).encode()
        ):
            raise TokenError("the user token is not valid (its signature does not match)")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            key_id, user_id, epoch, born, expires_at, renewable_until = claims
        except (binascii.Error, ValueError, TypeError):
            # Signed by us, so only a bug or a changed format gets here.
            raise TokenError("the user token is malformed") from None
        if not (
            isinstance(key_id, str)
            and isinstance(user_id, str)
            and type(epoch) is int
            and type(born) is int
            and type(expires_at) is int
            and type(renewable_until) is int
        ):
            raise TokenError("the user token is malformed")
        return UserToken(key_id, user_id, epoch, born, expires_at, renewable_until)


def check(token: UserToken, key: ApiKey | None, now: int) -> ApiKey:
    """The live key behind ``token`` if the token is still good at ``now`` (Unix ms);
    else :class:`TokenError` saying why: expired, its key revoked, or its tokens."""
    if now >= token.expires_at:
        raise TokenError(
            f"the user token expired at {_utc(token.expires_at)}; ask the app for a new one"
        )
    if key is None or key.revoked_at is not None:
        raise TokenError(f"the user token's key ({token.key_id}) is revoked")
    if token.epoch != key.token_epoch:
        raise TokenError(
            f"the user token was revoked: its key ({token.key_id}) revoked the tokens it "
            "had issued; ask the app for a new one"
        )
    return key
