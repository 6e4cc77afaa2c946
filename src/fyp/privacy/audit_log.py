"""The hash-chained audit log: who did what to which user's data, tamper-evident.

``audit.log`` holds one JSON object per line. A record's ``hash`` is the hex sha256 of the
canonical JSON (sorted keys, no spaces, UTF-8) of all its other fields, ``prev`` included,
and ``prev`` is the previous record's hash, so editing, reordering or removing a record
breaks the chain at the record after it. Only a deleted tail would leave the chain intact,
which is what ``audit.head`` is for: the last record's seq and hash, replaced atomically on
every append.

Writers hold an exclusive ``flock`` on the log while they append (and :func:`verify` a
shared one), so a CLI process and the server can share a data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from fyp.types import now_ms

AUDIT_FILE = "audit.log"
HEAD_FILE = "audit.head"
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


def _parse_lines(data: bytes) -> list[AuditRecord | str]:
    """Every complete (newline-terminated) line, parsed."""
    return [_parse(raw) for raw in data.split(b"\n")[:-1]]


def _last(parsed: list[AuditRecord | str]) -> _Head | None:
    return next(((r.seq, r.hash) for r in reversed(parsed) if isinstance(r, AuditRecord)), None)


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


def _evaluate(data: bytes, head: _Head | str | None) -> Verification:
    hashes: list[str] = []  # of the good records; seq k is hashes[k - 1]
    parsed = _parse_lines(data)
    for line_no, record in enumerate(parsed, 1):
        seq, prev = len(hashes), hashes[-1] if hashes else GENESIS
        if isinstance(record, str):
            return Verification(False, seq, line_no, None, record)
        if record.seq != seq + 1:
            why = "a record is missing" if record.seq > seq else "out of order"
            reason = f"seq {record.seq} follows {seq} ({why})"
        elif record.prev != prev:
            reason = f"prev does not match the hash of record {seq}" if seq else "prev is not 0…0"
        else:
            hashes.append(record.hash)
            continue
        return Verification(False, seq, line_no, record.seq, reason)
    n = len(hashes)

    def bad(reason: str, line: int | None = None, seq: int | None = None) -> Verification:
        return Verification(False, n, line, seq, reason)

    if data and not data.endswith(b"\n"):
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
    if head_seq and hashes[head_seq - 1] != head_hash:
        reason = f"its hash is not the one {HEAD_FILE} records (the log was rewritten)"
        return bad(reason, head_seq, head_seq)  # line k holds seq k
    return Verification(True, n, None, None, None)


@contextmanager
def _flock(fd: int, operation: int) -> Iterator[None]:
    """A lock across processes: writers take it exclusive, verify shared."""
    fcntl.flock(fd, operation)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def verify(data_dir: Path) -> Verification:
    """Check ``audit.log`` in ``data_dir`` against itself and ``audit.head``."""
    path, head_path = data_dir / AUDIT_FILE, data_dir / HEAD_FILE
    try:
        with path.open("rb") as f, _flock(f.fileno(), fcntl.LOCK_SH):
            return _evaluate(f.read(), _read_head(head_path))
    except FileNotFoundError:
        return _evaluate(b"", _read_head(head_path))


def _continuation(parsed: list[AuditRecord | str], head: _Head | str | None) -> _Head:
    """The (seq, hash) the next record chains on: normally the file's last record. The head
    is rewritten on every append, so when it disagrees with the file we chain on the head
    (or on nothing, when it is gone): the first append must not erase the evidence."""
    last = _last(parsed)
    if not isinstance(head, tuple):
        return (last[0] if last else 0), GENESIS
    return head if last is None or head[0] >= last[0] else last


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


class AuditLog:
    """Append-only; ``path`` is the log file (or its data dir), None to keep it in memory."""

    def __init__(self, path: Path | None, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: list[AuditRecord] = []
        self._head: _Head = (0, GENESIS)
        self._closed = False
        self._file: IO[bytes] | None = None
        self._size = 0  # of the file, as this process last saw it
        self._path = path / AUDIT_FILE if path is not None and path.is_dir() else path
        if self._path is None:
            return
        self._head_path = self._path.with_suffix(".head")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self._path.exists() and not self._head_path.exists()
        # Unbuffered, so that a failed write leaves nothing behind to be flushed later.
        self._file = self._path.open("ab", buffering=0)
        with _flock(self._file.fileno(), fcntl.LOCK_EX):
            if fresh:
                # Now a missing head always means a deleted one, never a first append that
                # crashed before writing it.
                _write_head(self._head_path, self._head)
                _fsync_dir(self._path.parent)
            self._drop_partial_line(self._path, self._file)
            self._sync(self._path, report=True)

    def _drop_partial_line(self, path: Path, file: IO[bytes]) -> None:
        """A crash mid-write leaves a partial last line, never acknowledged (append fsyncs
        first): cut it. A line the head vouches for is kept, since that is tampering."""
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        head = _read_head(self._head_path)
        last = _last(_parse_lines(data))
        if isinstance(head, tuple) and head[0] > (last[0] if last else 0):
            logger.error("audit log %s: its last line has lost its newline", path)
            _write_durably(file, b"\n")  # new records start on a line of their own
            return
        cut = data.rfind(b"\n") + 1
        logger.warning(
            "audit log %s: dropping an interrupted write (%d bytes)", path, len(data) - cut
        )
        file.truncate(cut)
        os.fsync(file.fileno())

    def _sync(self, path: Path, report: bool = False) -> None:
        """Take up the chain from the file (at open, or after another process appended)."""
        data = path.read_bytes()
        head = _read_head(self._head_path)
        if report and not (result := _evaluate(data, head)).ok:
            logger.error(
                "audit log %s does not verify (line %s, seq %s: %s); appending after it, "
                "unrepaired",
                path,
                result.bad_line,
                result.bad_seq,
                result.reason,
            )
        self._head = _continuation(_parse_lines(data), head)
        self._size = len(data)

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
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        # The round trip makes the record equal what a reader parses back (tuples, int keys).
        facts = json.loads(json.dumps(dict(details or {}), allow_nan=False))
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            if self._path is None or self._file is None:
                record = self._next(action, actor, outcome, subject, facts)
                self._memory.append(record)
                self._head = (record.seq, record.hash)
            else:
                with _flock(self._file.fileno(), fcntl.LOCK_EX):
                    if os.fstat(self._file.fileno()).st_size != self._size:
                        self._sync(self._path)  # another process appended
                    record = self._next(action, actor, outcome, subject, facts)
                    line = _line(record)
                    try:
                        _write_durably(self._file, line)
                        # All or nothing: a record whose head cannot be written (an
                        # unwritable data dir) is taken back, so that the action it
                        # records, which its caller then does not carry out, is not in
                        # the log either.
                        _write_head(self._head_path, (record.seq, record.hash))
                    except BaseException:
                        self._file.truncate(self._size)  # no partial line mid-file
                        with contextlib.suppress(OSError):
                            os.fsync(self._file.fileno())
                        raise
                    self._size += len(line)
                    self._head = (record.seq, record.hash)
            return record

    def _next(
        self, action: str, actor: str, outcome: str, subject: str | None, details: dict[str, Any]
    ) -> AuditRecord:
        fields: dict[str, Any] = {
            "seq": self._head[0] + 1,
            "ts": self._clock(),
            "action": action,
            "actor": actor,
            "outcome": outcome,
            "subject": subject,
            "details": details,
            "prev": self._head[1],
        }
        record = AuditRecord(**fields, hash=_digest(fields))
        _line(record)  # refuse what cannot be written (a lone surrogate) in memory mode too
        return record

    def records(self) -> list[AuditRecord]:
        """Every readable record, in file order (a broken line is left to :func:`verify`)."""
        with self._lock:
            if self._path is None:
                return list(self._memory)
            return [r for r in _parse_lines(self._path.read_bytes()) if isinstance(r, AuditRecord)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
