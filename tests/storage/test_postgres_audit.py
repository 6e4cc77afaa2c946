"""The audit log in PostgreSQL (fyp.storage.postgres.audit): one chain however many
processes append at once, verified by the file log's own checks; tampering with a row,
deleting one or the tail caught; ``fyp audit verify`` and ``fyp audit report`` reading
the schema when given the store URL; an engine on PostgreSQL stores auditing there."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

import fyp
from fyp.audit.commands import audit_app
from fyp.privacy.audit_log import AuditLog, Verification
from fyp.storage.backends import open_audit_log, verify_audit_log
from postgres_servers import query

T0 = 1_750_000_000_000
PER_WRITER = 40

# One process appending: its own connection pool, started before the others are told to
# go, so that the appends run at once.
_WRITER = """
import sys, time
from pathlib import Path
from fyp.storage.backends import open_audit_log
url, actor, n, go = sys.argv[1:]
log = open_audit_log(url, Path("."))
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.002)
for j in range(int(n)):
    log.append("moderation", actor, details={"j": j, "note": "café"})
log.close()
"""


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    return app


def write(url: str, n: int) -> list[Any]:
    with contextlib.closing(open_audit_log(url, Path("."))) as log:
        return [
            log.append("user.read", f"k_{i}", subject=f"s_{i}", details={"n": i}) for i in range(n)
        ]


def test_appends_chain_across_reopens_and_read_back_as_written(postgres_url: str) -> None:
    first = write(postgres_url, 3)
    second = write(postgres_url, 2)
    assert [r.seq for r in first + second] == [1, 2, 3, 4, 5]
    assert second[0].prev == first[-1].hash
    with contextlib.closing(open_audit_log(postgres_url, Path("."))) as log:
        assert log.records() == first + second
        assert log.page(2, 2) == first[2:] + second[:1]
    assert verify_audit_log(postgres_url, Path(".")) == Verification(True, 5, None, None, None)


def test_processes_and_threads_appending_at_once_keep_one_chain(
    postgres_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(fyp.__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, postgres_url, f"proc{i}", str(PER_WRITER), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    logs = [open_audit_log(postgres_url, tmp_path) for _ in range(2)]  # a pool each

    def work(log: AuditLog, actor: str) -> None:
        go_wait.wait()
        for j in range(PER_WRITER):
            log.append("moderation", actor, details={"j": j, "note": "café"})

    go_wait = threading.Event()
    threads = [
        threading.Thread(target=work, args=(log, f"thread{i}")) for i, log in enumerate(logs)
    ]
    for t in threads:
        t.start()
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        go_wait.set()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    for t in threads:
        t.join()
    for log in logs:
        log.close()

    total = 5 * PER_WRITER
    assert verify_audit_log(postgres_url, tmp_path) == Verification(True, total, None, None, None)
    with contextlib.closing(open_audit_log(postgres_url, tmp_path)) as log:
        records = log.records()
    assert [r.seq for r in records] == list(range(1, total + 1))
    by_actor: dict[str, list[int]] = {}
    for r in records:
        by_actor.setdefault(r.actor, []).append(r.details["j"])
    assert by_actor == {a: list(range(PER_WRITER)) for a in by_actor} and len(by_actor) == 5
    # They did append at once: the chain switches writer far more often than once each.
    switches = sum(a.actor != b.actor for a, b in itertools.pairwise(records))
    assert switches > 5, switches


def test_tampering_is_caught_at_its_record(postgres_url: str) -> None:
    here = Path(".")
    write(postgres_url, 5)
    (line,) = query(postgres_url, "SELECT line FROM audit_log WHERE seq = 3")[0]
    query(
        postgres_url, "UPDATE audit_log SET line = %s WHERE seq = 3", line.replace('"n":2', '"n":7')
    )
    got = verify_audit_log(postgres_url, here)
    assert (got.ok, got.records, got.bad_seq) == (False, 2, None)
    assert got.reason == "hash does not match its contents" and got.bad_line == 3
    query(postgres_url, "UPDATE audit_log SET line = %s WHERE seq = 3", line)
    assert verify_audit_log(postgres_url, here).ok

    query(postgres_url, "DELETE FROM audit_log WHERE seq = 2")
    got = verify_audit_log(postgres_url, here)
    assert (got.ok, got.bad_seq, got.reason) == (False, 3, "seq 3 follows 1 (a record is missing)")


def test_a_deleted_tail_is_caught_by_the_head(postgres_url: str) -> None:
    write(postgres_url, 4)
    query(postgres_url, "DELETE FROM audit_log WHERE seq >= 3")
    got = verify_audit_log(postgres_url, Path("."))
    assert (
        not got.ok and got.records == 2 and "records were deleted from the end" in str(got.reason)
    )


def test_verify_command_reads_the_schema(postgres_url: str, tmp_path: Path) -> None:
    write(postgres_url, 3)
    args = ["audit", "verify", "--data-dir", str(tmp_path / "none"), "--store", postgres_url]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert "audit log OK: 3 records, chain intact" in result.output
    query(postgres_url, "UPDATE audit_log SET actor = 'x', line = replace(line, 'k_1', 'k_9')")
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 1 and "line 2" in result.output, result.output


def test_an_engine_on_postgresql_audits_there_and_the_report_reads_it(
    kit: Any, postgres_url: str, tmp_path: Path
) -> None:
    settings = kit.settings(store=postgres_url)
    engine = kit.open_engine(settings, videos=kit.catalog())
    engine.moderator.moderate("c0-v0", "removed", None, "spam")
    kit.run(engine, [kit.view("u1", f"c0-v{i}") for i in range(1, 4)])
    served = kit.feed_ids(engine, "u1")
    engine.close()
    assert not (kit.data_dir / "audit.log").exists()
    actions = [a for (a,) in query(postgres_url, "SELECT action FROM audit_log ORDER BY seq")]
    assert "moderation" in " ".join(actions), actions
    assert verify_audit_log(postgres_url, kit.data_dir).ok

    out, numbers = tmp_path / "audit.html", tmp_path / "audit.json"
    day = kit.DAY_MS
    result = CliRunner().invoke(
        cli(),
        [
            "audit", "report", "--data-dir", str(kit.data_dir), "--store", postgres_url,
            "--out", str(out), "--json", str(numbers),
            "--since", str(kit.NOW - day), "--until", str(kit.NOW + day),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(numbers.read_text())
    assert report["totals"]["impressions"] == len(served)
    assert report["moderation"]["actions"] == 1
