"""Token buckets on a Redis server, shared by every API process given the same server:
a limit holds across processes (N processes do not let a key through N times its rate).

Each ``take`` is one Lua script (Redis runs it atomically: two processes cannot both
spend a bucket's last token): read the bucket, refill it by the time passed, take or
refuse, write it back with an expiry. The time is the server's (``TIME``), one clock for
every process on every machine; a test passes a clock of its own. The arithmetic is
:class:`~fyp.privacy.ratelimit.RateLimiter`'s, so the two answer alike.

The calls are coroutines on an asyncio client (``redis.asyncio``): the API checks its
limits on its event loop, and a blocking client there held every other request for the
round trip (under a flood of one key, the server answered so slowly that it never
reached the key's limit: docs/cluster.md). Awaiting the reply lets the loop serve other
requests meanwhile.

The buckets are soft state: the scripts write them with ``redis.set_repl(REPL_NONE)``,
so they go neither to the AOF nor to replicas. On the event log's server, run with
``appendfsync always``, a write that reaches the AOF is answered only after an fsync of
the file: every request's bucket (two a feed) waited for the disk, and the server,
fsyncing in its one thread, held every other client meanwhile (docs/cluster.md,
"Stalls"). A server restarted from its AOF, or a replica promoted, therefore starts with
every bucket full, as one whose buckets expired: a burst more at most.

Memory is bounded by the expiry instead of an LRU: a bucket untouched for
``burst / rate`` seconds has refilled, and a missing bucket counts as full, so it is
deleted then.

A server that cannot be reached must not stop the API: the limiter then falls back to
a bucket of its own process (the same rate: per process, as without Redis), logs it,
and tries Redis again after :data:`RETRY_S`. Its timeouts are short, as every request
waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from fyp.privacy.ratelimit import RateLimiter

log = logging.getLogger(__name__)

__all__ = ["RETRY_S", "PoolBusyError", "RedisConnection", "RedisRateLimiter"]

TIMEOUT_S = 0.25  # connecting and each reply: a request waits this long at most, once
RETRY_S = 1.0  # after a failure, the process's own buckets this long
# Connections one process opens at most; a request that finds them all busy awaits one
# (the loop serves others meanwhile), up to POOL_WAIT_S. A flood opening a connection
# per request in flight spent the short connect timeout on connecting; and a busy pool
# is this process's congestion, not Redis down, so it is waited out rather than met by
# falling back to the process's own buckets (which would let the flood through).
MAX_CONNECTIONS = 8
POOL_WAIT_S = 5.0

# What every take script starts with: buckets are soft state, kept out of the AOF and
# the replicas; the clock (ARGV's '' = the server's TIME); and a stored bucket's tokens at
# ``now`` (a bucket is one string, "<tokens> <at>"; none stored is a full one).
_PRELUDE = """#!lua
redis.set_repl(redis.REPL_NONE)
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(arg)
end
local function tokens_at(b, rate, burst, now)
  if not b then return burst end
  local have, at = string.match(b, '^(%S+) (%S+)$')
  return math.min(burst, tonumber(have) + math.max(0, now - tonumber(at)) * rate)
end
"""


# A bucket is one string, "<tokens> <at>" (its tokens at time ``at``), written with its
# expiry in one SET: a hash with HSET and PEXPIRE was three commands per bucket, each
# also run on the one thread that answers every process's appends (an event batch takes
# one token from each of its users' buckets).
# KEYS: the bucket. ARGV: rate, burst, n, now ('' = the server's TIME), take (1/0),
# expiry in ms. Returns the wait in seconds as a string (Lua numbers returned to Redis
# are truncated to integers); the bucket is written only by a take.
_TAKE = (
    _PRELUDE
    + """
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = clock(ARGV[4])
local tokens = tokens_at(redis.call('GET', KEYS[1]), rate, burst, now)
local wait = 0
if tokens + 1e-9 >= n then
  if ARGV[5] == '1' then tokens = math.max(0, tokens - n) end
