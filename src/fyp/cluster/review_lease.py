"""Which serving process sends reported videos to review: the one holding a lease on
the event log's Redis, so that a video is not sent twice by processes that all fold the
same reports.

The lease is a key, ``{prefix}:review-lease``, holding the holder's token, set with
``SET NX PX`` by a process that does not hold it (or taken back by one whose own token
the key still holds) and renewed (``PEXPIRE``, only while it
still holds the holder's token: a Lua script) every third of its time by the one that
does. A holder killed (kill -9, its machine gone, cut off from Redis) stops renewing,
and the key expires ``LEASE_MS`` after its last renewal at most; the next process to
try then takes it, so reviews resume within ``LEASE_MS + RENEW_MS``. A process stopped
cleanly deletes the key, and another takes over at its next try.

A process counts the lease as its own until ``LEASE_MS - MARGIN_MS`` after it sent the
command that took or renewed it (its own clock: the key cannot expire in Redis before
that), and checks before each decision; a decision outlasting the margin could still
overlap the next holder's, which checks the moderation store for the video's automatic
decision before taking one (:meth:`fyp.safety.moderator.Moderator.review_reported`).

Where the event log is not on Redis there is one process, which reviews without a lease.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid

import redis

from fyp.storage.redis_server import reaching, split_url

log = logging.getLogger(__name__)

LEASE_MS = 3_000
RENEW_MS = 1_000  # how often the holder renews, and another tries to take it
MARGIN_MS = 1_000  # counted as lost this long before it could have expired
TIMEOUT_S = 2.0

# Renewed only by its holder: a key another process took after it expired is left alone.
_IF_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call({}) else return 0 end"
_RENEW = _IF_MINE.format("'pexpire', KEYS[1], ARGV[2]")
_RELEASE = _IF_MINE.format("'del', KEYS[1]")
# Taken if free, or if it is still this process's: a holder whose renewal stalled past
# its margin counts the lease as lost while the key may live on with its token, which
# no other process can take; SET NX alone would keep it waiting for the key to expire.
_TAKE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class ReviewLease:
    """The lease on the Redis at ``url`` (with its ``prefix``), tried and renewed by a
    thread of its own once :meth:`start` ed; :meth:`held` is what a decision checks."""

    def __init__(
        self,
        url: str,
        lease_ms: int = LEASE_MS,
        renew_ms: int = RENEW_MS,
        margin_ms: int = MARGIN_MS,
    ) -> None:
        rest, prefix = split_url(url, "the review lease's")
        self.key = f"{{{prefix}}}:review-lease"
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.lease_ms, self.renew_ms, self.margin_ms = lease_ms, renew_ms, margin_ms
        self._r = redis.Redis.from_url(
            rest, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        self._renew = self._r.register_script(_RENEW)
        self._release = self._r.register_script(_RELEASE)
        self._take = self._r.register_script(_TAKE)
        self._valid_until = -math.inf  # (monotonic s) held until then, if at all
        self.taken = 0  # times this process took the lease
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fyp-review-lease", daemon=True)

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def step(self) -> bool:
        """Renew the lease if held, else try to take it; whether it is held now."""
        sent = time.monotonic()
        with reaching("the review lease"):
            if self.held():
                ok = bool(self._renew(keys=[self.key], args=[self.token, self.lease_ms]))
                if not ok:
                    log.warning("the review lease was lost to another process")
            else:
                ok = bool(self._take(keys=[self.key], args=[self.token, self.lease_ms]))
                if ok:
                    self.taken += 1
                    log.info("this process sends reported videos to review (lease taken)")
        self._valid_until = sent + (self.lease_ms - self.margin_ms) / 1000 if ok else -math.inf
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                self.error = None
            except OSError as err:  # (Redis down: the lease lapses by itself meanwhile)
                if self.error is None:
                    log.warning("cannot reach the review lease (%s); retrying", err)
                self.error = f"{type(err).__name__}: {err}"
            self._stop.wait(self.renew_ms / 1000)

    def start(self) -> None:
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; ``release``: give the lease up now, so another process takes
        it at its next try (else it lapses, as a killed holder's does)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=TIMEOUT_S + self.renew_ms / 1000 + 1)
        held, self._valid_until = self.held(), -math.inf
        # Also when its renewal stalled past its margin: counted as lost here, the key may
        # still hold its token, which no other process can take (only its own is deleted).
        # Not when Redis went unanswered at the last try: the key lapses meanwhile.
        if release and (held or (self.taken > 0 and self.error is None)):
            try:
                with reaching("the review lease"):
                    self._release(keys=[self.key], args=[self.token])
            except OSError as err:
                log.warning("could not give the review lease up (%s): it lapses", err)
        self._r.close()
