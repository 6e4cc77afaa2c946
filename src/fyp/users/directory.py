"""The users the engine knows by what they told it: profiles and controls, in memory
(loaded from :mod:`fyp.users.store` at start, written through on every change)."""

from __future__ import annotations

from fyp.safety.policy import min_age_of
from fyp.state.users import UserState, new_user
from fyp.types import UserProfile
from fyp.users.controls import NO_CONTROLS, UserControls


class UserDirectory:
    def __init__(self, history_size: int, n_labels: int) -> None:
        self.profiles: dict[str, UserProfile] = {}
        self.controls: dict[str, UserControls] = {}
        # Non-personalised mode serves from a blank state per user (what was served in
        # that mode, nothing else), so nothing from the user's history reaches the feed.
        self._blank: dict[str, UserState] = {}
        self._history_size = history_size
        self._n_labels = n_labels

    def controls_of(self, user_id: str) -> UserControls:
        return self.controls.get(user_id, NO_CONTROLS)

    def age_of(self, user_id: str) -> int:
        """The lowest age of the user's band; unknown users count as the youngest."""
        p = self.profiles.get(user_id)
        return min_age_of(None if p is None else p.age_band)

    def blank_state(self, user_id: str, region: str) -> UserState:
        """The user's state in non-personalised mode."""
        s = self._blank.get(user_id)
        if s is None:
            s = self._blank[user_id] = new_user(self._history_size, self._n_labels)
        s.region = region
        return s

    def forget(self, user_id: str) -> None:
        """Erasure: the profile, the controls and the blank state go."""
        self.profiles.pop(user_id, None)
        self.controls.pop(user_id, None)
        self._blank.pop(user_id, None)

    def set_controls(self, user_id: str, controls: UserControls) -> None:
        was = self.controls_of(user_id).personalized
        self.controls[user_id] = controls
        if was != controls.personalized:
            self._blank.pop(user_id, None)  # each stretch of the mode starts afresh
