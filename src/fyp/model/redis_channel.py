"""The model channel on a Redis server: the learner publishes there and serving processes
on any machine read, as :class:`~fyp.model.channel.FileModelChannel` does with files.

Keys, under the channel's hash tag (``{fyp}`` by default, shared with the event log of
the same prefix: the names do not meet):

- ``{fyp}:model:versions``: a sorted set, ``<kind>:<version>`` scored by version
  (``snapshot:7``, ``delta:8``): what is published, in order.
- ``{fyp}:model:<version>``: the update's ``.npz`` bytes, as a list of chunks of at most
  :data:`CHUNK_BYTES` (a Redis string holds at most 512 MB, and a snapshot at a million
  videos can be larger; a reply of many small bulk strings is also easier on both ends).
- ``{fyp}:model:tmp:<token>``: an update being written, renamed into place by the script
  that publishes it (so a reader never sees half of one); it expires if its writer dies.

Publishing is one script: the version must be above the newest (one writer; a second
learner publishing into the same channel is refused, not interleaved), the update renamed
into place and indexed, and a snapshot drops everything before it. Like the files, the
channel is not the learner's durable state (its checkpoint is): a server that lost it
gets a snapshot at the learner's next start, so nothing here needs ``appendfsync``.

``forget`` (an erasure) rewrites every update that holds the user's rows, then scrubs
the server's files (:func:`fyp.storage.redis_server.scrub`): the replaced values would
otherwise stay in the AOF and the RDB file.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Mapping
from typing import Any, cast

import redis

from fyp.model.channel import ModelUpdate, decode, encode
from fyp.storage import redis_server
from fyp.storage.redis_server import DEFAULT_PREFIX, reaching, scrub

__all__ = ["CHUNK_BYTES", "DEFAULT_PREFIX", "RedisModelChannel", "split_url"]

CHUNK_BYTES = 8 << 20
_TMP_TTL_MS = 3_600_000  # a publish cut short leaves its temporary key this long at most

# KEYS: versions, tmp, final. ARGV: version, kind, the update keys' prefix.
# Returns 0 when published, else the newest version (which was not below this one).
_PUBLISH = """#!lua
local versions, tmp, final = KEYS[1], KEYS[2], KEYS[3]
local top = redis.call('ZREVRANGE', versions, 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= tonumber(ARGV[1]) then
  redis.call('DEL', tmp)
  return tonumber(top[2])
end
redis.call('RENAME', tmp, final)
redis.call('PERSIST', final)
redis.call('ZADD', versions, ARGV[1], ARGV[2] .. ':' .. ARGV[1])
if ARGV[2] == 'snapshot' then
  local before = '(' .. ARGV[1]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', versions, '-inf', before)) do
    redis.call('DEL', ARGV[3] .. string.match(m, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', versions, '-inf', before)
end
return 0
"""

# KEYS: tmp, final. Replaces final with tmp if final is still there (a snapshot may
# have superseded it meanwhile); returns 1 if it did.
_REPLACE = """#!lua
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PERSIST', KEYS[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


def split_url(url: str) -> tuple[str, str]:
    """``redis://…?prefix=p`` → (the URL redis-py is given, without ``prefix``; the
    prefix). ValueError for a URL that names no Redis server or a bad prefix."""
    return redis_server.split_url(url, "the model channel")


def _reaching() -> contextlib.AbstractContextManager[None]:
    return reaching("the model channel")


class RedisModelChannel:
    """A :class:`~fyp.model.channel.ModelChannel` on a Redis server: see the module's
    doc. A server that cannot be reached is a
    :class:`~fyp.storage.errors.StorageUnavailableError` (serving keeps the model it
    holds and polls again; the learner's publish fails and is retried by its restart)."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 10.0,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._r = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._key = f"{{{prefix}}}:model:"
        self._versions = self._key + "versions"
        self._chunk = chunk_bytes
        self._publish = self._r.register_script(_PUBLISH)
        self._replace = self._r.register_script(_REPLACE)

    @classmethod
    def from_url(cls, url: str) -> RedisModelChannel:
        rest, prefix = split_url(url)
        return cls(rest, prefix)

    def _stored(self, after: int | None = None) -> list[tuple[int, bool]]:
        """(version, is a snapshot) of every update stored (``after``: of those above that
        version), oldest first."""
        if after is None:
            members = cast(list[bytes], self._r.zrange(self._versions, 0, -1))
        else:
            members = cast(list[bytes], self._r.zrangebyscore(self._versions, f"({after}", "+inf"))
        out = []
        for m in members:
            kind, _, version = m.decode().partition(":")
            out.append((int(version), kind == "snapshot"))
        return out

    def _write_tmp(self, data: bytes) -> str:
        """``data`` under a temporary key of its own, in chunks; the key."""
        tmp = f"{self._key}tmp:{uuid.uuid4().hex}"
        view = memoryview(data)
        pipe = self._r.pipeline(transaction=False)
        for start in range(0, len(view), self._chunk):
            pipe.rpush(tmp, view[start : start + self._chunk])
        pipe.pexpire(tmp, _TMP_TTL_MS)
        pipe.execute()
        return tmp

    def publish(self, update: ModelUpdate) -> None:
        kind = "snapshot" if update.full else "delta"
        with _reaching():
            tmp = self._write_tmp(encode(update))
            newest = int(
                self._publish(
                    keys=[self._versions, tmp, f"{self._key}{update.version}"],
                    args=[update.version, kind, self._key],
                )
            )
        if newest:
            raise ValueError(
                f"model version {update.version} not published: the channel holds "
                f"version {newest} already (another learner publishes here?)"
            )

    def latest(self) -> int:
        with _reaching():
            top = cast(
                list[tuple[bytes, float]],
                self._r.zrevrange(self._versions, 0, 0, withscores=True),
            )
        return int(top[0][1]) if top else 0

    def _read(self, versions: list[int]) -> list[bytes | None]:
        """Each version's bytes (None: gone, superseded by a snapshot meanwhile)."""
        pipe = self._r.pipeline(transaction=False)
        for v in versions:
            pipe.lrange(f"{self._key}{v}", 0, -1)
        replies = cast(list[list[bytes]], pipe.execute())
        return [b"".join(chunks) if chunks else None for chunks in replies]

    def read_after(self, version: int) -> list[ModelUpdate]:
        with _reaching():
            # Only those above ``version`` (a serving process polls ten times a second,
            # and nothing is new most times: the whole index since the last snapshot was
            # read and parsed each time); a snapshot among them is started from.
            stored = self._stored(after=version)
            snapshots = [v for v, full in stored if full]
            start, wanted = version, []
            if snapshots and snapshots[-1] > version:
                start = snapshots[-1]
                wanted.append(start)
            wanted += [v for v, full in stored if v > start and not full]
            blobs = self._read(wanted) if wanted else []
        out = []
        for data in blobs:
            if data is None:  # superseded meanwhile: the next read starts from the snapshot
                break
            out.append(decode(data))
        return out

    def forget(self, ids: Mapping[str, Collection[str]]) -> int:
        n = 0
        with _reaching():
            # A publish cut short may have left its update under a temporary key.
            leftovers = list(self._r.scan_iter(match=f"{self._key}tmp:*", count=1_000))
            if leftovers:
                self._r.delete(*leftovers)
            for version, _ in self._stored():
                (data,) = self._read([version])
                if data is None:
                    continue
                update = decode(data)
                if not update.holds(ids):
                    continue
                tmp = self._write_tmp(encode(update.without(ids)))
                n += int(self._replace(keys=[tmp, f"{self._key}{version}"]))
            if n or leftovers:
                scrub(self._r)
        return n

    def put_learner_status(self, status: bytes) -> None:
        """The learner's status, for serving processes on other data dirs and machines
        (``/healthz``, an erasure waiting for the learner). Overwritten every few hundred
        ms; it holds the audit references of erasures, never a pseudonym."""
        with _reaching():
            self._r.set(self._key + "learner-status", status)

    def learner_status(self) -> bytes | None:
        with _reaching():
            return cast("bytes | None", self._r.get(self._key + "learner-status"))

    def status(self) -> dict[str, int]:
        with _reaching():
            stored = self._stored()
            pipe = self._r.pipeline(transaction=False)
            for v, _ in stored:
                pipe.memory_usage(f"{self._key}{v}")
            sizes: list[Any] = pipe.execute()
        return {"updates": len(stored), "bytes": sum(int(s or 0) for s in sizes)}

    def close(self) -> None:
        self._r.close()
