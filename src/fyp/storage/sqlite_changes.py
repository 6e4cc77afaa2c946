"""Change stamps in an embedded SQLite store, so that a serving process reconciles with it
by reading only the rows written since its last read (:mod:`fyp.storage.changes`), as
it does with PostgreSQL's (migration 0004_change_cursors).

Each database keeps one counter (``change_counter``); a trigger on every stamped table
bumps it and stamps the row written with the new value (``changed_seq``), on insert
and on update, so a write made by any client (the ``sqlite3`` shell too) is seen.
SQLite runs one writer at a time and a reader sees a snapshot of whole commits, so the
counter read in the same read transaction as the rows is a cursor that skips no write:
every row stamped at or below it was committed before that read, every later one gets a
higher stamp. (PostgreSQL, where transactions commit out of the order they began, needs
the oldest open transaction's id instead.)

A counter rather than the highest stamp in the table: a deleted row's stamp would be
handed out again, below a reader's cursor."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fyp.storage.sqlite import transaction

_COUNTER = (
    "CREATE TABLE IF NOT EXISTS change_counter ("
    " id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO change_counter (id, n) VALUES (0, 0)",
)
_STAMP = """
    UPDATE change_counter SET n = n + 1;
    UPDATE {t} SET changed_seq = (SELECT n FROM change_counter) WHERE rowid = NEW.rowid;
END"""
# The update trigger is skipped for the stamp's own update (its WHEN): with recursive
# triggers off (SQLite's default) it could not fire itself anyway, but the insert
# trigger's stamping is an update of the row, which would fire it.
_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS {t}_changed_insert AFTER INSERT ON {t} BEGIN" + _STAMP,
    "CREATE TRIGGER IF NOT EXISTS {t}_changed_update AFTER UPDATE ON {t}"
    " WHEN NEW.changed_seq IS OLD.changed_seq BEGIN" + _STAMP,
    "CREATE INDEX IF NOT EXISTS {t}_changed ON {t} (changed_seq)",
)


def stamp_changes(conn: sqlite3.Connection, tables: Sequence[str]) -> None:
    """Give ``tables`` (each with a rowid) change stamps and their triggers, and the
    database its counter; a store opened again, or made before the stamps, is brought
    up to date (its rows stamped 0: read by the first whole read). In one transaction:
    processes opening the same file at once (a server and its learner) do it once."""
    with transaction(conn) as cur:
        for statement in _COUNTER:
            cur.execute(statement)
        for table in tables:
            columns = {str(r[1]) for r in cur.execute(f"PRAGMA table_info({table})")}
            if "changed_seq" not in columns:
                cur.execute(
                    f"ALTER TABLE {table} ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0"
                )
            for statement in _TRIGGERS:
                cur.execute(statement.format(t=table))


def change_cursor(cur: sqlite3.Cursor) -> int:
    """The counter now: every row stamped at or below it is visible to this read
    transaction, every row written later gets a higher stamp."""
    row = cur.execute("SELECT n FROM change_counter").fetchone()
    return int(row[0])
