"""What a user's actions mean as labels: long view, finish, skip, like, ...

The thresholds are configuration (:class:`fyp.config.FeedbackConfig`)."""

from __future__ import annotations

from fyp.config import FeedbackConfig
from fyp.types import EventType

# The labels the ranker predicts, in a fixed order (its heads).
LABELS: tuple[str, ...] = (
    "long_view",
    "finish",
    "skip",
    "like",
    "share",
    "follow",
    "comment",
    "not_interested",
)
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}

# Explicit actions and the label each one sets.
ACTION_LABEL: dict[EventType, str] = {
    EventType.LIKE: "like",
    EventType.SHARE: "share",
    EventType.FOLLOW: "follow",
    EventType.COMMENT: "comment",
    EventType.NOT_INTERESTED: "not_interested",
}

# How much each kind of engagement counts towards trending and co-engagement.
ENGAGEMENT_WEIGHT: dict[str, float] = {
    "long_view": 1.0,
    "like": 2.0,
    "share": 3.0,
    "follow": 2.0,
    "comment": 2.0,
}


def view_labels(watch_ms: int, duration_ms: int, cfg: FeedbackConfig) -> tuple[bool, bool, bool]:
    """(long_view, finish, skip) for a view of ``watch_ms`` of a ``duration_ms`` video."""
    ratio = watch_ms / duration_ms if duration_ms > 0 else 0.0
    long_view = watch_ms >= cfg.long_view_min_ms or ratio >= cfg.long_view_min_ratio
    finish = ratio >= cfg.finish_min_ratio
    skip = watch_ms < cfg.skip_max_ms and not finish
    return long_view, finish, skip
