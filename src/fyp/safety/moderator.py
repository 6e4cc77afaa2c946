"""Moderation as the engine takes it: a moderator's decision (audited, stored durably,
in force for the very next feed), the automatic review of videos whose reports crossed
the policy's threshold, and the queue a moderator works through.

The decisions' history is the :class:`~fyp.catalog.moderation.ModerationStore`'s; what a
decision does to the feed is the catalog's (:meth:`fyp.catalog.index.CatalogIndex.moderate`)
and the policy's. The engine's state is read through ``state()``: a restore from a
checkpoint replaces it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fyp.catalog.moderation import ModerationStore
from fyp.privacy.audit_log import AuditLog
from fyp.safety.labels import ModerationState, unknown_labels
from fyp.state.updater import LogState
from fyp.types import ModerationAction, Video

REPORTS_ACTOR = "reports"  # the actor of an automatic review


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """A video in the moderation queue."""

    video: Video
    state: ModerationState
    labels: tuple[str, ...]
    reporters: int
    report_weight: float
    last_reason: str | None = None


class UnknownVideoError(KeyError):
    """A moderation action for a video the catalog does not hold."""


class InvalidModerationError(ValueError):
    """A moderation action that names unknown labels, or changes nothing."""


class Moderator:
    """``state()``: the engine's state now; ``extra_labels``: the policy's labels besides
    the built-in ones; ``lock``: the engine's; ``history``: the store's, as the engine
    read it at its start; ``reviews``: whether this process sends
    reported videos to review (a learner process does not: the server it learns beside
    folds the same reports)."""

    def __init__(
        self,
        state: Callable[[], LogState],
        store: ModerationStore,
        audit: AuditLog,
        clock: Callable[[], int],
        extra_labels: Sequence[str],
        lock: threading.RLock,
        history: Sequence[ModerationAction],
        reviews: bool = True,
    ) -> None:
        self._state = state
        self.store = store
        self.audit = audit
        self.clock = clock
        self.extra_labels = extra_labels
        self._lock = lock
        self.reviews = reviews
        # Videos sent to review once: a moderator's later decision is not undone by a replay.
        self._auto_reviewed = {a.video_id for a in history if a.actor == REPORTS_ACTOR}
        # Told each decision's video once it is in force here (the engine tells the
        # other serving processes: fyp.cluster.changes).
        self.changed: Callable[[str], None] = lambda video_id: None
        # Whether this process's turn it is to send reported videos to review, where
        # several serving processes fold the same reports (fyp.cluster.review_lease);
        # None: the only process, whose turn it always is.
        self.review_turn: Callable[[], bool] | None = None

    def moderate(
        self,
        video_id: str,
        state: str | None,
        labels: Sequence[str] | None,
        reason: str,
        actor: str = "api",
    ) -> ModerationAction:
        """Set a video's state and/or labels (``labels``: its whole set from now on);
        durable before it returns, in force for the very next feed."""
        catalog = self._state().catalog
        if video_id not in catalog.row_of:
            raise UnknownVideoError(video_id)
        if state is None and labels is None:
            raise InvalidModerationError("give a state, labels, or both")
        if state is not None and state not in set(ModerationState):
            raise InvalidModerationError(
                f"unknown state {state!r}; one of {[s.value for s in ModerationState]}"
            )
        if labels is not None:
            unknown = unknown_labels(labels, self.extra_labels)
            if unknown:
                raise InvalidModerationError(f"unknown labels {unknown}")
        action = ModerationAction(
            video_id,
            state,
            None if labels is None else tuple(dict.fromkeys(labels)),
            reason,
            actor,
            self.clock(),
        )
        # Recorded first: a decision the audit log cannot hold is not taken (a 503).
        audited = self.audit.append(
            "moderation",
            actor,
            details={
                "video_id": video_id,
                "state": state,
                "labels": None if labels is None else list(action.labels or ()),
                "reason": reason,
            },
        )
        try:
            self.store.add([action])
        except BaseException:
            # Not taken after all: said so next to the record (if the log takes it).
            with contextlib.suppress(Exception):
                self.audit.append(
                    "moderation",
                    actor,
                    outcome="failed",
                    details={"video_id": video_id, "seq": audited.seq},
                )
            raise
        with self._lock:
            self._state().catalog.moderate([action])
            if actor == REPORTS_ACTOR:
                self._auto_reviewed.add(video_id)
        self.changed(video_id)
        return action

    def apply_history(self, video_id: str) -> None:
        """A decision another process took: the video's history as stored now, in force
        here (the catalog's overlay is the fold of the history, so applying it whole again
        is the same as applying its last action)."""
        self._in_force(video_id, self.store.history(video_id))

    def _in_force(self, video_id: str, history: Sequence[ModerationAction]) -> None:
        """``history``, the video's as stored, in force here."""
        with self._lock:
            self._state().catalog.moderate(history)
            if any(a.actor == REPORTS_ACTOR for a in history):
                self._auto_reviewed.add(video_id)

    def review_reported(self) -> None:
        """Videos whose reports crossed the policy's threshold go to review (``pending``),
        once each. Called after each learning step, which folds the reports. Where
        processes take turns (``review_turn``), one whose turn it is not keeps them due
        (a holder killed before deciding leaves them to the next), dropping those the
        holder has decided meanwhile; and one whose turn it is first looks for the
        video's automatic decision in the store (taken by the last holder)."""
        state = self._state()
        due = state.reports.take_due()
        if not self.reviews:
            return
        due = [r for r in due if self._still_due(state, r)]
        turn = self.review_turn
        if not due:
            return
        if turn is not None and not turn():
            state.reports.due[:0] = due
            return
        for i, row in enumerate(due):
            try:
                sent = self._send_to_review(state, row, turn)
            except BaseException:
                # Not read or not stored (the store unreachable, a full disk): due again,
                # for the next learning step.
                state.reports.due[:0] = due[i:]
                raise
            if not sent:  # (the turn lost meanwhile: the rest stay due)
                state.reports.due[:0] = due[i:]
                return

    def _send_to_review(self, state: LogState, row: int, turn: Callable[[], bool] | None) -> bool:
        """``row``'s video sent to review, unless the last holder of the turn did (then
        that decision in force here); False, with nothing done, where it is not this
        process's turn (checked again after the store's answer, which may outlast it)."""
        video_id = state.catalog.videos[row].video_id
        if turn is not None:
            if not turn():
                return False
            history = self.store.history(video_id)
            if any(a.actor == REPORTS_ACTOR for a in history):
                self._in_force(video_id, history)
                return True
            if not turn():
                return False
        reporters = len(state.reports.reporters.get(row, ()))
        weight = state.reports.weight.get(row, 0.0)
        self.moderate(
            video_id,
            ModerationState.PENDING.value,
            None,
            f"automatic: reported by {reporters} users (weighted {weight:.2f})",
            REPORTS_ACTOR,
        )
        return True

    def _still_due(self, state: LogState, row: int) -> bool:
        catalog = state.catalog
        return (
            catalog.videos[row].video_id not in self._auto_reviewed
            and catalog.states[row] is ModerationState.APPROVED
        )

    def queue(self, limit: int) -> list[ReviewItem]:
        """Videos waiting for review (``pending``) and reported videos, most reported
        first, each with the reason of its last moderation action."""
        with self._lock:
            state = self._state()
            cat, reports = state.catalog, state.reports
            rows = {r for r, s in enumerate(cat.states) if s is ModerationState.PENDING}
            rows |= set(reports.reporters)
            ordered = sorted(rows, key=lambda r: (-reports.weight.get(r, 0.0), r))[:limit]
            items = [
                ReviewItem(
                    cat.videos[r],
                    cat.states[r],
                    cat.labels[r],
                    len(reports.reporters.get(r, ())),
                    reports.weight.get(r, 0.0),
                )
                for r in ordered
            ]
        wanted = {i.video.video_id for i in items}
        last = {a.video_id: a.reason for a in self.store.history() if a.video_id in wanted}
        return [dataclasses.replace(i, last_reason=last.get(i.video.video_id)) for i in items]
