"""Dense integer codes for strings (creators, sounds, hashtags, attribute values)."""

from __future__ import annotations


class Codes:
    """A growing str -> int code table: codes 0, 1, 2... in order of first appearance.
    A code is never given twice, even to a key forgotten and seen again."""

    def __init__(self) -> None:
        self.of: dict[str, int] = {}
        self._given = 0

    def __len__(self) -> int:
        """How many codes were given (an array indexed by code needs this many rows)."""
        return self._given

    def code(self, key: str) -> int:
        c = self.of.get(key)
        if c is None:
            c = self.of[key] = self._given
            self._given += 1
        return c

    def key_of(self, code: int) -> str | None:
        """The key coded ``code``, None if none (a scan: not for a request's path)."""
        return next((k for k, c in self.of.items() if c == code), None)

    def forget(self, key: str) -> None:
        """Drop ``key`` (its code stays given: the key seen again gets a new one)."""
        self.of.pop(key, None)
