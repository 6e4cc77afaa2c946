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
  and the server's start-up time with that log (its first start: no index yet).

    python bench/audit_log.py [--quick] [--baseline REV] [--requests N] [--records N]

Prints a table and writes ``bench/results/audit_log.json`` (``audit_log_quick``).
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
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


def write_log(data_dir: Path, n: int) -> int:
    """A valid log of ``n`` records like a busy deployment's refusals; its size in bytes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    prev = GENESIS
    with (data_dir / AUDIT_FILE).open("wb", buffering=1 << 20) as f:
        for seq in range(1, n + 1):
            record = seal(
                {
                    "seq": seq,
                    "ts": T0 + seq * 7,
                    "action": "residency.refused",
                    "actor": f"k_{seq % 97:010x}",
                    "outcome": "refused",
                    "subject": None,
                    "details": {"method": "GET", "route": "/v1/feed"},
                    "prev": prev,
                }
            )
            f.write(encode(record))
            prev = record.hash
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
    for name in (AUDIT_FILE, HEAD_FILE):
        shutil.copy(seed / name, data_dir / name)
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
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run")
    ap.add_argument("--baseline", default=None, help="git rev of 'before' (merge-base with main)")
    ap.add_argument("--requests", type=int, default=None, help="refused requests (20,000)")
    ap.add_argument("--records", type=int, default=None, help="records of the paged log (1M)")
    ap.add_argument("--reps", type=int, default=10, help="timed GETs per page, after")
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
        "params": {"requests": requests, "records": n_records, "baseline": rev},
        "variants": [],
    }
    try:
        variants = [("before", baseline_src(rev, root / "baseline")), ("after", REPO_ROOT / "src")]
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
            f"{v['pages']['startup_s']:,.1f}",
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
            "server start s",
        ],
        rows,
        caption=f"before = {rev[:12]}; page times: median from the client",
    )
    path = write_json("audit_log_quick" if args.quick else "audit_log", payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
