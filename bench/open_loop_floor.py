"""What the load generator alone adds to a feed's measured latency: ``_common``'s open
loop (the one ``bench/cluster.py``, ``bench/learner.py`` and ``bench/feed_profile.py``
drive) against a server that answers every ``GET /v1/feed`` at once with an empty page
(a bare ASGI app under uvicorn, in a process of its own). Whatever p99 it measures here
is the client's and the machine's, not fyp's: the floor under every ladder.

``--baseline-bench DIR``: the open loop of another checkout's ``bench`` (e.g. a detached
worktree of main), alternated with this one's in the same run.

    python bench/open_loop_floor.py [--rates 10 50] [--seconds 5] [--repeats 2]
        [--baseline-bench /work/base/bench]

Prints a table and writes ``bench/results/open_loop_floor.json``. Nothing here asserts
on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_PAGE = b'{"request_id": "r", "surface": "for_you", "items": []}'


async def _instant(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every request answered at once with an empty page (200)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = message["type"] == "lifespan.shutdown"
            await send({"type": f"{message['type']}.complete"})
            if done:
                return
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _PAGE})


def _serve(port: int) -> None:
    import uvicorn

    uvicorn.run(_instant, host="127.0.0.1", port=port, log_level="warning")


def _client(bench: Path, port: int, rate: float, seconds: float) -> dict[str, Any]:
    """One step of ``bench``'s open loop (its ``_common``, in a process of its own: two
    versions of the module cannot share one), as the JSON row it returns."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import _common\n"
        "class T:\n    base_url = sys.argv[2]\n    headers = {}\n"
        "if __name__ == '__main__':\n"
        "    rate, n = float(sys.argv[3]), int(sys.argv[4])\n"
        "    (row,) = _common.open_loop(T(), [(rate, [f'u{i}' for i in range(n)])])\n"
        "    print(json.dumps(row))\n"
    )
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"open_loop_floor_{os.getpid()}.py"
    script.write_text(code)
    try:
        argv = [str(script), str(bench), f"http://127.0.0.1:{port}", str(rate)]
        out = subprocess.run(
            [sys.executable, *argv, str(int(rate * seconds))],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        script.unlink()
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-bench", type=Path)
    args = parser.parse_args()
    from _common import console, free_port, machine_info, print_table, utc_now_iso, write_json

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/feed", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the instant server did not start") from None
                time.sleep(0.1)
        here = Path(__file__).resolve().parent
        benches = [("this checkout", here)]
        if args.baseline_bench is not None:
            benches.append(("baseline", args.baseline_bench.resolve()))
        rows: list[dict[str, Any]] = []
        console.print(f"load average {os.getloadavg()}")
        for r in range(args.repeats):
            for label, path in benches[:: 1 if r % 2 == 0 else -1]:  # (alternated)
                for rate in args.rates:
                    row = _client(path, port, rate, args.seconds)
                    row |= {"bench": label, "round": r, "load_average": list(os.getloadavg())}
                    rows.append(row)
                    lat = row["latency_ms"]
                    console.print(
                        f"  {label}, round {r}, {rate:g}/s: p50 {lat['p50']:.1f}"
                        f" p99 {lat['p99']:.1f} max {lat['max']:.1f} ms;"
                        f" load {row['load_average'][0]:.1f}"
                    )
    finally:
        server.kill()
        server.wait()
    print_table(
        "The open loop against a server that answers at once",
        ["bench", "round", "feeds/s", "p50 ms", "p99 ms", "max ms", "load"],
        [
            [
                r["bench"],
                str(r["round"]),
                f"{r['rate']:g}",
                f"{r['latency_ms']['p50']:.1f}",
                f"{r['latency_ms']['p99']:.1f}",
                f"{r['latency_ms']['max']:.1f}",
                f"{r['load_average'][0]:.1f}",
            ]
            for r in rows
        ],
    )
    out = {"bench": "open_loop_floor", "when": utc_now_iso(), "machine": machine_info()}
    out |= {"params": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    console.print(f"wrote {write_json('open_loop_floor', out)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(int(sys.argv[2]))
    else:
        main()
