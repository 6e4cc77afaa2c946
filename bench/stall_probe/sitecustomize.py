"""A probe of an API process's event loop, loaded by Python itself (``sitecustomize``)
when ``bench/stall_probe`` is on ``PYTHONPATH`` and ``STALL_PROBE_DIR`` names a folder
(not ``FYP_``: ``fyp cluster up`` keeps those from its children): ``bench/cluster.py
--probe`` puts it in every ``fyp api`` / ``fyp serve`` it starts.
Nothing in ``src/`` knows of it.

A watchdog thread asks the loop (``call_soon_threadsafe``) to answer every 2 ms. An
answer later than :data:`STALL_MS` is a stall: the loop ran nothing else meanwhile.
For each, it records the wall time, how much of it the loop's thread was on a CPU
(its CPU clock), how much it waited for one (``/proc/self/task/<tid>/schedstat``: the
machine's other work), the rest (blocked: a lock, a socket, a disk, the GIL), and the
loop thread's Python stack, sampled every 5 ms while the stall lasts. Also the time of
each call that may wait on the request path: the rate limits' Redis scripts and the
API keys' checks. Written to ``FOLDER/probe-<pid>.json`` every 2 s and at exit.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

STALL_MS = 10.0
PERIOD_S = 0.002
SAMPLE_S = 0.005


def _active() -> Path | None:
    folder = os.environ.get("STALL_PROBE_DIR")
    # (python -m fyp.cli api ...: argv is ['-m', 'api', ...] while site runs)
    if not folder or sys.argv[:1] != ["-m"] or sys.argv[1:2] not in (["api"], ["serve"]):
        return None
    return Path(folder)


class Probe:
    def __init__(self, folder: Path) -> None:
        self.path = folder / f"probe-{os.getpid()}.json"
        self.main = threading.main_thread()
        self.stalls: list[dict[str, Any]] = []
        self.stacks: collections.Counter[str] = collections.Counter()
        self.calls: dict[str, list[float]] = collections.defaultdict(list)
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def _cpu(self) -> float:
        assert self.main.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.main.ident))

    def _runq(self) -> float:
        fields = Path(f"/proc/self/task/{self.main.native_id}/schedstat").read_text().split()
        return int(fields[1]) / 1e9

    def _stack(self) -> str:
        """The innermost frames, then the innermost of fyp's own (who called them)."""
        frame = sys._current_frames().get(self.main.ident or 0)
        inner: list[str] = []
        ours: list[str] = []
        while frame is not None:
            code = frame.f_code
            name = f"{Path(code.co_filename).stem}.{code.co_name}:{frame.f_lineno}"
            if len(inner) < 3:
                inner.append(name)
            elif "/fyp/" in code.co_filename and len(ours) < 5:
                ours.append(name)
            frame = frame.f_back
        return " < ".join([*inner, "...", *ours])

    def watch(self, loop: Any) -> None:
        answered = threading.Event()

        def beat() -> None:
            answered.set()

        while True:
            answered.clear()
            t0, c0, q0 = time.monotonic(), self._cpu(), self._runq()
            try:
                loop.call_soon_threadsafe(beat)
            except RuntimeError:
                return  # (the loop closed)
            seen: collections.Counter[str] = collections.Counter()
            while not answered.wait(SAMPLE_S):
                if (time.monotonic() - t0) * 1e3 >= STALL_MS:
                    seen[self._stack()] += 1
            wall = (time.monotonic() - t0) * 1e3
            if wall >= STALL_MS:
                cpu, runq = (self._cpu() - c0) * 1e3, (self._runq() - q0) * 1e3
                top = seen.most_common(3)
                with self._lock:
                    self.stalls.append(
                        {
                            "at_s": round(t0 - self.started, 3),
                            "wall_ms": round(wall, 1),
                            "cpu_ms": round(cpu, 1),
                            "runq_ms": round(runq, 1),
                            "blocked_ms": round(max(0.0, wall - cpu - runq), 1),
                            "stacks": [[s, n] for s, n in top],
                        }
                    )
                    self.stacks.update(seen)
            time.sleep(PERIOD_S)

    def timed(self, name: str, ms: float) -> None:
        with self._lock:
            self.calls[name].append(round(ms, 2))

    def dump(self) -> None:
        with self._lock:
            out = {
                "pid": os.getpid(),
                "seconds": time.monotonic() - self.started,
                "stalls": self.stalls,
                "calls": dict(self.calls),
            }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(self.path)


def _install(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    probe = Probe(folder)
    import uvicorn.server

    startup = uvicorn.server.Server.startup

    async def probed_startup(self: Any, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        threading.Thread(target=probe.watch, args=(loop,), daemon=True, name="probe").start()

        def dumping() -> None:
            while True:
                time.sleep(2.0)
                probe.dump()

        threading.Thread(target=dumping, daemon=True, name="probe-dump").start()
        return await startup(self, *args, **kwargs)

    uvicorn.server.Server.startup = probed_startup  # type: ignore[method-assign]
    atexit.register(probe.dump)

    from fyp.privacy import keys, redis_ratelimit

    script = redis_ratelimit.RedisRateLimiter._script

    async def timed_script(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await script(self, *args, **kwargs)
        finally:
            probe.timed("ratelimit_redis", (time.perf_counter() - t0) * 1e3)

    redis_ratelimit.RedisRateLimiter._script = timed_script  # type: ignore[method-assign]

    authenticate = keys.KeyStore.authenticate

    def timed_authenticate(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return authenticate(self, *args, **kwargs)
        finally:
            probe.timed("key_check", (time.perf_counter() - t0) * 1e3)

    keys.KeyStore.authenticate = timed_authenticate  # type: ignore[method-assign]


_folder = _active()
if _folder is not None:
    _install(_folder)
