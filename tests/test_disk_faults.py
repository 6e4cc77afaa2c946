"""Storage faults, for real: a full disk, a data directory gone read-only. Each write is
answered 503 with a Retry-After and a message that says what happened; reads and
/healthz go on; once the fault is over writes work again; and reopening the data
directory finds every acknowledged event, nothing of the refused ones, and SQLite files
that pass ``PRAGMA integrity_check``.

The faults are real filesystems, not mocks, so these tests need root in a container
that allows mounts; elsewhere they skip, saying so (under CI they fail: it has both). A
full disk is a small tmpfs filled with a filler file. A read-only one is ext4 on a loop
device that is made to fail (``trigger_fs_error`` with ``errors=remount-ro``: what a
production disk does on an error): ``mount -o remount,ro`` cannot be used while the
engine runs, since Linux refuses it (EBUSY) while any file on the filesystem is open for
writing, and SQLite keeps every database open read-write. Recovering from that state
takes an unmount, an fsck and a fresh mount, so that test reopens the engine to check
writes work again.

The first tests need no mount: how :func:`install_storage_errors` maps exceptions.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.api.errors import (
    BUSY,
    DENIED,
    FULL,
    IO_ERROR,
    READ_ONLY,
    install_storage_errors,
    probe,
    storage_fault,
)
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.privacy.audit_log import AuditLog, verify
from fyp.privacy.commands import create_audited, revoke_audited
from fyp.privacy.keys import KEYS_FILE, SqliteKeyStore, bearer, create_key
from fyp.storage.sqlite import WalBusyError
from fyp.types import Video, now_ms

TMPFS_SIZE = "4m"  # a fresh data dir is ~360 KB; room for the stores' first writes
EXT4_SIZE = 32 << 20
N_VIDEOS = 10
LEARN_TIMEOUT_S = 10.0

# -- install_storage_errors, on a bare app ---------------------------------------------


def _raiser(exc: BaseException) -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    install_storage_errors(app)
    install_storage_errors(app)  # twice: harmless
    return app


def _masked(original: BaseException) -> sqlite3.OperationalError:
    """What a store raises when COMMIT fails and its ROLLBACK then fails too (SQLite had
    already rolled back): the fault is only the context."""
    try:
        raise original
    except BaseException:
        try:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        except sqlite3.OperationalError as masked:
            return masked


def _coded(err: sqlite3.Error, code: int) -> sqlite3.Error:
    """``err`` with SQLite's result code, as the driver sets it."""
    err.sqlite_errorcode = code
    return err


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (sqlite3.OperationalError("database or disk is full"), FULL),
        (sqlite3.OperationalError("attempt to write a readonly database"), READ_ONLY),
        (sqlite3.OperationalError("disk I/O error"), IO_ERROR),
        (sqlite3.OperationalError("unable to open database file"), IO_ERROR),
        (sqlite3.DatabaseError("database or disk is full"), FULL),
        (_masked(sqlite3.OperationalError("database or disk is full")), FULL),
        (OSError(errno.ENOSPC, "No space left on device"), FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), FULL),
        (OSError(errno.EROFS, "Read-only file system"), READ_ONLY),
        (OSError(errno.EIO, "Input/output error"), IO_ERROR),
        # What an unwritable data dir answers (issue 17: these were 500s): chmod, an
        # immutable directory, an ACL.
        (PermissionError(errno.EACCES, "Permission denied", "/data/audit.head.tmp"), DENIED),
        (OSError(errno.EPERM, "Operation not permitted"), DENIED),
        (_coded(sqlite3.OperationalError("access permission denied"), 3), DENIED),  # PERM
        # Any other errno of the disk: named, still a 503.
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), f"{IO_ERROR} (ENOENT)"),
        (OSError(errno.ENAMETOOLONG, "File name too long"), f"{IO_ERROR} (ENAMETOOLONG)"),
        (OSError(errno.EMFILE, "Too many open files"), f"{IO_ERROR} (EMFILE)"),
        (OSError("no errno"), IO_ERROR),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_storage_faults_answer_503(exc: BaseException, kind: str) -> None:
    with TestClient(_raiser(exc)) as c:
        resp = c.get("/boom")
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) > 0
    detail = resp.json()["detail"]
    assert detail.startswith(f"storage unavailable: {kind}; GET /boom failed: ")
    assert detail.endswith("retry later")