else
  wait = (n - tokens) / rate
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], string.format('%.17g %.17g', tokens, now), 'PX', ARGV[6])
end
return string.format('%.17g', wait)
"""
)


# KEYS: the buckets, one per take (a bucket may come again). ARGV: rate, burst, now
# ('' = the server's TIME), expiry in ms. One token taken from each in turn; returns the
# waits, as one string, space-separated (one reply to parse, not one per event of a
# batch). The buckets are read in one MGET and each written once.
_TAKE_EACH = (
    _PRELUDE
    + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = clock(ARGV[3])
local tokens, distinct, out = {}, {}, {}
for _, key in ipairs(KEYS) do
  if tokens[key] == nil then
    tokens[key] = burst
    distinct[#distinct + 1] = key
  end
end
for i = 1, #distinct, 1000 do
  local last = math.min(i + 999, #distinct)
  local stored = redis.call('MGET', unpack(distinct, i, last))
  for j = i, last do
    tokens[distinct[j]] = tokens_at(stored[j - i + 1], rate, burst, now)
  end
end
for i, key in ipairs(KEYS) do
  local have = tokens[key]
  if have + 1e-9 >= 1 then
    have = math.max(0, have - 1)
    out[i] = '0'
  else
    out[i] = string.format('%.17g', (1 - have) / rate)
  end
  tokens[key] = have
end
local stamp = string.format(' %.17g', now)
for _, key in ipairs(distinct) do
  redis.call('SET', key, string.format('%.17g', tokens[key]) .. stamp, 'PX', ARGV[4])
end
return table.concat(out, ' ')
"""
)


# KEYS: the buckets, in turn (of limiters with their own rates). ARGV: now ('' = the
# server's TIME), then for each bucket its rate, burst and expiry in ms. One token taken
# from each in turn, as _TAKE's, until one is refused: that one is written as _TAKE
# writes a refused take, those after it are neither read nor written. Returns the waits
# of the buckets asked, space-separated.
_TAKE_IN_TURN = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 1])
  local tokens = tokens_at(redis.call('GET', key), rate, tonumber(ARGV[3 * i]), now)
  local wait = 0
  if tokens + 1e-9 >= 1 then
    tokens = math.max(0, tokens - 1)
  else
    wait = (1 - tokens) / rate
  end
  redis.call('SET', key, string.format('%.17g %.17g', tokens, now), 'PX', ARGV[3 * i + 1])
  out[i] = string.format('%.17g', wait)
  if wait > 0 then break end
end
return table.concat(out, ' ')
"""
)


# (ResponseError: loading, busy, a read-only replica: a server not serving)
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError)


class PoolBusyError(Exception):
    """Every connection of this process's pool stayed busy for POOL_WAIT_S: this
    process is flooded, Redis is not down. The request is refused (a wait of RETRY_S),
    where falling back to the process's own buckets would let the flood through."""


def _pool_busy(err: BaseException) -> bool:
    # redis.asyncio's BlockingConnectionPool raises a bare ConnectionError with this
    # message when its wait for a connection times out (its cause an asyncio timeout),
    # the same type as a refused connect: the message is what tells them apart.
    return isinstance(err, redis.ConnectionError) and str(err) == "No connection available."


