"""PostgreSQL for the tests: the shared server (``FYP_TEST_POSTGRES_URL``, by default the
one on 127.0.0.1:5432, database ``test``), used in a schema of each test's own that is
dropped after it; and a server of a test's own (:class:`PostgresServer`) for the tests
that stop and start one. Not a test module."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest

SHARED_URL = os.environ.get("FYP_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


@contextmanager
def fresh_schema(unavailable: Callable[[str], NoReturn]) -> Iterator[str]:
    """The URL of a schema no one uses (created by the first store opened on it),
    dropped with everything in it after; or the test ends (skip here, failure under
    CI) when no server answers or psycopg is not installed."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install -e .)")
    try:
        admin = psycopg.connect(SHARED_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        unavailable(f"no PostgreSQL answers at {SHARED_URL} ({err}); set FYP_TEST_POSTGRES_URL")
    schema = f"fyp_test_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in SHARED_URL else "?"
    try:
        yield f"{SHARED_URL}{sep}schema={schema}"
    finally:
        with admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def location(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where a contract test parametrised by backend (ids ``sqlite``, ``postgresql``)
    opens its store: a directory, or the URL of a fresh schema (:func:`fresh_schema`,
    through the ``postgres_url`` fixture)."""
    if "postgresql" in request.node.callspec.id.split("-"):
        return request.getfixturevalue("postgres_url")
    return tmp_path


class Closable(Protocol):
    def close(self) -> None: ...


def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """The body of a contract suite's fixture parametrised by backend (``request.param``:
    a factory of a store at a :func:`location`): yields a function that opens (or
    reopens, as another process would) the store there; closes all it opened after."""
    factory: Callable[[Any], Closable] = request.param
    where = location(request, tmp_path)
    opened: list[Closable] = []

    def open_() -> Any:
        opened.append(factory(where))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """``sql`` run in the schema of the store URL ``url``."""
    import psycopg

    from fyp.storage.postgres.url import split_url

    parts = split_url(url)
    with psycopg.connect(parts.conninfo, options=f"-c search_path={parts.schema}") as conn:
        cur = conn.execute(sql.encode(), args)
        return cur.fetchall() if cur.description else []


PG_BIN = Path(os.environ.get("FYP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """A PostgreSQL server of the test's own (never the machine's shared one, which other
    work uses): ``initdb`` into a new temporary directory, ``pg_ctl`` on 127.0.0.1 and a
    free port; :meth:`stop` (immediate: no checkpoint, as a crash) and :meth:`start`
    again; :meth:`close` stops it and deletes its files. Run as ``postgres`` when the
    tests run as root (initdb refuses root), so the directory is not pytest's (0700)."""

    def __init__(self, unavailable: Callable[[str], NoReturn]) -> None:
        from server_process import free_port

        if not (PG_BIN / "initdb").is_file():
            unavailable(f"no PostgreSQL server binaries in {PG_BIN} (set FYP_TEST_PG_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="fyp-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.dir)
                unavailable("running as root and there is no postgres user to run initdb as")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        init = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "root", "--no-sync")
        if init.returncode != 0:
            shutil.rmtree(self.dir)
            unavailable(f"initdb failed: {init.stdout[-500:]}")
        self.start()

    @property
    def url(self) -> str:
        """The store URL of a schema in it (connect_timeout short: a test waits on it)."""
        return f"postgresql://root@127.0.0.1:{self.port}/postgres?schema=fyp&connect_timeout=2"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, str(PG_BIN / tool), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "server.log")
        done = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")
        assert done.returncode == 0, done.stdout + (self.dir / "server.log").read_text()

    def stop(self) -> None:
        done = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        assert done.returncode == 0, done.stdout

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
