"""The event log's end as the API's routes read it: where the log is on a server
(Redis), in a worker thread, since a round trip on the event loop holds every request
meanwhile, and the server answers only after the fsync of whatever was appended just
before (``appendfsync always``). ``/healthz``, which a load balancer asks every few
seconds of every process, made such a round trip on the loop twice per call; a
Prometheus scrape once. The embedded log's end is a local read, made in place."""

from __future__ import annotations

import asyncio

from fyp.engine import Engine
from fyp.events.log import SqliteEventLog


def log_on_a_server(engine: Engine) -> bool:
    """Whether ``engine``'s event log is read over the network (Redis), not in place."""
    return not isinstance(engine.event_log, SqliteEventLog)


async def read_log_end(engine: Engine) -> int:
    """``engine.event_log.last_offset()``, without holding the event loop on a server."""
    log = engine.event_log
    if not log_on_a_server(engine):
        return log.last_offset()
    return await asyncio.to_thread(log.last_offset)
