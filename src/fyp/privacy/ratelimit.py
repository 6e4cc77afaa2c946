"""Token-bucket rate limits, in bounded memory.

Called on every request, so ``take`` is a dict lookup and a little arithmetic. There is no
lock: the API calls it from its one asyncio event loop (through :class:`InProcessLimiter`,
which awaits nothing), where nothing runs between the read and the write of a bucket.
Share one limiter between threads and you need a lock.

Several API processes share limits through a Redis server instead
(:class:`fyp.privacy.redis_ratelimit.RedisRateLimiter`): :func:`limiters` chooses.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# A caller that waits exactly the returned delay must then be let through; without this
# slack, float rounding in the refill can leave it a hair short and refuse it again.
_EPSILON = 1e-9
NEVER_S = 3600  # what to tell a caller whose request can never be let through


def retry_after(wait_s: float) -> int:
    """Whole seconds to tell a rate-limited client to wait: ``wait_s`` rounded up, and at
    least 1 (a client told 0 would retry at once, and be refused again). Every message and
    every ``Retry-After`` header uses this, so the two always agree."""
    return max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else NEVER_S


class RateLimiter:
    """Token buckets keyed by a string (an API key id, a user): ``rate`` tokens per
    second, up to ``burst``.

    A key seen for the first time starts with a full bucket. At most ``max_keys`` buckets
    are kept; the least recently used goes first. A missing bucket counts as full, which is
    what an idle bucket refills to after ``burst / rate`` seconds anyway: an eviction can
    hand a key back at most the one burst it had spent, and none at all while ``max_keys``
    exceeds the keys active within ``burst / rate`` seconds.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or not burst > 0 or max_keys < 1:
            raise ValueError(
                f"need rate > 0, burst > 0, max_keys >= 1: {rate}, {burst}, {max_keys}"
            )
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens left, when they were counted); LRU order, most recent last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """Buckets kept now (never more than ``max_keys``)."""
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float | None:
        """``key``'s tokens at ``now`` (None: no bucket, which counts as full)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        left, then = bucket
        # max(0, ...): a clock that steps back must not drain the bucket.
        return min(self.burst, left + max(0.0, now - then) * self.rate)

    def wait(self, key: str, n: float = 1.0) -> float:
        """What :meth:`take` would answer, taking nothing: for a limit checked before
        work whose outcome decides whether a token is spent (a failed authentication,
        a user created rather than updated)."""
        if n > self.burst:
            return math.inf
        tokens = self._tokens(key, self._clock())
        if tokens is None or tokens + _EPSILON >= n:
            return 0.0
        return (n - tokens) / self.rate

    def take(self, key: str, n: float = 1.0) -> float:
        """Take ``n`` tokens from ``key``'s bucket: 0.0 if they were there; otherwise nothing
        is taken and the result is the seconds until they will be (send it, rounded up, as
        Retry-After). ``n > burst`` can never be satisfied, however long one waits: that
        returns ``math.inf`` (a caller should answer it as a request too large, not a 429
        to retry)."""
        if n > self.burst:
            return math.inf
        now = self._clock()
        buckets = self._buckets
        known = self._tokens(key, now)
        if known is None:
            tokens = self.burst
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
        else:
            tokens = known
            buckets.move_to_end(key)
        if tokens + _EPSILON >= n:
            buckets[key] = (max(0.0, tokens - n), now)
            return 0.0
        buckets[key] = (tokens, now)
        return (n - tokens) / self.rate

    def take_each(self, keys: Sequence[str]) -> list[float]:
        """:meth:`take` of one token for each key in turn (a key may come again): what
        each was answered."""
        return [self.take(k) for k in keys]


class Limiter(Protocol):
    """What the API asks of a rate limiter, on its event loop: coroutines, as a limiter
    on Redis waits for a round trip (:class:`InProcessLimiter` or a Redis one)."""

    async def take(self, key: str, n: float = 1.0) -> float: ...

    async def wait(self, key: str, n: float = 1.0) -> float: ...

    async def take_each(self, keys: Sequence[str]) -> list[float]: ...

    async def close(self) -> None: ...


class InProcessLimiter:
    """A :class:`RateLimiter` as a :class:`Limiter`: its answers, at once (nothing is
    awaited, so a take is still one step of the event loop: no lock needed)."""

    def __init__(self, buckets: RateLimiter) -> None:
        self.buckets = buckets

    async def take(self, key: str, n: float = 1.0) -> float:
        return self.buckets.take(key, n)

    async def wait(self, key: str, n: float = 1.0) -> float:
        return self.buckets.wait(key, n)

    async def take_each(self, keys: Sequence[str]) -> list[float]:
        return self.buckets.take_each(keys)

    async def close(self) -> None:
        return None


async def take_in_turn(takes: Sequence[tuple[Limiter, str]]) -> list[float | None]:
    """One token from each ``(limiter, key)`` in turn, as long as each is let through:
    what ``await limiter.take(key)`` answered each, None for those after the first
    refused (nothing taken from them). A request's buckets (its key's, then its user's):
    where every limiter is on the same Redis server, in one round trip."""
    if takes and not all(isinstance(limiter, InProcessLimiter) for limiter, _ in takes):
        from fyp.privacy.redis_ratelimit import take_in_turn_on_redis  # redis when used

        together = await take_in_turn_on_redis(takes)
        if together is not None:
            return together
    waits: list[float | None] = []
    for limiter, key in takes:
        waits.append(await limiter.take(key) if not waits or waits[-1] == 0 else None)
    return waits


def limits_store(rate_limits: str | None, event_log: str | None) -> str | None:
    """The Redis URL the buckets are kept on (None: in this process), from the settings
    ``auth.rate_limits`` and ``event_log``: see :class:`fyp.config.AuthConfig`."""
    if rate_limits == "memory":
        return None
    if rate_limits is not None:
        return rate_limits
    if event_log is None or event_log.startswith("sqlite:"):
        return None
    # The event log's server and prefix; its durability option is the log's own.
    parts = urlsplit(event_log)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode([q for q in query if q[0] != "durability"])))


Limiters = Callable[[str, float, float], Limiter]


def limiters(store: str | None) -> Limiters:
    """What makes the API's limiters (each from a name, one limit: ``key``, ``user``;
    a rate per second; a burst): in this process (``store`` None), or on the Redis
    server at ``store``, all of them through one connection."""
    if store is None:
        return lambda name, rate, burst: InProcessLimiter(RateLimiter(rate, burst))
    from fyp.privacy.redis_ratelimit import RedisRateLimiter  # redis only when asked for
    from fyp.storage.redis_server import split_url

    url, prefix = split_url(store, "the rate limits'")
    connection = RedisRateLimiter.connect(url)
    return lambda name, rate, burst: RedisRateLimiter(connection, name, rate, burst, prefix)
