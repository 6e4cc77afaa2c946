"""Storage faults as HTTP 503: a full disk, a read-only or unwritable data directory, an
I/O error of any kind is the operator's to fix and the client's to wait out, not a bug
(500) in the request. Any ``OSError`` a request meets is one, whatever its errno (but
network errors and timeouts), and so is SQLite's failure to read or write its files.

Every store writes in SQLite transactions (or, for files, writes it undoes on failure:
the audit log truncates a partial line, a checkpoint only replaces the old one once
written whole), so the write that failed left the stores as they were; the client can
retry (events are idempotent by ``event_id``). A request that made several writes may
have had earlier ones stored, so the message claims that only of the one that failed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fyp.storage.errors import StorageUnavailableError
from fyp.storage.sqlite import WalBusyError

log = logging.getLogger(__name__)

FULL = "the disk is full"
READ_ONLY = "the data directory is read-only"
DENIED = "permission denied in the data directory (not writable, or not readable)"
IO_ERROR = "an I/O error"
# Not a fault of the disk: a deletion was stored, but another process reading the database
# kept its old pages in the write-ahead log (storage.sqlite.forget_wal); soon over.
BUSY = "another process is reading the database"
# A store on a server (the event log on Redis) that cannot be reached: down, restarting.
UNREACHABLE = "a storage server cannot be reached"

RETRY_AFTER_S = 30  # long enough not to hammer a full disk, short enough to recover soon
BUSY_RETRY_AFTER_S = 5
LOG_EVERY_S = 60.0  # per kind: a full disk fails every write, and must not flood the log

# SQLite's primary result codes (the low byte of the extended code).
_SQLITE_KINDS = {
    13: FULL,  # SQLITE_FULL
    8: READ_ONLY,  # SQLITE_READONLY
    10: IO_ERROR,  # SQLITE_IOERR
    14: IO_ERROR,  # SQLITE_CANTOPEN: the data dir gone or unwritable (no journal file)
    3: DENIED,  # SQLITE_PERM
    22: IO_ERROR,  # SQLITE_NOLFS: a file past what the filesystem holds
}
# Where the code is missing (another driver, an older Python), the messages SQLite gives.
_SQLITE_MESSAGES = (
    ("database or disk is full", FULL),
    ("attempt to write a readonly database", READ_ONLY),
    ("disk i/o error", IO_ERROR),
    ("unable to open database file", IO_ERROR),
)
_ERRNO_KINDS = {
    errno.ENOSPC: FULL,
    errno.EDQUOT: FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: DENIED,
    errno.EPERM: DENIED,  # also what an immutable (chattr +i) directory answers
    errno.EIO: IO_ERROR,
}
# OSErrors that are not the disk's: a client gone, a wait that ran out, a file object
# used the wrong way (a bug, also a ValueError).
_NOT_STORAGE = (ConnectionError, TimeoutError, io.UnsupportedOperation)
_INSTALLED = "fyp_storage_errors"  # on app.state: what makes installing idempotent


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it or was being handled when it was raised. A
    failed COMMIT is often followed by a ROLLBACK that fails in turn ("no transaction is
    active": SQLite already rolled back), which hides the fault as its context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _errno_kind(err: OSError) -> str:
    """The fault an OSError is: a named kind, else an I/O error with its errno's name."""
    if err.errno in _ERRNO_KINDS:
        return _ERRNO_KINDS[err.errno]
    name = errno.errorcode.get(err.errno) if isinstance(err.errno, int) else None
    return IO_ERROR if name is None else f"{IO_ERROR} ({name})"


def storage_fault(exc: BaseException) -> str | None:
    """Which storage fault ``exc`` is (:data:`FULL`, :data:`READ_ONLY`, :data:`DENIED`,
    :data:`IO_ERROR`, possibly with an errno's name, :data:`BUSY`), or None if it is
    none of them."""
    for e in _chain(exc):
        if isinstance(e, WalBusyError):
            return BUSY
        if isinstance(e, StorageUnavailableError):
            return UNREACHABLE
        if isinstance(e, sqlite3.DatabaseError):
            code = getattr(e, "sqlite_errorcode", None)
            if isinstance(code, int) and (code & 0xFF) in _SQLITE_KINDS:
                return _SQLITE_KINDS[code & 0xFF]
            message = str(e).lower()
            for text, kind in _SQLITE_MESSAGES:
                if text in message:
                    return kind
        elif isinstance(e, OSError) and not isinstance(e, _NOT_STORAGE):
            return _errno_kind(e)
    return None


def probe(data_dir: Path) -> str | None:
    """What a one-byte durable write in ``data_dir`` meets now: :data:`FULL`,
    :data:`READ_ONLY`, :data:`DENIED`, :data:`IO_ERROR`, or None (it succeeds).

    SQLite reports a write to an fd that the kernel refuses as SQLITE_IOERR ("disk I/O
    error") whatever the errno: a filesystem gone read-only under it (ext4's
    errors=remount-ro) or a full one whose space ran out at fsync reads the same. The
    probe asks the filesystem itself, so the client is told which it is."""
    path = data_dir / f".storage-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as err:
        return _errno_kind(err)
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
    except OSError as err:
        return _errno_kind(err)
    finally:
        # Created but not removable (or closable): the next probe truncates and reuses it.
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return None


