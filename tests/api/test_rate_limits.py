"""The limits engage: a key at the default limits, failed authentication per client
address (before any key lookup), users created per key, and what a rate-limited event
is told (issue 17, item 3 and item 6's "retry in 0.0 s"). The tests with a ``clock`` run
with the buckets in the process and on Redis (the shared server, a prefix of their own)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from fyp.api import create_app, security
from fyp.config import AuthConfig, Settings
from fyp.engine import Engine
from fyp.privacy.keys import SqliteKeyStore, bearer, create_key
from fyp.privacy.ratelimit import InProcessLimiter, Limiter, RateLimiter, limits_store
from fyp.privacy.redis_ratelimit import RedisConnection, RedisRateLimiter
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

BAD_KEY = {"Authorization": "Bearer fyp_k_0123456789_not-a-key"}


def _key(settings: Settings, *scopes: str) -> dict[str, str]:
    return bearer(create_key(settings.data_dir, scopes or ("events:write",), label="test")[1])


def _limited(settings: Settings, **auth: Any) -> Settings:
    return settings.model_copy(update={"auth": settings.auth.model_copy(update=auth)})


def _app(settings: Settings, engine: Engine, **auth: Any) -> TestClient:
    return TestClient(create_app(_limited(settings, **auth), engine=engine))


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "redis"])
def clock(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    unavailable: Callable[[str], NoReturn],
) -> Iterator[FakeClock]:
    """The clock of every rate limit of the apps made from here on: it moves only when
    the test moves it, so no test depends on how fast this machine answers. The limits
    are kept in the process, or on Redis (as several API processes keep them)."""
    fake = FakeClock()
    if request.param == "memory":

        def make(name: str, rate: float, burst: float) -> Limiter:
            return InProcessLimiter(RateLimiter(rate, burst, clock=fake))

        monkeypatch.setattr(security, "limiters", lambda store: make)
        yield fake
        return
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    connection = RedisConnection(SHARED_URL)  # (each app's loop makes its client)

    def make_redis(name: str, rate: float, burst: float) -> Limiter:
        return RedisRateLimiter(connection, name, rate, burst, prefix, clock=fake)

    monkeypatch.setattr(security, "limiters", lambda store: make_redis)
    try:
        yield fake
    finally:
        delete_prefix(client, prefix)
        client.close()


def test_the_limits_are_kept_on_the_event_logs_redis_unless_told_otherwise(
    settings: Settings,
) -> None:
    log = "redis://127.0.0.1:6379/0?prefix=p&durability=everysec"
    assert limits_store(None, None) is None
    assert limits_store(None, "sqlite:///x/events.db") is None
    assert limits_store(None, log) == "redis://127.0.0.1:6379/0?prefix=p"
    assert limits_store("memory", log) is None
    assert limits_store("redis://h:1/2", log) == "redis://h:1/2"
    guard = security.Guard(_limited(settings, rate_limits="redis://127.0.0.1:6379/0"), None)
    assert isinstance(guard.per_key, RedisRateLimiter)
    assert isinstance(security.Guard(settings, None).per_key, InProcessLimiter)
    with pytest.raises(ValueError, match="scheme"):
        AuthConfig(rate_limits="memcached://h/0")


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The key ids the key store asked SQLite about (``_checked``: a miss or a stale
    entry), in order."""
    asked: list[str] = []
    real = SqliteKeyStore._checked

    def spy(self: SqliteKeyStore, key_id: str) -> Any:
        asked.append(key_id)
        return real(self, key_id)

    monkeypatch.setattr(SqliteKeyStore, "_checked", spy)
    yield asked


def _until_429(c: TestClient, headers: dict[str, str], most: int) -> tuple[int, Any]:
    """Requests until the first 429 (at most ``most``): how many passed, and the last."""
    for ok in range(most):
        resp = c.get("/v1/users/nobody", headers=headers)
        if resp.status_code == 429:
            return ok, resp
        assert resp.status_code == 404, resp.text
    return most, resp


def test_one_key_at_the_default_limits_is_stopped_and_others_are_not(
    settings: Settings, engine: Engine, clock: FakeClock
) -> None:
    """Before: 2,000/s with a burst of 4,000, more than one process serves (221-436
    requests/s), so one key could take the whole server: no 429 in 1,000 requests."""
    defaults = AuthConfig()
    limits = {"key_rate_per_s": defaults.key_rate_per_s, "key_burst": defaults.key_burst}
    with _app(settings, engine, **limits) as c:
        flood = _key(settings, "feed:read")
        ok, resp = _until_429(c, flood, 1_000)
        assert resp.status_code == 429, f"{ok} requests at once, no 429"
        assert ok == defaults.key_burst == 200
        assert resp.headers["Retry-After"] == "1"  # one token at 100/s: 10 ms, rounded up
        assert "rate limit of key k_" in resp.json()["detail"]
        assert c.get("/v1/users/nobody", headers=_key(settings, "feed:read")).status_code == 404
        clock.t += 1.0  # a second later: the rate's worth, no more
        ok, resp = _until_429(c, flood, 1_000)
        assert ok == defaults.key_rate_per_s == 100 and resp.status_code == 429


