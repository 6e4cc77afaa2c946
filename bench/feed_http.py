"""The CPU of ``GET /v1/feed``'s HTTP path in process (the ASGI app: middleware, routing,
parameters, authentication, the JSON body), this code against an earlier commit's in the
same run, and whether both answer the same.

Per code (``--baseline-src DIR``: the ``fyp`` package of ``DIR``, from ``git archive
<commit> src``; then this checkout's), alternating ``--repeat`` times, a fresh process
opens an engine on a new data dir with a key and ``--videos`` videos, starts the app's
lifespan, and calls the ASGI app directly (no socket, no uvicorn: what a server's event
loop runs for a request once httptools has parsed it) with the request a load generator
sends: ``GET /v1/feed?user_id=...&count=10`` with a bearer key. Two figures, the
process's CPU per request:

- ``http path``: the engine's ``feed`` answers one page computed beforehand, so the
  figure is the HTTP path alone (the pipeline is not run);
- ``feed over ASGI`` and ``feed in process``: the real pipeline on the small catalog,
  through the app and by ``Engine.feed`` directly (users alternating, so each code asks
  the same), whose difference is the HTTP path again, with the pipeline's noise.

Each code also answers a fixed list of requests (good and bad: every parameter's
errors, no key, a bad key, a repeated parameter, an unknown one, ``after``) with the
canned page; their statuses and error bodies (for a page: what the engine was asked
for) are compared across the codes, so a change meant
as a pure optimisation shows here if it changed an answer.

    python bench/feed_http.py [--baseline-src DIR] [--requests 3000] [--repeat 3]

Prints a table and writes ``bench/results/feed_http.json``. Nothing here asserts on
timings; compare the two codes of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    REPO_ROOT,
    exit_on_sigterm,
    machine_info,
    print_table,
    utc_now_iso,
    write_json,
)

COUNT = 10
WARMUP = 200
# (query string, with the key?) of the requests whose answers are compared across codes.
PROBES: list[tuple[str, bool]] = [
    ("user_id=u1&count=10", True),
    ("user_id=u1", True),
    ("user_id=u1&count=10&surface=following_tab", True),
    ("user_id=u1&count=10&unknown=1", True),
    ("user_id=u2&user_id=u1&count=10", True),
    ("user_id=u1&count=0", True),
    ("user_id=u1&count=1000000", True),
    ("user_id=u1&count=abc", True),
    ("user_id=u1&count=", True),
    ("user_id=u1&count=+5", True),
    ("user_id=u1&count=007", True),
    ("user_id=", True),
    ("user_id=%20u1", True),
    ("user_id=u%C3%A9", True),
    ("user_id=u%FF", True),
    ("user_id=e%CC%81", True),
    ("count=10", True),
    ("user_id=u1&surface=", True),
    ("user_id=u1&after=x", True),
    ("user_id=u1&after=x&shown=1", True),
    ("user_id=u1&count=10", False),
]


class Asgi:
    """Calls an ASGI app directly, as uvicorn does once a request is parsed."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.auth = (b"authorization", f"Bearer {key}".encode())

    async def get(self, path: str, query: bytes, keyed: bool = True) -> tuple[int, bytes]:
        headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]
        if keyed:
            headers.append(self.auth)
        return await self.call("GET", path, query, headers, b"")

    async def call(
        self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _video(i: int, now: int) -> dict[str, Any]:
    return {
        "video_id": f"v{i:04d}",
        "creator_id": f"c{i % 17}",
        "duration_ms": 15_000,
        "sound_id": f"s{i % 50}",
        "hashtags": [f"#t{i % 9}"],
        "caption": f"video {i}",
        "created_at": now - 3_600_000 - i * 1000,
    }


def _cpu_per_request(
    loop: asyncio.AbstractEventLoop, n: int, *calls: Callable[[int], Any]
) -> list[float]:
    """The process's CPU per call of each of ``calls`` (µs), called in turn ``n`` times
    each (interleaved, so a drift of the state or the machine touches them alike)."""

    async def run(k: int, spent: list[float]) -> None:
        clock = time.process_time
        for i in range(k):
            for j, call in enumerate(calls):
                t0 = clock()
                await call(i)
                # The loop's other tasks (the learning loop folding the impressions just
                # logged) run here, counted with the call that gave them their work.
                await asyncio.sleep(0)
                spent[j] += clock() - t0

    loop.run_until_complete(run(WARMUP, [0.0] * len(calls)))
    spent = [0.0] * len(calls)
    loop.run_until_complete(run(n, spent))
    return [s / n * 1e6 for s in spent]


# The load generator of the over-HTTP figures, in a process of its own (its CPU is not the
# server's): one keep-alive connection, one request after another.
CLIENT = """
import sys, httpx
url, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with httpx.Client(headers={"Authorization": "Bearer " + key}, timeout=30) as c:
    for i in range(n):
        r = c.get(url, params={"user_id": f"u{i % 50}", "count": 10})
        assert r.status_code == 200, r.text
"""


def _setup(root: Path, videos: int) -> tuple[Any, Any, str, Any]:
    """Settings, an engine with a key, and the app over it."""
    from fyp.api import create_app
    from fyp.config import LOAD_GENERATOR_AUTH, load_settings
    from fyp.engine import Engine
    from fyp.privacy.keys import create_key

    settings = load_settings(
        overrides={
            "data_dir": root / "data",
            "privacy": {"require_registered_users": False},
            "auth": LOAD_GENERATOR_AUTH,
            "sources": {"budget_ms": 10_000.0},  # a descheduled source must not change pages
        },
        environ={},
    )
    eng = Engine.open(settings)
    key = create_key(settings.data_dir, label="bench")[1]
    return settings, eng, key, create_app(settings, engine=eng)


def http_worker(out: Path, videos: int, requests: int) -> None:
    """The server's CPU per request over a socket: uvicorn as ``fyp serve`` runs it (its
    defaults: uvloop and httptools where installed, no access log), in a thread of this
    process, and a client process sending the requests one after another on one
    keep-alive connection (a CPU figure: no latency is taken from it)."""
    import httpx
    import uvicorn

    from _common import free_port
    from fyp.types import DEFAULT_SURFACE, now_ms

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-feed-http-"))
    _settings, eng, key, app = _setup(root, videos)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    result: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        body = {"videos": [_video(i, now_ms()) for i in range(videos)]}
        resp = httpx.post(
            f"{base}/v1/videos", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200, resp.text

        def cpu_per_request() -> float:
            client = [sys.executable, "-c", CLIENT, f"{base}/v1/feed", key]
            subprocess.run([*client, str(WARMUP)], check=True)
            t0 = time.process_time()
            subprocess.run([*client, str(requests)], check=True)
            return (time.process_time() - t0) / requests * 1e6

        result["feed_over_http_us"] = cpu_per_request()
        canned = eng.feed("u-canned", COUNT, DEFAULT_SURFACE)
        eng.feed = lambda *a, **k: canned  # type: ignore[method-assign]
        result["http_path_over_http_us"] = cpu_per_request()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        eng.close()
        shutil.rmtree(root, ignore_errors=True)
    out.write_text(json.dumps(result))


def worker(out: Path, videos: int, requests: int) -> None:
    from fyp.types import DEFAULT_SURFACE, now_ms

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-feed-http-"))
    _settings, eng, key, app = _setup(root, videos)
    asgi = Asgi(app, key)
    loop = asyncio.new_event_loop()
    result: dict[str, Any] = {}

    async def lifespan_and_setup() -> None:
        body = json.dumps({"videos": [_video(i, now_ms()) for i in range(videos)]}).encode()
        headers = [(b"content-type", b"application/json"), asgi.auth]
        status, text = await asgi.call("POST", "/v1/videos", b"", headers, body)
        assert status == 200, text

    try:
        lifespan = app.router.lifespan_context(app)
        loop.run_until_complete(lifespan.__aenter__())
        loop.run_until_complete(lifespan_and_setup())
        users = [f"u{i}".encode() for i in range(50)]

        async def via_app(i: int) -> None:
            q = b"user_id=" + users[i % len(users)] + b"&count=10"
            status, body = await asgi.get("/v1/feed", q)
            assert status == 200, body

        async def direct(i: int) -> None:
            eng.feed(users[(i + 25) % len(users)].decode(), COUNT, DEFAULT_SURFACE)

        over_asgi, in_process = _cpu_per_request(loop, requests, via_app, direct)
        result["feed_over_asgi_us"], result["feed_in_process_us"] = over_asgi, in_process
        canned = eng.feed("u-canned", COUNT, DEFAULT_SURFACE)
        eng.feed = lambda *a, **k: canned  # type: ignore[method-assign]
        result["http_path_us"] = _cpu_per_request(loop, requests, via_app)[0]
        asked: list[Any] = []

        def recorded(*args: Any, **kwargs: Any) -> Any:
            asked.append([list(args), kwargs])
            return canned

        eng.feed = recorded  # type: ignore[method-assign]
        answers = []
        for query, keyed in PROBES:
            asked.clear()
            status, body = loop.run_until_complete(asgi.get("/v1/feed", query.encode(), keyed))
            # A page's body is the canned page (its random request id differs by process):
            # what the engine was asked for is compared instead; an error's body as is.
            answer = asked[:] if status == 200 else body.decode("utf-8", "replace")
            answers.append([query, keyed, status, answer])
        result["answers"] = answers
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
    finally:
        eng.close()
        shutil.rmtree(root, ignore_errors=True)
    out.write_text(json.dumps(result))


def run_worker(src: Path, root: Path, videos: int, requests: int, http: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for flag in ["--worker", *(["--http-worker"] if http else [])]:
        out = root / f"result-{abs(hash(str(src)))}.json"
        env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{BENCH_DIR}")
        cmd = [sys.executable, str(BENCH_DIR / "feed_http.py"), flag, str(out)]
        cmd += ["--videos", str(videos), "--requests", str(requests)]
        subprocess.run(cmd, env=env, check=True)
        result.update(json.loads(out.read_text()))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--requests", type=int, default=3_000, help="timed requests per figure")
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each code, alternating")
    ap.add_argument("--no-http", action="store_true", help="only the in-process figures")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--http-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.videos, args.requests)
        return
    if args.http_worker is not None:
        http_worker(args.http_worker, args.videos, args.requests)
        return
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-feed-http-"))
    payload: dict[str, Any] = {
        "benchmark": "feed_http",
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "load_average_at_start": os.getloadavg(),
        "params": {"videos": args.videos, "requests": args.requests, "count": COUNT},
    }
    codes = ([("before", args.baseline_src)] if args.baseline_src else []) + [
        ("this code", REPO_ROOT / "src")
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
    try:
        for _ in range(args.repeat):
            for name, src in codes:
                runs[name].append(
                    run_worker(src, root, args.videos, args.requests, not args.no_http)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    reference = runs[codes[0][0]][0]["answers"]
    figures = ["http_path_us", "feed_over_asgi_us", "feed_in_process_us"]
    figures += [] if args.no_http else ["http_path_over_http_us", "feed_over_http_us"]
    results = []
    for name, _ in codes:
        answers = runs[name][0]["answers"]
        differ = [
            a[0] + ("" if a[1] else " (no key)")
            for a, r in zip(answers, reference, strict=True)
            if a != r
        ]
        results.append(
            {
                "code": name,
                **{f: [r[f] for r in runs[name]] for f in figures},
                "answers_differ": differ,
                "answers": answers,
            }
        )
    payload["results"] = results
    payload["load_average_at_end"] = os.getloadavg()
    payload["finished_at"] = utc_now_iso()
    path = write_json("feed_http", payload)

    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"

    names = {
        "http_path_us": "HTTP path, ASGI",
        "feed_over_asgi_us": "feed over ASGI",
        "feed_in_process_us": "feed in process",
        "http_path_over_http_us": "HTTP path, socket",
        "feed_over_http_us": "feed over a socket",
    }
    print_table(
        f"GET /v1/feed, µs of the server's CPU per request, median (range) of {args.repeat} runs",
        ["code", *(names[f] for f in figures), "answers differ"],
        [
            [
                r["code"],
                *(med(r[f]) for f in figures),
                ", ".join(r["answers_differ"]) or "none",
            ]
            for r in results
        ],
        caption=f"load average {payload['load_average_at_start'][0]:.1f} at the start, "
        f"{payload['load_average_at_end'][0]:.1f} at the end; {path}",
    )


if __name__ == "__main__":
    main()
