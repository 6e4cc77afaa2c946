"""Token buckets on a Redis server, shared by every API process given the same server:
a limit holds across processes (N processes do not let a key through N times its rate).

Each ``take`` is one Lua script (Redis runs it atomically: two processes cannot both
spend a bucket's last token): read the bucket, refill it by the time passed, take or
refuse, write it back with an expiry. The time is the server's (``TIME``), one clock for
every process on every machine; a test passes a clock of its own. The arithmetic is
:class:`~fyp.privacy.ratelimit.RateLimiter`'s, so the two answer alike.

Memory is bounded by the expiry instead of an LRU: a bucket untouched for
``burst / rate`` seconds has refilled, and a missing bucket counts as full, so it is
deleted then.

A server that cannot be reached must not stop the API: the limiter then falls back to
a bucket of its own process (the same rate: per process, as without Redis), logs it,
and tries Redis again after :data:`RETRY_S`. Its timeouts are short, as every request
waits for it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import redis

from fyp.privacy.ratelimit import RateLimiter

log = logging.getLogger(__name__)

__all__ = ["RETRY_S", "RedisRateLimiter"]

TIMEOUT_S = 0.25  # connecting and each reply: a request waits this long at most, once
RETRY_S = 1.0  # after a failure, the process's own buckets this long

# KEYS: the bucket. ARGV: rate, burst, n, now ('' = the server's TIME), take (1/0),
# expiry in ms. Returns the wait in seconds as a string (Lua numbers returned to Redis
# are truncated to integers); the bucket is written only by a take.
_TAKE = """#!lua
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local tokens = burst
local b = redis.call('HMGET', KEYS[1], 't', 'at')
if b[1] then
  tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate)
end
local wait = 0
if tokens + 1e-9 >= n then
  if ARGV[5] == '1' then tokens = math.max(0, tokens - n) end
else
  wait = (n - tokens) / rate
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens),
             'at', string.format('%.17g', now))
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return string.format('%.17g', wait)
"""


# KEYS: the buckets, one per take (a bucket may come again). ARGV: rate, burst, now
# ('' = the server's TIME), expiry in ms. One token taken from each in turn; returns the
# waits, as strings. Each bucket is read once and written once.
_TAKE_EACH = """#!lua
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local tokens, out = {}, {}
for i, key in ipairs(KEYS) do
  local have = tokens[key]
  if have == nil then
    have = burst
    local b = redis.call('HMGET', key, 't', 'at')
    if b[1] then
      have = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate)
    end
  end
  if have + 1e-9 >= 1 then
    have = math.max(0, have - 1)
    out[i] = '0'
  else
    out[i] = string.format('%.17g', (1 - have) / rate)
  end
  tokens[key] = have
end
for key, have in pairs(tokens) do
  redis.call('HSET', key, 't', string.format('%.17g', have), 'at', string.format('%.17g', now))
  redis.call('PEXPIRE', key, ARGV[4])
end
return out
"""


# (ResponseError: loading, busy, a read-only replica: a server not serving)
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.ResponseError)


class RedisRateLimiter:
    """Token buckets named ``name`` (``key``, ``user``: one limit each) on the server at
    ``client``, under ``{prefix}:rl:<name>:``; the interface of
    :class:`~fyp.privacy.ratelimit.RateLimiter` (``take``, ``wait``)."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        rate: float,
        burst: float,
        prefix: str = "fyp",
        clock: Callable[[], float] | None = None,
    ) -> None:
        # (checks its arguments as the in-process one does: the same ValueError)
        self._local = RateLimiter(rate, burst)
        self.rate, self.burst = rate, burst
        self._r = client
        self._key = f"{{{prefix}}}:rl:{name}:"
        self._clock = clock
        self._script = client.register_script(_TAKE)
        self._script_each = client.register_script(_TAKE_EACH)
        # Long enough for an untouched bucket to have refilled, and then some.
        self._expiry_ms = math.ceil(burst / rate * 1000) + 1000
        self._down_until = 0.0  # monotonic: Redis not asked before then

    @classmethod
    def connect(cls, url: str) -> redis.Redis:
        """A client for ``url`` with the short timeouts a limiter needs."""
        return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)

    def _down(self, err: Exception) -> None:
        log.warning(
            "rate limits: Redis not reachable (%s); this process's own buckets for %g s",
            err,
            RETRY_S,
        )
        self._down_until = time.monotonic() + RETRY_S

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _ask(self, key: str, n: float, take: bool) -> float:
        if n > self.burst:
            return math.inf
        if time.monotonic() < self._down_until:
            return self._local.take(key, n) if take else self._local.wait(key, n)
        try:
            wait = self._script(
                keys=[self._key + key],
                args=[self.rate, self.burst, n, self._now(), int(take), self._expiry_ms],
            )
        except _UNAVAILABLE as err:
            self._down(err)
            return self._local.take(key, n) if take else self._local.wait(key, n)
        return float(wait)

    def take_each(self, keys: Sequence[str]) -> list[float]:
        """:meth:`take` of one token for each key in turn (a key may come again), in one
        round trip: an event batch's users."""
        if not keys:
            return []
        if time.monotonic() < self._down_until:
            return self._local.take_each(keys)
        try:
            waits = self._script_each(
                keys=[self._key + k for k in keys],
                args=[self.rate, self.burst, self._now(), self._expiry_ms],
            )
        except _UNAVAILABLE as err:
            self._down(err)
            return self._local.take_each(keys)
        return [float(w) for w in waits]

    def take(self, key: str, n: float = 1.0) -> float:
        """As :meth:`RateLimiter.take`, the bucket shared by every process."""
        return self._ask(key, n, take=True)

    def wait(self, key: str, n: float = 1.0) -> float:
        """As :meth:`RateLimiter.wait`: what :meth:`take` would answer, taking nothing."""
        return self._ask(key, n, take=False)
