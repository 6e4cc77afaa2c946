"""What every candidate source is and receives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fyp.safety.policy import YOUNGEST_AGE
from fyp.state.users import UserState
from fyp.types import Candidate
from fyp.users.controls import NO_CONTROLS, UserControls


@dataclass(frozen=True, slots=True)
class FeedContext:
    """One feed request as the pipeline sees it. ``now`` is Unix ms.

    ``policy_surface``: the surface whose eligibility rules apply (``surface`` itself,
    or the policy's default for an app's own tab names); ``age``: the lowest age of the
    user's age band (unknown: the youngest). ``person``: in non-personalised mode, the
    user's own state (``user`` is then a blank one), which only what the user told us
    ("not interested") and safety (what was just served, for the sequence rules) read."""

    request_id: str
    user_id: str
    user: UserState
    count: int
    surface: str
    region: str
    now: int
    policy_surface: str = "for_you"
    age: int = YOUNGEST_AGE
    controls: UserControls = NO_CONTROLS
    person: UserState | None = None

    @property
    def owner(self) -> UserState:
        """The user's own state: what they told us and what they were served."""
        return self.user if self.person is None else self.person


class CandidateSource(Protocol):
    name: str

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        """Propose candidates; may raise, and the pipeline then counts it and goes on."""
        ...


@runtime_checkable
class CitingSource(Protocol):
    """A source that words its candidates' reasons only once the page is chosen: for the
    few of its candidates served, rather than for every one it proposed (most never are)."""

    name: str

    def cite(self, ctx: FeedContext, served: Sequence[Candidate]) -> None:
        """Set the ``reason`` of each of ``served`` (this source's candidates on the page)."""
        ...
