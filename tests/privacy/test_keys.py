"""API keys: tokens authenticate only while live, and are never written down.

The contract runs on every backend (``IMPLEMENTATIONS``: keys.db, and a PostgreSQL schema
of the test's own); what only a file has (its bytes, SQLite's statements) is tested on
SQLite alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fyp.privacy.keys import (
    KEYS_FILE,
    SCOPES,
    ApiKey,
    KeyRefresher,
    KeyStore,
    SqliteKeyStore,
    UnknownScopeError,
)
from postgres_servers import location

NOW = 1_750_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pg_keys(url: str, **options: Any) -> KeyStore:
    from fyp.storage.postgres.database import Database
    from fyp.storage.postgres.keys import PgKeyStore

    db = Database(url, pool_size=2).attach()  # a pool of its own: another process's
    try:
        return PgKeyStore(db, **options)
    finally:
        db.release()


IMPLEMENTATIONS = [
    pytest.param(lambda where, **o: SqliteKeyStore(where / KEYS_FILE, **o), id="sqlite"),
    pytest.param(pg_keys, id="postgresql"),
]
OpenKeys = Callable[..., KeyStore]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenKeys]:
    """Opens the store kept at this test's location (again: as another process would)."""
    factory = request.param
    where = location(request, tmp_path)
    opened: list[KeyStore] = []

    def open_(**options: Any) -> KeyStore:
        opened.append(factory(where, **options))
        return opened[-1]

    yield open_
    for keys in opened:
        keys.close()


@pytest.fixture
def store(open_keys: OpenKeys) -> KeyStore:
    return open_keys()


def test_created_key_authenticates(store: KeyStore) -> None:
    key, token = store.create(["feed:read", "events:write"], "eu", "app", NOW)
    assert token.startswith(f"fyp_{key.key_id}_")
    assert key.key_id.startswith("k_") and len(key.key_id) == 12
    assert all(c in "0123456789abcdef" for c in key.key_id[2:])
    assert store.authenticate(token) == key
    assert key.scopes == {"feed:read", "events:write"}
    assert (key.region, key.label, key.created_at, key.revoked_at) == ("eu", "app", NOW, None)
    assert key.allows("feed:read") and not key.allows("users:admin")


def test_authenticates_after_reopen(open_keys: OpenKeys) -> None:
    first = open_keys()
    key, token = first.create(SCOPES, None, "", NOW)
    first.close()
    assert open_keys().authenticate(token) == key


def test_wrong_tokens_are_refused(store: KeyStore) -> None:
    key, token = store.create(["feed:read"], None, "", NOW)
    other, _ = store.create(["feed:read"], None, "", NOW)
    for i in range(len(token)):
        changed = "A" if token[i] != "A" else "B"
        assert store.authenticate(token[:i] + changed + token[i + 1 :]) is None, i
    secret = token.split("_", 3)[3]
    unknown = "k_" + ("0" if key.key_id[2] != "0" else "1") + key.key_id[3:]
    for bad in (
        "",
        "garbage",
        "fyp_",
        "fyp_k_",
        f"fyp_{key.key_id}",
        f"fyp_{key.key_id}_",
        f"fyp_{unknown}_{secret}",  # an id no key has
        f"fyp_{other.key_id}_{secret}",  # a real id with another key's secret
        token + "x",
        token[:-1],
        " " + token,
        token.upper(),
        "fyp_" + "é" * 300,
        "x" * 100_000,
    ):
        assert store.authenticate(bad) is None, bad


def test_revoked_key_is_refused(store: KeyStore) -> None:
    key, token = store.create(["feed:read"], None, "", NOW)
    assert store.revoke(key.key_id, NOW + 1)
    assert store.authenticate(token) is None
    assert not store.revoke(key.key_id, NOW + 2)  # already revoked
    assert not store.revoke("k_0000000000", NOW + 2)  # no such key
    (listed,) = store.list()
    assert listed.revoked_at == NOW + 1 and not listed.allows("feed:read")


