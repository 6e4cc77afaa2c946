"""Reports: one per user per video, fresh accounts weigh less, due for review once."""

from __future__ import annotations

from fyp.safety.policy import ReportPolicy
from fyp.safety.reports import ReportCounter

DAY_MS = 86_400_000


def test_a_user_reporting_twice_counts_once() -> None:
    c = ReportCounter(ReportPolicy(review_min_reports=2, review_min_rate=0))
    c.add(0, "u1", DAY_MS * 30, 10)
    c.add(0, "u1", DAY_MS * 30, 10)
    assert c.weight[0] == 1.0
    assert c.take_due() == []
    c.add(0, "u2", DAY_MS * 30, 10)
    assert c.take_due() == [0]


def test_new_accounts_count_less_and_a_video_is_due_once() -> None:
    c = ReportCounter(
        ReportPolicy(review_min_reports=3, review_min_rate=0, new_account_weight=0.25)
    )
    for i in range(11):
        c.add(0, f"fresh{i}", 60_000, 100)  # a burst of minute-old accounts
    assert c.weight[0] == 2.75
    assert c.take_due() == []
    c.add(0, "old", DAY_MS * 365, 100)
    assert c.take_due() == [0]
    c.add(0, "old2", DAY_MS * 365, 100)
    assert c.take_due() == []  # already sent to review


def test_the_rate_guards_widely_watched_videos() -> None:
    c = ReportCounter(ReportPolicy(review_min_reports=3, review_min_rate=0.01))
    for i in range(5):
        c.add(0, f"u{i}", DAY_MS * 30, 1_000)  # 5 reports on 1,000 views: 0.5%
    assert c.take_due() == []
    for i in range(5, 10):
        c.add(0, f"u{i}", DAY_MS * 30, 1_000)
    assert c.take_due() == [0]


def test_an_erased_users_report_stops_counting() -> None:
    c = ReportCounter(
        ReportPolicy(review_min_reports=9, review_min_rate=0, new_account_weight=0.25)
    )
    c.add(0, "old", DAY_MS * 30, 100)
    c.add(0, "new", 0, 100)
    c.add(1, "new", 0, 100)
    c.forget_user("new")
    assert c.reporters == {0: {"old": 1.0}}
    assert c.weight == {0: 1.0}
