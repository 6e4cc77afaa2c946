"""Live figures of one server for the operator console (``GET /v1/stats``): events and
feed requests per second, feed latency percentiles and the candidate-source mix over the
last minute, and how far learning is behind the log, in time.

Kept in memory, bounded (samples older than the window are dropped as new ones come),
and cheap to record: a request appends a tuple."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable

import numpy as np

WINDOW_S = 60.0
MAX_SAMPLES = 100_000  # per series: a bound, whatever the request rate


class LiveStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self._feeds: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self._sources: deque[tuple[float, Counter[str]]] = deque(maxlen=MAX_SAMPLES)
        # (when acknowledged, the log's end then): how long the oldest event not yet
        # learned has waited
        self._acked: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)

    def _trim(self, now: float) -> None:
        start = now - WINDOW_S
        for series in (self._events, self._feeds, self._sources):
            while series and series[0][0] < start:
                series.popleft()

    def events_accepted(self, n: int, log_end: int) -> None:
        now = self._clock()
        self._events.append((now, n))
        self._acked.append((now, log_end))

    def feed_served(self, latency_ms: float, sources: Iterable[str]) -> None:
        now = self._clock()
        self._feeds.append((now, latency_ms))
        self._sources.append((now, Counter(sources)))

    def learning_age_ms(self, applied_offset: int) -> float:
        """How long the oldest acknowledged event not yet learned has waited (0: none)."""
        acked = self._acked
        while acked and acked[0][1] <= applied_offset:
            acked.popleft()
        return 0.0 if not acked else (self._clock() - acked[0][0]) * 1000.0

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        self._trim(now)
        latencies = np.array([ms for _, ms in self._feeds], dtype=np.float64)
        mix: Counter[str] = Counter()
        for _, c in self._sources:
            mix.update(c)
        total = sum(mix.values())
        names = ("p50", "p95", "p99")
        percentiles = np.percentile(latencies, [50, 95, 99]).tolist() if len(latencies) else None
        return {
            "window_s": WINDOW_S,
            "events_per_s": sum(n for _, n in self._events) / WINDOW_S,
            "feed_requests_per_s": len(self._feeds) / WINDOW_S,
            "feed_latency_ms": dict(zip(names, percentiles or [None] * 3, strict=True)),
            "source_mix": {s: n / total for s, n in mix.most_common()} if total else {},
        }
