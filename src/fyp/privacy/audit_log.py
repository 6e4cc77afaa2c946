"""The hash-chained audit log: who did what to which user's data, tamper-evident.

``audit.log`` holds one JSON object per line. A record's ``hash`` is the hex sha256 of the
canonical JSON (sorted keys, no spaces, UTF-8) of all its other fields, ``prev`` included,
and ``prev`` is the previous record's hash, so editing, reordering or removing a record
breaks the chain at the record after it. Only a deleted tail would leave the chain intact,
which is what ``audit.head`` is for: the last record's seq and hash, replaced atomically on
every append.

Writers hold an exclusive ``flock`` on the log while they append (and :func:`verify` a
shared one), so a CLI process and the server can share a data dir.

What a log of any size costs: opening it reads its end (the record the chain goes on
from); :meth:`AuditLog.page` reads the block ``audit.idx`` points at (audit_index.py), not
the file; only :func:`verify` reads it all, streaming. Records any caller can cause at
will (a refused request) go through :meth:`AuditLog.append_repeated`, which bounds them
per actor and window (audit_repeats.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from fyp.privacy.audit_index import SeqIndex, line_seq
from fyp.privacy.audit_repeats import Repeats, Tally
from fyp.types import now_ms

AUDIT_FILE = "audit.log"
HEAD_FILE = "audit.head"
INDEX_FILE = "audit.idx"  # derived from the log (audit_index.py)
_CHUNK = 64 * 1024
_TAIL_CHUNK = 4096  # reading backwards from the end, for the last line or two
GENESIS = "0" * 64
OUTCOMES = frozenset({"ok", "refused", "failed"})

logger = logging.getLogger(__name__)

_Head = tuple[int, str]  # (seq, hash)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: int
    action: str
    actor: str
    outcome: str
    subject: str | None
    details: dict[str, Any]
    prev: str
    hash: str


_FIELDS = tuple(AuditRecord.__dataclass_fields__)
_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "ts": (int,),
    "action": (str,),
    "actor": (str,),
    "outcome": (str,),
    "subject": (str, type(None)),
    "details": (dict,),
    "prev": (str,),
    "hash": (str,),
}


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    records: int
    bad_line: int | None
    bad_seq: int | None
    reason: str | None


class AuditChain(Protocol):
    """Where the records of an :class:`AuditLog` are kept when not in its file (the
    PostgreSQL table, ``fyp.storage.postgres.audit``): each append chained on the last
    record, whichever process wrote it, and durable before it returns."""

    def append(self, make: Callable[[tuple[int, str]], AuditRecord]) -> AuditRecord:
        """Store ``make((seq, hash))`` of the last record, appenders taking turns."""
        ...

    def page(self, after_seq: int, limit: int) -> list[AuditRecord]: ...

    def records(self) -> list[AuditRecord]: ...

    def close(self) -> None: ...


def _digest(fields: Mapping[str, Any]) -> str:
    body = {k: v for k, v in fields.items() if k != "hash"}
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _line(record: AuditRecord) -> bytes:
    text = json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode() + b"\n"


def _parse(raw: bytes) -> AuditRecord | str:
    """The record on one line (without its newline), or why it is not one."""
    try:
        obj = json.loads(raw.decode())
    except UnicodeDecodeError:
        return "not valid UTF-8"
    except ValueError:
        return "not valid JSON"
    if not isinstance(obj, dict) or tuple(obj) != _FIELDS:
        return "not an audit record (wrong or missing fields)"
    if isinstance(obj["seq"], bool) or not all(
        isinstance(obj[k], types) for k, types in _TYPES.items()
    ):
        return "not an audit record (a field has the wrong type)"
    record = AuditRecord(**obj)
    if _digest(obj) != record.hash:
        return "hash does not match its contents"
    # Some edits keep the parsed values (1e+20 -> 1e020, a duplicated key): only the
    # exact bytes we wrote are accepted.
    if _line(record) != raw + b"\n":
        return "the line is not byte for byte as it was written"
    return record


class _Lines:
    """The newline-terminated lines of ``f`` from where it is, without their newlines, read
    a chunk at a time; once iterated, ``rest`` is what follows the last newline."""

    def __init__(self, f: IO[bytes] | None) -> None:
        self._f = f
        self.rest = b""

    def __iter__(self) -> Iterator[bytes]:
        buf = b""
        while self._f is not None and (chunk := self._f.read(_CHUNK)):
            *lines, buf = (buf + chunk).split(b"\n")
            yield from lines
        self.rest = buf


def _complete_end(fd: int, size: int) -> int:
    """The offset just after the last newline in the file's first ``size`` bytes (0 if
    none): where a partial last line starts, if there is one."""
    pos = size
    while pos > 0:
        n = min(_TAIL_CHUNK, pos)
        pos -= n
        if (i := os.pread(fd, n, pos).rfind(b"\n")) >= 0:
            return pos + i + 1
    return 0


def _lines_before(fd: int, end: int) -> Iterator[bytes]:
    """The complete lines of the file's first ``end`` bytes (``end`` just after a newline,
    or 0), last first, without their newlines: the tail of a log, without reading it all."""
    pos, buf = end, b""
    while True:
        if (i := buf.rfind(b"\n", 0, len(buf) - 1)) >= 0:
            yield buf[i + 1 : -1]
            buf = buf[: i + 1]
        elif pos == 0:
            if buf:
                yield buf[:-1]
            return
        else:
            n = min(_TAIL_CHUNK, pos)
            pos -= n
            buf = os.pread(fd, n, pos) + buf


def _tail(fd: int, end: int) -> tuple[AuditRecord | str | None, AuditRecord | None]:
    """The last complete line of the file's first ``end`` bytes, parsed, and its last
    readable record (the same one, unless that line is bad)."""
    parsed = map(_parse, _lines_before(fd, end))
    last_line = next(parsed, None)
    if not isinstance(last_line, str):
        return last_line, last_line
    return last_line, next((r for r in parsed if isinstance(r, AuditRecord)), None)


def _read_head(path: Path) -> _Head | str | None:
    """The head's (seq, hash); None when there is no head file, a reason when it is bad."""
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return f"{HEAD_FILE} is not valid JSON"
    seq, digest = (obj.get("seq"), obj.get("hash")) if isinstance(obj, dict) else (None, None)
    if type(seq) is not int or seq < 0 or not isinstance(digest, str):
        return f"{HEAD_FILE} is not a head record"
    return seq, digest