def route_template(request: Request) -> str:
    """The route's template (``/v1/users/{user_id}``), not the path, which can hold a
    user's id (the logs, the audit log and the client's message must not)."""
    return str(getattr(request.scope.get("route"), "path", "?"))


def route_of(request: Request) -> str:
    """``METHOD /template``: the request as logs and messages name it."""
    return f"{request.method} {route_template(request)}"


def storage_message(kind: str, exc: BaseException, route: str = "the request") -> str:
    """What the client is told: true of every store (see the module's docstring)."""
    if kind == BUSY:
        return f"storage busy: {route}: {exc}"
    if kind == UNREACHABLE:  # (what the server said is logged, not told: it names hosts)
        # Only a batch of events can promise that a retry is safe whatever was stored.
        safe = " (events are idempotent by event_id)" if "/v1/events" in route else ""
        return (
            f"storage unavailable: {kind}; {route} failed and may not have been stored "
            f"— retry later{safe}"
        )
    undone = (
        "the transaction that failed was rolled back, so nothing of it was stored"
        if any(isinstance(e, sqlite3.DatabaseError) for e in _chain(exc))
        else "the write that failed was not completed"
    )
    return f"storage unavailable: {kind}; {route} failed: {undone} — retry later"


class _RateLimitedLog:
    """At most one warning per kind per ``every_s`` (wall-clock here is fine: this is
    logging, not learning state)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()  # handlers may run on several threads (sync routes)

    def warn(self, kind: str, request: Request, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        # The exception as text, not as an argument: a record kept by a handler (a
        # buffer, pytest's capture) would otherwise keep its traceback, whose frames
        # hold the failed statement's cursor, which keeps the SQLite file open.
        log.warning(
            "storage unavailable (%s): %s answered 503: %s%s",
            kind,
            route_of(request),
            f"{type(exc).__name__}: {exc}",
            more,
        )


class _Installed:
    """What the handlers of one app share: set by the first install, completed by a
    later one that knows the data dir."""

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir
        self.warnings = _RateLimitedLog(LOG_EVERY_S)


def install_storage_errors(app: FastAPI, data_dir: Path | None = None) -> None:
    """Answer storage faults with 503, a ``Retry-After`` and a JSON ``detail``; every
    other exception is handled as before (FastAPI's 500). Given the ``data_dir``, an
    error SQLite only calls "disk I/O error" is told apart by a :func:`probe` (full,
    read-only, or a real I/O error). Installing again is harmless: the handlers stay
    those of the first call, and a ``data_dir`` given later is used from then on."""
    installed = getattr(app.state, _INSTALLED, None)
    if isinstance(installed, _Installed):
        if data_dir is not None:
            installed.data_dir = data_dir
        return
    state = _Installed(data_dir)
    setattr(app.state, _INSTALLED, state)

    # sqlite3.OperationalError is a DatabaseError: one handler sees both.
    app.add_exception_handler(sqlite3.DatabaseError, storage_error_response)
    app.add_exception_handler(OSError, storage_error_response)


async def storage_error_response(request: Request, exc: Exception) -> Response:
    """The 503 answering ``exc``, a storage fault; ``exc`` is raised again if it is none.
    Another exception handler that writes (an audit record of a refusal) calls it with
    what its write raised: Starlette does not pass a handler's own exception on to the
    other handlers, so it would be a 500."""
    kind = storage_fault(exc)
    if kind is None:
        raise exc  # not a storage fault: on to the server-error handling (a 500)
    state = getattr(request.app.state, _INSTALLED, None)
    if not isinstance(state, _Installed):
        raise exc
    if kind.startswith(IO_ERROR) and state.data_dir is not None:
        kind = probe(state.data_dir) or kind
    state.warnings.warn(kind, request, exc)
    return JSONResponse(
        {"detail": storage_message(kind, exc, route_of(request))},
        status_code=503,
        headers={
            "Retry-After": str(BUSY_RETRY_AFTER_S if kind in (BUSY, UNREACHABLE) else RETRY_AFTER_S)
        },
    )


async def validation_error_response(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a request its validation refused, but one that can always be
    written: the errors echo the input, and a lone surrogate (``"\\ud800"`` in a JSON
    body) cannot be encoded as UTF-8, so FastAPI's own handler answered a 500. Such a
    character is echoed as "?" (the message names it by its code point)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body = json.dumps(
        {"detail": jsonable_encoder(errors)}, ensure_ascii=False, separators=(",", ":")
    )
    return Response(body.encode("utf-8", "replace"), status_code=422, media_type="application/json")


def install_validation_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_response)
