"""What a view means: long view, finish and skip thresholds (KuaiRand-like defaults)."""

from __future__ import annotations

import pytest

from fyp.config import FeedbackConfig
from fyp.state.feedback import ACTION_LABEL, LABEL_INDEX, LABELS, view_labels
from fyp.types import EventType

CFG = FeedbackConfig()


@pytest.mark.parametrize(
    ("watch_ms", "duration_ms", "expected"),
    [
        (18_000, 60_000, (True, False, False)),  # 18 s: long, whatever the length
        (17_999, 60_000, (False, False, False)),  # just short of it, not a skip either
        (9_500, 10_000, (True, True, False)),  # 95% of a short video: long and finished
        (9_499, 10_000, (False, False, False)),
        (1_999, 60_000, (False, False, True)),  # under 2 s: a skip
        (2_000, 60_000, (False, False, False)),
        (0, 60_000, (False, False, True)),
        (1_500, 1_500, (True, True, False)),  # a 1.5 s video watched in full is no skip
        (30_000, 10_000, (True, True, False)),  # rewatched: more than the duration
        (5_000, 0, (False, False, False)),  # a zero duration divides by nothing
    ],
)
def test_view_labels_follow_the_documented_thresholds(
    watch_ms: int, duration_ms: int, expected: tuple[bool, bool, bool]
) -> None:
    assert view_labels(watch_ms, duration_ms, CFG) == expected


def test_thresholds_come_from_config() -> None:
    strict = FeedbackConfig(long_view_min_ms=5_000, skip_max_ms=3_000, finish_min_ratio=0.5)
    assert view_labels(5_000, 60_000, strict) == (True, False, False)
    assert view_labels(2_999, 60_000, strict) == (False, False, True)
    assert view_labels(2_999, 5_000, strict) == (False, True, False)


def test_label_index_matches_labels_and_every_action_has_a_label() -> None:
    assert [LABEL_INDEX[name] for name in LABELS] == list(range(len(LABELS)))
    assert set(ACTION_LABEL.values()) <= set(LABELS)
    assert EventType.VIEW not in ACTION_LABEL
    assert EventType.REPORT not in ACTION_LABEL  # reports go to moderation, not ranking
