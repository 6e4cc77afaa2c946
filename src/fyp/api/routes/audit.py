"""``GET /v1/audit/report`` and ``GET /v1/audit``: the algorithm audit of a window, and
the audit log's records, a page at a time (to ship them elsewhere)."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from fyp.api.running import Running
from fyp.api.schemas import AuditOut, AuditRecordOut
from fyp.api.security import Caller, Guard
from fyp.audit.commands import DEFAULT_WINDOW_DAYS
from fyp.types import DAY_MS


def audit_router(guard: Guard, running: Running) -> APIRouter:
    """The audit's routes, over ``running``'s engine."""
    router = APIRouter()
    AuditRead = Annotated[Caller, Depends(guard.require("audit:read"))]  # noqa: N806
    eng = running.eng

    @router.get("/v1/audit/report", tags=["operations"])
    async def audit_report(
        caller: AuditRead, days: Annotated[int, Query(ge=1, le=365)] = DEFAULT_WINDOW_DAYS
    ) -> Response:
        """The algorithm audit of the last ``days`` (what ``fyp audit report --json``
        writes): source mix, exposure concentration, cohorts, filter counts, moderation."""
        e = eng()
        until = e.clock()
        report = await asyncio.to_thread(e.audit_report, until - days * DAY_MS, until)
        return Response(orjson.dumps(report.to_dict()), media_type="application/json")

    @router.get("/v1/audit", response_model=AuditOut, tags=["operations"])
    async def audit_records(
        caller: AuditRead,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    ) -> AuditOut:
        """The audit log's records after ``after_seq`` (to ship them elsewhere), at most
        ``limit``, in order: the next page starts after the last seq of this one."""
        records = await asyncio.to_thread(eng().audit.page, after_seq, limit)
        return AuditOut(
            records=[AuditRecordOut.model_validate(r, from_attributes=True) for r in records]
        )

    return router
