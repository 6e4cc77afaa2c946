"""Changes across API processes: the time from a change's acknowledgement by process A to
process B serving it.

Setup: two ``fyp serve`` processes (learned models off) on 127.0.0.1, each with a data
dir of its own and one pseudonym secret, over one PostgreSQL schema (``--store``, a
schema of this run's own, dropped after) and one event log on Redis (``--redis``, a
prefix of this run's own, deleted after, ``durability=none``); ``--videos`` videos
posted through A first. Then, for each kind of change, ``--changes`` changes, one at a
time, each made through A; as soon as A has answered, B is asked again and again (no
pause) until its answer shows the change:

- ``new video``: ``POST /v1/videos`` of a video not seen before; B's ``GET /v1/videos``.
- ``moderation``: ``POST /v1/moderation`` setting a video ``pending``; B's
  ``GET /v1/moderation/queue`` (the states B's feeds filter on).
- ``controls``: ``POST /v1/users/{id}/controls`` muting a creator; B's
  ``GET /v1/users/{id}`` (the controls B's feeds apply).

The time is from A's answer received to B's answer that shows the change received (one
machine's monotonic clock), so it includes one of B's answers (a few ms). Reported
p50/p95/max per kind.

    python bench/cluster_changes.py [--quick] [--redis URL] [--store URL]

Prints a table and writes ``bench/results/cluster_changes.json`` (``_quick``). Nothing
here asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from _common import (
    console,
    exit_on_sigterm,
    free_port,
    machine_info,
    ms,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.config import LOAD_GENERATOR_AUTH
from fyp.privacy.keys import bearer, create_key
from fyp.types import now_ms

FYP = Path(sys.executable).parent / "fyp"
TIMEOUT_S = 10.0  # a change not seen by B in this long is counted as missed


class Api:
    """``fyp serve`` in a subprocess."""

    def __init__(self, data_dir: Path, config: Path, store: str) -> None:
        self.port = free_port()
        self.headers = bearer(create_key(data_dir, label="bench", store_url=store)[1])
        self.log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FYP_")}
        self.proc = subprocess.Popen(
            [
                FYP,
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--config",
                str(config),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers=self.headers, timeout=30.0
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"fyp serve exited {self.proc.returncode}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("fyp serve not ready in 120 s")

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, path, **kw)
        if resp.status_code not in (200, 201):
            raise SystemExit(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def video(i: int) -> dict[str, Any]:
    return {
        "video_id": f"v{i:06d}",
        "creator_id": f"c{i % 500}",
        "duration_ms": 15_000,
        "hashtags": [f"#t{i % 50}"],
        "caption": f"video {i}",
        "created_at": now_ms() - 86_400_000,
    }


def timed(change: Callable[[], None], seen: Callable[[], bool]) -> float | None:
    """ms from ``change()`` answered to ``seen()`` true (None: not within TIMEOUT_S)."""
    change()
    start = time.monotonic()
    while not seen():
        if time.monotonic() - start > TIMEOUT_S:
            return None
    return (time.monotonic() - start) * 1000


def run(a: Api, b: Api, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.changes

    def new_video(k: int) -> float | None:
        vid = video(args.videos + k)
        return timed(
            lambda: a.ok("POST", "/v1/videos", json={"videos": [vid]}),
            lambda: bool(b.ok("GET", "/v1/videos", params={"ids": vid["video_id"]})["videos"]),
        )

    def moderation(k: int) -> float | None:
        vid = f"v{k * 7 % args.videos:06d}"
        body = {"video_id": vid, "state": "pending", "reason": "bench"}

        def queued() -> bool:
            items = b.ok("GET", "/v1/moderation/queue", params={"limit": 100})["items"]
            return any(i["video_id"] == vid for i in items)

        return timed(lambda: a.ok("POST", "/v1/moderation", json=body), queued)

    def controls(k: int) -> float | None:
        user, creator = f"bench-u{k}", f"c{k % 500}"
        a.ok("PUT", f"/v1/users/{user}", json={})
        return timed(
            lambda: a.ok("POST", f"/v1/users/{user}/controls", json={"mute_creators": [creator]}),
            lambda: muted(user, creator),
        )

    def muted(user: str, creator: str) -> bool:
        resp = b.http.get(f"/v1/users/{user}")  # (a 404 until B holds the user)
        return resp.status_code == 200 and resp.json()["controls"]["mute_creators"] == [creator]

    for name, one in (("new video", new_video), ("moderation", moderation), ("controls", controls)):
        samples = [one(k) for k in range(n)]
        seen = [s for s in samples if s is not None]
        out[name] = {**percentiles(seen), "missed": len(samples) - len(seen)}
        time.sleep(0.05)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--store", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.videos, args.changes = 1_000, 30
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="fyp-bench-cluster-"))
    prefix = f"fyp-bench-{uuid.uuid4().hex[:8]}"
    schema = f"fyp_bench_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in args.store else "?"
    store = f"{args.store}{sep}schema={schema}"
    config = tmp / "cluster.toml"
    config.write_text(
        f'event_log = "{args.redis}?prefix={prefix}&durability=none"\n'
        f'store = "{store}"\n'
        "[privacy]\nrequire_registered_users = false\n"
        f'secret_file = "{tmp / "shared.secret"}"\n'
        "[auth]\n" + "".join(f"{k} = {v}\n" for k, v in LOAD_GENERATOR_AUTH.items())
    )
    apis: list[Api] = []
    try:
        for name in ("a", "b"):
            api = Api(tmp / name, config, store)
            apis.append(api)
            api.wait_ready()
        a, b = apis
        for start in range(0, args.videos, 1_000):
            batch = [video(i) for i in range(start, min(start + 1_000, args.videos))]
            a.ok("POST", "/v1/videos", json={"videos": batch})
        deadline = time.monotonic() + 60
        while b.ok("GET", "/healthz")["videos"] < args.videos:
            if time.monotonic() > deadline:
                raise SystemExit("B never held the catalog")
            time.sleep(0.1)
        results = run(a, b, args)
    finally:
        for api in apis:
            api.stop()
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
        machine = machine_info(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        [
            name,
            str(r.get("count", 0)),
            ms(r.get("p50")),
            ms(r.get("p95")),
            ms(r.get("max")),
            str(r["missed"]),
        ]
        for name, r in results.items()
    ]
    print_table(
        "a change acknowledged by API process A → served by API process B",
        ["change", "n", "p50", "p95", "max", f"missed ({TIMEOUT_S:g} s)"],
        rows,
        caption=f"ms; {args.videos} videos; PostgreSQL stores, Redis event log and notices",
    )
    payload = {
        "bench": "cluster_changes",
        "when": utc_now_iso(),
        "machine": machine,
        "args": vars(args),
        "results": results,
    }
    path = write_json("cluster_changes_quick" if args.quick else "cluster_changes", payload)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
