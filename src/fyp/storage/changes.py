"""Stores that can say what changed since a cursor, so that a serving process
reconciles with them by reading only the rows written since its last read
(:meth:`fyp.engine.Engine.reconcile_changes`) rather than the whole catalog and every
user. A store without these methods is read whole each time.

A cursor is opaque to the engine: taken from the store (:meth:`change_cursor`, before a
full read) or returned by the last ``*_since`` read, and given back to the next one. A
read since a cursor may return rows read before (never fewer than were written): the
engine applies only differences."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fyp.types import Video
from fyp.users.store import StoredUser


@runtime_checkable
class CatalogChanges(Protocol):
    def change_cursor(self) -> int: ...

    def videos_since(self, cursor: int) -> tuple[list[Video], int]:
        """The videos written since ``cursor``, and the cursor to read from next."""
        ...


@runtime_checkable
class ModerationChanges(Protocol):
    def change_cursor(self) -> int: ...

    def videos_moderated_since(self, cursor: int) -> tuple[set[str], int]:
        """The videos with a moderation action written since ``cursor``, and the
        cursor to read from next."""
        ...


@runtime_checkable
class UserChanges(Protocol):
    def change_cursor(self) -> int: ...

    def users_since(self, cursor: int) -> tuple[dict[str, StoredUser], int]:
        """Each user whose profile, controls or refresh marks were written since
        ``cursor``, as stored now, and the cursor to read from next."""
        ...
