"""The engagement-fraud guard: a per-user budget of explicit actions per 60 s of event
time, deterministic in log order, bounded in memory, picklable."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from fyp.privacy.fraud import IDLE_CALLS, SWEEP_EVERY, WINDOW_MS, FraudGuard
from fyp.types import EventType

T0 = 1_750_000_000_000
ACTIONS = [EventType.LIKE, EventType.SHARE, EventType.FOLLOW, EventType.COMMENT]


def test_a_burst_of_likes_is_cut_at_the_budget() -> None:
    guard = FraudGuard(max_per_minute=30)
    decisions = [guard.admit("u1", EventType.LIKE, T0 + i * 500) for i in range(100)]  # 50 s
    assert sum(decisions) == 30
    assert decisions[:30] == [True] * 30  # the first 30 of the minute, then nothing
    assert guard.throttled == 70


def test_the_budget_covers_every_explicit_action_together() -> None:
    guard = FraudGuard(max_per_minute=8)
    decisions = [guard.admit("u1", ACTIONS[i % 4], T0 + i * 100) for i in range(20)]
    assert sum(decisions) == 8


def test_a_steady_pace_under_the_budget_is_never_throttled() -> None:
    guard = FraudGuard(max_per_minute=30)
    # 20 a minute for 5 minutes, every kind of action.
    step = WINDOW_MS // 20
    assert all(guard.admit("u1", ACTIONS[i % 4], T0 + i * step) for i in range(100))
    assert guard.throttled == 0


def test_the_window_slides() -> None:
    guard = FraudGuard(max_per_minute=3)
    assert [guard.admit("u1", EventType.LIKE, T0 + d) for d in (0, 1, 2, 3)] == [
        True,
        True,
        True,
        False,
    ]
    # (ts - 60 s, ts]: the action at T0 leaves the window exactly 60 s later.
    assert not guard.admit("u1", EventType.LIKE, T0 + WINDOW_MS - 1)
    assert guard.admit("u1", EventType.LIKE, T0 + WINDOW_MS)
    assert not guard.admit("u1", EventType.LIKE, T0 + WINDOW_MS)
    assert guard.admit("u1", EventType.LIKE, T0 + WINDOW_MS + 2)


@pytest.mark.parametrize("type", [EventType.VIEW, EventType.NOT_INTERESTED, EventType.REPORT])
def test_views_and_negative_feedback_are_never_throttled(type: EventType) -> None:
    guard = FraudGuard(max_per_minute=1)
    assert guard.admit("u1", EventType.LIKE, T0)
    assert all(guard.admit("u1", type, T0 + i) for i in range(500))
    assert guard.throttled == 0
    assert not guard.admit("u1", EventType.LIKE, T0 + 1)  # views did not use the budget


def test_users_are_independent() -> None:
    guard = FraudGuard(max_per_minute=5)
    for i in range(50):
        guard.admit("bot", EventType.LIKE, T0 + i)
    assert all(guard.admit("human", EventType.LIKE, T0 + 100 + i * 1000) for i in range(5))
    assert guard.throttled == 45


def _random_log(seed: int, n: int = 5000) -> list[tuple[str, EventType, int]]:
    rng = random.Random(seed)
    ts = T0
    out = []
    for _ in range(n):
        ts += rng.randrange(0, 400)
        jitter = rng.choice([0, 0, 0, -rng.randrange(0, 90_000)])  # some late events
        out.append((f"u{rng.randrange(20)}", rng.choice(list(EventType)), ts + jitter))
    return out


def test_decisions_depend_only_on_the_events_in_order() -> None:
    events = _random_log(7)
    runs = []
    for _ in range(2):
        guard = FraudGuard(max_per_minute=10)
        runs.append(([guard.admit(*e) for e in events], guard.throttled))
    assert runs[0] == runs[1]
    assert 0 < runs[0][1] < len(events)


def test_no_window_ever_holds_more_than_the_budget() -> None:
    """Whatever the order of timestamps, the admitted actions of a user never exceed the
    budget in any 60 s window."""
    budget = 10
    guard = FraudGuard(max_per_minute=budget)
    admitted: dict[str, list[int]] = {}
    for user, type, ts in _random_log(11, 20_000):
        if guard.admit(user, type, ts) and type in ACTIONS:
            admitted.setdefault(user, []).append(ts)
    for times in admitted.values():
        times.sort()
        start = 0
        for end, t in enumerate(times):
            while times[start] <= t - WINDOW_MS:
                start += 1
            assert end - start + 1 <= budget


def test_late_events_under_the_budget_are_admitted() -> None:
    guard = FraudGuard(max_per_minute=10)
    times = [T0 + i * 3_000 for i in range(10)]  # 10 within 30 s
    random.Random(5).shuffle(times)
    assert all(guard.admit("u1", EventType.LIKE, t) for t in times)
    assert not guard.admit("u1", EventType.LIKE, T0 + 15_500)


def test_strictly_decreasing_timestamps_do_not_bypass_the_budget() -> None:
    guard = FraudGuard(max_per_minute=5)
    assert guard.admit("bot", EventType.LIKE, T0 + 10_000)
    decisions = [guard.admit("bot", EventType.LIKE, T0 + 10_000 - i) for i in range(1, 50)]
    assert sum(decisions) == 4


def test_an_event_a_minute_behind_the_users_newest_action_is_not_trained_on() -> None:
    guard = FraudGuard(max_per_minute=5)
    assert guard.admit("u1", EventType.LIKE, T0)
    assert not guard.admit("u1", EventType.LIKE, T0 - WINDOW_MS)
    assert guard.admit("u1", EventType.LIKE, T0 - WINDOW_MS + 1)  # still inside: judged
    assert guard.admit("u1", EventType.VIEW, T0 - 10 * WINDOW_MS)


def test_memory_is_bounded_by_the_users_of_the_last_events() -> None:
    guard = FraudGuard(max_per_minute=3)
    # Distinct users, one like each, 10 ms apart: a user is dropped once a minute of
    # event time and IDLE_CALLS events have gone by without them.
    for i in range(IDLE_CALLS + 20_000):
        guard.admit(f"u{i}", EventType.LIKE, T0 + i * 10)
        assert guard.tracked_users() <= IDLE_CALLS + SWEEP_EVERY
    assert guard.tracked_users() < IDLE_CALLS + SWEEP_EVERY  # some were dropped
    # One user's window never holds more than the budget.
    for i in range(1_000):
        guard.admit("bot", EventType.LIKE, T0 + 10_000_000 + i)
    assert len(guard._admitted["bot"]) <= 2 * 3


def test_an_idle_user_is_dropped_and_starts_afresh() -> None:
    guard = FraudGuard(max_per_minute=2)
    guard.admit("u1", EventType.LIKE, T0)
    guard.admit("u1", EventType.LIKE, T0)
    for i in range(IDLE_CALLS + SWEEP_EVERY):
        guard.admit("other", EventType.VIEW, T0 + WINDOW_MS + i)
    assert "u1" not in guard._admitted
    assert guard.admit("u1", EventType.LIKE, T0 + WINDOW_MS + IDLE_CALLS + SWEEP_EVERY)


def test_one_event_far_in_the_future_does_not_wipe_the_windows() -> None:
    guard = FraudGuard(max_per_minute=30)
    admitted = 0
    for burst in range(5):
        for i in range(30):
            admitted += guard.admit("bot", EventType.LIKE, T0 + burst * 100 + i)
        guard.admit("clock", EventType.VIEW, T0 + 86_400_000)  # a day ahead
        for i in range(994):
            guard.admit(f"viewer{i}", EventType.VIEW, T0 + 1_000 + i)
    assert admitted == 30


def test_a_pickled_guard_decides_as_the_original() -> None:
    events = _random_log(3)
    guard = FraudGuard(max_per_minute=10)
    for e in events[:2500]:
        guard.admit(*e)
    copy = pickle.loads(pickle.dumps(guard))
    assert copy.throttled == guard.throttled
    assert [copy.admit(*e) for e in events[2500:]] == [guard.admit(*e) for e in events[2500:]]
    assert copy.throttled == guard.throttled


def test_forget_user() -> None:
    guard = FraudGuard(max_per_minute=2)
    guard.admit("u1", EventType.LIKE, T0)
    guard.admit("u1", EventType.LIKE, T0 + 1)
    guard.admit("u2", EventType.LIKE, T0 + 2)
    assert not guard.admit("u1", EventType.LIKE, T0 + 3)
    guard.forget_user("u1")
    guard.forget_user("never-seen")
    assert "u1" not in guard._admitted
    assert "u1" not in pickle.dumps(guard).decode("latin-1")
    assert guard.admit("u1", EventType.LIKE, T0 + 4)  # u1 starts afresh
    assert guard.admit("u2", EventType.LIKE, T0 + 5)  # u2 is untouched: its second
    assert not guard.admit("u2", EventType.LIKE, T0 + 6)


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_per_minute"):
        FraudGuard(max_per_minute=0)


class _ScanningGuard(FraudGuard):
    """The sweep as first written: a scan of every tracked user (the reference)."""

    def _sweep(self) -> None:
        horizon = self._newest_ts - WINDOW_MS
        quiet = self._calls - IDLE_CALLS
        idle = [
            u
            for u, w in self._admitted.items()
            if not w or (w[-1] <= horizon and self._last_call.get(u, 0) <= quiet)
        ]
        for u in idle:
            del self._admitted[u]
            self._last_call.pop(u, None)


def test_the_sweep_drops_exactly_what_a_scan_of_every_user_drops() -> None:
    rng = random.Random(11)
    fast, scan = FraudGuard(max_per_minute=4), _ScanningGuard(max_per_minute=4)
    seen: set[str] = set()
    base = T0
    for i in range(4 * (IDLE_CALLS + SWEEP_EVERY)):
        # Users come and go (a drifting population), a few stay. IDLE_CALLS events span
        # about half a minute of event time, so both conditions of a sweep bite (each
        # was checked to fail this test when loosened); some events are late, one jump
        # ahead.
        base += rng.choice([0, 0, 0, 1]) + (200_000 if i == 300_000 else 0)
        ts = base - (rng.randrange(90_000) if rng.random() < 0.1 else 0)
        user = f"u{(i // 5_000) * 100 + rng.randrange(300)}" if i % 3 else f"r{rng.randrange(40)}"
        kind = rng.choice([*ACTIONS, EventType.VIEW])
        seen.add(user)
        assert fast.admit(user, kind, ts) == scan.admit(user, kind, ts)
        if i % 97 == 0:
            assert fast._admitted.keys() == scan._admitted.keys()
    assert fast._admitted.keys() == scan._admitted.keys()
    assert fast.throttled == scan.throttled > 0
    assert fast.tracked_users() < len(seen) // 2  # users did go


def test_a_guard_pickled_before_the_call_order_was_kept_still_sweeps() -> None:
    guard = FraudGuard(max_per_minute=3)
    for i in range(50):
        guard.admit(f"u{i % 7}", EventType.LIKE, T0 + i)
    state = copy.deepcopy(guard.__dict__)
    state["_last_call"] = dict(reversed(list(guard._last_call.items())))  # a plain dict
    old = FraudGuard.__new__(FraudGuard)
    old.__setstate__(state)
    assert list(old._last_call.items()) == list(guard._last_call.items())
    events = _random_log(5)
    assert [old.admit(*e) for e in events] == [guard.admit(*e) for e in events]
