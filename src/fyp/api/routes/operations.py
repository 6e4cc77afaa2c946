"""``GET /healthz``, ``GET /metrics`` and ``GET /v1/stats``: whether the server is up and
learning, its Prometheus figures, and the operator console's live figures."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fyp.api.inputs import json_response
from fyp.api.live import LiveStats
from fyp.api.log_end import read_log_end
from fyp.api.running import Running
from fyp.api.schemas import Health, LearnedModelsHealth
from fyp.api.security import Caller, Guard
from fyp.config import Settings


def operations_router(
    settings: Settings, guard: Guard, running: Running, live: LiveStats
) -> APIRouter:
    """The routes of the server's own state, over ``running``'s engine and loops."""
    router = APIRouter()
    AuditRead = Annotated[Caller, Depends(guard.require("audit:read"))]  # noqa: N806
    eng = running.eng
    metrics = running.metrics

    @router.get(
        "/healthz",
        response_model=Health,
        tags=["operations"],
        responses={503: {"model": Health, "description": "the learning loop stopped"}},
    )
    async def healthz() -> Response:
        """Liveness and readiness: 200 while the learning loop runs, 503 if it stopped
        (feeds are still served, from the state as it was)."""
        e = eng()
        learning = running.learning_loop()
        failure = learning.failure
        log_end = await read_log_end(e)
        lag = e.pending(log_end)
        status = "ok" if failure is None else f"degraded: learning stopped ({failure})"
        if failure is None and learning.storage_error is not None:
            status = f"degraded: storage ({learning.storage_error}); retrying"
        learned = None
        sync = running.model_sync
        if sync is not None and e.learner is not None:
            h = sync.health(e.learner.status(), log_end)
            learned = LearnedModelsHealth(
                version=h.version,
                age_s=h.age_s,
                versions_behind=h.versions_behind,
                learner="up" if h.learner_up else "down",
                learner_offset=h.learner_offset,
                learner_lag=h.learner_lag,
                learner_restarts=h.restarts,
            )
            if failure is None and not h.learner_up:
                status = "degraded: the learner is not running; the last published models serve"
            elif failure is None and h.sync_error is not None:
                status = "degraded: the published models cannot be read; the last applied serve"
        follower = running.changes
        if failure is None and follower is not None and follower.error is not None:
            status = f"degraded: other processes' changes cannot be read ({follower.error})"
        body = Health(
            status=status,
            region=settings.region,
            videos=len(e.catalog),
            events=e.state.applied_offset + lag,
            learning_lag=lag,
            learned_models=learned,
            changes_lag_s=None if follower is None else round(follower.lag_s, 3),
        )
        return json_response(body, 200 if failure is None else 503)

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        dependencies=[Depends(guard.metrics_access(settings.auth.metrics_public))],
    )
    async def prometheus() -> PlainTextResponse:
        """Prometheus text, for any valid API key (whatever its scopes); open without
        one only where ``auth.metrics_public`` is set."""
        text = await metrics.exposition(eng())
        return PlainTextResponse(text, media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/stats", tags=["operations"])
    async def stats(caller: AuditRead) -> Response:
        """Live figures for the operator console: events and feed requests per second,
        feed latency (server side) and the candidate-source mix over the last minute,
        learning lag (events, and how long the oldest unlearned event has waited), what
        each filter rule removed since the start."""
        e = eng()
        rules = e.pipeline.counters.filtered_by_rule
        lag = e.pending(await read_log_end(e))
        body = {
            "region": settings.region,
            "videos": len(e.catalog),
            "users": len(e.state.users),
            "events_total": e.state.applied_offset + lag,
            "learning_lag": lag,
            "freshness_ms": live.learning_age_ms(e.state.applied_offset),
            **live.snapshot(),
            "filtered_by_rule": {"/".join(k): n for k, n in sorted(rules.items())},
            "ts": e.clock(),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return router
