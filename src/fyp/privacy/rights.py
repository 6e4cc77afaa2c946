"""The data subject's rights over an engine's data: export (the right of access) and
erasure, with the erasures accepted and not complete, from their durable tombstones.

From the moment an erasure is accepted (its tombstone written) nothing new of the user is
stored, learned or served: every durable write about a user takes ``user_writes`` and
checks :attr:`UserRights.tombstoned` under it (the engine's ingest, profiles, controls,
imported impressions), so a write that passed the check has landed before the erasure
deletes. The erasure is carried out in steps, each idempotent, so that a failure or a kill
at any of them leaves a tombstone that asking again, or the next start, completes.

A learner process follows the tombstones (:meth:`UserRights.follow_tombstones`), another
serving process the erasures this one accepted and completed
(:meth:`UserRights.follow_erasures`, from :mod:`fyp.cluster.changes`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fyp.config import Settings
from fyp.events.impressions import ImpressionLog
from fyp.events.log import EventLog
from fyp.privacy.audit_log import AuditLog
from fyp.privacy.export import build_export
from fyp.privacy.pseudonym import Pseudonyms
from fyp.privacy.user_writes import UserWrites
from fyp.state.updater import LogState
from fyp.storage.checkpointer import Checkpointer
from fyp.types import DAY_MS, UserProfile
from fyp.users.directory import UserDirectory
from fyp.users.store import UserStore

if TYPE_CHECKING:
    from fyp.learning.link import LearnerLink
    from fyp.model.online import OnlineModels
    from fyp.model.replica import ModelReplica

log = logging.getLogger(__name__)
RESUMED_ACTOR = "erasure resumed"  # the audit's actor of an erasure completed at a start


class ErasureInProgressError(Exception):
    """A request about a user whose erasure was accepted and is not complete: nothing of
    theirs is read, stored or served until it is (the API's 409)."""


def erasing_message(user_id: str) -> str:
    """Why a request about ``user_id``, being erased, is refused."""
    return (
        f"user {user_id!r} is being erased: nothing of theirs is read or stored until the "
        f"erasure completes (if it failed, DELETE /v1/users/{{id}} again completes it)"
    )


def _no_step(step: str) -> None:
    """The default :attr:`UserRights.erasure_step`: nothing."""


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure deleted."""

    events: int
    impressions: int
    checkpoint_rewritten: bool


class UserRights:
    """Export and erasure over one engine's stores and state. ``state()`` and
    ``models()`` are the engine's now (a restore from a checkpoint replaces them);
    ``replica`` and ``learner`` are a serving process's copy of the learner process's
    models and its link to it (None elsewhere); ``home(user_id)`` is the user's
    pseudonym if their data may be touched here (else ResidencyError or
    ErasureInProgressError); ``lock`` is the engine's, ``user_writes`` the lock every
    durable write about a user takes (see the module's docstring)."""

    def __init__(
        self,
        settings: Settings,
        pseudonyms: Pseudonyms,
        audit: AuditLog,
        user_store: UserStore,
        users: UserDirectory,
        event_log: EventLog,
        impressions: ImpressionLog,
        checkpoints: Checkpointer,
        state: Callable[[], LogState],
        models: Callable[[], OnlineModels | None],
        replica: ModelReplica | None,
        learner: LearnerLink | None,
        home: Callable[[str], str],
        clock: Callable[[], int],
        lock: threading.RLock,
        user_writes: UserWrites,
    ) -> None:
        self.settings = settings
        self.pseudonyms = pseudonyms
        self.audit = audit
        self.user_store = user_store
        self.users = users
        self.event_log = event_log
        self.impressions = impressions
        self.checkpoints = checkpoints
        self._state = state
        self._models = models
        self.replica = replica
        self.learner = learner
        self._home = home
        self.clock = clock
        self._lock = lock
        self._user_writes = user_writes
        # Erasures accepted and not complete (pseudonym -> audit reference), from their
        # durable tombstones: nothing of these users is stored, learned or served. Read
        # by the engine's writes under ``user_writes``; changed only here, in place.
        self.tombstoned: dict[str, str] = self.user_store.tombstones()
        self._erasing_now: set[str] = set()  # carried out by a request now (under lock)
        # Called with the name of each step of an erasure as it is reached (a test's
        # crash point: a kill there must leave an erasure the next start completes).
        self.erasure_step: Callable[[str], None] = _no_step
        # Told each erasure's audit reference once accepted and once complete, before it
        # is acknowledged (the engine tells the other serving processes).
        self.changed: Callable[[str], None] = lambda ref: None

    # -- who is being erased ------------------------------------------------------------

    def erasing(self, user_id: str) -> bool:
        """Whether the user's erasure was accepted and is not complete."""
        return self.pseudonyms.of(user_id) in self.tombstoned

    def erasures_pending(self) -> dict[str, str]:
        """Users whose erasure was accepted and is not complete: pseudonym -> the
        erasure's audit reference."""
        return dict(self.tombstoned)

    def refuse_erasing(self, user_id: str, pid: str) -> None:
        """ErasureInProgressError if the user (of pseudonym ``pid``) is being erased."""
        if pid in self.tombstoned:
            raise ErasureInProgressError(erasing_message(user_id))

    def follow_tombstones(self) -> list[str]:
        """A learner's (role "learner"): the server's tombstones as stored now. Users
        newly tombstoned are dropped from the state (their models' rows too) and their
        events skipped from now on; users whose erasure the server completed are let go.
        Returns the pseudonyms of the new ones."""
        tombstones = self.user_store.tombstones()
        new = [pid for pid in tombstones if pid not in self.tombstoned]
        with self._lock:
            for pid in new:
                self.tombstoned[pid] = tombstones[pid]
                self._state().erase_user(pid)
            for pid in [p for p in self.tombstoned if p not in tombstones]:
                del self.tombstoned[pid]
        return new

    def follow_erasures(self) -> int:
        """Erasures other processes accepted or completed, from the tombstones as stored
        now: a user newly tombstoned is refused from now on and their state dropped (and
        what this process buffered of their impressions); one whose tombstone is gone
        was erased (profile, controls and state dropped). The checkpoint is rewritten
        without them. Returns how many users changed."""
        tombstones = self.user_store.tombstones()
        with self._user_writes, self._lock:
            begun = [pid for pid in tombstones if pid not in self.tombstoned]
            done = [
                pid
                for pid in self.tombstoned
                if pid not in tombstones and pid not in self._erasing_now
            ]
            for pid in begun:
                self.tombstoned[pid] = tombstones[pid]
            for pid in [*begun, *done]:
                self._state().erase_user(pid)
            if self.replica is not None:
                for pid in begun:  # (until it completes, no update may bring them back)
                    self.replica.forget_user(pid)
                for pid in done:
                    self.replica.forget_user(pid, self._erased_through())
            for pid in done:
                self.users.forget(pid)
                del self.tombstoned[pid]
        for pid in begun:
            self.impressions.erase_user(pid)
        if begun or done:
            self._rewrite_checkpoint()
        return len(begun) + len(done)

    def drop_erased_elsewhere(self, changed: Mapping[str, UserProfile] | None = None) -> int:
        """Users another process erased while this one missed the whole erasure (down,
        or cut off from the notices from its tombstone to its completion, so the
        tombstone was gone when it looked): where every user is registered
        (``privacy.require_registered_users``), a user this process holds (learned
        state, a profile) whose profile the shared store no longer has was erased, as
        only an erasure deletes a profile. Their state, profile and controls are dropped
        here and the checkpoint rewritten without them. So is one whose id was created
        anew since: the stored profile is newer than the one held (a store keeps a
        profile's ``created_at`` over its updates; only an erasure deletes the row).
        ``changed``: only these profiles, the ones written since this process last
        looked (an incremental reconcile with no erasure completed since), checked for a
        user created anew; None: every held user compared with every stored profile (a
        whole read, or an incremental one after an erasure completed: its user is not
        recorded). Returns how many."""
        if not self.settings.privacy.require_registered_users:
            return 0  # (a user may be held without a profile: nothing tells erased ones)
        with self._lock:  # (what is held, read before the store: see below)
            users, profiles, erasing = self._state().users, self.users.profiles, self.tombstoned
            if changed is None:  # (set operations only, under the lock: it grows with users)
                held = (users.keys() | profiles.keys()) - erasing.keys()
            else:  # (only these can be found created anew: no walk over every user held)
                held = {p for p in changed if (p in users or p in profiles) and p not in erasing}
                born = {pid: profiles[pid].created_at for pid in held if pid in profiles}
        # Read after: a user held before this read had their profile stored before
        # (registered first), so a profile missing now was deleted since, by an erasure.
        stored = self.user_store.profiles() if changed is None else changed
        if changed is None:
            # Outside the lock, each a lookup: a profile the process replaced since is the
            # stored one or newer, one it dropped since is not looked at again below.
            born = {}
            for pid in held & stored.keys():
                if (p := profiles.get(pid)) is not None:
                    born[pid] = p.created_at
        gone = [
            pid
            for pid in held
            if (pid not in stored and changed is None)
            or (pid in stored and stored[pid].created_at > born.get(pid, stored[pid].created_at))
        ]
        if not gone:
            return 0
        with self._user_writes, self._lock:
            gone = [pid for pid in gone if pid not in self.tombstoned]
            for pid in gone:
                self._state().erase_user(pid)
                if self.replica is not None:
                    self.replica.forget_user(pid, self._erased_through())
                self.users.forget(pid)
        log.info("dropped %d users erased by another process while this one was away", len(gone))
        if gone:
            self._rewrite_checkpoint()
        return len(gone)

    def _erased_through(self) -> int:
        """For an erasure another process completed: the newest model version that may
        still hold its user's rows. Completion waits for the learner to drop them and
        rewrite what it published, so nothing after its version now does; an update
        published later may hold the same id created anew, which this replica must then
        apply (an unbounded block would keep it out until a restart)."""
        assert self.replica is not None
        status = self.learner.status() if self.learner is not None else None
        return max(status.version if status is not None else 0, self.replica.version)

    def _rewrite_checkpoint(self) -> None:
        """The checkpoint written again without the users just dropped (where this
        process keeps one): settled and begun under the engine's lock, so the snapshot
        is of the state without them; waited for outside it, so feeds go on."""
        if not self.checkpoints.held():
            return
        with self._lock:
            self.checkpoints.settle()
            writer = self.checkpoints.begin_rewrite()
        if writer is not None:
            self.checkpoints.await_rewrite(writer)

    # -- the right of access --------------------------------------------------------------

    def export_user(self, user_id: str, actor: str) -> dict[str, Any]:
        """Everything held about the user, as JSON-able data (audited)."""
        pid = self._home(user_id)
        self.impressions.for_user(pid, 1)  # the write-behind buffer, flushed
        with self._lock:
            state = self._state()
            doc = build_export(
                user_id,
                self.users.profiles.get(pid),
                self.users.controls_of(pid),
                self.event_log.for_user(pid),
                self.impressions.for_user(pid, 10**9),
                state.users.get(pid),
                state.catalog,
                self._user_vectors(pid),
                self.clock(),
                self.settings.ranker.affinity_half_life_days * DAY_MS,
            )
        self.audit.append(
            "user.export",
            actor,
            subject=self.pseudonyms.audit_ref(user_id),
            details={"events": len(doc["events"]), "impressions": len(doc["impressions"])},
        )
        return doc

    def _user_vectors(self, pid: str) -> dict[str, list[float] | None]:
        models = self._models()
        if models is not None:
            return models.user_vectors(pid)
        return {} if self.replica is None else self.replica.user_vectors(pid)

    # -- the right to erasure -------------------------------------------------------------

    def erase_user(self, user_id: str, actor: str) -> Erasure:
        """Erase the user: events, impressions, profile, controls, refresh marks, learned
        state and embedding rows, their reports' weight, and the checkpoint (rewritten
        without them); the stores overwrite what they delete.

        In steps, each durable before the next: the request is audited (an erasure that
        cannot be audited is not carried out); the user's tombstone is written, from when
        nothing of theirs is stored, learned or served (ingest, feeds, profiles, controls
        and the learning step refuse or skip them); then :meth:`_complete_erasure`. A
        failure or a kill at any step after the tombstone leaves it: asking again, or the
        next start, completes the erasure. ErasureInProgressError while another request
        carries out this user's erasure."""
        pid = self.pseudonyms.of(user_id)
        with self._lock:
            if pid in self._erasing_now:
                raise ErasureInProgressError(
                    f"user {user_id!r} is being erased by another request; ask again once "
                    f"it has answered"
                )
            self._erasing_now.add(pid)
        try:
            if pid not in self.tombstoned:
                self._accept_erasure(user_id, pid, actor)
            return self._complete_erasure(pid, actor)
        finally:
            with self._lock:
                self._erasing_now.discard(pid)
            self.pseudonyms.of.cache_clear()  # (it held the raw id)

    def _accept_erasure(self, user_id: str, pid: str, actor: str) -> None:
        """Audit the request, then write the tombstone (durably, then in memory)."""
        self._home(user_id)  # a user of another region: ResidencyError, nothing done
        ref = self.pseudonyms.audit_ref(user_id)
        # Before anything is done: an erasure whose record cannot be written is not
        # carried out (the caller gets the storage fault, and nothing changed).
        self.audit.append("user.erase.requested", actor, subject=ref)
        self.erasure_step("requested")
        self.user_store.add_tombstone(pid, ref, self.clock())
        self.erasure_step("tombstoned")
        # Under the lock of user writes: an event or a controls change checked before
        # this is stored before the rows are deleted; one checked after is refused.
        with self._user_writes, self._lock:
            self.tombstoned[pid] = ref
        self.changed(ref)

    def _complete_erasure(self, pid: str, actor: str) -> Erasure:
        """Carry out the erasure of a tombstoned user (again from the start if an earlier
        try failed or was killed: each step is idempotent): delete their rows and drop
        their state; rewrite the checkpoint; scrub the event and impression files;
        audit the completion with the counts; last, the profile, controls, refresh marks
        and tombstone, in one transaction (its file scrubbed too)."""
        ref = self.tombstoned[pid]
        writer: int | None = None
        with self._lock:
            # A checkpoint being written holds the user: it lands first, then the rewrite.
            self.checkpoints.settle()
            events = self.event_log.erase_user(pid)
            # (the write-behind buffer is written first: a feed served before the
            # tombstone has its impressions deleted here; none is served after it)
            impressions = self.impressions.erase_user(pid)
            self._state().erase_user(pid)
            if self.replica is not None:
                self.replica.forget_user(pid)
            self.erasure_step("deleted")
            rewrite = self.checkpoints.held()
            if rewrite:
                # Written by a child from a snapshot of the state without the user, so
                # feeds go on while it writes (in place, pickling would hold the lock for
                # the whole rewrite); in place where the platform cannot fork.
                writer = self.checkpoints.begin_rewrite()
        if writer is not None:
            self.erasure_step("rewriting")
            self.checkpoints.await_rewrite(writer)
        self.erasure_step("rewritten")
        # Outside the engine's lock (a pass over each file; feeds go on): what SQLite
        # left of the deleted rows outside their cells.
        self.event_log.scrub()
        self.impressions.scrub()
        self.erasure_step("scrubbed")
        if self.learner is not None:
            # The learner process's state, checkpoint and published models, without the
            # user (it follows the tombstone; done here if it is not running).
            through = self.learner.erase(pid, ref)
            if self.replica is not None:
                with self._lock:  # (updates after ``through`` may hold the user anew)
                    self.replica.forget_user(pid, through)
            self.erasure_step("learner")
        # The completion, audited before the tombstone goes: if it cannot be written, the
        # erasure is not complete, and asking again completes (and audits) it.
        self.audit.append(
            "user.erase",
            actor,
            subject=ref,
            details={"events": events, "impressions": impressions},
        )
        self.erasure_step("audited")
        with self._user_writes, self._lock:
            self.user_store.erase(pid)
            self.users.forget(pid)
            del self.tombstoned[pid]
        self.changed(ref)
        return Erasure(events, impressions, rewrite)

    def resume_erasures(self) -> None:
        """Complete the erasures a killed (or failed) process accepted and did not
        complete. One that fails again (a full disk) keeps its tombstone: the user stays
        refused, and asking again completes it."""
        for pid in list(self.tombstoned):
            try:
                self._complete_erasure(pid, RESUMED_ACTOR)
            except (OSError, sqlite3.Error) as err:
                log.warning("an interrupted erasure could not be completed (%s); ask again", err)
