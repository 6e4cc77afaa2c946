"""The audit log under abuse: how much one key's refused requests write, and what a page of
``GET /v1/audit`` costs on a large log, for this tree and a baseline in the same run.

Two measurements, each against a ``fyp serve`` of this tree ("after") and one of the
baseline's ``src`` ("before": by default the commit this branch left main at, unpacked
with ``git archive``, run from the same venv):

- **Refusals**: a fresh data dir, one key asking ``GET /v1/feed`` for ids no one has
  (each a 421 residency refusal), one request at a time over HTTP; then the server is
  stopped (so what it counted is written) and ``audit.log`` is weighed.
- **Pages**: a log of ``--records`` valid records (``residency.refused``-like, hash-chained,
  written at once by a generator, no fsync per record) under a server; the time of
  ``GET /v1/audit?after_seq=0&limit=1`` and at a late ``after_seq``, from the client,
  and the server's start-up time with that log, at its first start (no index yet) and
  its second. The log is written by string templates checked against the log's own
  encoding on its first 1,000 records (fast enough for 10M records).

    python bench/audit_log.py [--quick] [--baseline REV | --no-baseline] [--requests N]
                              [--records N] [--reps N]

Prints a table and writes ``bench/results/audit_log.json`` (``audit_log_quick``; other
record counts or no baseline: with those in the name).
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from _common import (
    REPO_ROOT,
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.privacy.audit_log import AUDIT_FILE, GENESIS, HEAD_FILE, encode, seal

T0 = 1_750_000_000_000


def baseline_src(rev: str, into: Path) -> Path:
    """The ``src`` of ``rev``, unpacked under ``into`` (no worktree: nothing to clean up
    in the repository)."""
    tar = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into / "src"


def _fields(seq: int, prev: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": T0 + seq * 7,
        "action": "residency.refused",
        "actor": f"k_{seq % 97:010x}",
        "outcome": "refused",
        "subject": None,
        "details": {"method": "GET", "route": "/v1/feed"},
        "prev": prev,
    }


def _templated(seq: int, prev: str) -> tuple[bytes, str]:
    """The line and hash of :func:`_fields`' record, by string templates: several times
    faster than ``seal`` and ``encode``, which :func:`write_log` checks them against."""
    f = _fields(seq, prev)
    canonical = (
        f'{{"action":"{f["action"]}","actor":"{f["actor"]}","details":{{"method":"GET",'
        f'"route":"/v1/feed"}},"outcome":"refused","prev":"{prev}","seq":{seq},'
        f'"subject":null,"ts":{f["ts"]}}}'
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    line = (
        f'{{"seq":{seq},"ts":{f["ts"]},"action":"{f["action"]}","actor":"{f["actor"]}",'
        f'"outcome":"refused","subject":null,"details":{{"method":"GET","route":"/v1/feed"}},'
        f'"prev":"{prev}","hash":"{digest}"}}\n'
    )
    return line.encode(), digest


def write_log(data_dir: Path, n: int) -> int:
    """A valid log of ``n`` records like a busy deployment's refusals; its size in bytes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    prev = GENESIS
    with (data_dir / AUDIT_FILE).open("wb", buffering=1 << 20) as f:
        for seq in range(1, n + 1):
            line, digest = _templated(seq, prev)
            if seq <= 1_000:  # the templates write what the log would
                record = seal(_fields(seq, prev))
                assert (line, digest) == (encode(record), record.hash), seq
            f.write(line)
            prev = digest
    (data_dir / HEAD_FILE).write_text(f'{{"seq": {n}, "hash": "{prev}"}}')
    return (data_dir / AUDIT_FILE).stat().st_size


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def refusals(root: Path, src: Path, requests: int) -> dict[str, Any]:
    data_dir = root / "refusals"
    data_dir.mkdir(parents=True)
    log = data_dir / AUDIT_FILE
    server = Server(data_dir, root / "refusals.log", env={"PYTHONPATH": str(src)})
    with server, server.client(timeout_s=60.0) as client:
        before = log.stat().st_size if log.exists() else 0
        t0 = time.perf_counter()
        for i in range(requests):
            status = client.get("/v1/feed", params={"user_id": f"nobody-{i}"}).status_code
            assert status == 421, status
        elapsed = time.perf_counter() - t0
    return {
        "requests": requests,
        "audit_bytes_added": log.stat().st_size - before,
        "audit_records": count_lines(log),
        "requests_per_s": requests / elapsed,
    }


