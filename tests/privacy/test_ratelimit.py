"""Token buckets: a burst, then the rate; bounded memory. The behaviour tests run on the
in-process limiter and on the Redis one (the shared server, a prefix of their own); then
what only the Redis one does: one bucket for every process, atomically, bounded by
expiry, and the process's own buckets while the server cannot be reached."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import pytest
import redis

from fyp.privacy.ratelimit import (
    InProcessLimiter,
    Limiter,
    RateLimiter,
    limiters,
    retry_after,
    take_in_turn,
)
from fyp.privacy.redis_ratelimit import RedisConnection, RedisRateLimiter
from redis_servers import SHARED_URL, RedisServer, delete_prefix, shared_redis, unique_prefix


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


T = TypeVar("T")


class Buckets(Protocol):
    """A limiter asked from a test's own code, not an event loop's: the in-process
    :class:`RateLimiter`, or a coroutine limiter through :class:`Blocking`."""

    def take(self, key: str, n: float = 1.0) -> float: ...

    def wait(self, key: str, n: float = 1.0) -> float: ...

    def take_each(self, keys: Sequence[str]) -> list[float]: ...


class Blocking:
    """A :class:`Limiter` (coroutines) asked synchronously, each call run to its end on
    ``loop`` (one loop for every call: an asyncio connection belongs to its loop)."""

    def __init__(self, limiter: Limiter, loop: asyncio.AbstractEventLoop) -> None:
        self.limiter, self.loop = limiter, loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def take(self, key: str, n: float = 1.0) -> float:
        return self._run(self.limiter.take(key, n))

    def wait(self, key: str, n: float = 1.0) -> float:
        return self._run(self.limiter.wait(key, n))

    def take_each(self, keys: Sequence[str]) -> list[float]:
        return self._run(self.limiter.take_each(keys))

    def close(self) -> None:
        self._run(self.limiter.close())


class Make(Protocol):
    def __call__(self, rate: float, burst: float, clock: FakeClock) -> Buckets: ...


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def redis_prefix(unavailable: Callable[[str], NoReturn]) -> Iterator[tuple[redis.Redis, str]]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    try:
        yield client, prefix
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(params=["memory", "redis"])
def make(
    request: pytest.FixtureRequest,
    unavailable: Callable[[str], NoReturn],
    loop: asyncio.AbstractEventLoop,
) -> Iterator[Make]:
    if request.param == "memory":
        yield lambda rate, burst, clock: RateLimiter(rate, burst, clock=clock)
        return
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    connection = RedisConnection(SHARED_URL)
    try:
        yield lambda rate, burst, clock: Blocking(
            RedisRateLimiter(connection, "test", rate, burst, prefix, clock=clock), loop
        )
    finally:
        loop.run_until_complete(connection.close())
        delete_prefix(client, prefix)
        client.close()


def test_burst_then_refused_with_retry_after(make: Make) -> None:
    clock = FakeClock()
    limiter = make(rate=2.0, burst=5.0, clock=clock)
    assert [limiter.take("k") for _ in range(5)] == [0.0] * 5
    assert limiter.take("k") == pytest.approx(0.5)  # one token at 2/s
    assert limiter.take("k", 3) == pytest.approx(1.5)
    clock.t += 0.25
    assert limiter.take("k") == pytest.approx(0.25)  # refused calls take nothing


def test_refills_over_time_up_to_burst(make: Make) -> None:
    clock = FakeClock()
    limiter = make(rate=2.0, burst=5.0, clock=clock)
    for _ in range(5):
        limiter.take("k")
    retry = limiter.take("k")
    clock.t += retry  # waiting exactly the advertised delay is enough
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    clock.t += 1.0
    assert [limiter.take("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k") > 0
    clock.t += 3600  # an hour idle refills to the burst, not beyond
    assert [limiter.take("k") for _ in range(5)] == [0.0] * 5
    assert limiter.take("k") > 0


def test_keys_are_independent(make: Make) -> None:
    clock = FakeClock()
    limiter = make(rate=1.0, burst=2.0, clock=clock)
    assert limiter.take("a", 2) == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0 and limiter.take("b") == 0.0
    assert limiter.take("b") > 0


def test_memory_is_bounded_lru() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1.0, max_keys=3, clock=clock)
    for k in "abc":
        limiter.take(k)
    limiter.take("a")  # refused, but "a" is now the most recently used
    for i in range(100):
        limiter.take(f"x{i}")
        assert len(limiter) <= 3
    assert len(limiter) == 3
    limiter2 = RateLimiter(rate=1.0, burst=1.0, max_keys=3, clock=clock)
    for k in "abc":
        limiter2.take(k)
    assert limiter2.take("a") > 0
    limiter2.take("d")  # evicts "b", the least recently used, not "a"
    assert limiter2.take("a") > 0  # still remembered, still empty
    assert limiter2.take("b") == 0.0  # forgotten: a missing bucket is a full one


def test_more_than_burst_is_never_allowed(make: Make) -> None:
    limiter = make(rate=10.0, burst=3.0, clock=FakeClock())
    assert limiter.take("k", 4) == math.inf
    waits = limiter.take_each(["j"] * 4)
    assert waits[:3] == [0.0] * 3 and waits[3] > 0
    assert limiter.take("k", 3) == 0.0  # the refused request took nothing


def test_bad_parameters() -> None:
    for rate, burst, max_keys in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (math.nan, 1, 1)):
        with pytest.raises(ValueError):
            RateLimiter(rate, burst, max_keys)


def test_wait_says_what_take_would_and_takes_nothing(make: Make) -> None:
    clock = FakeClock()
    limiter = make(rate=2.0, burst=2.0, clock=clock)
    assert limiter.wait("k") == 0.0  # (and no bucket made for asking: below)
    limiter.take("k", 2)
    assert limiter.wait("k") == pytest.approx(0.5)
    assert limiter.wait("k") == pytest.approx(0.5)  # asking again took nothing
    assert limiter.wait("k", 3) == math.inf
    clock.t += 0.5
    assert limiter.wait("k") == 0.0 and limiter.take("k") == 0.0
    assert limiter.take("k") == pytest.approx(0.5)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    """A wait of 10 ms is "1" (never "0.0": a client told 0 retries at once)."""
    assert [retry_after(w) for w in (0.0, 0.01, 0.049, 1.0, 1.2, 59.5)] == [1, 1, 1, 1, 2, 60]
    assert retry_after(math.inf) == 3600


def test_take_each_is_one_take_per_key_in_turn(make: Make) -> None:
    clock = FakeClock()
    batch, one_by_one = make(rate=2.0, burst=3.0, clock=clock), RateLimiter(2.0, 3.0, clock=clock)
    keys = ["a", "a", "b", "a", "a", "b", "c"]
    expected = [one_by_one.take(k) for k in keys]
    assert expected[:4] == [0.0] * 4 and expected[4] == pytest.approx(0.5)
    assert batch.take_each(keys) == pytest.approx(expected)
    clock.t += 0.5  # the buckets were written back: one token of "a" since
    assert batch.take_each(["a", "a"]) == pytest.approx([0.0, 0.5])
    assert batch.take_each([]) == []


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_take_in_turn_takes_until_one_refuses_in_one_round_trip(
    where: str,
    loop: asyncio.AbstractEventLoop,
    redis_prefix: tuple[redis.Redis, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request's key bucket, then its user's, as two takes in turn would: the user's
    is neither taken nor read once the key's refuses. On Redis, in one script call (the
    two takes were two round trips, each waiting behind the event log's fsyncs)."""
    _, prefix = redis_prefix
    clock = FakeClock()
    connection = RedisConnection(SHARED_URL)
    calls: list[str] = []
    real = RedisConnection.script

    def counted(self: RedisConnection, source: str) -> Any:
        calls.append(source)
        return real(self, source)

    monkeypatch.setattr(RedisConnection, "script", counted)

    def limiter(name: str, rate: float, burst: float) -> Limiter:
        if where == "memory":
            return InProcessLimiter(RateLimiter(rate, burst, clock=clock))
        return RedisRateLimiter(connection, name, rate, burst, prefix, clock=clock)

    key, user = limiter("key", 1.0, 2.0), limiter("user", 0.5, 1.0)
    a, b = RateLimiter(1.0, 2.0, clock=clock), RateLimiter(0.5, 1.0, clock=clock)  # expected

    def both(k: str, u: str) -> list[float | None]:
        return loop.run_until_complete(take_in_turn([(key, k), (user, u)]))

    def expected(k: str, u: str) -> list[float | None]:
        first = a.take(k)
        return [first, b.take(u) if first == 0 else None]

    try:
        for k, u in [("k", "u"), ("k", "u"), ("k", "v"), ("j", "w")]:
            assert both(k, u) == pytest.approx(expected(k, u)), (k, u)
        # "k" refused, "v" untouched; a second later "k" has a token and "v" has its one.
        assert b.wait("v") == 0.0 and loop.run_until_complete(user.wait("v")) == 0.0
        # (the buckets written are the ones a single take reads)
        assert loop.run_until_complete(key.wait("k")) == pytest.approx(a.wait("k")) == 1.0
        clock.t += 1.0
        assert both("k", "v") == pytest.approx(expected("k", "v")) == [0.0, 0.0]
        assert loop.run_until_complete(take_in_turn([])) == []
        assert len(calls) == (0 if where == "memory" else 7)  # (one a take in turn, one a wait)
    finally:
        loop.run_until_complete(connection.close())