class RedisConnection:
    """The asyncio client of a process's limiters on one server, made in the event loop
    that first uses it: an asyncio connection belongs to its loop, and an app served
    again (a test's second client) runs in another, which gets a client of its own.
    :meth:`close` when the server stops."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s  # connecting, and each reply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    def script(self, source: str) -> AsyncScript:
        """``source`` registered on this loop's client (EVALSHA, EVAL the first time)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=POOL_WAIT_S,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )
            self._client = aioredis.Redis.from_pool(pool)  # (closed with it)
            self._loop, self._scripts = loop, {}
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return script

    async def close(self) -> None:
        """Close this loop's client (one of another loop is left to its loop's end)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


class RedisRateLimiter:
    """Token buckets named ``name`` (``key``, ``user``: one limit each) on the server of
    ``connection``, under ``{prefix}:rl2:<name>:``; the interface of
    :class:`~fyp.privacy.ratelimit.Limiter` (``take``, ``wait``, ``take_each``, each a
    coroutine)."""

    def __init__(
        self,
        connection: RedisConnection,
        name: str,
        rate: float,
        burst: float,
        prefix: str = "fyp",
        clock: Callable[[], float] | None = None,
    ) -> None:
        # (checks its arguments as the in-process one does: the same ValueError)
        self._local = RateLimiter(rate, burst)
        self.rate, self.burst = rate, burst
        self._redis = connection
        # (rl2: buckets as strings; the hashes of code before, under rl:, expire unread)
        self._key = f"{{{prefix}}}:rl2:{name}:"
        self._clock = clock
        # Long enough for an untouched bucket to have refilled, and then some.
        self._expiry_ms = math.ceil(burst / rate * 1000) + 1000
        self._down_until = 0.0  # monotonic: Redis not asked before then

    @classmethod
    def connect(cls, url: str) -> RedisConnection:
        """A connection to ``url`` with the short timeouts a limiter needs."""
        return RedisConnection(url)

    def _down(self, err: BaseException) -> None:
        log.warning(
            "rate limits: Redis not reachable (%s); this process's own buckets for %g s",
            err,
            RETRY_S,
        )
        self._down_until = time.monotonic() + RETRY_S

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def _script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply; None when Redis cannot answer (the caller falls back);
        :class:`PoolBusyError` when this process's connections stayed busy for POOL_WAIT_S."""
        try:
            return await self._redis.script(source)(keys=keys, args=args)
        except _UNAVAILABLE as err:
            if _pool_busy(err):
                raise PoolBusyError from err
            self._down(err)
            return None

    async def _ask(self, key: str, n: float, take: bool) -> float:
        if n > self.burst:
            return math.inf
        if time.monotonic() >= self._down_until:
            try:
                wait = await self._script(
                    _TAKE,
                    [self._key + key],
                    [self.rate, self.burst, n, self._now(), int(take), self._expiry_ms],
                )
            except PoolBusyError:
                return RETRY_S  # (refused: see PoolBusyError)
            if wait is not None:
                return float(wait)
        return self._local.take(key, n) if take else self._local.wait(key, n)

    async def take_each(self, keys: Sequence[str]) -> list[float]:
        """:meth:`take` of one token for each key in turn (a key may come again), in one
        round trip: an event batch's users."""
        if not keys:
            return []
        if time.monotonic() >= self._down_until:
            try:
                waits = await self._script(
                    _TAKE_EACH,
                    [self._key + k for k in keys],
                    [self.rate, self.burst, self._now(), self._expiry_ms],
                )
            except PoolBusyError:
                return [RETRY_S] * len(keys)
            if waits is not None:
                return [float(w) for w in waits.split()]
        return self._local.take_each(keys)

    async def take(self, key: str, n: float = 1.0) -> float:
        """As :meth:`RateLimiter.take`, the bucket shared by every process."""
        return await self._ask(key, n, take=True)

    async def wait(self, key: str, n: float = 1.0) -> float:
        """As :meth:`RateLimiter.wait`: what :meth:`take` would answer, taking nothing."""
        return await self._ask(key, n, take=False)

    async def close(self) -> None:
        await self._redis.close()


async def take_in_turn_on_redis(takes: Sequence[tuple[object, str]]) -> list[float | None] | None:
    """:func:`fyp.privacy.ratelimit.take_in_turn` in one script call, where every limiter
    is a :class:`RedisRateLimiter` on one connection, with one clock, none of them
    falling back now; None otherwise (the caller takes them one by one). When Redis
    cannot answer, each falls back to its process's own buckets, as its ``take`` would."""
    limiters: list[RedisRateLimiter] = []
    for limiter, _ in takes:
        if not isinstance(limiter, RedisRateLimiter):
            return None
        limiters.append(limiter)
    first = limiters[0]
    if any(
        lim._redis is not first._redis or lim._clock is not first._clock for lim in limiters
    ) or time.monotonic() < max(lim._down_until for lim in limiters):
        return None
    args: list[Any] = [first._now()]
    for lim in limiters:
        args += [lim.rate, lim.burst, lim._expiry_ms]
    keys = [lim._key + key for lim, (_, key) in zip(limiters, takes, strict=True)]
    waits: list[float | None] = [None] * len(takes)
    try:
        reply = await first._script(_TAKE_IN_TURN, keys, args)
    except PoolBusyError:
        waits[0] = RETRY_S  # (refused: see PoolBusyError)
        return waits
    if reply is None:  # (Redis did not answer: the first is down now, and so the rest)
        for lim in limiters[1:]:
            lim._down_until = first._down_until
        return None
    for i, wait in enumerate(reply.split()):
        waits[i] = float(wait)
    return waits
