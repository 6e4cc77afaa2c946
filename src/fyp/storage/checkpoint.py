"""Checkpoints of the in-memory state: written atomically, read back whole.

A checkpoint is the learning loop's state (and the learned models) as of one log offset,
pickled (protocol 5) after a header that says its format. It is written to a temporary
file in the same directory, fsynced, renamed over the old one and the directory fsynced:
a crash at any moment leaves either the old checkpoint or the new one, never a torn
file. It holds what the engine's own process made from the event log, so it is read only
by that engine (pickle runs code on load: never point it at a file from elsewhere).

The header is read first, and the payload only when its format is this code's: a
checkpoint written by newer code (other classes, renamed ones) must read as an unknown
format, replayed from the log, and not fail in ``pickle.load`` — a process that fails
there fails again on every restart. The header is a pickle of builtins only (read with
an unpickler that constructs nothing), so that code from before the header, which reads
the file's first pickle as the whole checkpoint, finds no format it knows in it either.
A checkpoint without the header (written before it) is read as before. A payload that
names a class this code lacks (written by code that added one without a new format) is
of an unknown format too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

#: Whether :func:`fork_write` forks (Linux; elsewhere fork without exec is not safe with
#: the system's own libraries, and the engine writes its checkpoints in place).
CAN_FORK = sys.platform == "linux" and hasattr(os, "fork")
_PR_SET_PDEATHSIG = 1
# Resolved here, not in a child: dlopen takes the loader's lock, which another thread of
# the parent may have held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if CAN_FORK else None

# 2: the first ranker reads the surface; 3: examples keep their inputs; 4: affinities,
# users and examples keep the session's dwell evidence; 5: users and videos carry their
# attributes' codes; 6: embedding tables keep what changed since their last publish;
# 7: the first ranker reads the video's duration (two more weights per head); 8: the
# state keeps label counts per creator and per hashtag, two more first-ranker weights
# and two more per-label blocks of the learned ranker's dense input
FORMAT = 8
# The header's one key (never "format": readers from before the header would take a header
# with that key for a checkpoint of their own).
_HEADER_KEY = "fyp_checkpoint_format"


def partial_path(path: Path) -> Path:
    """Where a checkpoint of ``path`` is written before its rename."""
    return path.with_name(path.name + ".tmp")


def discard_partial(path: Path) -> bool:
    """Remove a checkpoint of ``path`` that was never renamed into place (its writer was
    killed: a child killed with its parent, or one that ran past its time). It holds a
    snapshot of user data like the checkpoint itself, so an erasure must not leave it
    behind. Call it only while no writer runs. True when there was one."""
    tmp = partial_path(path)
    try:
        tmp.unlink()
    except FileNotFoundError:
        return False
    return True


def write_checkpoint(path: Path, payload: dict[str, Any]) -> int:
    """Atomically replace ``path`` with ``payload``; returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as f:
            pickle.dump({_HEADER_KEY: FORMAT}, f, protocol=2)
            pickle.dump({"format": FORMAT, **payload}, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        # A partial file (a full disk) would keep the space, and what it holds.
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)
    return size


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none or it is of another
    format (the engine then replays the log from the start); the payload of another
    format is not unpickled."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        header = read_header(f)
        if header is None:  # written before the header: one pickle, its format inside
            f.seek(0)
        elif header != FORMAT:
            return None
        try:
            data = _Payload(f).load()
        except _UnknownClassError as err:
            log.warning("checkpoint %s names %s, which this code lacks: replaying", path, err)
            return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data


class _UnknownClassError(pickle.UnpicklingError):
    """The payload names a class this code does not have."""


class _Payload(pickle.Unpickler):
    """A checkpoint's payload: one that names a class this code lacks (written by code
    that added or renamed one without a new format) is of a format unknown here too."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError) as err:
            raise _UnknownClassError(f"{module}.{name}") from err


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"not a checkpoint header: it names {module}.{name}")


def read_header(f: BinaryIO) -> int | None:
    """The format in the header at the start of ``f`` (read past it), or None when the
    file starts with no header (then where ``f`` stands is undefined). Constructs no
    object of any class: it reads what code of any version wrote."""
    try:
        header = _BuiltinsOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError):
        return None
    if isinstance(header, dict) and isinstance(header.get(_HEADER_KEY), int):
        return int(header[_HEADER_KEY])
    return None


def fork_write(path: Path, payload: dict[str, Any]) -> int:
    """Write ``payload`` as :func:`write_checkpoint` does, from a forked child: the child
    holds a copy-on-write snapshot of the process as of the fork, so the caller may go on
    changing the state at once (the snapshot is what the caller held when it forked:
    fork while the state is consistent, e.g. under its lock). Returns the child's pid, to
    reap with :func:`reap` (exit code 0: written). Only where :data:`CAN_FORK`.

    The child touches nothing but the payload and the file (no logging, no stores, no
    other thread's locks; it closes the parent's descriptors but 0–2), exits with
    ``os._exit`` (no atexit, no buffers flushed twice), and dies with its parent: an
    orphan must not rename an old snapshot over a checkpoint a restarted engine wrote
    since (say, one without a user erased meanwhile)."""
    parent = os.getpid()
    assert _prctl is not None, "fork_write needs CAN_FORK"
    with warnings.catch_warnings():
        # Python 3.12 warns on every fork of a threaded process: a child that takes a lock
        # another thread held may hang. This one takes none: prctl is resolved at import,
        # the collector is off, errors go to fd 2 unbuffered, not through sys.stderr's lock.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
        pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        gc.disable()  # no finalizer of the parent's objects runs here
        _close_inherited_fds()
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0 and os.getppid() == parent:
            write_checkpoint(path, payload)  # (the parent may already be gone: then not)
            code = 0
    except BaseException as exc:
        os.write(2, f"fyp checkpoint child: {type(exc).__name__}: {exc}\n".encode(errors="replace"))
    finally:
        os._exit(code)


def _close_inherited_fds() -> None:
    """In a checkpoint child: close every descriptor but stdin, stdout and stderr. The
    parent's sockets would otherwise stay open here while the child writes: a client
    connection the server closed would get no FIN until the child exits. (Nothing here
    needs them; closing a copy changes nothing for the parent: record locks are not
    inherited, and a socket or file stays open while the parent holds it.)"""
    for name in os.listdir("/proc/self/fd"):  # the listing's own descriptor is closed by now
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def reap(pid: int, wait: bool) -> int | None:
    """The exit code of checkpoint child ``pid`` once it has ended (``wait``: block until
    then), else None."""
    try:
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
    except ChildProcessError:  # reaped by someone else (a SIGCHLD handler): unknown, so failed
        return -1
    return None if done == 0 else os.waitstatus_to_exitcode(status)


def kill(pid: int) -> int:
    """End checkpoint child ``pid`` now (SIGKILL) and reap it; its exit code (negative:
    the signal), or what it had exited with if it ended first."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    code = reap(pid, wait=True)
    assert code is not None
    return code
