"""A user's controls over their feed, and the profile fields they (through the app) set.

Both arrive over the API (``PUT /v1/users/{id}``, ``POST /v1/users/{id}/controls``),
are validated here, kept durably by :mod:`fyp.users.store`, and read by the pipeline's
filters and re-rankers on every request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from fyp.attributes import MAX_ATTRIBUTES, AttributesIn
from fyp.safety.policy import AgeBand
from fyp.safety.text import normal_phrase, normal_tag
from fyp.validation import Id

# The most of each a user may mute (a request over it is refused, saying so).
MAX_MUTED = {"mute_keywords": 200, "mute_hashtags": 200, "mute_creators": 500}
MAX_TOPICS = 100
MAX_KEYWORD_CHARS = 64

TopicPreference = Literal["more", "less"]


class ProfileIn(BaseModel):
    """``PUT /v1/users/{id}``: the fields given are set, the others kept. No precise
    location, device identifiers or contact data: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    age_band: AgeBand | None = Field(
        None, description="Unknown (absent) is treated as the youngest band."
    )
    language: Id | None = Field(None, max_length=35, description="e.g. en, pt-BR")
    region: Id | None = Field(None, description="The user's home region, e.g. us, eu.")
    attributes: AttributesIn | None = Field(
        None,
        description=(
            f"Categories the app knows of the user, name -> short value (e.g. "
            f'{{"activity": "high", "account_age": "1y+"}}): at most {MAX_ATTRIBUTES}, '
            "names lowercase identifiers, values short labels; ids, emails, phone numbers, "
            "URLs and free text are refused. Replaces the user's attributes ({} clears them)."
        ),
    )


class ControlsIn(BaseModel):
    """``POST /v1/users/{id}/controls``: each list given replaces that setting; fields
    left out stay as they were. ``topics`` merges: ``"neutral"`` removes a preference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mute_keywords: list[str] | None = Field(
        None, description="Words or phrases; matched in captions and hashtags, any case/accent."
    )
    mute_hashtags: list[Id] | None = None
    mute_creators: list[Id] | None = None
    topics: dict[Id, Literal["more", "less", "neutral"]] | None = Field(
        None, description="A topic is a hashtag (without #) or a sensitive topic's name."
    )
    personalized: StrictBool | None = Field(
        None, description="false: a feed from regional popularity only, nothing from history."
    )
    refresh: StrictBool = Field(
        False, description="true: forget what was learned of this user (mutes and safety stay)."
    )

    @field_validator("mute_keywords", "mute_hashtags", "mute_creators")
    @classmethod
    def _capped(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        cap = MAX_MUTED[str(info.field_name)]
        what = str(info.field_name).replace("mute_", "muted ")
        if v is not None and len(v) > cap:
            raise ValueError(f"at most {cap} {what} (got {len(v)}): remove some first")
        return v

    @field_validator("mute_keywords")
    @classmethod
    def _keywords(cls, v: list[str] | None) -> list[str] | None:
        for i, k in enumerate(v or ()):
            if len(k) > MAX_KEYWORD_CHARS:
                raise ValueError(f"keyword {i} is over {MAX_KEYWORD_CHARS} characters")
            if not normal_phrase(k):
                raise ValueError(f"keyword {i} ({k!r}) has no letters or digits to match")
        return v

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and len(v) > MAX_TOPICS:
            raise ValueError(f"at most {MAX_TOPICS} topics in one request (got {len(v)})")
        return v


@dataclass(frozen=True, slots=True)
class UserControls:
    """What a user set, as given (for export and display), with the forms the filters
    match against, derived from it."""

    mute_keywords: tuple[str, ...] = ()
    mute_hashtags: tuple[str, ...] = ()
    mute_creators: tuple[str, ...] = ()
    topics: dict[str, TopicPreference] = field(default_factory=dict)
    personalized: bool = True
    keyword_phrases: tuple[str, ...] = field(init=False)
    hashtag_set: frozenset[str] = field(init=False)
    creator_set: frozenset[str] = field(init=False)
    topic_weights: dict[str, TopicPreference] = field(init=False)

    def __post_init__(self) -> None:
        derived = {
            "keyword_phrases": tuple(
                dict.fromkeys(p for p in map(normal_phrase, self.mute_keywords) if p)
            ),
            "hashtag_set": frozenset(t for t in map(normal_tag, self.mute_hashtags) if t),
            "creator_set": frozenset(self.mute_creators),
            "topic_weights": {normal_tag(t): p for t, p in self.topics.items()},
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def mutes_anything(self) -> bool:
        return bool(self.keyword_phrases or self.hashtag_set or self.creator_set)

    def to_json(self) -> dict[str, Any]:
        return {
            "mute_keywords": list(self.mute_keywords),
            "mute_hashtags": list(self.mute_hashtags),
            "mute_creators": list(self.mute_creators),
            "topics": dict(self.topics),
            "personalized": self.personalized,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserControls:
        return cls(
            tuple(data.get("mute_keywords", ())),
            tuple(data.get("mute_hashtags", ())),
            tuple(data.get("mute_creators", ())),
            dict(data.get("topics", {})),
            bool(data.get("personalized", True)),
        )

    def updated(self, change: ControlsIn) -> UserControls:
        """These controls with ``change`` applied (``refresh`` is not a setting)."""
        topics = dict(self.topics)
        for topic, pref in (change.topics or {}).items():
            if pref == "neutral":
                topics.pop(topic, None)
            else:
                topics[topic] = pref
        if len(topics) > MAX_TOPICS:
            raise ValueError(f"at most {MAX_TOPICS} topic preferences in all")
        return UserControls(
            self.mute_keywords if change.mute_keywords is None else tuple(change.mute_keywords),
            self.mute_hashtags if change.mute_hashtags is None else tuple(change.mute_hashtags),
            self.mute_creators if change.mute_creators is None else tuple(change.mute_creators),
            topics,
            self.personalized if change.personalized is None else change.personalized,
        )


NO_CONTROLS = UserControls()
