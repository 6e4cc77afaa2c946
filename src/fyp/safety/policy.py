"""The eligibility policy, as configuration: which moderation states and labels exclude
a video from a surface, demote it, or cap it per page; the age each label needs; how
sensitive topics are dispersed; when reports send a video to review; and how a creator's
strikes cap their new uploads.

It is data (section ``[policy]`` of the settings file); :mod:`fyp.catalog.index` compiles
it into per-video arrays and :mod:`fyp.rerank.filters` / :mod:`fyp.rerank.sequence`
apply it. Modelled on what platforms publish: TikTok's For You eligibility standards
(content that stays up but is not recommended) and X's visibility filtering per surface.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fyp.safety.labels import ModerationState, unknown_labels

AgeBand = Literal["13-15", "16-17", "18+"]  # what a profile may say (validated at the API)
AGE_BANDS: dict[str, int] = {"13-15": 13, "16-17": 16, "18+": 18}  # each band's lowest age
YOUNGEST_AGE = min(AGE_BANDS.values())


def min_age_of(age_band: str | None) -> int:
    """The lowest age in a band; an unknown band is treated as the youngest."""
    return AGE_BANDS.get(age_band or "", YOUNGEST_AGE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SurfacePolicy(_Section):
    """What one surface (``for_you``, ``following``) may show."""

    exclude_states: tuple[ModerationState, ...] = (
        ModerationState.PENDING,
        ModerationState.LIMITED,
        ModerationState.REMOVED,
    )
    exclude_labels: tuple[str, ...] = ("misinformation", "graphic", "creator_under_16")
    # label -> factor in (0, 1]: the value score moves that far towards "worse"
    demote_labels: dict[str, float] = Field(default_factory=lambda: {"unverified_claim": 0.5})
    # label -> at most this many items carrying it per page
    cap_labels: dict[str, int] = Field(default_factory=lambda: {"unverified_claim": 1})

    @model_validator(mode="after")
    def _check(self) -> SurfacePolicy:
        for name, factor in self.demote_labels.items():
            if not 0 < factor <= 1:
                raise ValueError(f"demote_labels.{name}: a factor in (0, 1], got {factor}")
        for name, cap in self.cap_labels.items():
            if cap < 0:
                raise ValueError(f"cap_labels.{name}: at least 0, got {cap}")
        return self

    def labels(self) -> set[str]:
        return set(self.exclude_labels) | set(self.demote_labels) | set(self.cap_labels)


def _following() -> SurfacePolicy:
    # The creator's own followers: limited videos stay reachable there (as on a
    # profile); misinformation and graphic content do not.
    return SurfacePolicy(
        exclude_states=(ModerationState.PENDING, ModerationState.REMOVED),
        exclude_labels=("misinformation", "graphic"),
    )


class ReportPolicy(_Section):
    """When user reports send a video to review (state ``pending``): once its weighted
    reporters reach ``review_min_reports`` and ``review_min_rate`` of its views. One user
    counts once per video; an account younger than ``new_account_hours`` counts
    ``new_account_weight`` (bursts of fresh accounts weigh less)."""

    review_min_reports: float = Field(3.0, gt=0)
    review_min_rate: float = Field(0.01, ge=0, le=1)
    new_account_hours: float = Field(24.0, ge=0)
    new_account_weight: float = Field(0.25, ge=0, le=1)


class StrikePolicy(_Section):
    """A creator with ``label`` on ``threshold`` or more distinct videos is struck: each
    video they upload from then on is served at most ``impression_cap`` times on
    ``for_you`` (0: not at all)."""

    label: str = "misinformation"
    threshold: int = Field(2, ge=1)
    impression_cap: int = Field(100, ge=0)
    surfaces: tuple[str, ...] = ("for_you",)  # where the cap applies


class PolicyConfig(_Section):
    """The whole policy. ``surfaces`` maps a surface name to its rules; any other surface
    a feed is asked for (an app's own tab names) gets ``default_surface``'s rules."""

    initial_state: ModerationState = ModerationState.APPROVED  # of a newly uploaded video
    surfaces: dict[str, SurfacePolicy] = Field(
        default_factory=lambda: {"for_you": SurfacePolicy(), "following": _following()}
    )
    default_surface: str = "for_you"
    # label -> minimum age of the viewer (by age band; unknown counts as the youngest)
    min_age: dict[str, int] = Field(default_factory=lambda: {"mature": 18})
    # At most ``sensitive_max`` of any ``sensitive_window`` consecutive items (across
    # pages) carry one ``sensitive:<topic>`` label.
    sensitive_max: int = Field(1, ge=1)
    sensitive_window: int = Field(5, ge=1)
    extra_labels: tuple[str, ...] = ()  # a deployment's own labels, beside the known ones
    reports: ReportPolicy = ReportPolicy()
    strikes: StrikePolicy = StrikePolicy()
    # User controls
    topic_more_factor: float = Field(1.5, ge=1)
    topic_less_factor: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.default_surface not in self.surfaces:
            raise ValueError(f"default_surface {self.default_surface!r} is not in surfaces")
        named = set(self.min_age) | {self.strikes.label}
        for p in self.surfaces.values():
            named |= p.labels()
        unknown = unknown_labels(named, self.extra_labels)
        if unknown:
            raise ValueError(f"unknown labels {unknown}: add them to extra_labels")
        return self

    def surface_policy(self, surface: str) -> str:
        """The name of the rules ``surface`` is served under."""
        return surface if surface in self.surfaces else self.default_surface