def _evaluate(lines: _Lines, head: _Head | str | None) -> Verification:
    """Check a log's lines against themselves and its head: one pass, constant memory."""
    n, prev = 0, GENESIS  # the good records so far, and the last one's hash
    head_seq = head[0] if isinstance(head, tuple) else None
    at_head: str | None = None  # the hash of record head_seq, once read
    for line_no, raw in enumerate(lines, 1):
        record = _parse(raw)
        if isinstance(record, str):
            return Verification(False, n, line_no, None, record)
        if record.seq != n + 1:
            why = "a record is missing" if record.seq > n else "out of order"
            reason = f"seq {record.seq} follows {n} ({why})"
        elif record.prev != prev:
            reason = f"prev does not match the hash of record {n}" if n else "prev is not 0…0"
        else:
            n, prev = n + 1, record.hash
            at_head = record.hash if n == head_seq else at_head
            continue
        return Verification(False, n, line_no, record.seq, reason)

    def bad(reason: str, line: int | None = None, seq: int | None = None) -> Verification:
        return Verification(False, n, line, seq, reason)

    if lines.rest:
        return bad("the last line is incomplete (no newline at its end)", n + 1)
    if head is None:
        return bad(f"{HEAD_FILE} is missing") if n else Verification(True, 0, None, None, None)
    if isinstance(head, str):
        return bad(head)
    head_seq, head_hash = head
    if head_seq > n:
        return bad(
            f"the file ends at seq {n} but {HEAD_FILE} records seq {head_seq} "
            "(records were deleted from the end)"
        )
    # A head behind the file is a crash between the log's fsync and the head's rename.
    if head_seq and at_head != head_hash:
        reason = f"its hash is not the one {HEAD_FILE} records (the log was rewritten)"
        return bad(reason, head_seq, head_seq)  # line k holds seq k
    return Verification(True, n, None, None, None)


