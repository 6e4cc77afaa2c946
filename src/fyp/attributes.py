"""Attributes the app knows: free-form categorical facts about a user or a video.

An app sends what it has — an account-age band, an activity level, a device class, a
video's type or upload type — as ``attributes``, an object of name -> short string value,
on ``PUT /v1/users/{id}`` and on each video of ``POST /v1/videos``. Names are the app's
own (unknown names are fine); the models read them as categories.

The policy is **categories, not personal data**: a value is a short label many users (or
videos) share. A value that looks like an identifier, an email address, a phone number, a
URL or free text is refused, naming the rule, so that an attribute never becomes a side
door for data the profile's fixed fields keep out (docs/privacy.md). The checks look at
the form of a value only: a short number such as ``"42"`` is accepted as a category code,
so an app must not send ids at all, however short.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from fyp.types import Attributes
from fyp.validation import id_problem

MAX_ATTRIBUTES = 32
MAX_NAME_CHARS = 40
MAX_VALUE_CHARS = 32
MAX_VALUE_WORDS = 3  # "low end phone" is a category; a sentence is free text

NAME_RULE = (
    f"a lowercase identifier: a-z first, then a-z, 0-9 or _, at most {MAX_NAME_CHARS} characters"
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")

_EMAIL_OR_HANDLE = re.compile(r"@")
_URL = re.compile(
    r"(?i)[a-z][a-z0-9+.-]*://"  # a scheme
    r"|^www\."
    r"|^[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}(/|$)"  # host.tld, host.tld/path
)
# Seven digits or more, alone or with a phone number's separators: an id or a phone
# number, not a category code.
_PHONE_CHARS = re.compile(r"\+?[\d\s().-]+")
_MIN_PHONE_DIGITS = 7
_LONG_NUMBER = re.compile(r"\d{7,}")
_UUID = re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
# A run of letters and digits with no separator, 12 or more long, with 3 digits or more:
# a token or a hexadecimal id ("5f3a9c2e1b7d"), not a label ("2_14_day_new").
_TOKEN = re.compile(r"[^\W_]{12,}")
_TOKEN_DIGITS = 3


def name_problem(name: str) -> str | None:
    """Why ``name`` is not an acceptable attribute name, or None."""
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        return f"attribute name {name[:60]!r} is not {NAME_RULE}"
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable attribute value under the policy (a short
    category, not personal data), or None."""
    if not value or value != value.strip():
        return "must not be empty or start/end with whitespace"
    if len(value) > MAX_VALUE_CHARS:
        return (
            f"is {len(value)} characters; a value is a short category label of at most "
            f"{MAX_VALUE_CHARS} (free text is refused)"
        )
    problem = id_problem(value)
    if problem is not None:
        return problem.replace("an id must be", "a value must be")
    refused = _looks_like(value)
    if refused is not None:
        return (
            f"looks like {refused}: attributes are categories, not personal data "
            "(see docs/privacy.md)"
        )
    return None


def _looks_like(value: str) -> str | None:
    if _EMAIL_OR_HANDLE.search(value):
        return "an email address or a handle"
    if _URL.search(value):
        return "a URL or a domain name"
    digits = sum(c.isdigit() for c in value)
    if _PHONE_CHARS.fullmatch(value) and digits >= _MIN_PHONE_DIGITS:
        return "a phone number or a numeric id"
    if _LONG_NUMBER.search(value) or _UUID.search(value):
        return "an identifier"
    for run in _TOKEN.findall(value):
        if sum(c.isdigit() for c in run) >= _TOKEN_DIGITS:
            return "an identifier or a token"
    if len(value.split()) > MAX_VALUE_WORDS:
        return f"free text (more than {MAX_VALUE_WORDS} words)"
    return None


def attributes_problem(attributes: Mapping[str, str]) -> str | None:
    """The first thing wrong with a whole set of attributes (as :func:`check` words it),
    or None: for input that did not come through the API (an import)."""
    if len(attributes) > MAX_ATTRIBUTES:
        return _too_many(len(attributes))
    for name, value in attributes.items():
        problem = name_problem(name)
        if problem is not None:
            return problem
        problem = value_problem(value)
        if problem is not None:
            return f"attribute {name!r}: value {value!r} {problem}"
    return None


def _too_many(n: int) -> str:
    return f"at most {MAX_ATTRIBUTES} attributes (got {n}): send the ones the models need"


def _bounded(raw: Any) -> Any:
    # Counted before each item is validated: an oversized object costs nothing more.
    if isinstance(raw, dict) and len(raw) > MAX_ATTRIBUTES:
        raise PydanticCustomError("attributes_too_many", "{msg}", {"msg": _too_many(len(raw))})
    return raw


def _checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise PydanticCustomError("attribute_name_invalid", "{msg}", {"msg": problem})
    return name


def _string_value(raw: Any) -> Any:
    if not isinstance(raw, str):
        raise PydanticCustomError(
            "attribute_value_type",
            "{msg}",
            {"msg": f'an attribute value is a string (send {raw!r} as "{raw}")'[:200]},
        )
    return raw


def _checked_value(value: str) -> str:
    problem = value_problem(value)
    if problem is not None:
        raise PydanticCustomError("attribute_value_refused", "{msg}", {"msg": problem})
    return value


AttributeName = Annotated[str, AfterValidator(_checked_name)]
AttributeValue = Annotated[str, BeforeValidator(_string_value), AfterValidator(_checked_value)]
AttributesIn = Annotated[dict[AttributeName, AttributeValue], BeforeValidator(_bounded)]
"""The ``attributes`` field of a request body: at most :data:`MAX_ATTRIBUTES`, each name
:data:`NAME_RULE`, each value a short category (:func:`value_problem`)."""


def as_attributes(attributes: Mapping[str, str]) -> Attributes:
    """The stored form: (name, value) pairs sorted by name."""
    return tuple(sorted(attributes.items()))