def test_a_wal_another_process_holds_answers_503_busy_sooner() -> None:
    """A deletion was stored but its old pages wait in the WAL for a reader to let go:
    no disk fault, a shorter wait, and the client is told to retry (the truncation)."""
    err = WalBusyError("the write-ahead log could not be truncated; retry")
    assert storage_fault(err) == BUSY
    with TestClient(_raiser(err)) as c:
        resp = c.get("/boom")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.json()["detail"] == (
        "storage busy: GET /boom: the write-ahead log could not be truncated; retry"
    )


@pytest.mark.parametrize(
    "exc",
    [
        sqlite3.OperationalError("no such table: events"),
        sqlite3.DatabaseError("database disk image is malformed"),  # corruption: not transient
        sqlite3.IntegrityError("UNIQUE constraint failed: events.event_id"),
        # OSErrors that are not the disk's: the network, a timeout, a file misused.
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError("timed out"),
        io.UnsupportedOperation("not writable"),
        ValueError("a bug"),
    ],
    ids=lambda e: f"{type(e).__name__}:{e}",
)
def test_other_errors_keep_their_normal_handling(exc: BaseException) -> None:
    with TestClient(_raiser(exc), raise_server_exceptions=False) as c:
        assert c.get("/boom").status_code == 500
    with TestClient(_raiser(exc)) as c, pytest.raises(type(exc)):
        c.get("/boom")  # re-raised as before, not swallowed


def test_warnings_are_logged_once_per_kind_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/full")
    async def full() -> None:
        raise sqlite3.OperationalError("database or disk is full")

    @app.get("/ro")
    async def ro() -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    install_storage_errors(app)
    with caplog.at_level(logging.WARNING, logger="fyp.api.errors"), TestClient(app) as c:
        for _ in range(50):
            assert c.get("/full").status_code == 503
            assert c.get("/ro").status_code == 503
    warnings = [r for r in caplog.records if r.name == "fyp.api.errors"]
    assert len(warnings) == 2
    assert {FULL in r.getMessage() for r in warnings} == {True, False}


def test_storage_fault_ignores_unrelated_errors() -> None:
    assert storage_fault(RuntimeError("database or disk is full")) is None
    assert storage_fault(sqlite3.OperationalError("database is locked")) is None


# -- the engine and the app over a data dir on a mounted filesystem --------------------


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _unmount(mnt: Path) -> None:
    """Unmount, lazily if something still holds a file there (a store a failed close
    left open): no test leaves a mount behind."""
    if _run("mountpoint", "-q", str(mnt)).returncode != 0:
        return
    if _run("umount", str(mnt)).returncode != 0:
        _run("umount", "-l", str(mnt))


def _need_root(unavailable: Callable[[str], NoReturn]) -> None:
    if os.geteuid() != 0:
        unavailable("disk-fault tests mount filesystems: they need root (in a container)")


@pytest.fixture
def tmpfs(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[Path]:
    """A small tmpfs, unmounted at teardown (skipped where mounts are not allowed, a
    failure under CI, where they are)."""
    _need_root(unavailable)
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "fyp", str(mnt))
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here (not permitted?): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        _unmount(mnt)