def pages(root: Path, seed: Path, src: Path, n: int, reps: int) -> dict[str, Any]:
    data_dir = root / "pages"
    data_dir.mkdir(parents=True)
    # A link, not a copy: neither server writes to it here (reading pages is not audited).
    os.link(seed / AUDIT_FILE, data_dir / AUDIT_FILE)
    shutil.copy(seed / HEAD_FILE, data_dir / HEAD_FILE)
    server = Server(data_dir, root / "pages.log", env={"PYTHONPATH": str(src)}, timeout_s=1800)
    out: dict[str, Any] = {"records": n}
    with server, server.client(timeout_s=600.0) as client:
        out["startup_s"] = server.startup_s
        for name, after in (("first_page", 0), ("late_page", n - 10)):
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                resp = client.get("/v1/audit", params={"after_seq": after, "limit": 1})
                samples.append((time.perf_counter() - t0) * 1e3)
                assert resp.json()["records"][0]["seq"] == after + 1, resp.text[:200]
            out[f"{name}_ms"] = {"median": statistics.median(samples), "samples": samples}
    again = Server(data_dir, root / "pages.log", env={"PYTHONPATH": str(src)}, timeout_s=1800)
    with again:  # a second start: the index (where there is one) is on disk now
        out["restart_s"] = again.startup_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run")
    ap.add_argument("--baseline", default=None, help="git rev of 'before' (merge-base with main)")
    ap.add_argument("--requests", type=int, default=None, help="refused requests (20,000)")
    ap.add_argument("--records", type=int, default=None, help="records of the paged log (1M)")
    ap.add_argument("--reps", type=int, default=10, help="timed GETs per page, after")
    ap.add_argument("--no-baseline", action="store_true", help="this tree only")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dirs")
    args = ap.parse_args()
    exit_on_sigterm()
    requests = args.requests or (2_000 if args.quick else 20_000)
    n_records = args.records or (100_000 if args.quick else 1_000_000)
    rev = (
        args.baseline
        or subprocess.run(
            ["git", "-C", str(REPO_ROOT), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-audit-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "audit_log",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "requests": requests,
            "records": n_records,
            "baseline": None if args.no_baseline else rev,
        },
        "variants": [],
    }
    try:
        variants = [("after", REPO_ROOT / "src")]
        if not args.no_baseline:
            variants.insert(0, ("before", baseline_src(rev, root / "baseline")))
        t0 = time.perf_counter()
        size = write_log(root / "seed", n_records)
        payload["generator"] = {"bytes": size, "seconds": time.perf_counter() - t0}
        console.print(f"{n_records:,} records, {size / 1e6:,.0f} MB, generated")
        for name, src in variants:
            console.print(f"[bold]{name}[/]: {requests:,} refused requests")
            row: dict[str, Any] = {"variant": name, "src": str(src)}
            row["refusals"] = refusals(root / name, src, requests)
            console.print(f"[bold]{name}[/]: pages of a {n_records:,}-record log")
            # The baseline reads the whole log per page: once is enough to see it.
            reps = args.reps if name == "after" else 1
            row["pages"] = pages(root / name, root / "seed", src, n_records, reps)
            payload["variants"].append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        [
            v["variant"],
            f"{v['refusals']['audit_bytes_added']:,}",
            f"{v['refusals']['audit_records']:,}",
            f"{v['refusals']['requests_per_s']:,.0f}",
            f"{v['pages']['first_page_ms']['median']:,.1f}",
            f"{v['pages']['late_page_ms']['median']:,.1f}",
            f"{v['pages']['startup_s']:,.1f} / {v['pages']['restart_s']:,.1f}",
        ]
        for v in payload["variants"]
    ]
    print_table(
        f"audit log: {requests:,} refused feed requests by one key; pages of a "
        f"{n_records:,}-record log",
        [
            "code",
            "audit bytes added",
            "records",
            "req/s",
            "GET limit=1 after_seq=0 ms",
            f"after_seq={n_records - 10:,} ms",
            "server start s (first / second)",
        ],
        rows,
        caption=("" if args.no_baseline else f"before = {rev[:12]}; ")
        + f"page times: median from the client, {args.reps} GETs after, 1 before",
    )
    name = "audit_log_quick" if args.quick else "audit_log"
    if args.records or args.no_baseline:  # not the default run: do not overwrite its figures
        name += f"_{n_records}" + ("_no_baseline" if args.no_baseline else "")
    path = write_json(name, payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
