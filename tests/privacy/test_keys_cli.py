"""``fyp keys``: create, list, revoke, and the audit trail they leave."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from typer.testing import CliRunner

from fyp.cli import app
from fyp.privacy.audit_log import AUDIT_FILE, AuditLog
from fyp.privacy.keys import KEYS_FILE, SCOPES, SqliteKeyStore

runner = CliRunner()


def _create(data_dir: Path, *args: str) -> tuple[str, str]:
    result = runner.invoke(app, ["keys", "create", "--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output
    assert "not be shown again" in result.output
    token = re.search(r"^token:\s+(\S+)$", result.output, re.M)
    key_id = re.search(r"^key id:\s+(\S+)$", result.output, re.M)
    assert token is not None and key_id is not None, result.output
    return key_id[1], token[1]


def test_create_list_revoke(tmp_path: Path) -> None:
    key_id, token = _create(
        tmp_path, "--scopes", "events:write,feed:read", "--scopes", "audit:read",
        "--region", "eu", "--label", "mobile app",
    )  # fmt: skip
    store = SqliteKeyStore(tmp_path / KEYS_FILE)
    key = store.authenticate(token)
    assert key is not None and key.key_id == key_id
    assert key.scopes == {"events:write", "feed:read", "audit:read"}
    assert (key.region, key.label) == ("eu", "mobile app")
    store.close()

    all_id, _ = _create(tmp_path, "--scopes", "all")
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.output and all_id in listed.output
    assert "mobile app" in listed.output and "eu" in listed.output
    assert token not in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 0, revoked.output
    store = SqliteKeyStore(tmp_path / KEYS_FILE)
    assert store.authenticate(token) is None
    by_id = {k.key_id: k for k in store.list()}
    assert by_id[key_id].revoked_at is not None
    assert by_id[all_id].scopes == set(SCOPES) and by_id[all_id].revoked_at is None
    store.close()

    again = runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "already revoked" in again.output
    unknown = runner.invoke(app, ["keys", "revoke", "k_0000000000", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 1 and "k_0000000000" in unknown.output


def test_unknown_scope_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--data-dir", str(tmp_path), "--scopes", "feed:read,feed:write"]
    )
    assert result.exit_code == 2
    assert "feed:write" in result.output and "events:write" in result.output
    assert not (tmp_path / KEYS_FILE).exists()  # nothing was created


def test_commands_on_an_empty_data_dir(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "no keys" in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", "k_0123456789", "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 1
    assert list(tmp_path.iterdir()) == []  # neither created a store


def test_audit_log_records_create_and_revoke_without_the_token(tmp_path: Path) -> None:
    key_id, token = _create(tmp_path, "--scopes", "feed:read", "--label", "tv")
    result = runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    log = AuditLog(tmp_path / AUDIT_FILE)
    records = [r for r in log.records() if r.action.startswith("key.")]
    log.close()
    assert [(r.action, r.actor, r.outcome) for r in records] == [
        ("key.create", "cli", "ok"),
        ("key.revoke", "cli", "ok"),
    ]
    assert records[0].details["key_id"] == key_id
    assert records[0].details["scopes"] == ["feed:read"]
    assert records[0].details["label"] == "tv"
    assert records[1].details["key_id"] == key_id
    secret = token.split("_", 3)[3]
    token_hash = hashlib.sha256(token.encode()).hexdigest().encode()
    audit_files = [p for p in tmp_path.iterdir() if p.name.startswith("audit.")]
    assert tmp_path / AUDIT_FILE in audit_files
    for path in tmp_path.iterdir():  # no file anywhere holds the token
        data = path.read_bytes()
        assert secret.encode() not in data and token.encode() not in data
        if path in audit_files:  # and the audit trail not even its hash
            assert token_hash not in data