@dataclass
class Ext4:
    """An ext4 filesystem on a loop device, mounted with errors=remount-ro."""

    image: Path
    mnt: Path

    def mount(self) -> None:
        done = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt))
        if done.returncode != 0:
            raise RuntimeError(f"mount failed: {done.stderr.strip()}")

    def trigger_file(self) -> Path:
        source = _run("findmnt", "-n", "-o", "SOURCE", str(self.mnt)).stdout.strip()
        return Path("/sys/fs/ext4") / Path(os.path.realpath(source)).name / "trigger_fs_error"

    def go_read_only(self) -> None:
        """An ext4 error: the kernel turns the filesystem read-only under open files.
        The journal aborts at once (writes then fail with EIO); the read-only flag that
        makes them fail with EROFS can follow a moment later, so this waits for it."""
        self.trigger_file().write_text("fyp test: the data directory goes read-only\n")
        deadline = time.monotonic() + 5.0
        while True:
            try:
                os.close(os.open(self.mnt / ".read-only-check", os.O_WRONLY | os.O_CREAT))
            except OSError as err:
                if err.errno == errno.EROFS:
                    return
            assert time.monotonic() < deadline, "the filesystem did not turn read-only"
            time.sleep(0.01)

    def repair(self) -> None:
        """Unmount, fsck, mount again: the way back from an emergency read-only."""
        _unmount(self.mnt)
        checked = _run("e2fsck", "-fy", str(self.image))
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # 1: fixed
        self.mount()


@pytest.fixture
def ext4(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[Ext4]:
    _need_root(unavailable)
    for tool in ("mkfs.ext4", "e2fsck", "findmnt", "mountpoint"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    fs = Ext4(tmp_path / "ext4.img", tmp_path / "ext4")
    fs.mnt.mkdir()
    with fs.image.open("wb") as f:
        f.truncate(EXT4_SIZE)
    made = _run("mkfs.ext4", "-q", "-F", str(fs.image))
    if made.returncode != 0:
        unavailable(f"mkfs.ext4 failed: {made.stderr.strip()}")
    try:
        fs.mount()
    except RuntimeError as err:
        unavailable(f"cannot mount a loop device here: {err}")
    try:
        if not fs.trigger_file().exists():
            unavailable("this kernel's ext4 has no trigger_fs_error")
        yield fs
    finally:
        _unmount(fs.mnt)


def _settings(data_dir: Path) -> Settings:
    return load_settings(
        overrides={"data_dir": data_dir, "privacy": {"require_registered_users": False}},
        environ={},
    )


def video(i: int) -> dict[str, Any]:
    return {
        "video_id": f"v{i:03d}",
        "creator_id": f"c{i % 3}",
        "duration_ms": 10_000,
        "caption": f"video {i}",
        "created_at": now_ms() - 3_600_000,
    }


def events(prefix: str, n: int = 5) -> list[dict[str, Any]]:
    """Valid 5 s views, one per user (so no user's rate limit is hit)."""
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"{prefix}-user-{i}",
            "video_id": f"v{i % N_VIDEOS:03d}",
            "type": "view",
            "ts": now_ms(),
            "watch_ms": 5_000,
        }
        for i in range(n)
    ]


@contextlib.contextmanager
def serve(engine: Engine, settings: Settings) -> Iterator[TestClient]:
    """The app over ``engine`` (lifespan running), every request with a full-scope key."""
    _, token = create_key(settings.data_dir, label="disk-fault tests")
    # create_app installs the storage errors with the data dir itself: not done again
    # here, or a regression there would be hidden.
    app = create_app(settings, engine=engine)
    with TestClient(app, headers=bearer(token)) as client:
        yield client


def wait_until_learned(client: TestClient) -> None:
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    while client.get("/healthz").json()["learning_lag"] > 0:
        assert time.monotonic() < deadline, "the learning loop did not catch up"
        time.sleep(0.01)


def post_events(client: TestClient, batch: list[dict[str, Any]]) -> Any:
    return client.post("/v1/events", json={"events": batch})


def assert_refused(resp: Any, kind: str) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    detail = resp.json()["detail"]
    assert detail.startswith(f"storage unavailable: {kind}; "), (
        f"{detail!r} (if it says {IO_ERROR!r} where {kind!r} is meant, is create_app "
        "installing the handlers without settings.data_dir?)"
    )
    assert "rolled back" in detail
    assert detail.endswith("retry later")


