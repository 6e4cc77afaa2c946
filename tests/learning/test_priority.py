"""The learner's scheduling priority: every thread of its process, those started before
too, runs at SCHED_IDLE (or at the nice value, where only that is asked for). In a child
process: neither is reversible by the test's own process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fyp.learning.priority import thread_ids

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux only")

CHILD = """
import os, sys, threading
from fyp.learning.priority import lower_priority, thread_ids
started = threading.Event()
stop = threading.Event()
before = threading.Thread(target=lambda: (started.set(), stop.wait()))
before.start()
started.wait()
print(lower_priority(int(sys.argv[1]), sys.argv[2]))
after = threading.Thread(target=stop.wait)
after.start()
tids = thread_ids()
assert len(tids) >= 3, tids
for tid in tids:
    print(tid, os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid))
stop.set()
"""


def _run(nice: int, policy: str) -> tuple[str, list[tuple[int, int]]]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(nice), policy],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    ).stdout.split("\n")
    threads = [tuple(int(x) for x in line.split()[1:]) for line in out[1:] if line.strip()]
    return out[0], threads  # type: ignore[return-value]


def test_every_thread_of_the_learner_runs_at_sched_idle() -> None:
    got, threads = _run(19, "idle")
    assert got == "idle"
    assert threads and all(t == (os.SCHED_IDLE, 19) for t in threads), threads


def test_nice_only_where_asked() -> None:
    got, threads = _run(7, "nice")
    assert got == "nice"
    nice = max(os.getpriority(os.PRIO_PROCESS, 0), 7)  # (the tests' own may be higher)
    assert threads and all(t == (os.SCHED_OTHER, nice) for t in threads), threads


def test_the_threads_of_this_process_are_listed() -> None:
    assert os.getpid() in thread_ids()
