"""User tokens' signing and their key's token epoch (the HTTP side: tests/api/test_tokens.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli import app
from fyp.privacy.audit_log import AUDIT_FILE, AuditLog
from fyp.privacy.keys import KEYS_FILE, SqliteKeyStore
from fyp.privacy.pseudonym import Pseudonyms
from fyp.privacy.tokens import TokenError, TokenSigner, UserToken, check

NOW = 1_700_000_000_000


def test_a_token_says_what_it_was_issued_for_and_is_checked(tmp_path: Path) -> None:
    keys = SqliteKeyStore(tmp_path / KEYS_FILE)
    key, _ = keys.create(["tokens:issue", "feed:read"], None, "", NOW)
    signer = TokenSigner.of(Pseudonyms(b"0123456789abcdef"))
    token = signer.read(signer.issue(key, "ü/ser 1", NOW - 7, NOW + 1000, NOW + 5000))
    assert token == UserToken(key.key_id, "ü/ser 1", 0, NOW - 7, NOW + 1000, NOW + 5000)
    assert check(token, keys.lookup(key.key_id), NOW + 999) == key
    with pytest.raises(TokenError, match="expired"):
        check(token, key, NOW + 1000)
    assert keys.revoke_tokens(key.key_id) == 1
    with pytest.raises(TokenError, match="revoked the tokens"):
        check(token, keys.lookup(key.key_id), NOW)
    assert keys.revoke(key.key_id, NOW)
    assert keys.revoke_tokens(key.key_id) is None  # a revoked key has nothing left to revoke
    with pytest.raises(TokenError, match="is revoked"):
        check(token, keys.lookup(key.key_id), NOW)
    assert keys.lookup("k_0000000000") is None and keys.lookup("not an id") is None
    keys.close()


def test_the_signing_secret_is_the_deployments_and_not_the_pseudonym_secret() -> None:
    secret = b"0123456789abcdef"
    derived = Pseudonyms(secret).subkey("user-tokens-v1")
    assert derived != secret and len(derived) == 32
    assert derived == Pseudonyms(secret).subkey("user-tokens-v1")
    assert derived != Pseudonyms(b"fedcba9876543210").subkey("user-tokens-v1")


def test_a_keys_db_from_before_tokens_opens_at_epoch_0(tmp_path: Path) -> None:
    path = tmp_path / KEYS_FILE
    keys = SqliteKeyStore(path)
    key, secret = keys.create(["feed:read"], None, "old", NOW)
    keys.close()
    with sqlite3.connect(path) as conn:  # the table as it was made before tokens
        conn.execute("ALTER TABLE api_keys DROP COLUMN token_epoch")
    keys = SqliteKeyStore(path)
    try:
        found = keys.authenticate(secret)
        assert found is not None and found.token_epoch == 0
        assert keys.revoke_tokens(key.key_id) == 1
    finally:
        keys.close()


def test_fyp_keys_revoke_tokens_moves_the_epoch_and_is_audited(tmp_path: Path) -> None:
    keys = SqliteKeyStore(tmp_path / KEYS_FILE)
    key, secret = keys.create(["tokens:issue"], None, "", NOW)
    keys.close()
    args = ["keys", "revoke-tokens", key.key_id, "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    keys = SqliteKeyStore(tmp_path / KEYS_FILE)
    try:
        found = keys.authenticate(secret)  # the key itself still works
        assert found is not None and found.token_epoch == 1
    finally:
        keys.close()
    audit = AuditLog(tmp_path / AUDIT_FILE)
    record = audit.records()[-1]
    audit.close()
    assert (record.action, record.details) == (
        "key.revoke_tokens",
        {"key_id": key.key_id, "epoch": 1},
    )
    unknown = CliRunner().invoke(
        app, ["keys", "revoke-tokens", "k_0000000000", "--data-dir", str(tmp_path)]
    )
    assert unknown.exit_code == 1 and "k_0000000000" in unknown.output