def fill(directory: Path) -> Path:
    """Fill the filesystem: a file grown until not one more byte fits."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = 1 << 20
        while chunk:
            try:
                f.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
                chunk //= 2
    return filler


def check_data_dir(settings: Settings, acknowledged: set[str], refused: set[str]) -> None:
    """Reopened, the data dir holds each acknowledged event once and no refused one,
    and every SQLite file is intact."""
    engine = Engine.open(settings)
    try:
        logged = [e.event.event_id for e in engine.event_log.read(0, 100_000)]
    finally:
        engine.close()
    assert len(logged) == len(set(logged))
    assert set(logged) == acknowledged
    assert not set(logged) & refused
    dbs = sorted(settings.data_dir.glob("*.db"))
    assert {"events.db", "impressions.db", "catalog.db", "users.db"} <= {p.name for p in dbs}
    for path in dbs:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path.name
        finally:
            conn.close()


def seed(client: TestClient) -> set[str]:
    """The catalog and a first batch of events, stored and learned before the fault;
    returns the events' ids."""
    resp = client.post("/v1/videos", json={"videos": [video(i) for i in range(N_VIDEOS)]})
    assert resp.status_code == 200, resp.text
    before = events("before")
    assert post_events(client, before).status_code == 200
    wait_until_learned(client)
    return {e["event_id"] for e in before}


def test_a_full_disk_refuses_writes_with_503_and_loses_nothing(tmpfs: Path) -> None:
    settings = _settings(tmpfs / "data")
    profile = {"region": settings.region}
    engine = Engine.open(settings)
    acknowledged: set[str] = set()
    try:
        with serve(engine, settings) as client:
            acknowledged |= seed(client)

            filler = fill(tmpfs)
            retried, never = events("retried"), events("never")
            assert_refused(post_events(client, retried), FULL)
            assert_refused(post_events(client, never), FULL)
            assert_refused(client.put("/v1/users/new-user", json=profile), FULL)
            health = client.get("/healthz")
            assert health.status_code == 200, health.text
            assert health.json()["events"] == len(acknowledged)

            filler.unlink()
            resp = post_events(client, retried)
            assert resp.status_code == 200, resp.text
            # Nothing of the refused attempt had been stored: none is a duplicate.
            assert resp.json()["accepted"] == len(retried)
            assert resp.json()["duplicates"] == 0
            acknowledged |= {e["event_id"] for e in retried}
            assert client.put("/v1/users/new-user", json=profile).status_code == 201
            wait_until_learned(client)
    finally:
        engine.close()
    check_data_dir(settings, acknowledged, {e["event_id"] for e in never})


def test_a_read_only_data_dir_refuses_writes_with_503_and_loses_nothing(ext4: Ext4) -> None:
    settings = _settings(ext4.mnt / "data")
    profile = {"region": settings.region}
    engine = Engine.open(settings)
    acknowledged: set[str] = set()
    refused = events("refused")
    try:
        with serve(engine, settings) as client:
            acknowledged |= seed(client)

            ext4.go_read_only()
            assert_refused(post_events(client, refused), READ_ONLY)
            assert_refused(client.put("/v1/users/new-user", json=profile), READ_ONLY)
            assert_refused(client.post("/v1/videos", json={"videos": [video(99)]}), READ_ONLY)
            # An audited action: its record cannot be written, so it is not taken.
            removal = {"video_id": "v001", "state": "removed", "reason": "spam"}
            resp = client.post("/v1/moderation", json=removal)
            assert resp.status_code == 503, resp.text
            assert resp.json()["detail"].startswith(f"storage unavailable: {READ_ONLY}; ")
            assert engine.catalog.states[engine.catalog.row_of["v001"]].value == "approved"
            health = client.get("/healthz")
            assert health.status_code == 200, health.text
            assert health.json()["events"] == len(acknowledged)
    finally:
        engine.close()  # nothing pending (no feed was served): closes cleanly even now

    ext4.repair()
    engine = Engine.open(settings)
    try:
        with serve(engine, settings) as client:
            resp = post_events(client, refused)
            assert resp.status_code == 200, resp.text
            assert resp.json()["duplicates"] == 0
            assert client.put("/v1/users/new-user", json=profile).status_code == 201
    finally:
        engine.close()
    acknowledged |= {e["event_id"] for e in refused}
    check_data_dir(settings, acknowledged, set())


