"""Shared pieces of input validation: id constraints and readable error messages."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, ValidationError

MAX_ID_CHARS = 128
ID_PATTERN = r"^\S(.*\S)?$"  # no surrounding whitespace (path and query ids use it too)

# Ids are opaque strings: non-empty, at most 128 characters, no surrounding whitespace.
Id = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_ID_CHARS, strip_whitespace=False, pattern=ID_PATTERN
    ),
]


def describe(err: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) if e["loc"] else "item"
        if not where:  # an empty-string key: "item" would blame the whole item instead
            where = '""'
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not accepted)"
        elif e["type"] == "string_pattern_mismatch":
            # The pattern's "." stops at a line break, so an inner "\n" fails it too.
            msg = "must not be blank or start/end with whitespace, nor hold a line break"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
