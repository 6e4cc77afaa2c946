"""The event log on a Redis server (Streams), for deployments of several processes.

Keys, all under one hash tag (``{fyp}`` by default, so a Redis Cluster would keep them in
one slot, as the scripts need):

- ``{fyp}:log``: a stream with one entry per event, its id ``0-<offset>``, its only field
  empty. The stream is the order (read after an offset, and the tail that learners may
  follow with XREAD), not the store: **XDEL only marks an entry deleted inside its
  listpack node, whose bytes stay in memory and in every RDB file (and the RDB preamble
  of the AOF) until every entry of that node is gone.** An erased user's events kept in
  the stream would outlive their erasure, so the stream holds nothing of them.
- ``{fyp}:e:<offset>``: the event itself (JSON), one string key each, which DEL frees.
- ``{fyp}:ids``: ``event_id`` → offset, the idempotency check.
- ``{fyp}:u:<user_id>``: that user's event ids scored by offset (export and erasure).
- ``{fyp}:ts``: offsets scored by event time (retention).
- ``{fyp}:seq``: the last offset given.

Offsets come from the counter, not from Redis's own stream ids: the engine does
arithmetic on offsets (lag = end - applied), which needs dense integers, while a stream's
own ids are ``<ms>-<seq>`` of the server's clock. The counter only grows, so an offset is
never given twice, and the stream refuses an id at or below its last one whatever happens
to the entries (a deletion of the newest events moves neither back).

Each write is one Lua script, which Redis runs atomically and writes to the AOF as one
MULTI/EXEC: the duplicate check (HSETNX on the id) and the append cannot be split by
another process's append, nor by a crash (a transaction cut short in the AOF is dropped
on load). Scripts carry a ``#!lua`` shebang, so under ``maxmemory`` Redis refuses a
writing script before its first write rather than partway.

Durability is the server's: an append is acknowledged when Redis has answered the
script, which with ``appendonly yes`` and ``appendfsync always`` is after the AOF was
fsynced (Redis writes and fsyncs the AOF before it sends the replies of the commands it
holds). ``durability=always`` (the default) checks the server runs so at open and refuses
to start otherwise; ``everysec`` accepts ``appendfsync everysec`` (the last second or two
lost to a crash of the machine; nothing to a ``kill -9`` of redis-server, the AOF being
written before the reply); ``none`` checks nothing (tests, or a server known durable
whose CONFIG command is disabled). See docs/cluster.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis
from redis.commands.core import Script

from fyp.events.log import AppendResult
from fyp.storage.redis_server import config, reaching, scrub
from fyp.types import Event, EventType, LoggedEvent

Durability = Literal["always", "everysec", "none"]
DURABILITIES: tuple[Durability, ...] = ("always", "everysec", "none")
DEFAULT_PREFIX = "fyp"

_TYPES = {t.value: t for t in EventType}
_NEW = ord("1")  # an appended event's flag in the append script's answer
_CHUNK = 1_000  # events one deleting script handles: Redis serves nobody else meanwhile

# Commands with many arguments, in slices: Lua's unpack is bounded (by its C stack).
_BULK = """
local function bulk(cmd, key, args)
  local out = {}
  for i = 1, #args, 1000 do
    local last = math.min(i + 999, #args)
    local r
    if key then
      r = redis.call(cmd, key, unpack(args, i, last))
    else
      r = redis.call(cmd, unpack(args, i, last))
    end
    if type(r) == 'table' then
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
  end
  return out
end
"""

# KEYS: ids, log, seq, ts. ARGV: the key prefix; the events' [id, user, ts] triples as
# one JSON array; their JSON blobs joined by newlines (JSON as orjson writes it holds no
# raw newline: control characters in strings are escaped). A batch is three arguments,
# whatever its size: a command of four per event cost more to pack (in Python, in every
# API process) than the script cost Redis, and cjson gives ids back exactly whatever
# characters they hold (a separator would not).
# Returns the last offset given (the log's end after this batch), a space, then a flag
# per event: 1 appended, 0 a duplicate (of the log or of this batch); one bulk reply,
# not an integer per event for redis-py to parse, and no second round trip (waiting
# for another fsync) to learn the log's end.
# The writes are grouped into a few commands of many arguments (a HSET, a MSET, a ZADD
# per key): the script runs on the one thread every process's requests wait for.
_APPEND = (
    "#!lua\n"
    + _BULK
    + """
local ids, log, seqkey, bytime = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
local rows = cjson.decode(ARGV[2])
local jsons, pos = {}, 1
local text = ARGV[3]
while true do
  local nl = string.find(text, '\\n', pos, true)
  if not nl then
    jsons[#jsons + 1] = string.sub(text, pos)
    break
  end
  jsons[#jsons + 1] = string.sub(text, pos, nl - 1)
  pos = nl + 1
end
if #jsons ~= #rows then
  return redis.error_reply('ERR fyp append: ' .. #rows .. ' events, ' .. #jsons .. ' blobs')
end
local wanted = {}
for k = 1, #rows do wanted[k] = rows[k][1] end
local known = bulk('HMGET', ids, wanted)
local seq = tonumber(redis.call('GET', seqkey) or '0')
local seen, flags, idrows, blobs, times, users = {}, {}, {}, {}, {}, {}
for k = 1, #rows do
  local row = rows[k]
  local eid = row[1]
  if known[k] or seen[eid] then
    flags[k] = '0'
  else
    seen[eid] = true
    seq = seq + 1
    local offset = string.format('%d', seq)
    redis.call('XADD', log, '0-' .. offset, 'o', '')
    idrows[#idrows + 1] = eid
    idrows[#idrows + 1] = offset
    blobs[#blobs + 1] = prefix .. 'e:' .. offset
    blobs[#blobs + 1] = jsons[k]
    times[#times + 1] = string.format('%d', row[3])
    times[#times + 1] = offset
    local mine = users[row[2]]
    if not mine then
      mine = {}
      users[row[2]] = mine
    end
    mine[#mine + 1] = offset
    mine[#mine + 1] = eid
    flags[k] = '1'
  end
end
if #idrows > 0 then
  bulk('HSET', ids, idrows)
  bulk('MSET', false, blobs)
  bulk('ZADD', bytime, times)
  for uid, mine in pairs(users) do bulk('ZADD', prefix .. 'u:' .. uid, mine) end
  redis.call('SET', seqkey, string.format('%d', seq))
end
return string.format('%d', seq) .. ' ' .. table.concat(flags)
"""
)

# The reading scripts answer one JSON array of [offset, event] pairs, built from the
# stored JSON as it is: one string to parse in Python (orjson, in C) rather than two
# replies per event through redis-py's parser. Every process folds every event.
# KEYS: log. ARGV: prefix, after, limit.
_READ = """#!lua flags=no-writes
local entries = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[2], '+', 'COUNT', ARGV[3])
local out = {}
for _, entry in ipairs(entries) do
  local offset = string.sub(entry[1], 3)
  local blob = redis.call('GET', ARGV[1] .. 'e:' .. offset)
  if blob then out[#out + 1] = '[' .. offset .. ',' .. blob .. ']' end
end
return '[' .. table.concat(out, ',') .. ']'
"""

# ARGV: prefix, user. In offset order.
_FOR_USER = """#!lua flags=no-writes
local rows = redis.call('ZRANGE', ARGV[1] .. 'u:' .. ARGV[2], 0, -1, 'WITHSCORES')
local out = {}
for i = 2, #rows, 2 do
  local blob = redis.call('GET', ARGV[1] .. 'e:' .. rows[i])
  if blob then out[#out + 1] = '[' .. rows[i] .. ',' .. blob .. ']' end
end
return '[' .. table.concat(out, ',') .. ']'
"""

# KEYS: ids, log, ts. ARGV: prefix, user, chunk. Deletes up to chunk of the user's
# events; returns how many.
_ERASE = """#!lua
local ukey = ARGV[1] .. 'u:' .. ARGV[2]
local rows = redis.call('ZRANGE', ukey, 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local eid, offset = rows[i], rows[i + 1]
  redis.call('XDEL', KEYS[2], '0-' .. offset)
  redis.call('DEL', ARGV[1] .. 'e:' .. offset)
  redis.call('HDEL', KEYS[1], eid)
  redis.call('ZREM', KEYS[3], offset)
  redis.call('ZREM', ukey, eid)
end
return #rows / 2
"""

# KEYS: ids, log, ts. ARGV: prefix, cutoff (ms), chunk. Deletes up to chunk events that
# happened before the cutoff; returns how many.
_DELETE_BEFORE = """#!lua
local offsets = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2],
                           'LIMIT', 0, tonumber(ARGV[3]))
for _, offset in ipairs(offsets) do
  local key = ARGV[1] .. 'e:' .. offset
  local blob = redis.call('GET', key)
  if blob then
    local e = cjson.decode(blob)
    redis.call('HDEL', KEYS[1], e[1])
    redis.call('ZREM', ARGV[1] .. 'u:' .. e[2], e[1])
    redis.call('DEL', key)
  end
  redis.call('XDEL', KEYS[2], '0-' .. offset)
  redis.call('ZREM', KEYS[3], offset)
end
return #offsets
"""


# KEYS: ids, log, ts. ARGV: prefix, through (an offset), chunk. Deletes up to chunk of
# the oldest events at or below the offset (each with its id, user index entry and time),
# then trims the stream below the next: XTRIM MINID frees whole listpack nodes, which
# XDEL does not. Returns how many.
_TRIM = """#!lua
local entries = redis.call('XRANGE', KEYS[2], '-', '0-' .. ARGV[2], 'COUNT', tonumber(ARGV[3]))
for _, entry in ipairs(entries) do
  local offset = string.sub(entry[1], 3)
  local key = ARGV[1] .. 'e:' .. offset
  local blob = redis.call('GET', key)
  if blob then
    local e = cjson.decode(blob)
    redis.call('HDEL', KEYS[1], e[1])
    redis.call('ZREM', ARGV[1] .. 'u:' .. e[2], e[1])
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[3], offset)
end
if #entries > 0 then
  local last = tonumber(string.sub(entries[#entries][1], 3))
  redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. string.format('%d', last + 1))
end
return #entries
"""


def _reaching() -> contextlib.AbstractContextManager[None]:
    return reaching("the event log")


def stream_key(prefix: str = DEFAULT_PREFIX) -> str:
    """The key of the log's stream under ``prefix`` (what a process tails to learn that
    others appended: :mod:`fyp.cluster.event_tail`)."""
    return f"{{{prefix}}}:log"


def stream_id(offset: int) -> str:
    """The stream entry id of an offset."""
    return f"0-{offset}"


def stream_offset(entry_id: bytes | str) -> int:
    """The offset of a stream entry id (``0-<offset>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


class RedisDurabilityError(RuntimeError):
    """The server does not keep what it acknowledges as the log's ``durability`` asks."""


def _encode(e: Event) -> bytes:
    # (orjson writes an enum member as its value, in C: ``.value`` is a Python property)
    return orjson.dumps(
        [e.event_id, e.user_id, e.video_id, e.type, e.ts, e.watch_ms, e.request_id, e.surface]
    )


def _decode(offset: bytes, blob: bytes) -> LoggedEvent:
    f = orjson.loads(blob)
    return LoggedEvent(int(offset), Event(f[0], f[1], f[2], _TYPES[f[3]], f[4], f[5], f[6], f[7]))


def _pairs(reply: bytes) -> list[LoggedEvent]:
    """The reading scripts' answer: ``[[offset, event], ...]``."""
    types = _TYPES
    return [
        LoggedEvent(o, Event(f[0], f[1], f[2], types[f[3]], f[4], f[5], f[6], f[7]))
        for o, f in orjson.loads(reply)
    ]


def split_url(url: str) -> tuple[str, str, Durability]:
    """``redis://…?prefix=p&durability=d`` → (the URL redis-py is given, without those
    two, the prefix, the durability)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = query.pop("prefix", DEFAULT_PREFIX)
    durability = query.pop("durability", "always")
    if not prefix or any(c in prefix for c in "{}"):
        raise ValueError(f"the event log's prefix {prefix!r} must be non-empty, without braces")
    if durability not in DURABILITIES:
        raise ValueError(
            f"the event log's durability {durability!r} is not one of {', '.join(DURABILITIES)}"
        )
    rest = urlunsplit(parts._replace(query=urlencode(query)))
    return rest, prefix, durability


class RedisEventLog:
    """:class:`fyp.events.log.EventLog` on a Redis server: see the module's docstring.

    Any number of processes may append to and read the same log at once. A Redis that
    cannot be reached (down, restarting, loading its AOF) is a
    :class:`fyp.storage.errors.StorageUnavailableError`: an append that meets it may have been
    stored or not, and is safe to send again (idempotent by ``event_id``). redis-py itself
    sends a command again after a connection error (its retry policy): an append whose
    reply was lost and that went through twice stores its events once, and reports them
    as duplicates (the learning loop reads the log, not these counts)."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        durability: Durability = "always",
        timeout_s: float = 5.0,
    ) -> None:
        self._r = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        tag = f"{{{prefix}}}:"
        self._prefix = tag
        self._ids, self._seq, self._ts = (f"{tag}{k}" for k in ("ids", "seq", "ts"))
        self._log = stream_key(prefix)
        self._append = self._r.register_script(_APPEND)
        self._read = self._r.register_script(_READ)
        self._for_user = self._r.register_script(_FOR_USER)
        self._erase = self._r.register_script(_ERASE)
        self._delete_before = self._r.register_script(_DELETE_BEFORE)
        self._trim = self._r.register_script(_TRIM)
        self._readers = f"{tag}readers"
        self.durability = durability
        with _reaching():
            self._check_durability()

    @classmethod
    def from_url(cls, url: str) -> RedisEventLog:
        rest, prefix, durability = split_url(url)
        return cls(rest, prefix, durability)

    # -- the server ---------------------------------------------------------------------

    def _config(self, name: str) -> str:
        return config(self._r, name)

    def _check_durability(self) -> None:
        if self.durability == "none":
            return
        try:
            appendonly, fsync = self._config("appendonly"), self._config("appendfsync")
        except redis.ResponseError as err:  # CONFIG renamed or refused (a managed server)
            raise RedisDurabilityError(
                f"cannot ask the Redis server how it persists ({err}); if it runs with "
                "appendonly yes and appendfsync always, say so with durability=none"
            ) from None
        policy = self._config("maxmemory-policy")
        if policy.startswith("allkeys"):  # (volatile-*: only keys with a TTL; these have none)
            raise RedisDurabilityError(
                f"the Redis server runs with maxmemory-policy {policy}: at its memory limit it "
                "would evict acknowledged events; set maxmemory-policy noeviction"
            )
        fix = "set appendonly yes and appendfsync always in its redis.conf"
        if appendonly != "yes":
            raise RedisDurabilityError(
                "the Redis server runs with appendonly no: acknowledged events would be "
                f"lost when it restarts; {fix} (or accept the loss: durability=none)"
            )
        if self.durability == "always" and fsync != "always":
            raise RedisDurabilityError(
                f"the Redis server runs with appendfsync {fsync}: an acknowledged event "
                f"could be lost to a crash of its machine; {fix} (or accept the last "
                "second's loss: durability=everysec)"
            )

    def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        with _reaching():
            return script(keys=keys, args=args)

    # -- the EventLog protocol ------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult([], [])
        rows = orjson.dumps([(e.event_id, e.user_id, e.ts) for e in events])
        blobs = b"\n".join([_encode(e) for e in events])
        keys = [self._ids, self._log, self._seq, self._ts]
        end, _, flags = self._run(self._append, keys, [self._prefix, rows, blobs]).partition(b" ")
        accepted = [i for i, f in enumerate(flags) if f == _NEW]
        duplicates = [i for i, f in enumerate(flags) if f != _NEW]
        return AppendResult(accepted, duplicates, int(end))

    def read(self, after_offset: int, limit: int) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        reply = self._run(self._read, [self._log], [self._prefix, max(after_offset, 0), limit])
        return _pairs(reply)

    def last_offset(self) -> int:
        with _reaching():
            value = self._r.get(self._seq)
        return 0 if value is None else int(cast(bytes, value))

    def follow(self) -> int:
        # The counter is read from the server every time: another process's appends are
        # always seen.
        return self.last_offset()

    def count(self) -> int:
        with _reaching():
            return int(self._r.xlen(self._log))

    def contains(self, event_id: str) -> bool:
        with _reaching():
            return bool(self._r.hexists(self._ids, event_id))

    def for_user(self, user_id: str) -> list[LoggedEvent]:
        return _pairs(self._run(self._for_user, [], [self._prefix, user_id]))

    def _delete_chunks(self, script: Script, arg: object) -> int:
        total = 0
        while True:
            n = int(
                self._run(script, [self._ids, self._log, self._ts], [self._prefix, arg, _CHUNK])
            )
            total += n
            if n < _CHUNK:
                return total

    def erase_user(self, user_id: str) -> int:
        return self._delete_chunks(self._erase, user_id)

    def delete_before(self, ts: int) -> int:
        return self._delete_chunks(self._delete_before, ts)

    def scrub(self, timeout_s: float = 600.0) -> None:
        """Nothing of deleted events left in the server's files: see
        :func:`fyp.storage.redis_server.scrub`."""
        with _reaching():
            scrub(self._r, timeout_s)

    # -- what consumer groups (fyp.events.redis_groups) build on ---------------------------

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def stream(self) -> str:
        """The stream's key."""
        return self._log

    def reaching(self) -> contextlib.AbstractContextManager[None]:
        """Redis's faults as :class:`StorageUnavailableError`, for the block."""
        return _reaching()

    def events_at(self, offsets: Sequence[int]) -> list[LoggedEvent | None]:
        """The events at these offsets (None: deleted)."""
        if not offsets:
            return []
        with _reaching():
            blobs = cast(
                list[bytes | None], self._r.mget([f"{self._prefix}e:{o}" for o in offsets])
            )
        return [
            None if blob is None else _decode(str(o).encode(), blob)
            for o, blob in zip(offsets, blobs, strict=True)
        ]

    # -- trimming -------------------------------------------------------------------------

    def commit(self, reader: str, offset: int) -> None:
        """``reader`` (a process that folds the log from its checkpoint: a learner, a
        server) holds every event through ``offset`` in a checkpoint: :meth:`trim` keeps
        every event after it. Kept until :meth:`forget_reader`."""
        with _reaching():
            self._r.hset(self._readers, reader, offset)

    def readers(self) -> dict[str, int]:
        """Every reader's committed offset."""
        with _reaching():
            raw = cast(dict[bytes, bytes], self._r.hgetall(self._readers))
        return {k.decode(): int(v) for k, v in raw.items()}

    def forget_reader(self, reader: str) -> bool:
        """Stop holding trimming back for ``reader`` (gone for good)."""
        with _reaching():
            return bool(self._r.hdel(self._readers, reader))

    def trim_bound(self) -> int:
        """The highest offset :meth:`trim` may delete through: the lowest of every
        reader's committed offset and every consumer group's done offset (handed out
        and acknowledged: :attr:`GroupInfo.done_through`); 0 (nothing) when there is
        neither, as a log that nobody has said they hold is not trimmed."""
        from fyp.events.redis_groups import groups

        bounds = list(self.readers().values())
        bounds += [g.done_through for g in groups(self)]
        return max(0, min(bounds, default=0))

    def trim(self, through_offset: int) -> int:
        """Delete the events at or below ``through_offset`` and no further than
        :meth:`trim_bound` (every key of theirs, the stream trimmed with XTRIM MINID);
        returns how many. Offsets are not reused; the deleted events' ids leave the
        idempotency check (an event sent again after its trim is stored again)."""
        through = min(through_offset, self.trim_bound())
        if through <= 0:
            return 0
        total = 0
        while True:
            n = int(
                self._run(
                    self._trim, [self._ids, self._log, self._ts], [self._prefix, through, _CHUNK]
                )
            )
            total += n
            if n < _CHUNK:
                return total

    def close(self) -> None:
        self._r.close()
