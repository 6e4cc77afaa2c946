"""Repeated audit records that a caller can cause at will (a refused request), bounded.

Per actor and window (windows aligned on the clock), the first ``cap`` such records are
written as they come; past that, each is only counted, under what it would have said
(action, outcome, subject, details), and every count becomes one record when its window
ends: the same fields, plus ``count`` (how many it stands for), ``first_ts`` and
``last_ts``, and its numeric ``counts`` summed. So one key writes at most ``cap`` records
plus one per distinct kind of request per window, however fast it asks.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

REPEAT_WINDOW_MS = 60_000
REPEAT_CAP = 10  # records written as they come, per actor and window


@dataclass(slots=True)
class Tally:
    action: str
    actor: str
    outcome: str
    subject: str | None
    details: dict[str, Any]
    first_ts: int
    last_ts: int = 0
    count: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What the tallied records have in common."""
        what = json.dumps([self.subject, self.details], sort_keys=True)
        return self.action, self.actor, self.outcome, what

    def summary(self) -> dict[str, Any]:
        """The details of the record that stands for the tallied ones."""
        return {
            **self.details,
            **self.counts,
            "count": self.count,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


class Repeats:
    """Which repeated records to write now and which to count (not thread-safe: the
    audit log calls it under its lock)."""

    def __init__(self, window_ms: int = REPEAT_WINDOW_MS, cap: int = REPEAT_CAP) -> None:
        if window_ms <= 0 or cap < 0:
            raise ValueError("the window must be positive and the cap not negative")
        self.window_ms = window_ms
        self.cap = cap
        self._window = -1
        self._written: Counter[str] = Counter()  # per actor, in the current window
        self._tallies: dict[tuple[str, str, str, str], Tally] = {}

    def admit(self, actor: str, ts: int) -> bool:
        """Whether a repeated record of ``actor`` at ``ts`` (ms) is written now; else
        :meth:`count` it. (Call :meth:`due` first: a new window starts afresh.)"""
        self._roll(ts)
        if self._written[actor] >= self.cap:
            return False
        self._written[actor] += 1
        return True

    def count(
        self,
        action: str,
        actor: str,
        outcome: str,
        subject: str | None,
        details: dict[str, Any],
        counts: dict[str, int],
        ts: int,
    ) -> None:
        tally = Tally(action, actor, outcome, subject, details, first_ts=ts)
        tally = self._tallies.setdefault(tally.key, tally)
        tally.count += 1
        tally.last_ts = ts
        tally.counts.update(counts)

    def due(self, ts: int) -> list[Tally]:
        """The tallies of windows that ended before ``ts`` (to write, then :meth:`done`)."""
        return list(self._tallies.values()) if ts // self.window_ms != self._window else []

    def pending(self) -> list[Tally]:
        return list(self._tallies.values())

    def done(self, tally: Tally) -> None:
        """``tally`` is written: forget it."""
        self._tallies.pop(tally.key, None)

    def window_end_ms(self) -> int:
        return (self._window + 1) * self.window_ms

    def _roll(self, ts: int) -> None:
        if ts // self.window_ms != self._window:
            self._window = ts // self.window_ms
            self._written.clear()