def test_the_probe_tells_a_full_disk_from_a_read_only_one(tmpfs: Path, ext4: Ext4) -> None:
    assert probe(tmpfs) is None
    filler = fill(tmpfs)
    assert probe(tmpfs) == FULL
    filler.unlink()
    ext4.go_read_only()
    assert probe(ext4.mnt) == READ_ONLY
    assert not list(tmpfs.glob(".storage-probe-*"))


def test_a_later_install_with_the_data_dir_refines_disk_io_errors(tmpfs: Path) -> None:
    app = _raiser(sqlite3.OperationalError("disk I/O error"))  # installed without it
    install_storage_errors(app, tmpfs)
    fill(tmpfs)
    with TestClient(app) as c:
        resp = c.get("/boom")
    assert resp.status_code == 503
    assert resp.json()["detail"].startswith(f"storage unavailable: {FULL}; ")


def test_impressions_written_behind_survive_a_full_disk(tmpfs: Path) -> None:
    """Feeds are served while the disk is full (their impressions wait in memory); the
    writer thread keeps retrying and writes them once there is room again."""
    settings = _settings(tmpfs / "data")
    engine = Engine.open(settings)
    try:
        with serve(engine, settings) as client:
            resp = client.post("/v1/videos", json={"videos": [video(i) for i in range(N_VIDEOS)]})
            assert resp.status_code == 200, resp.text
            assert engine.impressions.count() == 0
            filler = fill(tmpfs)
            served = 0
            for i in range(3):
                resp = client.get("/v1/feed", params={"user_id": f"viewer-{i}", "count": 5})
                assert resp.status_code == 200, resp.text
                served += len(resp.json()["items"])
            assert served > 0
            time.sleep(0.3)  # several write-behind attempts, each failing
            writers = [t for t in threading.enumerate() if t.name == "impressions"]
            assert writers and all(t.is_alive() for t in writers)
            filler.unlink()
            assert engine.impressions.count() == served
    finally:
        engine.close()


def test_the_automatic_review_is_not_lost_to_a_full_disk(tmpfs: Path) -> None:
    settings = _settings(tmpfs / "data")
    engine = Engine.open(settings)
    try:
        engine.upsert_videos([Video("v000", "c0", 10_000)])
        reports = [
            {"event_id": f"r{i}", "user_id": f"reporter-{i}", "video_id": "v000",
             "type": "report", "ts": now_ms()}
            for i in range(50)
        ]  # fmt: skip
        assert engine.ingest(reports).rejected == []
        filler = fill(tmpfs)
        with contextlib.suppress(sqlite3.Error, OSError):
            engine.learn()  # the review's audit record or write fails: the disk is full
        filler.unlink()
        engine.learn()
        assert any(a.video_id == "v000" for a in engine.moderation_store.history())
    finally:
        engine.close()


# -- an unwritable data dir: every audited action refused, none carried out ------------


