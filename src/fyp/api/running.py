"""What the routes reach of a running app: the engine (open once the app's lifespan has
started), the learning loop beside it, the model sync and the change follower where there
are such, and the refusals they write into the audit log.

``create_app`` makes one and its lifespan fills it; each router is built over it, so a
route finds the engine of the app it serves, opened after the route was made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request

from fyp.api.inputs import asked
from fyp.api.learning_loop import LearningLoop
from fyp.api.metrics import Metrics
from fyp.api.model_sync import ModelSync
from fyp.api.security import Caller
from fyp.cluster.changes import ChangeFollower
from fyp.engine import Engine


class Running:
    """The app's running parts, set by its lifespan: ``engine`` while it serves,
    ``learning`` its learning loop, ``model_sync`` where a learner process trains the
    models, ``changes`` where other processes' changes are followed (fyp.cluster)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.engine: Engine | None = None
        self.learning: LearningLoop | None = None
        self.model_sync: ModelSync | None = None
        self.changes: ChangeFollower | None = None

    def eng(self) -> Engine:
        """The engine the app serves (its lifespan opened it before any request)."""
        if self.engine is None:
            raise RuntimeError("the app's engine is not open: its lifespan has not started")
        return self.engine

    def learning_loop(self) -> LearningLoop:
        if self.learning is None:
            raise RuntimeError("the app's learning loop is not running")
        return self.learning

    def known(self, user_id: str) -> None:
        """Nothing, for a user this deployment holds; else ResidencyError (421: the same
        answer, known or not) or a 404."""
        eng = self.eng()
        eng.home(user_id)  # ResidencyError (421) first: the same answer, known or not
        if not eng.knows_user(user_id):
            raise HTTPException(
                404, f"unknown user {user_id!r}: create it with PUT /v1/users/{{id}} first"
            )

    def refused(self, request: Request, counts: dict[str, int]) -> None:
        """A cross-region request, into the audit log: what was asked, by which key,
        never about whom (not even a pseudonym: the user is not this region's). Any key
        can ask as often as it likes, so past a few per key and minute they are counted,
        not written one by one (AuditLog.append_repeated)."""
        caller = getattr(request.state, "caller", None)
        self.eng().audit.append_repeated(
            "residency.refused",
            caller.actor if isinstance(caller, Caller) else "unknown",
            outcome="refused",
            details=asked(request),
            counts=counts,
        )
        self.metrics.residency_refused.inc()

    def token_refused(self, request: Request, caller: Caller, what: Mapping[str, Any]) -> None:
        """A request refused to a user token, into the audit log: the route, the key,
        the token's user and the user asked for (by their audit references). A token's
        holder can repeat it at will, so it is bounded per key and window like 421s."""
        e = self.eng()
        details = asked(request)
        for name, value in what.items():
            details[name] = e.pseudonyms.audit_ref(value) if name == "asked_for" else value
        e.audit.append_repeated(
            "token.refused",
            caller.actor,
            outcome="refused",
            subject=None if caller.user is None else e.pseudonyms.audit_ref(caller.user),
            details=details,
        )
