"""API keys: tokens authenticate only while live, and are never written down."""

from __future__ import annotations

from pathlib import Path

import pytest

from fyp.privacy.keys import KEYS_FILE, SCOPES, ApiKey, SqliteKeyStore, UnknownScopeError

NOW = 1_750_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> SqliteKeyStore:
    return SqliteKeyStore(tmp_path / KEYS_FILE)


def test_created_key_authenticates(store: SqliteKeyStore) -> None:
    key, token = store.create(["feed:read", "events:write"], "eu", "app", NOW)
    assert token.startswith(f"fyp_{key.key_id}_")
    assert key.key_id.startswith("k_") and len(key.key_id) == 12
    assert all(c in "0123456789abcdef" for c in key.key_id[2:])
    assert store.authenticate(token) == key
    assert key.scopes == {"feed:read", "events:write"}
    assert (key.region, key.label, key.created_at, key.revoked_at) == ("eu", "app", NOW, None)
    assert key.allows("feed:read") and not key.allows("users:admin")


def test_authenticates_after_reopen(tmp_path: Path) -> None:
    first = SqliteKeyStore(tmp_path / KEYS_FILE)
    key, token = first.create(SCOPES, None, "", NOW)
    first.close()
    second = SqliteKeyStore(tmp_path / KEYS_FILE)
    assert second.authenticate(token) == key
    second.close()


def test_wrong_tokens_are_refused(store: SqliteKeyStore) -> None:
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


def test_revoked_key_is_refused(store: SqliteKeyStore) -> None:
    key, token = store.create(["feed:read"], None, "", NOW)
    assert store.revoke(key.key_id, NOW + 1)
    assert store.authenticate(token) is None
    assert not store.revoke(key.key_id, NOW + 2)  # already revoked
    assert not store.revoke("k_0000000000", NOW + 2)  # no such key
    (listed,) = store.list()
    assert listed.revoked_at == NOW + 1 and not listed.allows("feed:read")


def test_revocation_by_another_process_takes_effect(tmp_path: Path) -> None:
    clock = FakeClock()
    server = SqliteKeyStore(tmp_path / KEYS_FILE, clock=clock)
    cli = SqliteKeyStore(tmp_path / KEYS_FILE)
    # A key the CLI creates while the server runs works at once (a cache miss reads it).
    key, token = cli.create(["feed:read"], None, "", NOW)
    assert server.authenticate(token) == key
    assert cli.revoke(key.key_id, NOW + 1)
    clock.t += 2.5  # past the store's re-check interval
    assert server.authenticate(token) is None
    cli.close()
    server.close()


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


def test_unknown_or_no_scopes_are_rejected(store: SqliteKeyStore) -> None:
    with pytest.raises(UnknownScopeError, match="feed:write") as e:
        store.create(["feed:read", "feed:write"], None, "", NOW)
    for scope in SCOPES:
        assert scope in str(e.value)
    with pytest.raises(UnknownScopeError):
        store.create([], None, "", NOW)
    assert store.list() == []


def test_list_is_oldest_first(store: SqliteKeyStore) -> None:
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
