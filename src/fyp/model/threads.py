"""The native thread pools of a process that holds the learned models (a server, a
serving replica, a learner): numpy's BLAS, torch's and faiss' OpenMP, each limited to
``model.threads`` (one by default).

Serving multiplies a few dozen rows at a time, for one request after another. A BLAS
pool splits even such small products across its threads and leaves the helpers spinning
for the next one: on a machine of two cores a spinning helper takes the core the
server's other work and the learner process need, and its time shows in the process's
CPU but in no Python thread's (docs/performance.md has the figures).
"""

from __future__ import annotations

import faiss
import torch
from threadpoolctl import threadpool_limits

__all__ = ["limit_threads"]


def limit_threads(n: int) -> None:
    """Limit this process's BLAS, torch and faiss thread pools to ``n`` threads each
    (for the rest of the process: a library loaded later keeps its own default)."""
    threadpool_limits(n, user_api="blas")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