@contextlib.contextmanager
def unwritable(directory: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[None]:
    """``directory`` made unwritable for this process, its files as they were (open ones
    stay writable, as when an operator's chmod or a volume's permissions change under a
    running server): no file can be created, renamed or removed in it. Root ignores
    permissions, so as root the directory is made immutable (``chattr +i``: EPERM)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        unavailable("chattr is not installed (root ignores chmod)")
    done = _run("chattr", "+i", str(directory))
    if done.returncode != 0:
        unavailable(f"cannot make a directory immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("chattr", "-i", str(directory))


def assert_503(resp: Any, route: str) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    detail = resp.json()["detail"]
    assert detail.startswith(f"storage unavailable: {DENIED}; {route} failed: "), detail
    assert detail.endswith("retry later")


def test_an_unwritable_data_dir_refuses_each_audited_action_and_carries_out_none(
    tmp_path: Path, unavailable: Callable[[str], NoReturn]
) -> None:
    """Issue 17: a data dir that became unwritable (no ``audit.head.tmp`` can be made)
    answered 500 on every audited route, and the moderation decision was taken, and
    stored, without its audit record. Now each is a 503 naming the route, the audit log
    is byte for byte as it was, and no action was taken; once writable again, each goes
    through. (The erasure's own ordering is tests/privacy's: here only its answer.)"""
    settings = load_settings(
        overrides={"data_dir": tmp_path / "data", "privacy": {"require_registered_users": True}},
        environ={},
    )
    engine = Engine.open(settings)
    profile = {"region": settings.region}
    removal = {"video_id": "v001", "state": "removed", "reason": "spam"}
    try:
        with serve(engine, settings) as client:
            resp = client.post("/v1/videos", json={"videos": [video(i) for i in range(3)]})
            assert resp.status_code == 200, resp.text
            assert client.put("/v1/users/alice", json=profile).status_code == 201
            log = settings.data_dir / "audit.log"
            before = log.read_bytes()
            with unwritable(settings.data_dir, unavailable):
                assert_503(client.post("/v1/moderation", json=removal), "POST /v1/moderation")
                assert_503(client.get("/v1/users/alice"), "GET /v1/users/{user_id}")
                assert_503(client.get("/v1/users/alice/export"), "GET /v1/users/{user_id}/export")
                # A refusal (a user not homed here) that cannot be audited: not a 500.
                assert_503(client.get("/v1/users/bob"), "GET /v1/users/{user_id}")
                assert_503(client.delete("/v1/users/alice"), "DELETE /v1/users/{user_id}")
                assert log.read_bytes() == before  # no record of what was not done
                assert engine.catalog.states[engine.catalog.row_of["v001"]].value == "approved"
                assert not [a for a in engine.moderation_store.history() if a.video_id == "v001"]
            resp = client.post("/v1/moderation", json=removal)
            assert resp.status_code == 200, resp.text
            assert client.get("/v1/users/bob").status_code == 421
    finally:
        engine.close()
    audit = AuditLog(settings.data_dir)
    try:
        actions = [r.action for r in audit.records()]
    finally:
        audit.close()
    assert "moderation" in actions and "residency.refused" in actions
    assert verify(settings.data_dir).ok


def test_key_operations_the_audit_log_cannot_hold_are_not_carried_out(
    tmp_path: Path, unavailable: Callable[[str], NoReturn]
) -> None:
    """A revocation is recorded before it is made, a creation undone if its record fails:
    with an unwritable data dir neither changes which keys work."""
    data = tmp_path / "data"
    data.mkdir()
    audit, store = AuditLog(data), SqliteKeyStore(data / KEYS_FILE)
    try:
        live, token = store.create(["feed:read"], None, "app", now_ms())
        before = (data / "audit.log").read_bytes()
        with unwritable(data, unavailable):
            with pytest.raises(OSError):
                revoke_audited(store, audit, live.key_id, "cli")
            with pytest.raises(OSError):
                create_audited(store, audit, ["feed:read"], None, "new", "cli")
        assert store.authenticate(token) == live  # not revoked unrecorded
        assert [k.key_id for k in store.list() if k.revoked_at is None] == [live.key_id]
        assert (data / "audit.log").read_bytes() == before
        assert revoke_audited(store, audit, live.key_id, "cli")
        assert store.authenticate(token) is None
    finally:
        store.close()
        audit.close()
