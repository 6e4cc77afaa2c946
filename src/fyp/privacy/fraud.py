"""The engagement-fraud guard of the learning step: a burst of explicit actions from one
user (a script liking everything it sees) is not trained on past a per-minute budget.

The events stay in the log (they are what the user did, and export and erasure see
them); only the learning step skips them. Decisions depend on the events alone, in log
order, never on the wall clock: the learning state is rebuilt by replaying the log, and
a replay must decide exactly as the first pass did. The guard is a plain object (no
locks, no clock) so that it pickles with the state into checkpoints.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from fyp.types import EventType

WINDOW_MS = 60_000
# Kept per user: the windows a late event (up to 60 s behind the newest) can fall in.
KEEP_MS = 2 * WINDOW_MS

# The explicit positive signals, which a fraudster inflates. Views are bounded already
# (watch time is capped by the video's duration at ingest), and negative feedback
# (not_interested, report) must always reach the model and the review queue.
GUARDED: frozenset[EventType] = frozenset(
    {EventType.LIKE, EventType.SHARE, EventType.FOLLOW, EventType.COMMENT}
)

# How often (in admit calls) idle users are swept out: often enough that memory stays
# near "the users active in the last minute", rarely enough to cost nothing per event.
SWEEP_EVERY = 1024
# ...and a user is swept only once this many events went by without one of theirs: one
# event stamped far in the future (ingest allows a day ahead) must not make everyone's
# window look old and wipe them all, which would let a burst start over.
IDLE_CALLS = 1 << 17


class FraudGuard:
    """Engagement-fraud guard for the learning step: a user's explicit actions (like,
    share, follow, comment) beyond ``max_per_minute`` within any sliding 60 s window of
    *event time* are not trained on.

    Per user it keeps the timestamps of the actions it admitted within 120 s of the
    user's newest admitted one (at most ``2 * max_per_minute`` of them: two windows, so
    that a late event can be judged on every window it falls in). Actions it throttles
    do not count against the budget: a script that keeps hammering is cut off for its
    burst, not for longer. Every ``SWEEP_EVERY`` calls, users whose newest admitted
    action is 60 s or more behind the newest ``ts`` seen (from anyone) are dropped, so
    memory is bounded by the users active in the last minute, plus the newcomers of at
    most ``SWEEP_EVERY`` calls.

    Out-of-order timestamps (clients' clocks, offline queues uploaded later): an event
    at or after the user's newest admitted action is judged on the 60 s that end at its
    own ts, (ts - 60 s, ts]. An earlier ("late") one is admitted only if no 60 s window
    containing its ts would then hold more than ``max_per_minute`` admitted actions:
    counting only (ts - 60 s, ts] would admit any run of strictly decreasing timestamps
    (each sees the ones before it as "in its future"), an easy bypass. A late event 60 s
    or more before the user's newest admitted action could fall in windows whose
    history is no longer kept, so it is throttled rather than admitted unjudged
    (admitting it would be a bypass too; it costs a legitimate user one lost training
    signal). A user swept out starts afresh with their next event, whatever its ts.
    """

    def __init__(self, max_per_minute: int) -> None:
        if max_per_minute < 1:
            raise ValueError(f"max_per_minute must be at least 1, got {max_per_minute}")
        self.max_per_minute = max_per_minute
        self.throttled = 0  # events not admitted so far
        # user -> admitted action timestamps, ascending, all within 120 s of the last one
        self._admitted: dict[str, deque[int]] = {}
        # user -> the call that last admitted theirs, least recent first (every user with
        # a window has one: a new window always admits its first event)
        self._last_call: OrderedDict[str, int] = OrderedDict()
        self._newest_ts = 0  # the newest event time seen, Unix ms
        self._calls = 0

    def admit(self, user_id: str, type: EventType, ts: int) -> bool:
        """Whether to train on this event (``ts``: its event time, Unix ms)."""
        self._calls += 1
        if ts > self._newest_ts:
            self._newest_ts = ts
        if self._calls % SWEEP_EVERY == 0:
            self._sweep()
        if type not in GUARDED:
            return True
        window = self._admitted.get(user_id)
        if window is None:
            window = self._admitted[user_id] = deque()
        if not window or window[-1] <= ts:
            while window and window[0] <= ts - KEEP_MS:
                window.popleft()
            # Nothing admitted is after ts: every window holding ts ends within (ts-60 s, ts].
            in_window = 0
            for t in reversed(window):
                if t <= ts - WINDOW_MS:
                    break
                in_window += 1
            if in_window >= self.max_per_minute:
                return self._throttle()
            window.append(ts)
            self._last_call[user_id] = self._calls
            self._last_call.move_to_end(user_id)
            return True
        if ts <= window[-1] - WINDOW_MS:
            return self._throttle()
        near = sorted([ts, *(t for t in window if ts - WINDOW_MS < t < ts + WINDOW_MS)])
        if _densest(near) > self.max_per_minute:
            return self._throttle()
        _insert_sorted(window, ts)
        self._last_call[user_id] = self._calls
        self._last_call.move_to_end(user_id)
        return True

    def __setstate__(self, state: dict[str, object]) -> None:
        # Checkpoints from before the call order was kept hold a plain dict.
        last = state.get("_last_call")
        if isinstance(last, dict) and not isinstance(last, OrderedDict):
            state["_last_call"] = OrderedDict(sorted(last.items(), key=lambda kv: kv[1]))
        self.__dict__.update(state)

    def forget_user(self, user_id: str) -> None:
        """Erasure: nothing of the user is kept."""
        self._admitted.pop(user_id, None)
        self._last_call.pop(user_id, None)

    def tracked_users(self) -> int:
        """How many users the guard holds timestamps for (its memory)."""
        return len(self._admitted)

    def _throttle(self) -> bool:
        self.throttled += 1
        return False

    def _sweep(self) -> None:
        horizon = self._newest_ts - WINDOW_MS
        quiet = self._calls - IDLE_CALLS
        # Only users whose last admission is older than IDLE_CALLS can go: a walk from
        # the front of the call order, not over every user tracked (over 10k users every
        # SWEEP_EVERY events, that was 5% of a replay's time).
        idle = []
        for u, call in self._last_call.items():
            if call > quiet:
                break
            w = self._admitted.get(u)
            if not w or w[-1] <= horizon:
                idle.append(u)
        for u in idle:
            del self._admitted[u]
            self._last_call.pop(u, None)


def _densest(times: list[int]) -> int:
    """The most of ``times`` (ascending) that any 60 s window holds."""
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - WINDOW_MS:
            start += 1
        best = max(best, end - start + 1)
    return best


def _insert_sorted(window: deque[int], ts: int) -> None:
    # A window holds at most max_per_minute entries and late events are rare: a scan
    # from the right is cheap enough.
    i = len(window)
    while i > 0 and window[i - 1] > ts:
        i -= 1
    window.insert(i, ts)