def test_take_in_turn_falls_back_to_the_processs_own_buckets_once(
    loop: asyncio.AbstractEventLoop,
) -> None:
    from server_process import free_port

    make = limiters(f"redis://127.0.0.1:{free_port()}/0?prefix=p")  # nobody listens there
    key, user = make("key", 1.0, 1.0), make("user", 1.0, 2.0)
    assert isinstance(key, RedisRateLimiter) and isinstance(user, RedisRateLimiter)
    takes: list[tuple[Limiter, str]] = [(key, "k"), (user, "u")]
    assert loop.run_until_complete(take_in_turn(takes)) == [0.0, 0.0]
    waits = loop.run_until_complete(take_in_turn(takes))  # (the key's one token spent)
    assert waits[0] is not None and waits[0] > 0 and waits[1] is None
    loop.run_until_complete(key.close())


def test_asking_makes_no_bucket() -> None:
    limiter = RateLimiter(rate=2.0, burst=2.0, clock=FakeClock())
    assert limiter.wait("k") == 0.0 and len(limiter) == 0


def test_every_process_takes_from_one_bucket_on_redis(
    redis_prefix: tuple[redis.Redis, str], loop: asyncio.AbstractEventLoop
) -> None:
    client, prefix = redis_prefix
    clock = FakeClock()
    mine, other = RedisConnection(SHARED_URL), RedisConnection(SHARED_URL)  # (two processes')
    a = Blocking(RedisRateLimiter(mine, "key", 2.0, 5.0, prefix, clock=clock), loop)
    b = Blocking(RedisRateLimiter(other, "key", 2.0, 5.0, prefix, clock=clock), loop)
    try:
        assert [a.take("k"), b.take("k"), a.take("k", 2), b.take("k")] == [0.0] * 4
        assert b.take("k") == pytest.approx(0.5) and a.wait("k") == pytest.approx(0.5)
        clock.t += 0.5
        assert b.take("k") == 0.0 and a.take("k") > 0
        # Another limit's buckets are its own, as another prefix's are.
        user = Blocking(RedisRateLimiter(mine, "user", 2.0, 5.0, prefix, clock=clock), loop)
        assert user.take("k") == 0.0
        # A bucket lasts as long as it takes to refill (then it counts as full), no longer.
        ttl = client.pttl(f"{{{prefix}}}:rl2:key:k")
        assert 2_500 - 100 < ttl <= 2_500 + 1_000
    finally:
        a.close()
        b.close()


