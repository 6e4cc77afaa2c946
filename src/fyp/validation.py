"""Shared pieces of input validation: id constraints and readable error messages.

Ids (of users, videos, creators, sounds, events, requests, surfaces, labels...) are
printable Unicode text in normal form NFC. A user's id is hashed into the pseudonym
their data is filed under, byte for byte, so two spellings of one text ("é" as one code
point or as "e" and a combining accent) would be two users, and two different byte
strings decoded alike (invalid UTF-8, each byte replaced by U+FFFD) one user. Both are
refused rather than mended: normalising silently would merge ids a client keeps apart,
and a client that sends NFC (what keyboards, browsers and most platforms produce) never
meets the refusal. Characters that are not printable (control characters such as NUL
and CR, format characters such as the bidirectional overrides, surrogates, private-use
and unassigned code points, separators other than the ASCII space) are refused too: an
id is shown to people, in logs and consoles, and must look like what it is.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal
from urllib.parse import unquote_to_bytes

from pydantic import AfterValidator, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

MAX_ID_CHARS = 128
ID_PATTERN = r"^\S(.*\S)?$"  # no surrounding whitespace (path and query ids use it too)
ID_FORM: Literal["NFC"] = "NFC"
ID_RULE = (
    "printable Unicode text in normal form NFC, 1 to 128 characters, without surrounding "
    "whitespace: no control, format (such as bidirectional overrides), surrogate, "
    "private-use or unassigned characters"
)

# What each kind of non-printable character is, in words (Unicode general categories).
_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than U+0020",
}


def id_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable id (see the module's docstring), or None."""
    # Every id of every event passes here: the whole string checked in C first, and
    # walked character by character only to say what is wrong with it.
    if value.isprintable() and (value.isascii() or unicodedata.is_normalized(ID_FORM, value)):
        return None
    for i, ch in enumerate(value):
        if not ch.isprintable():  # exactly the categories above, but for U+0020
            what = _CATEGORIES.get(unicodedata.category(ch), "not printable")
            name = unicodedata.name(ch, "")
            named = f"U+{ord(ch):04X}" + (f" {name}" if name else "")
            return f"holds {named} ({what}) at position {i}; an id must be {ID_RULE}"
    if not unicodedata.is_normalized(ID_FORM, value):
        normal = unicodedata.normalize(ID_FORM, value)
        return (
            f"is not in Unicode normal form {ID_FORM} (its {ID_FORM} form is {normal!r}, "
            "which may be another id): send ids normalised"
        )
    return None


def _checked_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        # The problem as context, not as the template: an id's braces must not format.
        raise PydanticCustomError("id_invalid", "{problem}", {"problem": problem})
    return value


# Ids are opaque strings: non-empty, at most 128 characters, no surrounding whitespace,
# printable NFC text.
CheckedId = AfterValidator(_checked_id)
# An id's shape, checked by pydantic in Rust; :func:`id_problem` the rest (a batch's ids
# are checked at once: fyp.events.ingest).
IdShape = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_ID_CHARS, strip_whitespace=False, pattern=ID_PATTERN
    ),
]
Id = Annotated[IdShape, CheckedId]


def utf8_problem(raw: bytes, what: str) -> str | None:
    """Why ``raw`` (a request's path or query string, as sent) is not valid UTF-8 once
    percent-decoded, or None. The server decodes it with each bad byte replaced by
    U+FFFD, so ``%FF`` and ``%FE`` would reach the routes as one and the same text."""
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        return (
            f"the {what} is not valid UTF-8 once percent-decoded (byte {err.start}: "
            f"{err.reason}); percent-encode the UTF-8 bytes of the text"
        )
    return None


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
