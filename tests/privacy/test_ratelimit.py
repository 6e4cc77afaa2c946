"""Token buckets: a burst, then the rate; bounded memory."""

from __future__ import annotations

import math

import pytest

from fyp.privacy.ratelimit import RateLimiter, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refused_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=5.0, clock=clock)
    assert [limiter.take("k") for _ in range(5)] == [0.0] * 5
    assert limiter.take("k") == pytest.approx(0.5)  # one token at 2/s
    assert limiter.take("k", 3) == pytest.approx(1.5)
    clock.t += 0.25
    assert limiter.take("k") == pytest.approx(0.25)  # refused calls take nothing


def test_refills_over_time_up_to_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=5.0, clock=clock)
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


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2.0, clock=clock)
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


def test_more_than_burst_is_never_allowed() -> None:
    limiter = RateLimiter(rate=10.0, burst=3.0, clock=FakeClock())
    assert limiter.take("k", 4) == math.inf
    assert limiter.take("k", 3) == 0.0  # the refused request took nothing


def test_bad_parameters() -> None:
    for rate, burst, max_keys in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (math.nan, 1, 1)):
        with pytest.raises(ValueError):
            RateLimiter(rate, burst, max_keys)


def test_wait_says_what_take_would_and_takes_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=2.0, clock=clock)
    assert limiter.wait("k") == 0.0 and len(limiter) == 0  # no bucket made for asking
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
