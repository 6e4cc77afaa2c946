"""API keys and scopes on every route, and the rate limits (per key, per user)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import Settings
from fyp.engine import Engine
from fyp.privacy.keys import KEYS_FILE, SCOPES, SqliteKeyStore, bearer, create_key
from fyp.types import now_ms

# Every route but /healthz and /metrics, with the one scope it needs (../shared/API.md).
ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/videos", "catalog:write", {"videos": []}),
    ("POST", "/v1/events", "events:write", {"events": []}),
    ("GET", "/v1/feed?user_id=u1", "feed:read", None),
    ("PUT", "/v1/users/u1", "events:write", {}),
    ("GET", "/v1/users/u1", "feed:read", None),
    ("POST", "/v1/users/u1/controls", "events:write", {}),
    ("GET", "/v1/users/u1/why/v001", "feed:read", None),
    ("GET", "/v1/users/u1/export", "users:admin", None),
    ("DELETE", "/v1/users/u1", "users:admin", None),
    ("POST", "/v1/moderation", "moderation:write", {"video_id": "v001", "reason": "r"}),
    ("GET", "/v1/moderation/queue", "moderation:write", None),
    ("GET", "/v1/audit", "audit:read", None),
]


def _key(settings: Settings, *scopes: str) -> dict[str, str]:
    return bearer(create_key(settings.data_dir, scopes, label="test")[1])


@pytest.fixture
def bare(client: TestClient) -> Iterator[TestClient]:
    """The same app, its requests carrying no key unless given one."""
    saved = client.headers.pop("Authorization")
    try:
        yield client
    finally:
        client.headers["Authorization"] = saved


def test_the_openapi_schema_documents_the_bearer_key(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(("method", "path", "scope", "body"), ROUTES)
def test_every_route_needs_a_valid_key_with_its_scope(
    catalog: Any,
    bare: TestClient,
    settings: Settings,
    method: str,
    path: str,
    scope: str,
    body: dict[str, Any] | None,
) -> None:
    assert bare.put("/v1/users/u1", json={}, headers=_key(settings, "events:write")).is_success
    resp = bare.request(method, path, json=body)
    assert resp.status_code == 401, resp.text
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "fyp keys create" in resp.json()["detail"]
    bad = {"Authorization": "Bearer fyp_k_0123456789_not-a-key"}
    assert bare.request(method, path, json=body, headers=bad).status_code == 401
    others = [s for s in SCOPES if s != scope]
    resp = bare.request(method, path, json=body, headers=_key(settings, *others))
    assert resp.status_code == 403, resp.text
    assert repr(scope) in resp.json()["detail"]
    resp = bare.request(method, path, json=body, headers=_key(settings, scope))
    assert resp.status_code not in (401, 403), resp.text


def test_metrics_need_a_key_even_on_a_loopback_bind(bare: TestClient, settings: Settings) -> None:
    """A reverse proxy on the same host makes a loopback bind public: binding 127.0.0.1
    (the fixture's host) opens nothing. Any valid key will do, whatever its scopes."""
    assert settings.host == "127.0.0.1"
    assert bare.get("/healthz").status_code == 200
    resp = bare.get("/metrics")
    assert resp.status_code == 401 and "fyp keys create" in resp.json()["detail"]
    bad = {"Authorization": "Bearer fyp_k_0123456789_not-a-key"}
    assert bare.get("/metrics", headers=bad).status_code == 401
    for scope in ("feed:read", "audit:read"):
        assert bare.get("/metrics", headers=_key(settings, scope)).status_code == 200


def test_metrics_are_open_only_where_configured_so(settings: Settings, engine: Engine) -> None:
    public = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"metrics_public": True})}
    )
    with TestClient(create_app(public, engine=engine)) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/audit").status_code == 401  # nothing else opens with it


def test_a_revoked_key_stops_working(bare: TestClient, settings: Settings) -> None:
    keys = SqliteKeyStore(settings.data_dir / KEYS_FILE)
    key, token = keys.create(["feed:read"], None, "soon revoked", now_ms())
    headers = bearer(token)
    assert bare.get("/v1/feed?user_id=u1", headers=headers).status_code == 200
    assert keys.revoke(key.key_id, now_ms())  # another process: the CLI
    keys.close()
    deadline = time.monotonic() + 10
    while bare.get("/v1/feed?user_id=u1", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.25)


def test_moderation_names_the_key_that_made_it(
    catalog: Any, bare: TestClient, settings: Settings, engine: Engine
) -> None:
    headers = _key(settings, "moderation:write")
    body = {"video_id": "v001", "state": "limited", "reason": "spam"}
    resp = bare.post("/v1/moderation", json=body, headers=headers)
    assert resp.status_code == 200
    key_id = resp.json()["actor"]
    assert key_id.startswith("k_")
    record = [r for r in engine.audit.records() if r.action == "moderation"][-1]
    assert record.actor == key_id and record.details["reason"] == "spam"


def _app(settings: Settings, engine: Engine, **auth: float) -> TestClient:
    limited = settings.model_copy(update={"auth": settings.auth.model_copy(update=auth)})
    return TestClient(create_app(limited, engine=engine))


def test_a_key_past_its_rate_gets_429_with_retry_after(settings: Settings, engine: Engine) -> None:
    with _app(settings, engine, key_rate_per_s=0.5, key_burst=3) as c:
        headers = _key(settings, "feed:read")
        codes = [c.get("/v1/feed?user_id=u1", headers=headers).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        resp = c.get("/v1/feed?user_id=u1", headers=headers)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        # Another key has a bucket of its own.
        assert c.get("/v1/feed?user_id=u1", headers=_key(settings, "feed:read")).is_success


def test_one_user_past_their_rate_is_limited_and_others_are_not(
    settings: Settings, engine: Engine, api: Any, catalog: Any
) -> None:
    with _app(settings, engine, user_rate_per_s=0.5, user_burst=3) as c:
        c.headers.update(api.client.headers)
        codes = [c.get("/v1/feed?user_id=busy").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert c.get("/v1/feed?user_id=calm").status_code == 200
        # Events: the busy user's are refused one by one (retry them), the others kept.
        batch = [api.event(f"e{i}", user_id="busy") for i in range(2)]
        batch += [api.event(f"f{i}", user_id="calm") for i in range(2)]
        resp = c.post("/v1/events", json={"events": batch})
        assert resp.status_code == 422
        assert resp.json()["accepted"] == 2
        assert [r["index"] for r in resp.json()["rejected"]] == [0, 1]
        assert "rate limit" in resp.json()["rejected"][0]["reason"]
        assert not engine.event_log.contains("e0") and engine.event_log.contains("f0")
        # A batch of nothing but the busy user's: 429, and when to retry (1 / 0.5 per s).
        only = c.post("/v1/events", json={"events": [api.event("g0", user_id="busy")]})
        assert only.status_code == 429 and only.headers["Retry-After"] == "2"
