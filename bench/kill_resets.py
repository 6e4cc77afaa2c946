"""Which connections a kill -9 of one of two API processes on one port resets: with a
listening socket each (``SO_REUSEPORT``, what ``fyp api --reuse-port`` does) against one
socket that a parent opens and both processes accept from (what ``fyp cluster up`` does,
``fyp api --fd``).

Two uvicorn processes serving a trivial ASGI app (5 ms an answer: the socket's behaviour
is measured, not fyp's); ``--clients`` threads each sending requests one after another,
a new connection each (raw sockets, ``Connection: close``); after 1.5 s one process is
killed with SIGKILL, and the clients go on for 1.5 s. Each request that did not get a
200 is counted by when it started: before the kill and ended after it (**in flight**:
accepted by, or queued for, the process killed), between the kill and the process
reaped (**during the kill**), or after (**after**). ``--runs`` runs of each, in turn.

    python bench/kill_resets.py [--quick] [--runs N] [--clients N]

Prints a table and writes ``bench/results/kill_resets.json`` (``_quick``). Nothing here
asserts.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from _common import console, exit_on_sigterm, machine_info, print_table, utc_now_iso, write_json

CHILD = r"""
import asyncio, socket, sys
import uvicorn

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await asyncio.sleep(0.005)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

mode, arg = sys.argv[1], int(sys.argv[2])
if mode == "reuseport":
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", arg))
else:
    sock = socket.socket(fileno=arg)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int) -> str:
    """ "ok", or what went wrong (an exception's name, "empty": closed without an answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        return "ok" if data.startswith(b"HTTP/1.1 200") else "empty"
    except OSError as err:
        return type(err).__name__


def run(mode: str, clients: int) -> dict[str, Any]:
    port = free_port()
    shared = None
    if mode == "shared":
        shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.bind(("127.0.0.1", port))
        shared.listen(2048)
        shared.set_inheritable(True)
    arg = str(port if shared is None else shared.fileno())
    fds = () if shared is None else (shared.fileno(),)
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, mode, arg], pass_fds=fds) for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while sum(request(port) == "ok" for _ in range(20)) < 20:
            if time.monotonic() > deadline:
                raise RuntimeError("the servers did not start")
            time.sleep(0.1)
        time.sleep(1.0)  # (both listening)
        stop = threading.Event()
        records: list[tuple[float, float, str]] = []

        def client() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                out = request(port)
                records.append((t0, time.monotonic(), out))

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        kill_at = time.monotonic()
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        reaped_at = time.monotonic()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        if shared is not None:
            shared.close()
    failed = [r for r in records if r[2] != "ok"]
    return {
        "requests": len(records),
        "in_flight": sum(r[0] < kill_at <= r[1] for r in failed),
        "during_kill": sum(kill_at <= r[0] < reaped_at for r in failed),
        "after": sum(r[0] >= reaped_at for r in failed),
        "before": sum(r[1] < kill_at for r in failed),
        "kinds": sorted({r[2] for r in failed}),
    }


def main() -> None:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args()
    runs = args.runs or (1 if args.quick else 5)
    results: dict[str, list[dict[str, Any]]] = {"reuseport": [], "shared": []}
    for i in range(runs):
        for mode in results:
            results[mode].append(run(mode, args.clients))
            console.print(f"run {i + 1} {mode}: {results[mode][-1]}")
    print_table(
        f"Requests not answered 200 around a kill -9 of one of two processes ({runs} runs each)",
        ["listening", "requests", "failed before", "in flight", "during the kill", "after"],
        [
            [
                "a socket each (SO_REUSEPORT)" if mode == "reuseport" else "one shared socket",
                " ".join(str(r["requests"]) for r in rs),
                " ".join(str(r["before"]) for r in rs),
                " ".join(str(r["in_flight"]) for r in rs),
                " ".join(str(r["during_kill"]) for r in rs),
                " ".join(str(r["after"]) for r in rs),
            ]
            for mode, rs in results.items()
        ],
    )
    path = write_json(
        "kill_resets_quick" if args.quick else "kill_resets",
        {
            "when": utc_now_iso(),
            "machine": machine_info(),
            "clients": args.clients,
            "runs": results,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