def test_failed_authentication_is_limited_per_address_before_any_lookup(
    settings: Settings, engine: Engine, lookups: list[str]
) -> None:
    """Before: bad keys were refused 401 forever (1,239 refusals, no 429), each unknown
    id read from keys.db."""
    limits = {"failed_auth_burst": 3, "failed_auth_rate_per_s": 0.001}
    valid = _key(settings, "feed:read")
    with _app(settings, engine, **limits) as c:
        for _ in range(5):  # valid keys spend nothing of the address's budget
            assert c.get("/v1/users/nobody", headers=valid).status_code == 404
        assert c.get("/v1/users/nobody").status_code == 401  # no key: a failure too
        for _ in range(2):
            assert c.get("/v1/users/nobody", headers=BAD_KEY).status_code == 401
        asked = len(lookups)
        for headers in (BAD_KEY, {}, BAD_KEY):
            resp = c.get("/v1/users/nobody", headers=headers)
            assert resp.status_code == 429, resp.text
            assert int(resp.headers["Retry-After"]) >= 1
            detail = resp.json()["detail"]
            assert "without a valid API key from testclient" in detail, detail
        assert len(lookups) == asked  # refused from memory: SQLite was not asked
        assert c.get("/metrics", headers=BAD_KEY).status_code == 429
        # A valid key from the same address (a proxy's, a NAT's) is still served.
        assert c.get("/v1/users/nobody", headers=valid).status_code == 404


