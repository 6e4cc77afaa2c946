"""``create_app(settings)``: the FastAPI application over one :class:`~fyp.engine.Engine`.

Routes are ``async`` and call the engine inline: its calls take milliseconds, and one
event loop with one engine needs no thread hand-offs. The learning loop runs as a task
of the same loop, woken by every accepted event batch. The routes are one router per
resource (:mod:`fyp.api.routes`); this module wires them: the settings, the engine and
what runs beside it (its lifespan), the middleware and the exception handlers.
"""

__all__ = ["MIN_STEPS_PER_SLICE", "LearningLoop", "create_app"]

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from fyp import __version__
from fyp.api.errors import install_storage_errors, install_validation_errors, storage_error_response
from fyp.api.inputs import utf8_target
from fyp.api.learning_loop import MIN_STEPS_PER_SLICE, LearningLoop
from fyp.api.live import LiveStats
from fyp.api.metrics import Metrics, MetricsMiddleware
from fyp.api.model_sync import ModelSync, ModelSyncCollector
from fyp.api.openapi import install_openapi
from fyp.api.routes import (
    audit_router,
    events_router,
    feed_router,
    moderation_router,
    operations_router,
    tokens_router,
    users_router,
    videos_router,
)
from fyp.api.running import Running
from fyp.api.security import Guard
from fyp.cluster.changes import ChangeFollower, follow_changes
from fyp.config import Settings
from fyp.engine import Engine, serving_role
from fyp.learning.link import channel_of
from fyp.learning.supervisor import Supervisor
from fyp.privacy.keys import KeyRefresher, KeyStore
from fyp.privacy.residency import ResidencyError
from fyp.privacy.rights import ErasureInProgressError
from fyp.privacy.tokens import TokenSigner
from fyp.storage.backends import open_key_store
from fyp.web.routes import install_web

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, engine: Engine | None = None, supervise_learner: bool = False
) -> FastAPI:
    """The API over ``engine`` (opened from ``settings`` at startup when not given).
    Where a learner process trains the learned models (``model.learner = "process"``),
    the served models are a replica of what it publishes, kept up to date here, and
    ``supervise_learner`` (``fyp serve``) starts it as a child process and keeps it
    running."""
    metrics = Metrics()
    live = LiveStats()  # the console's figures (GET /v1/stats)
    running = Running(metrics)
    model_metrics: dict[str, ModelSyncCollector] = {}
    keys: KeyStore | None = None
    if settings.auth.required:
        keys = open_key_store(settings.store, settings.data_dir)
    guard = Guard(settings, keys)
    metrics.watch_guard(guard)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What the start-up started, stopped in reverse order if a later step fails
        # (then the error goes on: the server does not start); kept on success, and
        # stopped by the shutdown below. Last, as there: the key store and the limiters'
        # connections, opened with the app.
        async with contextlib.AsyncExitStack() as started:
            started.push_async_callback(guard.close)
            if keys is not None:
                started.callback(keys.close)
            eng, learning, refresher, follower, supervisor = await start(started)
            started.pop_all()
        try:
            yield
        finally:
            if follower is not None:
                running.changes = None
                await asyncio.to_thread(follower.stop)
            await learning.stop()
            if running.model_sync is not None:
                stopping, running.model_sync = running.model_sync, None
                await stopping.stop()
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
            if engine is None:
                if settings.checkpoint_every_events and eng.pending() == 0:
                    eng.checkpoints.write()  # a clean shutdown: the next start replays nothing
                eng.close()
            if refresher is not None:
                await asyncio.to_thread(refresher.stop)
            if keys is not None:
                keys.close()
            await guard.close()

    async def start(
        started: contextlib.AsyncExitStack,
    ) -> tuple[Engine, LearningLoop, KeyRefresher | None, ChangeFollower | None, Supervisor | None]:
        """Open the engine (unless given) and start what runs beside the routes, each
        step's undoing pushed on ``started``."""
        eng = engine if engine is not None else Engine.open(settings, role=serving_role(settings))
        if engine is None:
            started.callback(eng.close)
        if eng.checkpoints.due():
            # A start that replayed more of the log than a checkpoint covers writes one
            # now, before serving: else the loop's first slice would, holding the lock
            # (1.7 s at 100k videos, bench/freshness.py's first trial), and every feed
            # and POST waited for it.
            try:
                await asyncio.to_thread(eng.checkpoints.write)
            except (sqlite3.Error, OSError) as err:  # the loop tries again
                log.warning("could not write the start-up checkpoint (%s)", err)
        if running.engine is not eng:
            metrics.watch_engine(eng)
        running.engine = eng
        guard.tokens = TokenSigner.of(eng.pseudonyms)
        running.learning = learning = LearningLoop(eng)
        started.push_async_callback(learning.stop)
        loop = asyncio.get_running_loop()

        def wake(log_end: int | None = None) -> None:
            # (from the follower's thread: a refresh is the loop's to do)
            loop.call_soon_threadsafe(learning.wake, log_end)

        # (keys checked off the request path: a request then finds its key fresh)
        refresher = KeyRefresher(keys) if keys is not None else None
        if refresher is not None:
            refresher.start()
            started.push_async_callback(asyncio.to_thread, refresher.stop)
        follower = follow_changes(eng, settings, wake)
        running.changes = follower
        if follower is not None:
            started.push_async_callback(asyncio.to_thread, follower.stop)
        supervisor: Supervisor | None = None
        if eng.replica is not None:
            running.model_sync = sync = ModelSync(eng, channel_of(settings))
            try:
                await asyncio.to_thread(sync.catch_up)  # the last published models, first
            except OSError as err:  # (a channel's server down: serve, and the poller retries)
                sync.error = f"{type(err).__name__}: {err}"
                log.warning("could not read the published models at the start (%s)", err)
            if supervise_learner:
                supervisor = Supervisor(settings, settings.data_dir / "learner.log")
                supervisor.start()
                started.push_async_callback(asyncio.to_thread, supervisor.stop)
                sync.restarts = lambda: supervisor.restarts if supervisor is not None else 0
                sync.supervised_pid = lambda: (
                    supervisor.pid if supervisor is not None and supervisor.alive else None
                )
            sync.start()
            started.push_async_callback(sync.stop)
            collector = model_metrics.get("collector")
            if collector is None:
                model_metrics["collector"] = collector = ModelSyncCollector(
                    sync, eng, lambda: metrics.log_end(running.eng())
                )
                metrics.registry.register(collector)
            collector.sync, collector.engine = sync, eng
        return eng, learning, refresher, follower, supervisor

    app = FastAPI(
        title="fyp",
        version=__version__,
        summary="An open, self-hostable For You feed engine.",
        lifespan=lifespan,
        dependencies=[Depends(utf8_target)],
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_openapi(app)  # the document, with every operation's error responses
    install_storage_errors(app, settings.data_dir)
    install_validation_errors(app)
    install_web(app)  # the feed player at /, the operator console at /console

    guard.on_token_refused = running.token_refused
    guard.user_born = lambda user_id: running.eng().born(user_id)

    @app.exception_handler(ResidencyError)
    async def residency_error(request: Request, err: ResidencyError) -> Response:
        try:
            running.refused(request, {})
        except Exception as exc:  # the refusal could not be audited: a 503, or a 500
            return await storage_error_response(request, exc)
        return JSONResponse({"detail": str(err)}, status_code=421)

    @app.exception_handler(ErasureInProgressError)
    async def erasure_in_progress(request: Request, err: ErasureInProgressError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)

    app.include_router(operations_router(settings, guard, running, live))
    app.include_router(videos_router(settings, guard, running))
    app.include_router(events_router(settings, guard, running, live))
    app.include_router(feed_router(settings, guard, running, live))
    app.include_router(users_router(guard, running))
    app.include_router(moderation_router(guard, running))
    app.include_router(audit_router(guard, running))
    app.include_router(tokens_router(settings, guard, running))
    return app
