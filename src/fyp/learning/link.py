"""What the learner process and the serving process share on disk, besides the stores:
the learner's lock (one learner per data dir; held while it runs), its status file
(heartbeat, progress, the erasures it has carried out) and the model channel.

The serving process reads the status for ``/healthz`` and ``/metrics`` and, through
:meth:`LearnerLink.erase`, waits for the learner to carry out an erasure, or carries it
out itself (under the lock) when no learner runs.

Where the channel is on Redis, serving processes may have data dirs of their own
(``fyp cluster up``, other machines): the learner also keeps its status on the channel
(:meth:`~fyp.model.channel.ModelChannel.put_learner_status`), and a process without the
learner's status file reads it there: every process's ``/healthz`` says whether the
learner runs, and an erasure through any of them waits for it while it does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fyp.config import Settings
from fyp.model.channel import ModelChannel, open_channel
from fyp.model.publisher import USER_TABLES
from fyp.storage.checkpoint import discard_partial, read_checkpoint, write_checkpoint
from fyp.types import now_ms

LOCK_FILE = "learner.lock"
STATUS_FILE = "learner-status.json"
_POLL_S = 0.02
STALE_MS = 5_000  # a status older than this: the learner is not running
HOST = socket.gethostname()

log = logging.getLogger(__name__)


@dataclass
class LearnerStatus:
    """What the learner says of itself (written every few hundred ms)."""

    pid: int = 0
    host: str = ""  # the machine it runs on (its pid means something there only)
    heartbeat_ms: int = 0  # wall clock of the last write
    started_ms: int = 0
    ready: bool = False  # caught up with the log at its start, and published a snapshot
    offset: int = 0  # events applied
    log_end: int = 0  # the log's end when it last looked
    version: int = 0  # the last model version published
    examples: int = 0  # examples the ranker has learned from
    examples_per_s: float = 0.0  # over the last interval
    # Users whose erasure it has carried out (state, checkpoint, published files), while
    # their tombstone lasts, by their audit references (no file keeps a pseudonym of an
    # erased user): an erasure in the server waits to see its user's here.
    erased: list[str] = field(default_factory=list)


def channel_of(settings: Settings) -> ModelChannel:
    """The model channel ``model.channel`` names (None: the files in the data dir)."""
    return open_channel(settings.model.channel, settings.data_dir)


def read_status(data_dir: Path) -> LearnerStatus | None:
    try:
        raw = json.loads((data_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return LearnerStatus(**raw)


def write_status(data_dir: Path, status: LearnerStatus) -> None:
    path = data_dir / STATUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)


def encode_status(status: LearnerStatus) -> bytes:
    return json.dumps(asdict(status)).encode()


def decode_status(raw: bytes | None) -> LearnerStatus | None:
    """A status kept on the channel (None: none, or not one this version reads)."""
    if raw is None:
        return None
    try:
        fields = json.loads(raw)
        return LearnerStatus(**{k: v for k, v in fields.items() if k in _STATUS_FIELDS})
    except (ValueError, TypeError, AttributeError):
        return None


_STATUS_FIELDS = frozenset(LearnerStatus.__dataclass_fields__)


@contextlib.contextmanager
def learner_lock(data_dir: Path, wait: bool) -> Iterator[bool]:
    """Hold the learner's lock for the block (``wait``: until it is free); yields whether
    it is held (False: a learner runs, and ``wait`` was False). The kernel releases it
    when its holder dies, kill -9 included."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def erase_at_rest(settings: Settings, user_id: str) -> int:
    """Carry out an erasure for a learner that is not running (the caller holds its
    lock): its checkpoint rewritten without the user, every published update rewritten
    without their rows. The learner then starts from files that never held them. Returns
    the last version published (every one is now without the user)."""
    from fyp.engine import LEARNER_CHECKPOINT_FILE

    path = settings.data_dir / LEARNER_CHECKPOINT_FILE
    discard_partial(path)  # (a killed writer's)
    checkpoint = read_checkpoint(path)
    if checkpoint is not None:
        checkpoint["state"].erase_user(user_id)  # (its models' rows too: a listener)
        checkpoint.pop("format", None)
        write_checkpoint(path, checkpoint)
    else:
        # One this code cannot read (another format) cannot be rewritten without the
        # user, and the learner replays the log rather than read it: it goes.
        path.unlink(missing_ok=True)
    channel = channel_of(settings)
    try:
        channel.forget({name: {user_id} for name in USER_TABLES})
        return channel.latest()
    finally:
        channel.close()


class LearnerLink:
    """The serving process's side: the learner's status, and erasures carried to it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self._channel: ModelChannel | None = None  # opened when first read
        self._remote: LearnerStatus | None = None  # the channel's, as last read

    def status(self) -> LearnerStatus | None:
        """The learner's status file in this data dir; without one, the status it keeps
        on the channel as :meth:`remote_status` last read it (the server's model poller
        reads it, off the event loop that answers ``/healthz``); None if neither."""
        here = read_status(self.data_dir)
        return here if here is not None else self._remote

    def remote_status(self) -> LearnerStatus | None:
        """The status the learner keeps on the channel, read now (None: none, the
        channel's files are in the learner's data dir, or it cannot be reached: said as
        the learner not running)."""
        if self.settings.model.channel is None:
            return None
        try:
            if self._channel is None:
                self._channel = channel_of(self.settings)
            self._remote = decode_status(self._channel.learner_status())
        except OSError as err:  # (StorageUnavailableError: Redis down)
            log.debug("cannot read the learner's status from the channel (%s)", err)
            self._remote = None
        return self._remote

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _learner_elsewhere(self) -> bool:
        """Whether a learner with another data dir runs: no status file here, and a
        fresh status on the channel."""
        if (self.data_dir / STATUS_FILE).exists():
            return False
        status = self.remote_status()
        return status is not None and now_ms() - status.heartbeat_ms < STALE_MS

    def running(self) -> bool:
        """Whether a learner holds its lock now."""
        with learner_lock(self.data_dir, wait=False) as free:
            return not free

    def erase(self, user_id: str, audit_ref: str) -> int:
        """Return once no learner state, checkpoint or published file holds the user
        (their tombstone is written and their events deleted): the running learner
        carries it out (it follows the tombstones), else this does, under its lock.
        Returns the last model version that may hold the user's rows (none published
        after it does). A learner running with another data dir (its status fresh on the
        channel) is waited for in the same way.
        OSError (EBUSY) if the running learner has not within
        ``model.learner_erase_timeout_s``: the tombstone stays, asking again completes."""
        deadline = time.monotonic() + self.settings.model.learner_erase_timeout_s
        while True:
            if not self._learner_elsewhere():
                with learner_lock(self.data_dir, wait=False) as held:
                    if held:
                        return erase_at_rest(self.settings, user_id)
            status = read_status(self.data_dir) or self.remote_status()
            if status is not None and audit_ref in status.erased:
                return status.version
            if time.monotonic() >= deadline:
                raise OSError(
                    errno.EBUSY,
                    "the learner process has not yet dropped the user's learned rows; "
                    "ask again to complete the erasure",
                )
            time.sleep(_POLL_S)