def test_one_address_failing_does_not_limit_another(settings: Settings, engine: Engine) -> None:
    app = create_app(_limited(settings, failed_auth_burst=2, failed_auth_rate_per_s=0.001), engine)
    with (
        TestClient(app, client=("10.0.0.1", 1)) as bad,
        TestClient(app, client=("10.0.0.2", 1)) as good,
    ):
        codes = [bad.get("/v1/users/x", headers=BAD_KEY).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        assert good.get("/v1/users/x", headers=BAD_KEY).status_code == 401
        assert good.get("/v1/users/x", headers=_key(settings, "feed:read")).status_code == 404
        text = good.get("/metrics", headers=_key(settings, "feed:read")).text
        assert 'fyp_auth_refused_total{why="failed_auth_limited"} 1.0' in text


def test_a_key_creates_at_most_its_cap_of_users_and_updates_still_work(
    settings: Settings, engine: Engine
) -> None:
    """Before: nothing capped the users an events:write key could create (4.4 KB of
    memory each: 20k PUTs added 89 MB)."""
    with _app(settings, engine, user_creations_per_key=3, user_creation_window_s=3600) as c:
        key = _key(settings, "events:write", "feed:read")
        codes = [c.put(f"/v1/users/n{i}", json={}, headers=key).status_code for i in range(3)]
        assert codes == [201, 201, 201]
        resp = c.put("/v1/users/n3", json={"language": "en"}, headers=key)
        assert resp.status_code == 429, resp.text
        detail = resp.json()["detail"]
        assert "at most 3 per 3600 s" in detail and "auth.user_creations_per_key" in detail
        assert int(resp.headers["Retry-After"]) >= 1
        assert c.get("/v1/users/n3", headers=key).status_code == 404  # nothing was stored
        # Updates of existing users are not creations.
        for _ in range(5):
            assert c.put("/v1/users/n0", json={"language": "fr"}, headers=key).status_code == 200
        # Another key has its own cap.
        assert c.put("/v1/users/n3", json={}, headers=_key(settings)).status_code == 201


def test_a_rate_limited_event_is_told_whole_seconds_as_retry_after_says(
    settings: Settings, engine: Engine, api: Any, catalog: Any, clock: FakeClock
) -> None:
    """Before: a wait under 50 ms was written "retry in 0.0 s" (a client told 0 retries
    at once and is refused again), and 2 s was "2.0 s" where Retry-After said 2."""
    headers = dict(api.client.headers)
    with _app(settings, engine, user_rate_per_s=40.0, user_burst=1) as c:  # waits 25 ms
        batch = [api.event("a0", user_id="busy"), api.event("a1", user_id="busy")]
        resp = c.post("/v1/events", json={"events": batch}, headers=headers)
        assert resp.status_code == 422 and resp.json()["accepted"] == 1
        (rejected,) = resp.json()["rejected"]
        assert rejected["reason"].endswith("retry in 1 s"), rejected["reason"]
    with _app(settings, engine, user_rate_per_s=0.5, user_burst=1) as c:
        first = [api.event("b0", user_id="slow")]
        assert c.post("/v1/events", json={"events": first}, headers=headers).is_success
        batch = [api.event(f"b{i}", user_id="slow") for i in (1, 2)]
        resp = c.post("/v1/events", json={"events": batch}, headers=headers)
        assert resp.status_code == 429
        reasons = [r["reason"] for r in resp.json()["rejected"]]
        told = {m[1] for m in map(re.compile(r"retry in (\S+) s$").search, reasons) if m}
        assert told == {resp.headers["Retry-After"]} == {"2"}, reasons


def test_a_key_held_in_memory_is_served_without_asking_its_addresss_failures(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid key is served whatever its address's failures, yet every request asked for
    them: on Redis, a round trip per request (a feed made three), each answered after the
    event log's fsyncs. Now a key this process holds is checked first; a bad key still
    asks, and is still refused once its address is past its failures."""
    asked: list[str] = []

    class Counted(InProcessLimiter):
        def __init__(self, name: str, rate: float, burst: float) -> None:
            super().__init__(RateLimiter(rate, burst))
            self.name = name

        async def wait(self, key: str, n: float = 1.0) -> float:
            asked.append(self.name)
            return await super().wait(key, n)

    monkeypatch.setattr(security, "limiters", lambda store: Counted)
    valid = _key(settings, "feed:read")
    limits = {"failed_auth_burst": 2, "failed_auth_rate_per_s": 0.001}
    with _app(settings, engine, **limits) as c:
        assert c.get("/v1/users/nobody", headers=valid).status_code == 404  # (now held)
        asked.clear()
        for _ in range(3):
            assert c.get("/v1/users/nobody", headers=valid).status_code == 404
        assert "failed_auth" not in asked
        codes = [c.get("/v1/users/nobody", headers=BAD_KEY).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        assert asked.count("failed_auth") == 3
        assert c.get("/v1/users/nobody", headers=valid).status_code == 404


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands sent to Redis by this process's asyncio clients (the rate limits'),
    each a round trip, in order."""
    sent: list[str] = []
    real = aioredis.Redis.execute_command

    async def spy(self: aioredis.Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await real(self, *args, **options)

    monkeypatch.setattr(aioredis.Redis, "execute_command", spy)
    return sent


def test_a_feed_takes_its_keys_and_its_users_tokens_in_one_round_trip(
    settings: Settings,
    engine: Engine,
    catalog: Any,
    clock: FakeClock,
    round_trips: list[str],
    request: pytest.FixtureRequest,
) -> None:
    """Before: a feed took its key's token, then its user's, two round trips on Redis
    (three with a user token: its address's failures asked first), each answered after
    the event log's fsyncs. Now one, with the same answers: the key refused first (the
    user's token then untouched), a request refused before the user's take (a 422) spends
    only the key's, the user refused with their own Retry-After."""
    on_redis = request.node.callspec.params["clock"] == "redis"
    limits = {"key_rate_per_s": 0.001, "key_burst": 6, "user_rate_per_s": 0.5, "user_burst": 1}
    first = _key(settings, "feed:read")
    second = _key(settings, "feed:read")
    third = _key(settings, "feed:read", "tokens:issue", "events:write")
    per_request: list[int] = []

    def get(url: str, headers: dict[str, str]) -> Any:
        round_trips.clear()
        resp = c.get(url, headers=headers)
        per_request.append(len(round_trips))
        return resp

    with _app(settings, engine, **limits) as c:
        for headers in (first, second):  # (held from now on; the key's first token)
            assert c.get("/v1/users/nobody", headers=headers).status_code == 404
        assert c.put("/v1/users/u4", json={}, headers=third).is_success
        resp = c.post("/v1/tokens", json={"user_id": "u4"}, headers=third)
        token = bearer(resp.json()["token"])
        assert get("/v1/feed?user_id=u1&count=3", first).status_code == 200
        resp = get("/v1/feed?user_id=u1&count=3", first)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
        assert "feed requests for this user" in resp.json()["detail"]
        assert get("/v1/feed?user_id=u2&count=0", first).status_code == 422
        assert get("/v1/feed?user_id=u2&after=r1", first).status_code == 422
        assert get("/v1/feed?user_id=u2&count=3", first).status_code == 200  # (u2's token)
        resp = get("/v1/feed?user_id=u3&count=3", first)  # the key's sixth: none left
        assert resp.status_code == 429 and "rate limit of key" in resp.json()["detail"]
        assert get("/v1/feed?user_id=u3&count=3", second).status_code == 200  # (u3's)
        assert get("/v1/feed?user_id=u5&after=r1&shown=1", second).status_code == 404
        assert get("/v1/feed?user_id=u5", second).status_code == 429  # (taken before the 404)
        assert get("/v1/feed?user_id=u4&count=3", token).status_code == 200
        assert get("/v1/feed?user_id=u4&count=3", token).status_code == 429
    if on_redis:
        assert per_request == [1] * len(per_request), per_request
