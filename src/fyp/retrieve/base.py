"""What every candidate source is and receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fyp.state.users import UserState
from fyp.types import Candidate


@dataclass(frozen=True, slots=True)
class FeedContext:
    """One feed request as the pipeline sees it. ``now`` is Unix ms."""

    request_id: str
    user_id: str
    user: UserState
    count: int
    surface: str
    region: str
    now: int


class CandidateSource(Protocol):
    name: str

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        """Propose candidates; may raise, and the pipeline then counts it and goes on."""
        ...