def test_revocation_by_another_process_takes_effect_within_the_recheck(
    open_keys: OpenKeys,
) -> None:
    """How quickly: a process trusts a key it has cached for ``recheck_s`` (2 s on
    SQLite, 1 s on PostgreSQL) and then asks whether the keys changed, so every process
    refuses a key revoked elsewhere within that."""
    clock = FakeClock()
    servers = [open_keys(clock=clock, recheck_s=1.0) for _ in range(2)]
    cli = open_keys()
    # A key the CLI creates while the servers run works at once (a cache miss reads it).
    key, token = cli.create(["feed:read"], None, "", NOW)
    other, other_token = cli.create(["feed:read"], None, "", NOW)
    assert all(s.authenticate(token) == key for s in servers)
    assert cli.revoke(key.key_id, NOW + 1)
    clock.t += 0.5  # within the re-check interval: the cached key still answers
    assert all(s.authenticate(token) == key for s in servers)
    clock.t += 0.6  # past it
    assert all(s.authenticate(token) is None for s in servers)
    assert all(s.authenticate(other_token) == other for s in servers)
    epoch = cli.revoke_tokens(other.key_id)
    clock.t += 1.1
    assert epoch == 1 and all(
        s.lookup(other.key_id) == replace(other, token_epoch=1) for s in servers
    )


