"""PostgreSQL for the tests: the shared server (``FYP_TEST_POSTGRES_URL``, by default the
one on 127.0.0.1:5432, database ``test``), used in a schema of each test's own that is
dropped after it. Not a test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

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


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """``sql`` run in the schema of the store URL ``url``."""
    import psycopg

    from fyp.storage.postgres.url import split_url

    parts = split_url(url)
    with psycopg.connect(parts.conninfo, options=f"-c search_path={parts.schema}") as conn:
        cur = conn.execute(sql.encode(), args)
        return cur.fetchall() if cur.description else []
