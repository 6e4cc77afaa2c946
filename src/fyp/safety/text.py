"""Text as mutes match it: case- and accent-insensitive, on word boundaries.

"Café" and "CAFE" are one word; muting "cat" hides "#Cat" and "my cat sleeps" but not
"category"; a muted phrase ("fast food") matches those words in a row."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable

_WORD = re.compile(r"\w+")


def fold(text: str) -> str:
    """Lower-case, accents removed, compatibility forms unified (NFKD)."""
    if text.isascii():
        return text.lower()  # the common case, and the same answer, without NFKD
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


@functools.lru_cache(maxsize=1 << 16)  # a catalog repeats its hashtags a great deal
def normal_tag(tag: str) -> str:
    """A hashtag as matched: folded, without its leading '#'."""
    return fold(tag).lstrip("#").strip()


def normal_phrase(phrase: str) -> str:
    """A keyword as matched: its words, folded, one space apart ('' if it has none)."""
    return " ".join(words(phrase))


class VideoText:
    """One video's caption and hashtags, prepared for matching."""

    __slots__ = ("caption", "tags")

    def __init__(self, caption: str, hashtags: Iterable[str]) -> None:
        # Padded with spaces, so a phrase matches whole words only.
        self.caption = " " + " ".join(words(caption)) + " "
        self.tags = frozenset(normal_tag(t) for t in hashtags)

    def __reduce__(
        self,
    ) -> tuple[Callable[[str, frozenset[str]], VideoText], tuple[str, frozenset[str]]]:
        # A checkpoint holds one per catalog video: by its two fields, a third of the
        # default's time for a slotted object.
        return (_prepared, (self.caption, self.tags))

    def matches_keyword(self, phrase: str) -> bool:
        """``phrase`` (already :func:`normal_phrase`) is in the caption, or is a hashtag."""
        return f" {phrase} " in self.caption or phrase.replace(" ", "") in self.tags


def _prepared(caption: str, tags: frozenset[str]) -> VideoText:
    """A :class:`VideoText` from fields already prepared (an unpickled one)."""
    text = VideoText.__new__(VideoText)
    text.caption, text.tags = caption, tags
    return text
