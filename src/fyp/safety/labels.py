"""The moderation vocabulary: video states and the labels a video can carry.

A label is one of :data:`KNOWN_LABELS`, ``sensitive:<topic>`` (a sensitive topic, such as
``sensitive:dieting``), or one the deployment adds in ``[policy] extra_labels``. Anything
else is refused at the edge, so a typo cannot silently fail to take a video down."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum


class ModerationState(StrEnum):
    """Where a video stands. ``limited``: not recommended, still reachable on the
    creator's profile or by link (the ``following`` surface, by default)."""

    PENDING = "pending"
    APPROVED = "approved"
    LIMITED = "limited"
    REMOVED = "removed"


KNOWN_LABELS: frozenset[str] = frozenset(
    {
        "misinformation",
        "unverified_claim",
        "graphic",
        "mature",
        "creator_under_16",
        # Kept from the backbone's label vocabulary: set by an app's own pipeline.
        "removed",
        "ineligible",
    }
)

SENSITIVE_PREFIX = "sensitive:"
_TOPIC = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def sensitive_topic(label: str) -> str | None:
    """The topic of a ``sensitive:<topic>`` label, else None."""
    if label.startswith(SENSITIVE_PREFIX):
        topic = label[len(SENSITIVE_PREFIX) :]
        if _TOPIC.match(topic):
            return topic
    return None


def unknown_labels(labels: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The labels of ``labels`` that are not in the vocabulary, sorted."""
    allowed = KNOWN_LABELS | frozenset(extra)
    return sorted({x for x in labels if x not in allowed and sensitive_topic(x) is None})