def _spend(url: str, prefix: str, attempts: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """``attempts`` takes, as an API process makes them: coroutines on its event loop,
    many in flight at once (each awaiting its round trip while the others are sent)."""

    async def spend() -> int:
        # (timeouts that a loaded machine does not reach: a timeout falls back to the
        # process's own buckets, by design, which is not what this test is about)
        connection = RedisConnection(url, timeout_s=10.0)
        limiter = RedisRateLimiter(connection, "key", 1e-6, 100.0, prefix)  # (server's clock)
        try:
            waits = await asyncio.gather(*(limiter.take("shared") for _ in range(attempts)))
        finally:
            await connection.close()
        return sum(w == 0.0 for w in waits)

    out.put(asyncio.run(spend()))


def test_processes_racing_for_one_bucket_get_exactly_its_tokens(
    redis_prefix: tuple[redis.Redis, str],
) -> None:
    _, prefix = redis_prefix
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_spend, args=(SHARED_URL, prefix, 60, out)) for _ in range(4)]
    for p in procs:
        p.start()
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(granted) == 100  # of 240 asked: the burst, once, however they interleave


def test_an_unreachable_server_falls_back_to_the_processs_own_buckets(
    loop: asyncio.AbstractEventLoop,
) -> None:
    from server_process import free_port

    store = f"redis://127.0.0.1:{free_port()}/0?prefix=p"  # nobody listens there
    made = limiters(store)("key", 1.0, 3.0)
    assert isinstance(made, RedisRateLimiter)
    limiter = Blocking(made, loop)
    assert [limiter.take("k") for _ in range(3)] == [0.0] * 3  # the burst, here
    assert limiter.take("k") > 0 and limiter.wait("k") > 0  # then the rate, here
    assert limiter.take("k", 4) == math.inf
    waits = limiter.take_each(["j"] * 4)
    assert waits[:3] == [0.0] * 3 and waits[3] > 0
    limiter.close()