def test_unknown_key_ids_read_the_keys_only_after_another_process_wrote(
    open_keys: OpenKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown id costs a look at the backend's version (on PostgreSQL one row), not
    a read of the keys; those are read again once, after another process wrote."""
    server = open_keys()
    key, token = server.create(["feed:read"], None, "", NOW)
    full_reads: list[int] = []
    real = type(server)._rows

    def counted(self: KeyStore, ordered: bool = False) -> Any:
        full_reads.append(1)
        return real(self, ordered)

    monkeypatch.setattr(type(server), "_rows", counted)
    secret = token.split("_", 3)[3]
    server.authenticate(f"fyp_k_{0:010x}_{secret}")  # (our own create may count as a change)
    full_reads.clear()
    for i in range(1, 50):
        assert server.authenticate(f"fyp_k_{i:010x}_{secret}") is None
    assert server.authenticate(token) == key
    assert full_reads == []
    cli = open_keys()
    made, made_token = cli.create(["audit:read"], None, "", NOW)
    full_reads.clear()
    assert server.authenticate(made_token) == made
    for i in range(1, 50):
        assert server.authenticate(f"fyp_k_{i:010x}_{secret}") is None
    assert full_reads == [1]


def test_unknown_key_ids_are_answered_without_a_lookup(tmp_path: Path) -> None:
    """Before: every unknown key id (a guess, a flood of them) read keys.db. Now only a
    write by another process makes the store read the table again, and a key created
    there still works at once."""
    server = SqliteKeyStore(tmp_path / KEYS_FILE)
    key, token = server.create(["feed:read"], None, "", NOW)
    statements: list[str] = []
    server._conn.set_trace_callback(statements.append)
    secret = token.split("_", 3)[3]
    for i in range(100):
        assert server.authenticate(f"fyp_k_{i:010x}_{secret}") is None
    assert server.authenticate(token) == key
    assert not [s for s in statements if "api_keys" in s], statements[:3]
    cli = SqliteKeyStore(tmp_path / KEYS_FILE)
    made, made_token = cli.create(["audit:read"], None, "", NOW)
    assert server.authenticate(made_token) == made
    assert len([s for s in statements if "api_keys" in s]) == 1  # read once, for all
    for i in range(100):
        assert server.authenticate(f"fyp_k_{i:010x}_{secret}") is None
    assert len([s for s in statements if "api_keys" in s]) == 1
    # Told not to ask (the caller already failed too often): a new id is unknown, and
    # SQLite is not even asked whether another process made it.
    later, later_token = cli.create(["audit:read"], None, "", NOW)
    statements.clear()
    assert server.authenticate(later_token, ask_about_unknown=False) is None
    assert statements == []
    assert server.authenticate(later_token) == later
    cli.close()
    server.close()


def test_token_is_never_stored(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / KEYS_FILE)
    tokens = [store.create(SCOPES, "eu", f"label {i}", NOW + i)[1] for i in range(5)]
    files = [p for p in tmp_path.iterdir() if p.name.startswith(KEYS_FILE)]
    assert tmp_path / f"{KEYS_FILE}-wal" in files  # the rows are there, not yet checkpointed
    for path in files:
        data = path.read_bytes()
        for token in tokens:
            assert token.encode() not in data
            assert token.split("_", 3)[3].encode() not in data  # nor the secret part alone
    store.close()  # the last close checkpoints the WAL into the main file
    data = (tmp_path / KEYS_FILE).read_bytes()
    assert b"label 0" in data  # the check above can see what the file holds
    for token in tokens:
        assert token.split("_", 3)[3].encode() not in data


def test_unknown_or_no_scopes_are_rejected(store: KeyStore) -> None:
    with pytest.raises(UnknownScopeError, match="feed:write") as e:
        store.create(["feed:read", "feed:write"], None, "", NOW)
    for scope in SCOPES:
        assert scope in str(e.value)
    with pytest.raises(UnknownScopeError):
        store.create([], None, "", NOW)
    assert store.list() == []


def test_list_is_oldest_first(store: KeyStore) -> None:
    made = [store.create(["feed:read"], None, str(i), NOW + i)[0] for i in (0, 1, 2)]
    same_ms = [store.create(["feed:read"], None, s, NOW + 5)[0] for s in "ab"]
    store.revoke(made[1].key_id, NOW + 10)
    listed = store.list()
    assert [k.key_id for k in listed] == [k.key_id for k in made + same_ms]
    assert isinstance(listed[0], ApiKey) and listed[1].revoked_at == NOW + 10


def test_in_memory_store() -> None:
    store = SqliteKeyStore(Path(":memory:"))
    key, token = store.create(["audit:read"], None, "", NOW)
    assert store.authenticate(token) == key
    store.close()
    assert not Path(":memory:").exists()


def test_a_refreshed_cache_answers_without_the_backend_and_still_sees_revocations(
    open_keys: OpenKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:meth:`KeyStore.refresh` (what :class:`KeyRefresher` runs off the request path)
    keeps the entries fresh, so a request past ``recheck_s`` asks the backend nothing;
    a revocation elsewhere is in force after the next refresh; and entries a refresh
    could not confirm go stale, so a request checks them itself, as without it."""
    clock = FakeClock()
    server = open_keys(clock=clock, recheck_s=1.0)
    cli = open_keys()
    key, token = cli.create(["feed:read"], None, "", NOW)
    assert server.authenticate(token) == key
    asked: list[int] = []
    real = type(server)._data_version

    def counted(self: KeyStore) -> int:
        asked.append(1)
        return real(self)

    monkeypatch.setattr(type(server), "_data_version", counted)
    for _ in range(5):  # a refresh every half recheck, requests between
        clock.t += 0.5
        server.refresh()
        assert server.authenticate(token) == key
    assert len(asked) == 5  # the refreshes'; no request asked
    assert cli.revoke(key.key_id, NOW + 1)
    clock.t += 0.5
    server.refresh()
    assert server.authenticate(token) is None  # (the refresh read the keys again)

    other, other_token = cli.create(["feed:read"], None, "", NOW)
    assert server.authenticate(other_token) == other  # (a miss asks the backend)
    refresher = KeyRefresher(server, every_s=0.01)

    def down(self: KeyStore) -> int:
        asked.append(1)
        raise OSError("the backend is down")

    monkeypatch.setattr(type(server), "_data_version", down)
    refresher.start()
    try:
        deadline = time.monotonic() + 10
        while refresher.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert refresher.error is not None and "down" in refresher.error
    finally:
        refresher.stop()
    clock.t += 1.1  # not confirmed since: the request asks itself (and meets the fault)
    with pytest.raises(OSError):
        server.authenticate(other_token)
