"""What makes an acknowledged write survive a power loss, asserted where it is set: the
kill -9 tests (tests/test_durability.py, tests/test_checkpoint.py) cannot tell, since a
killed process leaves its writes in the OS page cache, fsynced or not.

- every SQLite store that acknowledges writes commits with ``synchronous=FULL`` in WAL
  mode, read back from the live connection each store opened;
- the impression log, written behind and never acknowledged, commits with at least
  ``synchronous=NORMAL`` (survives a killed process);
- the audit log, the checkpoint, the pseudonym secret and the data dir's region binding
  are fsynced with all their bytes before they count (``os.fsync`` spied on), the
  checkpoint before its rename and its directory after it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.privacy.audit_log import AUDIT_FILE, AuditLog
from fyp.privacy.keys import KEYS_FILE, SqliteKeyStore
from fyp.storage.checkpoint import write_checkpoint

FULL, NORMAL = 2, 1  # PRAGMA synchronous
# Every SQLite file of a data dir, and the least ``synchronous`` its commits take.
SYNCHRONOUS = {
    "events.db": FULL,
    "catalog.db": FULL,
    "moderation.db": FULL,
    "users.db": FULL,
    KEYS_FILE: FULL,
    "impressions.db": NORMAL,
}


def _settings(data: Path) -> Settings:
    return load_settings(overrides={"data_dir": data}, environ={})


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> dict[str, sqlite3.Connection]:
    """Every SQLite connection opened while the test runs, by file name."""
    opened: dict[str, sqlite3.Connection] = {}
    real = sqlite3.connect

    def spy(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(database, *args, **kwargs)
        opened[Path(str(database)).name] = conn
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    return opened


@dataclass(frozen=True)
class Synced:
    """One call of ``os.fsync`` (or ``os.replace``, with ``size`` -1)."""

    path: str
    size: int
    replaced_by: str | None = None


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Synced]]:
    """Every ``os.fsync`` (the file and its size then) and ``os.replace``, in order."""
    done: list[Synced] = []
    real_fsync: Callable[[int], None] = os.fsync
    real_replace = os.replace

    def fsync(fd: int) -> None:
        done.append(Synced(os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        done.append(Synced(str(src), -1, replaced_by=str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    yield done


def test_every_store_that_acknowledges_writes_fsyncs_each_commit(
    tmp_path: Path, connections: dict[str, sqlite3.Connection]
) -> None:
    """Mutations it catches: any store opened with ``connect(path, "os")`` (the event
    log's switch to ``synchronous=NORMAL`` passed every kill -9 test), ``connect``'s
    "fsync" mapped to NORMAL, a store that sets its own pragmas after ``connect``, or a
    store that leaves WAL mode. A new SQLite file must be given its due here."""
    data = tmp_path / "data"
    engine = Engine.open(_settings(data))
    keys = SqliteKeyStore(data / KEYS_FILE)
    try:
        on_disk = {p.name for p in data.glob("*.db")}
        assert on_disk == set(SYNCHRONOUS), "a store's durability is not asserted here"
        for name, least in SYNCHRONOUS.items():
            conn = connections[name]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
            if least == FULL:
                assert synchronous == FULL, f"{name}: synchronous={synchronous}, not FULL"
            else:
                assert synchronous >= least, f"{name}: synchronous={synchronous}"
    finally:
        keys.close()
        engine.close()


def test_a_new_data_dirs_secret_and_region_are_fsynced_whole(
    tmp_path: Path, syncs: list[Synced]
) -> None:
    """Mutation it catches: the pseudonym secret or the region binding written without
    its fsync (a power loss could leave events stored under pseudonyms of a secret that
    is gone)."""
    data = tmp_path / "data"
    Engine.open(_settings(data)).close()
    files = {Path(s.path).name: s for s in syncs if s.replaced_by is None}
    secret = next(p for p in tmp_path.rglob("*") if p.is_file() and "secret" in p.name)
    assert files[secret.name].size == secret.stat().st_size > 0
    region = next(s for s in syncs if s.replaced_by is not None and "deployment" in s.replaced_by)
    region_file = Path(region.replaced_by or "")
    assert files[Path(region.path).name].size == region_file.stat().st_size > 0


def test_an_audit_record_is_fsynced_whole_before_append_returns(
    tmp_path: Path, syncs: list[Synced]
) -> None:
    """Mutation it catches: ``_write_durably`` without its ``os.fsync`` (the record is
    then acknowledged from the page cache)."""
    audit = AuditLog(tmp_path)
    try:
        for n in range(3):
            syncs.clear()
            audit.append("test.action", "tester", subject=f"s{n}")
            size = (tmp_path / AUDIT_FILE).stat().st_size
            assert Synced(str(tmp_path / AUDIT_FILE), size) in syncs, syncs
    finally:
        audit.close()


def test_a_checkpoint_is_fsynced_before_its_rename_and_the_rename_after(
    tmp_path: Path, syncs: list[Synced]
) -> None:
    """Mutations they catch: ``write_checkpoint`` without the file's fsync (the rename
    can then land before the bytes: a power loss leaves an empty or torn checkpoint in
    place of the good one) or without the directory's (the rename itself is lost)."""
    path = tmp_path / "checkpoint.pkl"
    write_checkpoint(path, {"offset": 7, "state": list(range(10_000))})
    size = path.stat().st_size
    renames = [i for i, s in enumerate(syncs) if s.replaced_by == str(path)]
    assert len(renames) == 1, syncs
    rename = renames[0]
    tmp = syncs[rename].path
    assert Synced(tmp, size) in syncs[:rename], "the checkpoint's bytes not fsynced first"
    assert Synced(str(tmp_path), os.stat(tmp_path).st_size) in syncs[rename + 1 :], (
        "the rename is not fsynced (its directory)"
    )
