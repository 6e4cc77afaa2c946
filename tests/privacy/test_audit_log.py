"""The hash-chained audit log: the chain across reopens, and tampering caught at the right
line (a flipped byte, a deleted record, a deleted tail, a deleted head); repeated records
bounded per key and window; pages read through the index, whatever the log's size."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fyp.audit.commands import audit_app
from fyp.privacy.audit_index import STRIDE
from fyp.privacy.audit_log import (
    AUDIT_FILE,
    GENESIS,
    HEAD_FILE,
    INDEX_FILE,
    AuditLog,
    AuditRecord,
    Verification,
    encode,
    seal,
    verify,
)
from fyp.privacy.audit_repeats import REPEAT_CAP, Repeats

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


# --------------------------------------------------------------------------- repeats


def logged(data_dir: Path) -> list[AuditRecord]:
    with contextlib.closing(AuditLog(data_dir)) as log:
        return log.records()


class Clock:
    """A clock the test moves (ms)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_repeated_records_are_bounded_per_actor_and_window(tmp_path: Path) -> None:
    """Regression (issue 17): every refused request was one fsynced record, so any key
    could grow the log without bound. Now a key's repeats past the cap are counted, and
    each kind written once per window with its count; nothing counted is lost at close."""
    at = Clock(60_000 * 1_000)  # the start of a window
    log = AuditLog(tmp_path, clock=at, repeats=Repeats(window_ms=60_000, cap=3))
    asked: Counter[tuple[str, str]] = Counter()
    for window in range(2):
        for i in range(1_000):
            at.now = 60_000 * (1_000 + window) + i * 50  # 1,000 in 50 s
            actor, route = f"k_{i % 2}", ("/v1/feed", "/v1/users/{user_id}")[i % 3 == 0]
            log.append_repeated(
                "residency.refused",
                actor,
                outcome="refused",
                details={"method": "GET", "route": route},
                counts={"events_refused": 2},
            )
            asked[actor, route] += 1
    at.now += 60_000
    log.close()
    records = [r for r in logged(tmp_path) if r.action == "residency.refused"]
    # Per window and actor: the cap written as they came, plus one per route counted.
    assert len(records) == 2 * 2 * (3 + 2)
    told: Counter[tuple[str, str]] = Counter()
    for r in records:
        n = r.details.get("count", 1)
        told[r.actor, r.details["route"]] += n
        assert r.details["events_refused"] == 2 * n
        assert r.outcome == "refused" and r.subject is None
        if n > 1:
            assert r.details["first_ts"] <= r.details["last_ts"] <= r.ts
    assert told == asked
    assert verify(tmp_path) == Verification(True, len(records), None, None, None)


def test_counted_records_are_written_when_their_window_ends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, repeats=Repeats(window_ms=1_000, cap=1))
    written = [log.append_repeated("residency.refused", "k_1", outcome="refused") for _ in "abc"]
    assert written[0] is not None and written[1:] == [None, None]
    deadline = time.monotonic() + 5.0
    while verify(tmp_path).records < 2:  # the timer, not close, writes the count
        assert time.monotonic() < deadline, "the counted records were not written"
        time.sleep(0.05)
    *_, summary = logged(tmp_path)
    assert summary.details["count"] == 2
    log.close()
    assert verify(tmp_path).records == 2