def test_a_pool_busy_past_its_wait_refuses_rather_than_falling_back(
    loop: asyncio.AbstractEventLoop,
    redis_prefix: tuple[redis.Redis, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every connection busy for the pool's whole wait is this process flooded, not
    Redis down: the request is refused for a while, and Redis is asked again at once
    (falling back to the process's own, full buckets would let the flood through)."""
    import fyp.privacy.redis_ratelimit as module

    monkeypatch.setattr(module, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(module, "POOL_WAIT_S", 0.1)
    _, prefix = redis_prefix
    connection = RedisConnection(SHARED_URL)
    limiter = RedisRateLimiter(connection, "key", 1.0, 3.0, prefix)

    async def flooded() -> tuple[float, list[float], float]:
        assert await limiter.take("k") == 0.0  # (the pool made, its one connection back)
        pool = connection.script("return 1").registered_client.connection_pool
        held = await pool.get_connection()  # the flood's request in flight
        try:
            refused = await limiter.take("k"), await limiter.take_each(["j", "j"])
        finally:
            await pool.release(held)
        return refused[0], refused[1], await limiter.take("k")

    try:
        one, each, after = loop.run_until_complete(flooded())
    finally:
        loop.run_until_complete(connection.close())
    assert one == module.RETRY_S and each == [module.RETRY_S] * 2
    assert after == 0.0  # Redis asked again at once: the bucket's second token


def test_buckets_stay_out_of_the_aof(
    loop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    unavailable: Callable[[str], NoReturn],
) -> None:
    """On a server that fsyncs every write to its AOF (the event log's), a bucket's
    write reaches neither the AOF nor a replica: it would make every request wait for
    the disk. The bucket still holds in memory (the limit applies), and the AOF still
    takes what is written otherwise."""
    server = RedisServer(tmp_path / "redis", unavailable, appendonly="yes", appendfsync="always")
    client = server.client()
    try:
        limiter = Blocking(RedisRateLimiter(RedisConnection(server.url), "key", 1.0, 3.0), loop)
        assert [limiter.take("bucket-k") for _ in range(3)] == [0.0] * 3
        assert limiter.take("bucket-k") > 0  # (the bucket is kept: empty now)
        assert limiter.take_each(["bucket-j"] * 4)[3] > 0
        client.set("marker-written", "1")  # (an ordinary write goes to the AOF)
        aof = b"".join(p.read_bytes() for p in server.files())
        assert b"marker-written" in aof
        assert b"bucket-" not in aof and b":rl2:" not in aof
        assert client.exists("{fyp}:rl2:key:bucket-k") == 1
        limiter.close()
    finally:
        client.close()
        server.stop()
