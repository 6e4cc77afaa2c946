"""The audit log in PostgreSQL: the :class:`~fyp.privacy.audit_log.AuditChain` of an
:class:`~fyp.privacy.audit_log.AuditLog` shared by every process given the same store
URL, append-only, and its verification.

A record is a row holding its line exactly as the file log writes it (its hash over its
canonical JSON), so the chain is checked by the file log's own code
(:func:`~fyp.privacy.audit_log.verify_lines`). ``audit_head`` is ``audit.head``'s
twin: one row, the last record's seq and hash. An append is one transaction that locks
that row (``FOR UPDATE``), chains the new record on it, inserts it and moves the head:
appenders in any number of processes take turns there, so each record's ``prev`` is the
hash of the record before it in seq order, and a commit (flushed to the server's WAL
before it returns, ``synchronous_commit=on``) writes the record and the head together or
neither."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fyp.privacy.audit_log import AuditRecord, Verification, encode, parse, verify_lines
from fyp.storage.postgres.database import Database

_FETCH = 1000  # rows a verifying read holds at once


def _record(line: str) -> AuditRecord | None:
    parsed = parse(line.encode())
    return parsed if isinstance(parsed, AuditRecord) else None


class PgAuditChain:
    def __init__(self, db: Database) -> None:
        self._db = db.attach()

    def append(self, make: Callable[[tuple[int, str]], AuditRecord]) -> AuditRecord:
        with self._db.transaction() as cur:
            head = cur.execute("SELECT seq, hash FROM audit_head FOR UPDATE").fetchone()
            if head is None:
                raise RuntimeError("the audit log's head row is missing (audit_head)")
            record = make((int(head[0]), str(head[1])))
            cur.execute(
                "INSERT INTO audit_log (seq, ts, action, actor, outcome, subject, line)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (
                    record.seq,
                    record.ts,
                    record.action,
                    record.actor,
                    record.outcome,
                    record.subject,
                    encode(record)[:-1].decode(),
                ),
            )
            cur.execute("UPDATE audit_head SET seq = %s, hash = %s", (record.seq, record.hash))
        return record

    def page(self, after_seq: int, limit: int) -> list[AuditRecord]:
        if limit <= 0:
            return []
        with self._db.transaction() as cur:
            rows = cur.execute(
                "SELECT line FROM audit_log WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            ).fetchall()
        return [r for r in (_record(line) for (line,) in rows) if r is not None]

    def records(self) -> list[AuditRecord]:
        with self._db.transaction() as cur:
            rows = cur.execute("SELECT line FROM audit_log ORDER BY seq").fetchall()
        return [r for r in (_record(line) for (line,) in rows) if r is not None]

    def verify(self) -> Verification:
        """The whole chain checked against itself and the head, as of one snapshot
        (appends going on meanwhile are not seen), streamed a thousand rows at a time."""
        with self._db.autocommit() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT seq, hash FROM audit_head").fetchone()
            head = None if row is None else (int(row[0]), str(row[1]))
            with conn.cursor(name="fyp_audit_verify") as cur:
                cur.itersize = _FETCH
                cur.execute("SELECT line FROM audit_log ORDER BY seq")
                lines: Iterator[bytes] = (str(line).encode() for (line,) in cur)
                return verify_lines(lines, head)

    def close(self) -> None:
        self._db.release()
