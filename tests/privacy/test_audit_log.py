"""The hash-chained audit log: the chain across reopens, and tampering caught at the right
line (a flipped byte, a deleted record, a deleted tail, a deleted head)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fyp.audit.commands import audit_app
from fyp.privacy.audit_log import (
    AUDIT_FILE,
    HEAD_FILE,
    AuditLog,
    AuditRecord,
    Verification,
    verify,
)

T0 = 1_750_000_000_000
N = 5


def clock() -> Callable[[], int]:
    return itertools.count(T0).__next__


def write(data_dir: Path, n: int = N, start: int = 0) -> list[AuditRecord]:
    log = AuditLog(data_dir / AUDIT_FILE, clock=clock())
    try:
        return [
            log.append(
                "user.read",
                f"k_{i:08x}",
                subject=f"s_{i}",
                details={"route": "/v1/users/{id}", "n": i, "note": "café ü"},
            )
            for i in range(start, start + n)
        ]
    finally:
        log.close()


def lines(data_dir: Path) -> list[bytes]:
    return (data_dir / AUDIT_FILE).read_bytes().splitlines(keepends=True)


def put_lines(data_dir: Path, new: list[bytes]) -> None:
    (data_dir / AUDIT_FILE).write_bytes(b"".join(new))


def test_append_then_reopen_continues_the_chain(tmp_path: Path) -> None:
    first = write(tmp_path, 3)
    assert [r.seq for r in first] == [1, 2, 3]
    assert first[0].prev == "0" * 64
    assert [r.prev for r in first[1:]] == [r.hash for r in first[:-1]]
    more = write(tmp_path, 2, start=3)
    assert [(r.seq, r.prev) for r in more] == [(4, first[-1].hash), (5, more[0].hash)]
    log = AuditLog(tmp_path / AUDIT_FILE)
    assert log.records() == first + more
    log.close()
    assert verify(tmp_path) == Verification(True, 5, None, None, None)
    assert json.loads((tmp_path / HEAD_FILE).read_text()) == {"seq": 5, "hash": more[-1].hash}


def test_records_are_json_lines_hashed_over_their_canonical_form(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)  # a data dir stands for its audit.log
    record = log.append("key.create", "cli", details={"scopes": ("read", "write"), 7: None})
    log.close()
    assert record.details == {"scopes": ["read", "write"], "7": None}  # as read back
    (line,) = lines(tmp_path)
    obj = json.loads(line)
    assert " ".join(obj) == "seq ts action actor outcome subject details prev hash"
    assert obj == {**obj, "seq": 1, "action": "key.create", "outcome": "ok", "subject": None}
    body = {k: v for k, v in obj.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert obj["hash"] == hashlib.sha256(canonical.encode()).hexdigest() == record.hash


def test_a_data_dir_without_a_log_verifies_empty(tmp_path: Path) -> None:
    assert verify(tmp_path) == Verification(True, 0, None, None, None)
    AuditLog(tmp_path / AUDIT_FILE).close()
    assert verify(tmp_path) == Verification(True, 0, None, None, None)


@pytest.mark.parametrize("k", [1, 3, N])
def test_any_flipped_byte_fails_at_its_line(tmp_path: Path, k: int) -> None:
    write(tmp_path)
    original = lines(tmp_path)
    for pos, mask in itertools.product(range(len(original[k - 1])), (0x01, 0x80)):
        broken = bytearray(original[k - 1])
        broken[pos] ^= mask
        put_lines(tmp_path, [*original[: k - 1], bytes(broken), *original[k:]])
        result = verify(tmp_path)
        assert not result.ok and result.bad_line == k, (pos, mask, result)
        assert result.records == k - 1
    put_lines(tmp_path, original)
    assert verify(tmp_path).ok


def test_the_reasons_name_what_broke(tmp_path: Path) -> None:
    write(tmp_path)
    original = lines(tmp_path)
    edited = original[1].replace(b'"n":1', b'"n":9')
    put_lines(tmp_path, [original[0], edited, *original[2:]])
    assert verify(tmp_path) == Verification(False, 1, 2, None, "hash does not match its contents")
    put_lines(tmp_path, [original[0], b"\xff" + original[1], *original[2:]])
    assert verify(tmp_path).reason == "not valid UTF-8"
    put_lines(tmp_path, [original[0], b"{" + original[1], *original[2:]])
    assert verify(tmp_path).reason == "not valid JSON"


@pytest.mark.parametrize("k", [1, 3])
def test_a_deleted_record_fails_at_the_one_after_it(tmp_path: Path, k: int) -> None:
    write(tmp_path)
    original = lines(tmp_path)
    put_lines(tmp_path, original[: k - 1] + original[k:])
    result = verify(tmp_path)
    assert (result.ok, result.records, result.bad_line, result.bad_seq) == (False, k - 1, k, k + 1)
    assert result.reason == f"seq {k + 1} follows {k - 1} (a record is missing)"


def test_swapped_records_fail(tmp_path: Path) -> None:
    write(tmp_path)
    a, b, c, *rest = lines(tmp_path)
    put_lines(tmp_path, [a, c, b, *rest])
    assert verify(tmp_path).bad_line == 2


def test_a_deleted_tail_fails_on_the_head_and_stays_visible(tmp_path: Path) -> None:
    write(tmp_path)
    put_lines(tmp_path, lines(tmp_path)[:-2])
    result = verify(tmp_path)
    assert (result.ok, result.records, result.bad_line) == (False, N - 2, None)
    assert result.reason == (
        f"the file ends at seq {N - 2} but audit.head records seq {N} "
        "(records were deleted from the end)"
    )
    # The next append rewrites the head; it must not launder the deletion.
    write(tmp_path, 1)
    result = verify(tmp_path)
    assert (result.ok, result.bad_line, result.bad_seq) == (False, N - 1, N + 1)


def test_a_missing_head_fails_and_stays_visible(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / HEAD_FILE).unlink()
    assert verify(tmp_path) == Verification(False, N, None, None, "audit.head is missing")
    write(tmp_path, 1)
    result = verify(tmp_path)
    assert (result.ok, result.bad_line, result.bad_seq) == (False, N + 1, N + 1)
    assert result.reason == f"prev does not match the hash of record {N}"


def test_a_rewritten_log_disagrees_with_the_head(tmp_path: Path) -> None:
    write(tmp_path / "real")
    write(tmp_path / "forged", start=100)  # a different chain of the same length
    (tmp_path / "real" / AUDIT_FILE).write_bytes((tmp_path / "forged" / AUDIT_FILE).read_bytes())
    result = verify(tmp_path / "real")
    assert (result.ok, result.bad_line, result.bad_seq) == (False, N, N)
    assert "audit.head" in (result.reason or "")


def test_an_interrupted_write_is_dropped_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, 3)
    good = (tmp_path / AUDIT_FILE).read_bytes()
    # A whole unacknowledged record but its newline, as a crash before the fsync leaves it.
    partial = lines(tmp_path)[-1][:-1].replace(b'"seq":3', b'"seq":4')
    for tail in (b'{"seq":4,"ts":17', partial):
        (tmp_path / AUDIT_FILE).write_bytes(good + tail)
        assert not verify(tmp_path).ok  # until the log is reopened
        with caplog.at_level(logging.WARNING, logger="fyp.privacy.audit_log"):
            log = AuditLog(tmp_path / AUDIT_FILE)
        assert "interrupted write" in caplog.text
        assert (tmp_path / AUDIT_FILE).read_bytes() == good
        assert verify(tmp_path) == Verification(True, 3, None, None, None)
        log.close()
    write(tmp_path, 1)
    assert verify(tmp_path).records == 4


def test_a_broken_log_is_not_repaired_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path)
    original = lines(tmp_path)
    last = original[-1][:-1] + b"x"  # the newline of an acknowledged record, flipped
    tampered = [original[0], original[1].replace(b'"n":1', b'"n":2'), *original[2:-1], last]
    put_lines(tmp_path, tampered)
    with caplog.at_level(logging.ERROR, logger="fyp.privacy.audit_log"):
        log = AuditLog(tmp_path / AUDIT_FILE)
    assert "does not verify" in caplog.text and "lost its newline" in caplog.text
    log.append("key.revoke", "cli")
    log.close()
    assert (tmp_path / AUDIT_FILE).read_bytes().startswith(b"".join(tampered))
    assert verify(tmp_path).bad_line == 2


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    # Two logs on one file stand in for two processes: flock is per open file.
    logs = [AuditLog(tmp_path / AUDIT_FILE), AuditLog(tmp_path / AUDIT_FILE)]

    def work(log: AuditLog, i: int) -> None:
        for j in range(25):
            log.append("moderation", f"k_{i}", details={"j": j})

    threads = [threading.Thread(target=work, args=(logs[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    assert verify(tmp_path) == Verification(True, 200, None, None, None)
    with contextlib.closing(AuditLog(tmp_path)) as log:
        assert [r.seq for r in log.records()] == list(range(1, 201))


def test_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = AuditLog(None, clock=clock())
    a = log.append("residency.refused", "system", outcome="refused", details={"region": "eu"})
    b = log.append("user.export", "k_ab12cd34", subject="s_1")
    assert log.records() == [a, b]
    assert (a.seq, a.ts, b.seq, b.ts, b.prev) == (1, T0, 2, T0 + 1, a.hash)
    with pytest.raises(ValueError, match="outcome"):
        log.append("user.erase", "cli", outcome="maybe")
    with pytest.raises(TypeError):
        log.append("user.erase", "cli", details={"x": object()})
    log.close()
    with pytest.raises(RuntimeError):
        log.append("user.erase", "cli")
    assert list(tmp_path.iterdir()) == []


def cli() -> typer.Typer:
    """``fyp`` as cli.py registers the audit commands (``fyp audit verify``)."""
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    return app


def test_verify_command(tmp_path: Path) -> None:
    args = ["audit", "verify", "--data-dir", str(tmp_path)]
    write(tmp_path)
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert f"audit log OK: {N} records, chain intact" in result.output
    original = lines(tmp_path)
    put_lines(tmp_path, [*original[:2], original[2].replace(b'"n":2', b'"n":7'), *original[3:]])
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 1
    assert "line 3" in result.output and "hash does not match its contents" in result.output
    result = CliRunner().invoke(cli(), ["audit", "verify", "--data-dir", str(tmp_path / "no")])
    assert result.exit_code == 1 and "no data dir" in result.output
