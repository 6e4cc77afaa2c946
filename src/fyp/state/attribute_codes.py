"""Attributes as the models read them: every name and every value interned to a small
integer, so a ranker keys a table or an array by them rather than by strings.

A vocabulary serves one side (users' attributes, videos' attributes). Names get dense
codes in order of first appearance, and each name's values get dense codes of their own
(from 0), so a per-value table of one attribute is sized by :meth:`cardinality`. Codes
only ever grow: a code, once given, means the same value for the life of the state (it
is checkpointed with it), so what a model learned under it stays meaningful.

The users' vocabulary counts who holds each value (:meth:`hold`, :meth:`release`): when
the last holder goes (an erasure, a changed profile), the value's text leaves the
vocabulary, and the checkpoints with it, though its code is never given again (so does
a name once none of its values is held). A value
is meant to be a category many share (fyp.attributes); one only an erased user had must
not outlive them all the same.
"""

from __future__ import annotations

from fyp.catalog.codes import Codes
from fyp.types import Attributes

AttributeCodes = tuple[tuple[int, int], ...]
"""One user's or video's attributes, encoded: (name code, value code) pairs."""

NO_VALUE = -1  # the code of an attribute the user or video does not have


class AttributeVocabulary:
    def __init__(self) -> None:
        self.names = Codes()
        self._values: list[Codes] = []  # by name code
        self._holders: dict[tuple[int, int], int] = {}  # (name, value) code -> holders
        self._pairs: dict[tuple[str, str], tuple[int, int]] = {}  # (name, value) -> codes

    def name_code(self, name: str) -> int:
        """``name``'s code, given now if it is new."""
        code = self.names.code(name)
        if code == len(self._values):
            self._values.append(Codes())
        return code

    def encode(self, attributes: Attributes) -> AttributeCodes:
        """The codes of ``attributes``, new names and values coded as they come."""
        pairs = self._pairs
        try:  # (an import encodes every user's, a few dozen each: one lookup a pair)
            return tuple([pairs[pair] for pair in attributes])
        except KeyError:
            pass
        out = []
        for pair in attributes:
            codes = pairs.get(pair)
            if codes is None:
                n = self.name_code(pair[0])
                codes = pairs[pair] = (n, self._values[n].code(pair[1]))
            out.append(codes)
        return tuple(out)

    def hold(self, codes: AttributeCodes) -> None:
        """Count one more holder of each of ``codes``."""
        for pair in codes:
            self._holders[pair] = self._holders.get(pair, 0) + 1

    def release(self, codes: AttributeCodes) -> None:
        """Count one holder fewer of each of ``codes`` (held before); a value no one
        holds any more is forgotten, and a name none of whose values is held (their codes
        stay given: one that comes back is coded anew)."""
        for pair in codes:
            left = self._holders[pair] - 1
            if left:
                self._holders[pair] = left
                continue
            del self._holders[pair]
            values = self._values[pair[0]]
            key = values.key_of(pair[1])
            name = self.names.key_of(pair[0])
            if key is None or name is None:
                continue
            values.forget(key)
            del self._pairs[name, key]
            if not values.of:  # (a name is the app's, but one only they had goes too)
                self.names.forget(name)

    def value_code(self, codes: AttributeCodes, name: str) -> int:
        """The code of ``name``'s value among ``codes`` (one user's or video's), or
        :data:`NO_VALUE` when they do not have it."""
        n = self.names.of.get(name)
        if n is not None:
            for k, v in codes:
                if k == n:
                    return v
        return NO_VALUE

    def cardinality(self, name: str) -> int:
        """How many values of ``name`` have been seen (codes 0 .. this - 1)."""
        n = self.names.of.get(name)
        return 0 if n is None else len(self._values[n])

    def value_of(self, name: str, code: int) -> str | None:
        """The value that ``code`` stands for in attribute ``name``, None if none."""
        n = self.names.of.get(name)
        return None if n is None else self._values[n].key_of(code)
