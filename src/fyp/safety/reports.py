"""User reports, counted towards sending a video to human review.

Each user counts once per video; an account younger than the policy's
``new_account_hours`` counts ``new_account_weight`` (a burst of fresh accounts reporting
one video weighs less than the same number of established ones). A video is *due* for
review — once — when its weighted reports reach ``review_min_reports`` and
``review_min_rate`` of its views. Part of the learning state: it is rebuilt exactly by a
replay of the log."""

from __future__ import annotations

from fyp.safety.policy import ReportPolicy


class ReportCounter:
    def __init__(self, policy: ReportPolicy) -> None:
        self.policy = policy
        # row -> each user who reported it -> the weight their report counted
        self.reporters: dict[int, dict[str, float]] = {}
        self.weight: dict[int, float] = {}  # row -> weighted reports
        self.due: list[int] = []  # rows that crossed the threshold, not yet taken
        self._crossed: set[int] = set()

    def add(self, row: int, user_id: str, account_age_ms: int, views: float) -> None:
        seen = self.reporters.setdefault(row, {})
        if user_id in seen:
            return
        p = self.policy
        new = account_age_ms < p.new_account_hours * 3_600_000
        seen[user_id] = p.new_account_weight if new else 1.0
        w = self.weight.get(row, 0.0) + seen[user_id]
        self.weight[row] = w
        if (
            row not in self._crossed
            and w >= p.review_min_reports
            and w >= p.review_min_rate * max(views, 1.0)
        ):
            self._crossed.add(row)
            self.due.append(row)

    def forget_user(self, user_id: str) -> None:
        """Erasure: the user's reports stop counting (a review they caused stays)."""
        for row, seen in list(self.reporters.items()):
            w = seen.pop(user_id, None)
            if w is None:
                continue
            self.weight[row] -= w
            if not seen:
                del self.reporters[row], self.weight[row]

    def take_due(self) -> list[int]:
        due, self.due = self.due, []
        return due