def _tail_fault(last_line: AuditRecord | str | None, head: _Head | str | None) -> str | None:
    """What is wrong at the end of a log (its last complete line and its head), as far as
    can be told without reading the rest; :func:`verify` reads it all."""
    if isinstance(last_line, str):
        return f"its last line is bad: {last_line}"
    if isinstance(head, str):
        return head
    if head is None:
        return f"{HEAD_FILE} is missing" if last_line is not None else None
    n = last_line.seq if last_line is not None else 0
    if head[0] > n:
        return f"the file ends at seq {n} but {HEAD_FILE} records seq {head[0]}"
    if last_line is not None and head[0] == n and head[1] != last_line.hash:
        return f"its last record's hash is not the one {HEAD_FILE} records"
    return None


@contextmanager
def _flock(fd: int, operation: int) -> Iterator[None]:
    """A lock across processes: writers take it exclusive, verify shared."""
    fcntl.flock(fd, operation)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class _Given(_Lines):
    """Lines already split (a table's rows), nothing after the last."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        super().__init__(None)
        self._given = lines

    def __iter__(self) -> Iterator[bytes]:
        yield from self._given


def verify_lines(lines: Iterable[bytes], head: tuple[int, str] | None) -> Verification:
    """Check records' lines (without their newlines), in seq order, against themselves
    and the head (the last record's seq and hash, as recorded apart from them)."""
    return _evaluate(_Given(lines), head)


def verify(data_dir: Path) -> Verification:
    """Check ``audit.log`` in ``data_dir`` against itself and ``audit.head``."""
    path, head_path = data_dir / AUDIT_FILE, data_dir / HEAD_FILE
    try:
        with path.open("rb") as f, _flock(f.fileno(), fcntl.LOCK_SH):
            return _evaluate(_Lines(f), _read_head(head_path))
    except FileNotFoundError:
        return _evaluate(_Lines(None), _read_head(head_path))


def _continuation(last: AuditRecord | None, head: _Head | str | None) -> _Head:
    """The (seq, hash) the next record chains on: normally the file's last record. The head
    is rewritten on every append, so when it disagrees with the file we chain on the head
    (or on nothing, when it is gone): the first append must not erase the evidence."""
    if not isinstance(head, tuple):
        return (last.seq if last else 0), GENESIS
    return head if last is None or head[0] >= last.seq else (last.seq, last.hash)


def _write_durably(f: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) or 0 :]
    os.fsync(f.fileno())


