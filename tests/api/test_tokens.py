"""User tokens (OWASP API1, broken object-level authorization): a service key with
``tokens:issue`` issues a short-lived signed token bound to one user; the token works on
that user's routes only, and anything else it asks is 403 and audited.

Before tokens, a client that talks to the engine directly (the web player, an app) held
a full key, and a ``feed:read`` key reads, and writes into, any user's history: five feed
requests for bob's id took his exported impressions from 13 to 63. Service keys stay
unrestricted (a backend serves every user); the token is the fix for clients."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import Settings
from fyp.engine import Engine
from fyp.privacy.keys import KEYS_FILE, SCOPES, SqliteKeyStore, bearer, create_key
from fyp.privacy.tokens import TokenSigner
from fyp.types import now_ms

# The routes of one user that a token of that user may call, with the scope each needs.
USER_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/feed?user_id={u}&count=3", None),
    ("GET", "/v1/users/{u}", None),
    ("POST", "/v1/users/{u}/controls", {"mute_keywords": ["x"]}),
    ("GET", "/v1/users/{u}/why/v001", None),
    ("GET", "/v1/users/{u}/export", None),
]
# Routes of no one user, or of a user's life cycle, that need a service key.
SERVICE_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/videos", {"videos": []}),
    ("POST", "/v1/moderation", {"video_id": "v001", "state": "limited", "reason": "r"}),
    ("GET", "/v1/moderation/queue", None),
    ("GET", "/v1/audit", None),
    ("GET", "/v1/audit/report", None),
    ("GET", "/v1/stats", None),
    ("PUT", "/v1/users/alice", {"age_band": "18-24"}),  # the app sets the profile
    ("DELETE", "/v1/users/alice", None),
    ("POST", "/v1/tokens", {"user_id": "alice"}),  # a token mints no tokens
    ("DELETE", "/v1/tokens", None),
]


@pytest.fixture
def users(client: TestClient, catalog: Any) -> list[str]:
    for user in ("alice", "bob"):
        assert client.put(f"/v1/users/{user}", json={}).is_success
    return ["alice", "bob"]


def _issue(client: TestClient, user_id: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/tokens", json={"user_id": user_id, **body})
    assert resp.status_code == 200, resp.text
    issued: dict[str, Any] = resp.json()
    return issued


@pytest.fixture
def alice(client: TestClient, users: list[str]) -> dict[str, str]:
    """Headers with a token of alice's, issued by the client's all-scope key."""
    return bearer(_issue(client, "alice")["token"])


def _refusals(engine: Engine) -> list[Any]:
    return [r for r in engine.audit.records() if r.action == "token.refused"]


def _impressions(client: TestClient, user: str) -> int:
    resp = client.get(f"/v1/users/{user}/export")  # the service key
    assert resp.status_code == 200, resp.text
    return len(resp.json()["impressions"])


def test_issuing_a_token_needs_the_tokens_issue_scope(
    client: TestClient, users: list[str], settings: Settings
) -> None:
    assert "tokens:issue" in SCOPES  # so `fyp keys create --scopes all` grants it
    others = bearer(create_key(settings.data_dir, [s for s in SCOPES if s != "tokens:issue"])[1])
    resp = client.post("/v1/tokens", json={"user_id": "alice"}, headers=others)
    assert resp.status_code == 403 and "'tokens:issue'" in resp.json()["detail"]
    resp = client.delete("/v1/tokens", headers=others)
    assert resp.status_code == 403 and "'tokens:issue'" in resp.json()["detail"]
    before = now_ms()
    issued = _issue(client, "alice")
    assert issued["user_id"] == "alice" and issued["token"].startswith("fyt_")
    ttl_ms = settings.auth.token_ttl_s * 1000
    assert before + ttl_ms <= issued["expires_at"] <= now_ms() + ttl_ms
    assert _issue(client, "alice", ttl_s=60)["expires_at"] <= now_ms() + 60_000
    # Over the configured maximum, or for a user that does not exist: said, not issued.
    too_long = {"user_id": "alice", "ttl_s": settings.auth.token_max_ttl_s + 1}
    resp = client.post("/v1/tokens", json=too_long)
    assert resp.status_code == 422 and "ttl_s" in resp.text
    resp = client.post("/v1/tokens", json={"user_id": "nobody"})
    assert resp.status_code == 404 and "PUT /v1/users" in resp.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES)
def test_a_token_serves_its_own_user(
    client: TestClient, alice: dict[str, str], method: str, path: str, body: Any
) -> None:
    client.get("/v1/feed?user_id=alice&count=50")  # v001 served to alice: why finds it
    resp = client.request(method, path.format(u="alice"), json=body, headers=alice)
    assert resp.status_code in (200, 404), resp.text  # why: 404 if v001 was not served
    if "/why/" not in path:
        assert resp.status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES)
def test_a_token_is_403_and_audited_for_another_users_routes(
    client: TestClient,
    engine: Engine,
    alice: dict[str, str],
    method: str,
    path: str,
    body: Any,
) -> None:
    history = _impressions(client, "bob")
    refusals = len(_refusals(engine))
    resp = client.request(method, path.format(u="bob"), json=body, headers=alice)
    assert resp.status_code == 403, resp.text
    assert "another user" in resp.json()["detail"]
    # Nothing read, nothing written into bob's history (the defect the issue measured).
    assert _impressions(client, "bob") == history
    records = _refusals(engine)
    assert len(records) == refusals + 1
    record = records[-1]
    assert record.outcome == "refused" and record.actor.endswith("/token")
    assert record.subject == engine.pseudonyms.audit_ref("alice")
    assert record.details["asked_for"] == engine.pseudonyms.audit_ref("bob")
    assert (record.details["method"], record.details["route"]) == (
        method,
        path.split("?")[0].replace("{u}", "{user_id}").replace("v001", "{video_id}"),
    )
    assert "bob" not in str(record.details) and "alice" not in str(record.details)


@pytest.mark.parametrize(("method", "path", "body"), SERVICE_ROUTES)
def test_a_token_is_403_and_audited_on_routes_that_need_a_service_key(
    client: TestClient,
    engine: Engine,
    alice: dict[str, str],
    method: str,
    path: str,
    body: Any,
) -> None:
    refusals = len(_refusals(engine))
    resp = client.request(method, path, json=body, headers=alice)
    assert resp.status_code == 403, resp.text
    assert "service key" in resp.json()["detail"]
    assert len(_refusals(engine)) == refusals + 1
    assert client.get("/v1/users/alice").status_code == 200  # not erased


def test_public_card_data_is_served_to_a_token(client: TestClient, alice: dict[str, str]) -> None:
    """The player shows each card's catalog data (no user's): GET /v1/videos."""
    resp = client.get("/v1/videos?ids=v001,v002", headers=alice)
    assert resp.status_code == 200 and len(resp.json()["videos"]) == 2


def test_a_token_never_grants_more_than_its_key(
    client: TestClient, users: list[str], settings: Settings, engine: Engine
) -> None:
    narrow = bearer(create_key(settings.data_dir, ["tokens:issue", "feed:read"])[1])
    resp = client.post("/v1/tokens", json={"user_id": "alice"}, headers=narrow)
    token = bearer(resp.json()["token"])
    assert client.get("/v1/feed?user_id=alice", headers=token).status_code == 200
    resp = client.post("/v1/users/alice/controls", json={}, headers=token)
    assert resp.status_code == 403 and "'events:write'" in resp.json()["detail"]
    assert client.get("/v1/users/alice/export", headers=token).status_code == 403


def _tampered(token: str) -> list[str]:
    payload, signature = token.removeprefix("fyt_").split(".")
    claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    bob = base64.urlsafe_b64encode(claims.replace(b'"alice"', b'"bob"')).rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return [
        f"fyt_{bob}.{signature}",  # another user, the signature kept
        f"fyt_{payload}.{flipped}",
        f"fyt_{payload}.{signature}=",  # base64 padding: the same bytes, another spelling
        f"fyt_{payload}",
        f"fyt_{payload}.",
        "fyt_" + "A" * 2000,
        token[:-10],
    ]


def test_tampered_forged_and_expired_tokens_are_401(
    client: TestClient, engine: Engine, alice: dict[str, str], users: list[str]
) -> None:
    token = alice["Authorization"].removeprefix("Bearer ")
    for bad in _tampered(token):
        resp = client.get("/v1/feed?user_id=bob", headers=bearer(bad))
        assert resp.status_code == 401, bad
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    keys = SqliteKeyStore(engine.settings.data_dir / KEYS_FILE)
    try:
        key = next(k for k in keys.list() if k.label == "tests")
    finally:
        keys.close()
    # Signed with another deployment's secret: 401.
    later = now_ms() + 60_000
    forged = TokenSigner(b"another deployment's secret!").issue(key, "alice", 0, later, later)
    assert client.get("/v1/feed?user_id=alice", headers=bearer(forged)).status_code == 401
    # Genuine, but expired: 401, saying so; and it cannot be renewed.
    signer, born = TokenSigner.of(engine.pseudonyms), engine.born("alice")
    assert born is not None
    expired = bearer(signer.issue(key, "alice", born, now_ms() - 1, later))
    resp = client.get("/v1/feed?user_id=alice", headers=expired)
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]
    assert client.post("/v1/tokens/renew", headers=expired).status_code == 401


def test_a_token_is_renewed_by_its_holder_within_its_session(
    client: TestClient, engine: Engine, users: list[str], settings: Settings
) -> None:
    issued = _issue(client, "alice", ttl_s=60)
    session_ms = settings.auth.token_session_s * 1000
    assert issued["renewable_until"] >= issued["expires_at"] - 60_000 + session_ms
    resp = client.post("/v1/tokens/renew", headers=bearer(issued["token"]))
    assert resp.status_code == 200, resp.text
    renewed = resp.json()
    assert renewed["user_id"] == "alice" and renewed["token"] != issued["token"]
    assert renewed["expires_at"] > issued["expires_at"]  # the default TTL, over 60 s
    assert renewed["renewable_until"] == issued["renewable_until"]  # not extended
    fresh = bearer(renewed["token"])
    assert client.get("/v1/feed?user_id=alice", headers=fresh).status_code == 200
    assert client.get("/v1/feed?user_id=bob", headers=fresh).status_code == 403
    # A key renews nothing (it issues); a token past its session is not renewed.
    assert client.post("/v1/tokens/renew").status_code == 400
    keys = SqliteKeyStore(settings.data_dir / KEYS_FILE)
    try:
        key = next(k for k in keys.list() if k.label == "tests")
    finally:
        keys.close()
    born = engine.born("alice")
    assert born is not None
    signer = TokenSigner.of(engine.pseudonyms)
    ended = signer.issue(key, "alice", born, now_ms() + 60_000, now_ms())
    resp = client.post("/v1/tokens/renew", headers=bearer(ended))
    assert resp.status_code == 403 and "new one" in resp.json()["detail"]


def test_revoking_its_keys_tokens_stops_them_and_the_key_goes_on(
    client: TestClient, engine: Engine, alice: dict[str, str]
) -> None:
    assert client.get("/v1/feed?user_id=alice", headers=alice).status_code == 200
    resp = client.delete("/v1/tokens")
    assert resp.status_code == 200 and resp.json()["token_epoch"] == 1
    resp = client.get("/v1/feed?user_id=alice", headers=alice)
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
    assert client.get("/v1/feed?user_id=alice").status_code == 200  # the key itself works
    fresh = bearer(_issue(client, "alice")["token"])
    assert client.get("/v1/feed?user_id=alice", headers=fresh).status_code == 200
    record = [r for r in engine.audit.records() if r.action == "key.revoke_tokens"][-1]
    assert record.details["epoch"] == 1


def test_a_token_dies_with_its_user_and_never_serves_a_user_made_again(
    client: TestClient, engine: Engine, alice: dict[str, str]
) -> None:
    """A token is bound to its user as they were when it was issued (their profile's
    creation), not to the id alone. Mutation it catches: without that binding, a token
    of a user since erased, its 15 minutes (or its renewals, for hours) not up, reads and
    writes the history of the user the app creates again under the same id, who must
    start empty."""
    assert client.get("/v1/feed?user_id=alice", headers=alice).status_code == 200
    assert client.delete("/v1/users/alice").status_code == 200
    resp = client.get("/v1/feed?user_id=alice", headers=alice)
    assert resp.status_code == 401 and "no longer" in resp.json()["detail"], resp.text
    time.sleep(0.002)  # a creation in another millisecond, as any real one is
    assert client.put("/v1/users/alice", json={}).status_code == 201
    for method, path in (("GET", "/v1/feed?user_id=alice"), ("POST", "/v1/tokens/renew")):
        resp = client.request(method, path, headers=alice)
        assert resp.status_code == 401 and "no longer" in resp.json()["detail"], resp.text
    assert _impressions(client, "alice") == 0
    fresh = bearer(_issue(client, "alice")["token"])
    assert client.get("/v1/feed?user_id=alice", headers=fresh).status_code == 200


@pytest.fixture
def issuer(client: TestClient, users: list[str], settings: Settings) -> Iterator[dict[str, str]]:
    """A key of its own (to revoke), and a token of alice's it issued."""
    key, secret = create_key(settings.data_dir, ["tokens:issue", "feed:read"], label="issuer")
    resp = client.post("/v1/tokens", json={"user_id": "alice"}, headers=bearer(secret))
    yield {"key_id": key.key_id, **bearer(resp.json()["token"])}


