"""The learner's scheduling priority: below serving's, so that on a machine both share
the server gets the CPU first and the learner takes what is left.

``SCHED_IDLE`` (Linux) runs the learner only on CPU time no normal process wants: under
``nice`` alone even nice 19 keeps a small share (about 1/70 of a nice-0 process's on
Linux) that it takes from a busy server. Where the policy is missing or refused, the
learner runs at nice ``learner_nice``. Linux schedules threads, not processes: both are
set on every thread the process has (an imported library's pools may already run), and
threads started later inherit them. Not reversible by an unprivileged process: only for
a process that does nothing but learn.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

__all__ = ["Priority", "lower_priority", "thread_ids"]

Priority = Literal["idle", "nice"]


def thread_ids(pid: int | str = "self") -> list[int]:
    """The ids of the threads of process ``pid`` (Linux; elsewhere the caller's own)."""
    try:
        return sorted(int(t) for t in os.listdir(Path("/proc") / str(pid) / "task"))
    except OSError:
        return [0]


def lower_priority(nice: int, policy: Priority = "idle") -> Priority:
    """Lower this process's scheduling priority: every thread to nice ``nice``, then to
    ``SCHED_IDLE`` when ``policy`` is "idle" and the system permits it. Returns what it
    got ("nice": the policy was refused, or not asked for)."""
    for tid in thread_ids():
        with contextlib.suppress(OSError):  # (a thread that has ended since the listing)
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    if policy != "idle" or not hasattr(os, "SCHED_IDLE"):
        return "nice"
    got: Priority = "idle"
    for tid in thread_ids():
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except PermissionError:
            got = "nice"  # (a container's seccomp profile may refuse it)
        except OSError:
            pass
    return got