def test_a_crash_loses_only_the_counts_of_the_current_window(tmp_path: Path) -> None:
    """kill -9 after more refusals than the cap: the first ones are on disk (fsynced before
    they were answered), the chain verifies, and the log takes appends again."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from fyp.privacy.audit_log import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "for _ in range(25):\n"
        "    log.append_repeated('residency.refused', 'k_1', outcome='refused')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert [r.details for r in logged(tmp_path)] == [{}] * REPEAT_CAP
    with contextlib.closing(AuditLog(tmp_path)) as log:
        log.append("key.revoke", "cli")
    assert verify(tmp_path) == Verification(True, REPEAT_CAP + 1, None, None, None)


def test_refusals_through_the_api_are_bounded(deployments: Any) -> None:
    """Regression (issue 17): 20,000 feed requests for unknown ids added 6.1 MB."""
    eu = deployments.start("eu")
    for i in range(150):
        resp = eu.client.get("/v1/feed", params={"user_id": f"nobody-{i}"})
        assert resp.status_code == 421
    for i in range(30):
        events = eu.events(f"stranger-{i}", 1)
        assert eu.client.post("/v1/events", json={"events": events}).status_code == 421
    eu.close()
    refused = [r for r in logged(eu.data_dir) if r.action == "residency.refused"]
    # Two kinds of request; a run may straddle one window's end.
    assert len(refused) <= 2 * (REPEAT_CAP + 2)
    by_route = Counter[str]()
    for r in refused:
        by_route[r.details["route"]] += r.details.get("count", 1)
    assert by_route == {"/v1/feed": 150, "/v1/events": 30}
    assert sum(r.details.get("events_refused", 0) for r in refused) == 60  # a view, a like
    assert verify(eu.data_dir).ok


# --------------------------------------------------------------------------- index


def bulk(data_dir: Path, n: int) -> list[AuditRecord]:
    """A valid log of ``n`` records, written at once (no fsync per record)."""
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = seal(
            {
                "seq": seq,
                "ts": T0 + seq,
                "action": "residency.refused",
                "actor": f"k_{seq % 7:08x}",
                "outcome": "refused",
                "subject": None,
                "details": {"method": "GET", "route": "/v1/feed", "pad": "x" * (seq % 40)},
                "prev": prev,
            }
        )
        records.append(record)
        prev = record.hash
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / AUDIT_FILE).write_bytes(b"".join(map(encode, records)))
    (data_dir / HEAD_FILE).write_text(json.dumps({"seq": n, "hash": prev}))
    return records


def bytes_read() -> int:
    """What this process has read so far, by any means (read, pread, mmap aside)."""
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["rchar"])


class Reads:
    """Bytes this process reads while in a ``with`` block."""

    def __enter__(self) -> Reads:
        self.bytes, self._start = 0, bytes_read()
        return self

    def __exit__(self, *_: object) -> None:
        self.bytes = bytes_read() - self._start


BIG = 20_000  # records: about 100 index blocks


def test_a_page_reads_its_block_not_the_log(tmp_path: Path) -> None:
    """Regression (issue 17): GET /v1/audit?limit=1 read the whole file."""
    records = bulk(tmp_path, BIG)
    size = (tmp_path / AUDIT_FILE).stat().st_size
    assert size > 50 * STRIDE
    with Reads() as opening:
        log = AuditLog(tmp_path)  # no index yet: built from a few bytes per block
    assert opening.bytes < size / 10
    for after in (0, 1, BIG // 2, BIG // 2 + 1, BIG - 1, BIG, BIG + 5):
        with Reads() as reads:
            page = log.page(after, 1)
        assert page == records[after : after + 1]
        assert reads.bytes <= 2 * STRIDE + 1024, after
    with Reads() as reads:
        assert log.page(12_345, 100) == records[12_345:12_445]
    assert reads.bytes <= 3 * STRIDE
    log.append("key.revoke", "cli")  # the index follows appends
    assert [r.seq for r in log.page(BIG, 10)] == [BIG + 1]
    log.close()
    with Reads() as reopening:
        AuditLog(tmp_path).close()  # with its index: its entries and the end of the log
    assert reopening.bytes < size / 10
    assert verify(tmp_path) == Verification(True, BIG + 1, None, None, None)


def test_get_audit_reads_the_page_not_the_log(deployments: Any) -> None:
    """Regression (issue 17): the route read and parsed the whole file for any page."""
    root = deployments.root / "data-eu"
    records = bulk(root, BIG)
    eu = deployments.start("eu")
    size = (root / AUDIT_FILE).stat().st_size
    for after in (0, BIG // 2, BIG - 1):
        with Reads() as reads:
            resp = eu.client.get("/v1/audit", params={"after_seq": after, "limit": 1})
        assert resp.status_code == 200
        assert [r["hash"] for r in resp.json()["records"]] == [records[after].hash]
        assert reads.bytes < size / 10, after
    with contextlib.closing(AuditLog(root)) as cli:  # another process appends
        cli.append("key.revoke", "cli")
    resp = eu.client.get("/v1/audit", params={"after_seq": BIG - 2, "limit": 3})
    assert [r["seq"] for r in resp.json()["records"]] == [BIG - 1, BIG, BIG + 1]
    assert resp.json()["records"][-1]["action"] == "key.revoke"


def index_bytes(data_dir: Path) -> bytes:
    return (data_dir / INDEX_FILE).read_bytes()


def rebuilt(data_dir: Path) -> bytes:
    """The index as it is built from the log alone."""
    (data_dir / INDEX_FILE).unlink()
    AuditLog(data_dir).close()
    return index_bytes(data_dir)


def pages_are_right(data_dir: Path, records: list[AuditRecord]) -> None:
    with contextlib.closing(AuditLog(data_dir)) as log:
        for after in (0, len(records) // 3, len(records) - 1):
            assert log.page(after, 3) == records[after : after + 3]


def test_the_index_is_rebuilt_when_missing_torn_or_stale(tmp_path: Path) -> None:
    records = bulk(tmp_path, 5_000)
    AuditLog(tmp_path).close()
    built = index_bytes(tmp_path)
    assert len(built) == 16 * len({o // STRIDE for o in offsets(tmp_path)})
    # Deleted: built again, the same.
    assert rebuilt(tmp_path) == built
    # A torn last entry (a crash mid-write of the index): cut, then caught up.
    (tmp_path / INDEX_FILE).write_bytes(built[:-7])
    pages_are_right(tmp_path, records)
    assert index_bytes(tmp_path) == built
    # Behind the log (a crash between the log's fsync and the entry): caught up.
    (tmp_path / INDEX_FILE).write_bytes(built[:16])
    pages_are_right(tmp_path, records)
    assert index_bytes(tmp_path) == built
    # Entries the log does not bear out (garbage, or a log rewritten under it): rebuilt.
    (tmp_path / INDEX_FILE).write_bytes(built[:16] + bytes(range(16)) + built[32:])
    pages_are_right(tmp_path, records)
    assert index_bytes(tmp_path) == built
    # Each entry true, but out of order (a page would bisect them wrongly): rebuilt.
    (tmp_path / INDEX_FILE).write_bytes(built[16:32] + built[:16] + built[32:])
    pages_are_right(tmp_path, records)
    assert index_bytes(tmp_path) == built
    # The log cut back (a deleted tail, or a restore): entries past it dropped, rebuilt.
    kept = records[:2_000]
    (tmp_path / AUDIT_FILE).write_bytes(b"".join(map(encode, kept)))
    pages_are_right(tmp_path, kept)
    assert index_bytes(tmp_path) == rebuilt(tmp_path)
    assert len(index_bytes(tmp_path)) < len(built)


def offsets(data_dir: Path) -> list[int]:
    """The offset of each line of the log."""
    data, found = (data_dir / AUDIT_FILE).read_bytes(), [0]
    found += [i + 1 for i, b in enumerate(data[:-1]) if b == 0x0A]
    return found


def test_a_torn_last_record_leaves_the_index_right(tmp_path: Path) -> None:
    records = bulk(tmp_path, 3_000)
    AuditLog(tmp_path).close()
    built = index_bytes(tmp_path)
    nxt = seal(
        {
            **{k: getattr(records[-1], k) for k in ("ts", "action", "actor", "outcome")},
            "seq": 3_001,
            "subject": None,
            "details": {"pad": "y" * STRIDE},
            "prev": records[-1].hash,
        }
    )
    # A crash mid-append: a record long enough to start a block, torn in the next one.
    with (tmp_path / AUDIT_FILE).open("ab") as f:
        f.write(encode(nxt)[: STRIDE + 10])
    with contextlib.closing(AuditLog(tmp_path)) as log:  # drops it
        assert log.page(2_998, 10) == records[-2:]
        assert index_bytes(tmp_path) == built
        more = log.append("key.create", "cli", details={"pad": "z" * (2 * STRIDE)})
        assert log.page(3_000, 10) == [more]
        assert log.page(2_999, 1) == records[-1:]
    assert index_bytes(tmp_path) == rebuilt(tmp_path)
    assert verify(tmp_path) == Verification(True, 3_001, None, None, None)