def _refused_within(client: TestClient, headers: dict[str, str], timeout_s: float = 10) -> str:
    """The 401's detail, once a change made by another process is seen (~2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = client.get("/v1/feed?user_id=alice", headers=headers)
        if resp.status_code == 401:
            detail: str = resp.json()["detail"]
            return detail
        assert resp.status_code == 200 and time.monotonic() < deadline, resp.text
        time.sleep(0.25)


@pytest.mark.parametrize("how", ["revoke the key", "revoke its tokens"])
def test_revoking_from_another_process_stops_the_tokens(
    client: TestClient, issuer: dict[str, str], settings: Settings, how: str
) -> None:
    key_id = issuer.pop("key_id")
    keys = SqliteKeyStore(settings.data_dir / KEYS_FILE)  # as `fyp keys ...` does
    try:
        if how == "revoke the key":
            assert keys.revoke(key_id, now_ms())
        else:
            assert keys.revoke_tokens(key_id) == 1
    finally:
        keys.close()
    assert "revoked" in _refused_within(client, issuer)


def test_an_events_batch_refuses_each_event_of_another_user(
    api: Any, client: TestClient, engine: Engine, alice: dict[str, str]
) -> None:
    """Each foreign event is rejected with its index and reason (the batch's own are
    stored); a batch of only foreign events is 403; both audited."""
    batch = [
        api.event("e1", "alice"),
        api.event("e2", "bob"),
        api.event("e3", "alice", video_id="v002"),
        api.event("e4", "mallory"),
    ]
    refusals = len(_refusals(engine))
    resp = client.post("/v1/events", json={"events": batch}, headers=alice)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["id"]) for r in body["rejected"]] == [(1, "e2"), (3, "e4")]
    assert all("token" in r["reason"] for r in body["rejected"])
    resp = client.post("/v1/events", json={"events": [api.event("e5", "bob")]}, headers=alice)
    assert resp.status_code == 403 and resp.json()["accepted"] == 0
    records = _refusals(engine)[refusals:]
    assert [r.details["events_refused"] for r in records] == [2, 1]
    stored = {e["event_id"] for e in client.get("/v1/users/bob/export").json()["events"]}
    assert stored == set()
    stored = {e["event_id"] for e in client.get("/v1/users/alice/export").json()["events"]}
    assert stored == {"e1", "e3"}


def test_metrics_need_a_key_not_a_token(
    settings: Settings, engine: Engine, alice: dict[str, str]
) -> None:
    """On a loopback bind too: the bind no longer opens /metrics (auth.metrics_public
    does), and a token is never enough."""
    with TestClient(create_app(settings, engine=engine)) as c:
        refusals = len(_refusals(engine))
        resp = c.get("/metrics", headers=alice)
        assert resp.status_code == 403 and "needs a key" in resp.json()["detail"]
        assert len(_refusals(engine)) == refusals + 1
