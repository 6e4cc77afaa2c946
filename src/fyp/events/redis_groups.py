"""Consumer groups on the Redis event log's stream (XGROUP, XREADGROUP, XACK,
XAUTOCLAIM): several consumers share the log's events, each event handed to one of
them, and the events a consumer took and never acknowledged (it died) are claimed by
another once they have been idle long enough.

A group is delivery, not learning state: it says which consumer was handed which event
and whether it said it was done. The learner does not use one to be exactly-once — its
checkpoint holds its state with the offset it has applied, and a restart replays the log
after that offset (``EventLog.read``), whatever a group says. What groups are for: work
that can be spread over consumers and done at least once (a consumer that dies after the
work and before its XACK has its events claimed and done again), such as exporting the
stream to a warehouse, per-event moderation or fraud checks, or learners of several
shards. See docs/cluster.md.

An entry whose event was deleted (an erasure, retention) after the group was handed it
is acknowledged and skipped, not returned: its event is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from fyp.events.redis_log import RedisEventLog, stream_id, stream_offset
from fyp.types import LoggedEvent

__all__ = ["ConsumerGroup", "GroupInfo", "groups"]

# The longest a read blocks: under the client's socket timeout (5 s), which would
# otherwise cut a blocked read off as a fault.
MAX_BLOCK_MS = 2_000


@dataclass(frozen=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int  # handed to a consumer, not acknowledged
    last_delivered: int  # the offset of the last event handed to a consumer
    oldest_pending: int | None  # the lowest offset pending (None: none)

    @property
    def done_through(self) -> int:
        """Every event at or below this offset has been handed out and acknowledged:
        the group needs none of them again (what trimming may delete)."""
        if self.oldest_pending is not None:
            return min(self.last_delivered, self.oldest_pending - 1)
        return self.last_delivered


def groups(log: RedisEventLog) -> list[GroupInfo]:
    """Every group on the log's stream."""
    with log.reaching():
        try:
            raw: list[dict[str, Any]] = log.client.xinfo_groups(log.stream)
        except redis.ResponseError as err:  # no stream yet (nothing appended)
            if "no such key" in str(err).lower():
                return []
            raise
        out = []
        for g in raw:
            name = g["name"].decode()
            oldest = None
            if int(g["pending"]):
                summary = log.client.xpending(log.stream, name)
                oldest = stream_offset(summary["min"])
            out.append(
                GroupInfo(
                    name,
                    int(g["consumers"]),
                    int(g["pending"]),
                    stream_offset(g["last-delivered-id"]),
                    oldest,
                )
            )
    return out


class ConsumerGroup:
    """One group of consumers on ``log``'s stream; made (if new) to start after
    ``after_offset`` (0: from the log's start; a group that exists keeps its place)."""

    def __init__(self, log: RedisEventLog, name: str, after_offset: int = 0) -> None:
        if not name:
            raise ValueError("a consumer group needs a name")
        self.log = log
        self.name = name
        with log.reaching():
            try:
                log.client.xgroup_create(
                    log.stream, name, stream_id(max(after_offset, 0)), mkstream=True
                )
            except redis.ResponseError as err:
                if not str(err).startswith("BUSYGROUP"):
                    raise

    def _events(self, entries: Sequence[tuple[bytes, Any]]) -> list[LoggedEvent]:
        """The events of stream entries handed to this group; entries whose event is
        gone (erased, past retention) are acknowledged and left out."""
        offsets = [stream_offset(entry_id) for entry_id, _ in entries]
        found = self.log.events_at(offsets)
        gone = [o for o, e in zip(offsets, found, strict=True) if e is None]
        if gone:
            self.ack(gone)
        return [e for e in found if e is not None]

    def read(self, consumer: str, limit: int, block_ms: int = 0) -> list[LoggedEvent]:
        """Up to ``limit`` events no consumer of the group was handed yet, now handed to
        ``consumer`` (pending until :meth:`ack`); ``block_ms``: wait that long (at most
        :data:`MAX_BLOCK_MS`) for one when there is none."""
        if limit <= 0:
            return []
        block = min(block_ms, MAX_BLOCK_MS) if block_ms > 0 else None
        with self.log.reaching():
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, Any]]]],
                self.log.client.xreadgroup(
                    self.name, consumer, {self.log.stream: ">"}, count=limit, block=block
                ),
            )
        if not reply:
            return []
        return self._events(reply[0][1])

    def ack(self, offsets: Sequence[int]) -> int:
        """Say these events are done; how many were pending."""
        if not offsets:
            return 0
        with self.log.reaching():
            return int(self.log.client.xack(self.log.stream, self.name, *map(stream_id, offsets)))

    def claim(self, consumer: str, min_idle_ms: int, limit: int = 1_000) -> list[LoggedEvent]:
        """Events handed to any consumer of the group and not acknowledged for at least
        ``min_idle_ms`` (their consumer died, or is stuck), now handed to ``consumer``
        (XAUTOCLAIM): at most ``limit``, oldest first."""
        out: list[LoggedEvent] = []
        cursor = "0-0"
        while len(out) < limit:
            with self.log.reaching():
                reply = self.log.client.xautoclaim(
                    self.log.stream,
                    self.name,
                    consumer,
                    min_idle_ms,
                    start_id=cursor,
                    count=limit - len(out),
                )
            # (Redis 7 drops entries deleted from the stream from the pending list
            # itself, and names them in reply[2].)
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            out += self._events(reply[1])
            if cursor == "0-0":
                break
        return out

    def pending(self, consumer: str | None = None) -> list[int]:
        """The offsets pending (of ``consumer``, or of all), oldest first, up to 10,000."""
        with self.log.reaching():
            rows = self.log.client.xpending_range(
                self.log.stream, self.name, "-", "+", 10_000, consumername=consumer
            )
        return [stream_offset(cast(bytes, r["message_id"])) for r in rows]

    def delete_consumer(self, consumer: str) -> int:
        """Forget ``consumer`` (one that is gone for good, its events claimed by others
        first: what it still held pending is dropped); how many it held."""
        with self.log.reaching():
            return int(self.log.client.xgroup_delconsumer(self.log.stream, self.name, consumer))

    def destroy(self) -> None:
        """Delete the group (it no longer holds trimming back)."""
        with self.log.reaching():
            self.log.client.xgroup_destroy(self.log.stream, self.name)

    def info(self) -> GroupInfo:
        for g in groups(self.log):
            if g.name == self.name:
                return g
        raise KeyError(self.name)
