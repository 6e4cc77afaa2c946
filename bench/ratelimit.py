"""What one key can do to everyone else's feed, under the old rate-limit defaults and the
new ones, in one run; and what a flood of bad keys from one address gets.

Setup (untimed): the state of ``bench/feed_latency.py`` (10k videos, 1k users x 20 views;
``--quick``: the same, shorter phases), learned in process, then copied once per
configuration so each server starts from the same state. For each configuration
(``[auth]`` written to the server's settings file: the old defaults, 2,000 requests/s per
key with a burst of 4,000 and no limit on failed authentication, and this version's
defaults, ``AuthConfig()``), ``fyp serve`` runs and:

1. *alone*: a *victim* key asks ``GET /v1/feed?count=10`` open loop at ``--rate``
   requests/s (scheduled send times, each request on a pool of connections; latency from
   the scheduled time, so a stalled server is not hidden by a stalled sender);
2. *key flood*: the same, while another key floods ``GET /v1/feed`` closed loop from 8
   threads of a separate process, not honouring ``Retry-After`` (an attacker, a runaway
   client);
3. *bad-key flood*: the same, while 8 threads send requests with an invalid key.

The configurations alternate for ``--rounds`` rounds (a shared machine's load drifts;
alternating spreads it over both). A third configuration, ``new defaults, Redis``, has
this version's limits with their buckets on a Redis server (``--redis``; ``[auth]
rate_limits``), as several API processes share them: what a Redis round trip per limit
costs the victim. Reports, per configuration and phase, the victim's
p50/p99/max and failures (the median over rounds, and each round's p99), the flood's
requests/s and statuses (200, 401, 429), the server's CPU share, and the refusals the
server counted (``fyp_auth_refused``).

    python bench/ratelimit.py [--quick] [--rate 20] [--rounds 3] [--redis URL]
        [--baseline-src DIR] [--configs "new defaults;new defaults, Redis"]

``--baseline-src DIR`` adds the Redis row once more, its server running the ``fyp``
package of ``DIR`` (an earlier commit's ``src``): before and after in the same run.

Prints a table and writes ``bench/results/ratelimit.json`` (``_quick``). Nothing here
asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from _common import (
    Job,
    Server,
    console,
    exit_on_sigterm,
    machine_info,
    ms,
    percentiles,
    print_table,
    register_users,
    run_clients,
    utc_now_iso,
    write_json,
)
from feed_latency import CONCURRENCY, COUNT, build_state, request_users
from fyp.config import AuthConfig
from fyp.privacy.keys import bearer, create_key
from fyp.types import now_ms

# Before issue 17: 2,000/s per key, burst 4,000, and failed authentication never limited.
OLD_AUTH = {
    "key_rate_per_s": 2_000.0,
    "key_burst": 4_000.0,
    "failed_auth_rate_per_s": 1e9,
    "failed_auth_burst": 1e9,
}
FLOOD_START_S = 2.5  # the flood's process starts and reaches its steady state first
BAD_KEY = bearer("fyp_k_0123456789_not-a-real-secret")
VICTIM_CONNECTIONS = 8  # enough that a slow answer does not delay the next send


def _auth_toml(auth: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v).lower()

    return "[auth]\n" + "".join(f"{k} = {value(v)}\n" for k, v in auth.items())


class Victim(threading.Thread):
    """``GET /v1/feed`` for ``users`` at ``rate`` per second, open loop, for ``seconds``."""

    def __init__(
        self, base_url: str, headers: dict[str, str], users: list[str], rate: float, seconds: float
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.headers = base_url, headers
        self.users, self.rate, self.seconds = users, rate, seconds
        self.latencies_ms: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60.0)
            self._local.client = client
        return client

    def _one(self, user: str, scheduled: float) -> None:
        try:
            resp = self._client().get(f"/v1/feed?user_id={user}&count={COUNT}")
            resp.read()
        except httpx.HTTPError:
            with self._lock:
                self.errors += 1
            return
        dt = (time.perf_counter() - scheduled) * 1000.0
        with self._lock:
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 200:
                self.latencies_ms.append(dt)

    def run(self) -> None:
        n = int(self.rate * self.seconds)
        with ThreadPoolExecutor(VICTIM_CONNECTIONS) as pool:
            t0 = time.perf_counter()
            for i in range(n):
                scheduled = t0 + i / self.rate
                pause = scheduled - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                pool.submit(self._one, self.users[i % len(self.users)], scheduled)

    def row(self) -> dict[str, Any]:
        return {
            "latency_ms": percentiles(self.latencies_ms),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
        }


def refusals(base_url: str, headers: dict[str, str]) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fyp_auth_refused_total{"):
            why = line.split('why="', 1)[1].split('"', 1)[0]
            out[why] = float(line.rsplit(" ", 1)[1])
    return out


def run_config(
    name: str,
    auth: dict[str, Any],
    data_dir: Path,
    root: Path,
    users: dict[str, list[str]],
    rate: float,
    seconds: float,
    src: Path | None = None,
) -> dict[str, Any]:
    """One configuration's phases; ``src``: the server runs the ``fyp`` package there."""
    config = root / f"{name}.toml"
    config.write_text(_auth_toml(auth))
    victim_key = bearer(create_key(data_dir, ["feed:read"], label="victim")[1])
    phases: list[dict[str, Any]] = []
    env = {"FYP_CONFIG": str(config)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with Server(data_dir, root / f"{name}.log", env=env) as server:
        for phase, flood_headers in (
            ("alone", None),
            ("key flood", server.headers),
            ("bad-key flood", BAD_KEY),
        ):
            victim = Victim(server.base_url, victim_key, users["victim"], rate, seconds)
            flood = None
            cpu0, t0 = server.cpu_s(), time.perf_counter()
            if flood_headers is None:
                victim.start()
                victim.join()
            else:
                jobs = [Job("GET", f"/v1/feed?user_id={u}&count={COUNT}") for u in users["flood"]]
                jobs = jobs * 50  # more than any phase can send: it stops by time
                timer = threading.Timer(FLOOD_START_S, victim.start)
                timer.start()
                (flood,) = run_clients(
                    server.base_url,
                    [([], jobs, seconds + FLOOD_START_S + 1.0)],
                    CONCURRENCY,
                    headers=flood_headers,
                )
                timer.join()
                victim.join()
            cpu1, wall = server.cpu_s(), time.perf_counter() - t0
            row: dict[str, Any] = {"phase": phase, "victim": victim.row()}
            if cpu0 is not None and cpu1 is not None:
                row["server_cpu_share"] = (cpu1 - cpu0) / wall  # of one core
                # CPU time, so a busy machine's waits do not count: what a request costs.
                answered = sum(victim.statuses.values()) + (0 if flood is None else flood.requests)
                row["server_cpu_ms_per_request"] = (cpu1 - cpu0) / max(answered, 1) * 1e3
            if flood is not None:
                row["flood"] = {
                    "requests": flood.requests,
                    "requests_per_s": flood.requests / flood.wall_s if flood.wall_s else None,
                    "statuses": {str(k): v for k, v in sorted(flood.statuses.items())},
                    "ok_per_s": len(flood.latencies_ms) / flood.wall_s if flood.wall_s else None,
                    "transport_errors": flood.errors,
                }
            phases.append(row)
            lat = row["victim"]["latency_ms"]
            console.print(
                f"  {name}, {phase}: victim p99 {ms(lat.get('p99'))} ms"
                + (
                    ""
                    if flood is None
                    else f"; flood {row['flood']['requests_per_s']:.0f} req/s, "
                    f"statuses {row['flood']['statuses']}"
                )
            )
        refused = refusals(server.base_url, victim_key)
    return {"config": name, "auth": auth, "phases": phases, "auth_refused": refused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter phases, one round")
    ap.add_argument("--rate", type=float, default=20.0, help="the victim's feed requests/s")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dirs")
    ap.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="the server of the 'new defaults, Redis' row ('' to leave the row out)",
    )
    ap.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also the Redis row with the fyp package of this src dir (an earlier commit's)",
    )
    ap.add_argument(
        "--configs", default=None, help="only these configurations (names, separated by ;)"
    )
    args = ap.parse_args()
    exit_on_sigterm()
    n_videos, n_users, views = 10_000, 1_000, 20
    seconds = 8.0 if args.quick else 15.0
    rounds = args.rounds or (1 if args.quick else 3)
    new_auth = {
        k: v for k, v in AuthConfig().model_dump().items() if k.startswith(("key_", "failed_auth_"))
    }
    configs = [("old defaults", OLD_AUTH), ("new defaults", new_auth)]
    prefix = f"fyp-bench-rl-{uuid.uuid4().hex[:8]}"
    if args.redis:  # the same limits, their buckets on Redis (as API processes share them)
        store = f"{args.redis}?prefix={prefix}"
        configs.append(("new defaults, Redis", {**new_auth, "rate_limits": store}))
    sources: dict[str, Path] = {}
    if args.redis and args.baseline_src is not None:
        name = "new defaults, Redis, baseline"
        configs.append((name, {**new_auth, "rate_limits": store}))
        sources[name] = args.baseline_src
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(";")]
        configs = [c for c in configs if c[0] in wanted]

    root = Path(tempfile.mkdtemp(prefix="fyp-bench-ratelimit-", dir=args.data_root))
    payload: dict[str, Any] = {
        "benchmark": "ratelimit",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": n_videos,
            "users_with_history": n_users,
            "views_per_user": views,
            "count": COUNT,
            "victim_rate_per_s": args.rate,
            "flood_concurrency": CONCURRENCY,
            "phase_seconds": seconds,
            "rounds": rounds,
        },
        "configs": {name: auth for name, auth in configs},
        "runs": [],
    }
    try:
        seed_dir = root / "seed"
        now = now_ms()
        console.print(f"[bold]{n_videos:,} videos[/]: building the state in {seed_dir}")
        engine, setup = build_state(seed_dir, n_videos, n_users, views, now)
        users = {
            "victim": request_users(n_users, 2_000, seed=11, tag="victim"),
            "flood": request_users(n_users, 2_000, seed=12, tag="flood"),
        }
        register_users(engine, [{"user_id": u} for us in users.values() for u in us])
        engine.checkpoints.write()  # each server starts without a replay
        engine.close()
        payload["setup"] = setup
        for r in range(rounds):
            for name, auth in configs:
                data_dir = root / f"{name.replace(' ', '-')}-{r}"
                shutil.copytree(seed_dir, data_dir)
                secret = seed_dir.with_name(seed_dir.name + ".secret")  # beside, never inside
                shutil.copy(secret, data_dir.with_name(data_dir.name + ".secret"))
                run = run_config(
                    name, auth, data_dir, root, users, args.rate, seconds, sources.get(name)
                )
                payload["runs"].append({"round": r, **run})
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if args.redis:
            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    payload["finished_at"] = utc_now_iso()
    payload["summary"] = summarise(payload["runs"])
    _print(payload)
    path = write_json("ratelimit_quick" if args.quick else "ratelimit", payload)
    console.print(f"Wrote {path}")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration and phase: medians over the rounds, statuses summed."""
    out: list[dict[str, Any]] = []
    keys = dict.fromkeys((run["config"], ph["phase"]) for run in runs for ph in run["phases"])
    for config, phase in keys:
        rows = [ph for run in runs if run["config"] == config for ph in run["phases"]]
        rows = [ph for ph in rows if ph["phase"] == phase]
        lats = [ph["victim"]["latency_ms"] for ph in rows]
        floods = [ph["flood"] for ph in rows if "flood" in ph]
        statuses: dict[str, int] = {}
        for f in floods:
            for k, v in f["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        out.append(
            {
                "config": config,
                "phase": phase,
                "victim_ok": sum(lat.get("count", 0) for lat in lats),
                "victim_not_ok": sum(
                    ph["victim"]["errors"]
                    + sum(v for k, v in ph["victim"]["statuses"].items() if k != "200")
                    for ph in rows
                ),
                "victim_p50_ms": _median([lat.get("p50") for lat in lats]),
                "victim_p99_ms": _median([lat.get("p99") for lat in lats]),
                "victim_p99_ms_each_round": [lat.get("p99") for lat in lats],
                "victim_max_ms": _median([lat.get("max") for lat in lats]),
                "server_cpu_share": _median([ph.get("server_cpu_share") for ph in rows]),
                "server_cpu_ms_per_request": _median(
                    [ph.get("server_cpu_ms_per_request") for ph in rows]
                ),
                "flood_requests_per_s": _median([f["requests_per_s"] for f in floods]),
                "flood_ok_per_s": _median([f["ok_per_s"] for f in floods]),
                "flood_statuses": statuses if floods else None,
            }
        )
    return out


def _print(payload: dict[str, Any]) -> None:
    rows = []
    for row in payload["summary"]:
        flood = row["flood_statuses"]
        rows.append(
            [
                row["config"],
                row["phase"],
                f"{row['victim_ok']:,}",
                str(row["victim_not_ok"]),
                ms(row["victim_p50_ms"]),
                ms(row["victim_p99_ms"]),
                " / ".join(ms(p, 0) for p in row["victim_p99_ms_each_round"]),
                ms(row["victim_max_ms"]),
                ms(row["server_cpu_share"]),
                ms(row["server_cpu_ms_per_request"]),
                "—" if flood is None else f"{row['flood_requests_per_s']:,.0f}",
                "—" if flood is None else f"{row['flood_ok_per_s']:,.0f}",
                "—" if flood is None else ", ".join(f"{k}: {v:,}" for k, v in flood.items()),
            ]
        )
    p = payload["params"]
    refused = "; ".join(
        f"{run['config']} (round {run['round']}): {run['auth_refused'] or 'none'}"
        for run in payload["runs"]
    )
    print_table(
        f"The victim's feed (open loop, {p['victim_rate_per_s']:g}/s) while one key or one "
        "address floods (ms; medians over rounds)",
        [
            "limits",
            "phase",
            "victim ok",
            "victim not ok",
            "p50",
            "p99",
            "p99 each round",
            "max",
            "server CPU",
            "CPU ms/req",
            "flood req/s",
            "flood 200/s",
            "flood statuses (all rounds)",
        ],
        rows,
        caption=(
            f"{p['videos']:,} videos, {p['users_with_history']:,} users; {p['rounds']} "
            f"round(s) of phases of {p['phase_seconds']:g} s; flood: "
            f"{p['flood_concurrency']} threads closed loop in their own process, not "
            "honouring Retry-After; server CPU: share of one core over the phase, and CPU per "
            "request answered (the victim's and the flood's). Refusals the server "
            f"counted: {refused}"
        ),
    )


if __name__ == "__main__":
    main()