def _write_head(path: Path, head: _Head) -> None:
    # No directory fsync: a rename lost in a crash leaves the head behind the file, which
    # verify accepts.
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(json.dumps({"seq": head[0], "hash": head[1]}).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain(details: Mapping[str, Any] | None) -> dict[str, Any]:
    # The round trip makes the record equal what a reader parses back (tuples, int keys).
    plain: dict[str, Any] = json.loads(json.dumps(dict(details or {}), allow_nan=False))
    return plain


def _read_page(fd: int, start: int, after_seq: int, limit: int) -> list[AuditRecord]:
    """Up to ``limit`` readable records above ``after_seq``, reading from ``start`` (a
    line's start) only as far as they go."""
    found: list[AuditRecord] = []
    pos, buf = start, b""
    while len(found) < limit and (chunk := os.pread(fd, _CHUNK, pos)):
        pos += len(chunk)
        *lines, buf = (buf + chunk).split(b"\n")
        for raw in lines:
            seq = line_seq(raw)
            if seq is not None and seq <= after_seq:
                continue  # before the page: not worth parsing
            record = _parse(raw)
            if isinstance(record, AuditRecord) and record.seq > after_seq:
                found.append(record)
                if len(found) == limit:
                    break
    return found


class AuditLog:
    """Append-only; ``path`` is the log file (or its data dir), None to keep it in memory.

    ``repeats`` bounds the records of :meth:`append_repeated` (by default at most
    ``REPEAT_CAP`` per actor and minute, the rest counted).
    """

    def __init__(
        self,
        path: Path | None,
        clock: Callable[[], int] = now_ms,
        repeats: Repeats | None = None,
        *,
        chain: AuditChain | None = None,
    ) -> None:
        """``chain``: the records kept there instead (``path`` must then be None)."""
        if chain is not None and path is not None:
            raise ValueError("an audit log is a file or a chain elsewhere, not both")
        self._chain = chain
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: list[AuditRecord] = []
        self._head: _Head = (0, GENESIS)
        self._closed = False
        self._repeats = repeats or Repeats()
        self._timer: threading.Timer | None = None
        self._file: IO[bytes] | None = None
        self._reader: IO[bytes] | None = None
        self._index: SeqIndex | None = None
        self._size = 0  # of the file, as this process last saw it
        self._path = path / AUDIT_FILE if path is not None and path.is_dir() else path
        if self._path is None:
            return
        self._head_path = self._path.with_suffix(".head")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self._path.exists() and not self._head_path.exists()
        # Unbuffered, so that a failed write leaves nothing behind to be flushed later.
        self._file = self._path.open("ab", buffering=0)
        self._reader = self._path.open("rb", buffering=0)
        self._index = SeqIndex(self._path.with_suffix(".idx"))
        with _flock(self._file.fileno(), fcntl.LOCK_EX):
            if fresh:
                # Now a missing head always means a deleted one, never a first append that
                # crashed before writing it.
                _write_head(self._head_path, self._head)
                _fsync_dir(self._path.parent)
            self._drop_partial_line(self._path, self._file, self._reader.fileno())
            self._sync(report=True)

    def _drop_partial_line(self, path: Path, file: IO[bytes], fd: int) -> None:
        """A crash mid-write leaves a partial last line, never acknowledged (append fsyncs
        first): cut it. A line the head vouches for is kept, since that is tampering."""
        size = os.fstat(fd).st_size
        if (end := _complete_end(fd, size)) == size:
            return
        head = _read_head(self._head_path)
        _, last = _tail(fd, end)
        if isinstance(head, tuple) and head[0] > (last.seq if last else 0):
            logger.error("audit log %s: its last line has lost its newline", path)
            _write_durably(file, b"\n")  # new records start on a line of their own
            return
        logger.warning("audit log %s: dropping an interrupted write (%d bytes)", path, size - end)
        file.truncate(end)
        os.fsync(file.fileno())

    def _sync(self, report: bool = False) -> None:
        """Take up the chain from the file's end (at open, or after another process
        appended), and bring the index up to it: what this costs does not grow with the log."""
        assert self._reader is not None and self._index is not None
        fd = self._reader.fileno()
        size = os.fstat(fd).st_size
        end = _complete_end(fd, size)
        head = _read_head(self._head_path)
        last_line, last = _tail(fd, end)
        if report and (fault := _tail_fault(last_line, head)):
            logger.error(
                "audit log %s does not verify at its end (%s); appending after it, "
                "unrepaired (fyp audit verify checks the whole chain)",
                self._path,
                fault,
            )
        self._head = _continuation(last, head)
        self._size = size
        self._index.load(fd, end)

    def append(
        self,
        action: str,
        actor: str,
        *,
        outcome: str = "ok",
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Record one action; durable on disk before it returns."""
        facts = _plain(details)
        with self._lock:
            self._check_open(outcome)
            return self._append(action, actor, outcome, subject, facts)

    def append_repeated(
        self,
        action: str,
        actor: str,
        *,
        outcome: str = "ok",
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> AuditRecord | None:
        """Record an action any caller can repeat as often as it likes (a refused request),
        bounded per actor and window (:mod:`fyp.privacy.audit_repeats`): the record, durable,
        when written now; None when only counted, to be written with the others like it at
        the window's end (a timer) or at :meth:`close` (a crash loses those counts).
        ``counts`` (numbers in the record) are summed over what is counted."""
        facts, sums = _plain(details), dict(counts or {})
        with self._lock:
            self._check_open(outcome)
            ts = self._clock()
            self._write_tallies(self._repeats.due(ts))
            if self._repeats.admit(actor, ts):
                return self._append(action, actor, outcome, subject, {**facts, **sums})
            self._repeats.count(action, actor, outcome, subject, facts, sums, ts)
            self._arm_timer()
            return None

    def flush_repeats(self) -> None:
        """Write the counts of windows that have ended (the timer calls this)."""
        with self._lock:
            self._timer = None
            if self._closed:
                return
            try:
                self._write_tallies(self._repeats.due(self._clock()))
            except (OSError, ValueError) as err:
                logger.warning("could not write the counted audit records yet (%s)", err)
            if self._repeats.pending():
                self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        window_s = self._repeats.window_ms / 1000
        left_s = (self._repeats.window_end_ms() - self._clock()) / 1000
        self._timer = threading.Timer(min(max(left_s, 1.0), window_s), self.flush_repeats)
        self._timer.daemon = True
        self._timer.start()

    def _write_tallies(self, tallies: list[Tally]) -> None:
        for tally in tallies:
            self._append(tally.action, tally.actor, tally.outcome, tally.subject, tally.summary())
            self._repeats.done(tally)

    def _check_open(self, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        if self._closed:
            raise RuntimeError("the audit log is closed")

    def _append(
        self, action: str, actor: str, outcome: str, subject: str | None, facts: dict[str, Any]
    ) -> AuditRecord:
        """Write one record (holding ``self._lock``)."""
        if self._chain is not None:
            record = self._chain.append(
                lambda head: self._next(head, action, actor, outcome, subject, facts)
            )
            self._head = (record.seq, record.hash)
            return record
        if self._path is None or self._file is None or self._index is None:
            record = self._next(self._head, action, actor, outcome, subject, facts)
            self._memory.append(record)
            self._head = (record.seq, record.hash)
            return record
        with _flock(self._file.fileno(), fcntl.LOCK_EX):
            if os.fstat(self._file.fileno()).st_size != self._size:
                self._sync()  # another process appended
            record = self._next(self._head, action, actor, outcome, subject, facts)
            line, offset = _line(record), self._size
            try:
                _write_durably(self._file, line)
                # All or nothing: a record whose head cannot be written (an unwritable
                # data dir) is taken back, so that the action it records, which its
                # caller then does not carry out, is not in the log either.
                _write_head(self._head_path, (record.seq, record.hash))
            except BaseException:
                self._file.truncate(self._size)  # no partial line mid-file
                with contextlib.suppress(OSError):
                    os.fsync(self._file.fileno())
                raise
            self._size += len(line)
            self._head = (record.seq, record.hash)
            try:
                self._index.note(record.seq, offset)
            except OSError as err:  # derived data: rebuilt at the next open
                logger.warning("audit index %s not updated (%s)", self._index.path, err)
        return record

    def _next(
        self,
        head: _Head,
        action: str,
        actor: str,
        outcome: str,
        subject: str | None,
        details: dict[str, Any],
    ) -> AuditRecord:
        fields: dict[str, Any] = {
            "seq": head[0] + 1,
            "ts": self._clock(),
            "action": action,
            "actor": actor,
            "outcome": outcome,
            "subject": subject,
            "details": details,
            "prev": head[1],
        }
        return seal(fields)

    def page(self, after_seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` readable records with seq above ``after_seq``, in file order;
        reads the index's block and the page, not the whole file."""
        if limit <= 0:
            return []
        if self._chain is not None:
            return self._chain.page(after_seq, limit)
        with self._lock:
            if self._path is None:
                return [r for r in self._memory if r.seq > after_seq][:limit]
            start = self._index.start(after_seq) if self._index is not None else 0  # closed
        with self._path.open("rb", buffering=0) as f:  # its own: appends go on meanwhile
            return _read_page(f.fileno(), start, after_seq, limit)

    def records(self) -> list[AuditRecord]:
        """Every readable record, in file order (a broken line is left to :func:`verify`)."""
        if self._chain is not None:
            return self._chain.records()
        with self._lock:
            if self._path is None:
                return list(self._memory)
            with self._path.open("rb") as f:
                return [r for r in map(_parse, _Lines(f)) if isinstance(r, AuditRecord)]

    def close(self) -> None:
        """Write what was counted (:meth:`append_repeated`), then close."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                if not self._closed:
                    self._write_tallies(self._repeats.pending())
            finally:
                self._closed = True
                if self._chain is not None:
                    self._chain.close()
                    self._chain = None
                for f in (self._file, self._reader, self._index):
                    if f is not None:
                        f.close()
                self._file = self._reader = self._index = None


def seal(fields: Mapping[str, Any]) -> AuditRecord:
    """The record of ``fields`` (every field but ``hash``), with its hash."""
    record = AuditRecord(**fields, hash=_digest(fields))
    _line(record)  # refuse what cannot be written (a lone surrogate) in memory mode too
    return record


def parse(line: bytes) -> AuditRecord | str:
    """The record on one line (without its newline), or why it is not one."""
    return _parse(line)


def encode(record: AuditRecord) -> bytes:
    """The record's line in the log, newline included."""
    return _line(record)
