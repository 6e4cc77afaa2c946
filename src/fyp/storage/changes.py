"""Stores that can say what changed since a cursor, so that a serving process
reconciles with them by reading only the rows written since its last read
(:meth:`fyp.engine.Engine.reconcile_changes`) rather than the whole catalog and every
user. A store without these methods is read whole each time.

A cursor is opaque to the engine: taken from the store (:meth:`change_cursor`, before a
full read) or returned by the last ``*_since`` read, and given back to the next one. A
read since a cursor may return rows read before (never fewer than were written): the
engine applies only differences.

An erasure deletes its user's rows, which a read of the rows written since cannot
return: the user stores count completed erasures in a row stamped like the others (who
was erased is not recorded: an erasure leaves nothing naming its user), and a read
since a cursor says whether one completed since (:attr:`UsersChanged.erased`), so that
a process that missed its notices compares what it holds with the stored profiles at
its next incremental read rather than at the next whole one. (A refresh only adds
rows: read like a profile.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fyp.types import Video

if TYPE_CHECKING:  # (the user stores import this module)
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


@dataclass(frozen=True, slots=True)
class UsersChanged:
    """What a user store says changed since a cursor."""

    users: dict[str, StoredUser]  # written since (profile, controls, refresh marks), as now
    erased: bool  # whether an erasure completed since (whose: not recorded)
    cursor: int  # where to read from next


@runtime_checkable
class UserChanges(Protocol):
    def change_cursor(self) -> int: ...

    def users_since(self, cursor: int) -> UsersChanged:
        """Each user whose profile, controls or refresh marks were written since
        ``cursor``, as stored now, whether an erasure completed since, and the cursor to
        read from next."""
        ...
