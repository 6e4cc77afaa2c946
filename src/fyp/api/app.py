"""``create_app(settings)``: the FastAPI application over one :class:`~fyp.engine.Engine`.

Routes are ``async`` and call the engine inline: its calls take milliseconds, and one
event loop with one engine needs no thread hand-offs. The learning loop runs as a task
of the same loop, woken by every accepted event batch.
"""
# No ``from __future__ import annotations`` here: FastAPI reads the route signatures,
# which refer to this module's closures (the settings' limits).

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from fyp import __version__
from fyp.api.errors import install_storage_errors
from fyp.api.live import LiveStats
from fyp.api.metrics import Metrics, MetricsMiddleware
from fyp.api.schemas import (
    AuditOut,
    AuditRecordOut,
    ControlsOut,
    ErasureOut,
    EventBatch,
    EventsResponse,
    FeedResponse,
    Health,
    ModerationIn,
    ModerationOut,
    QueueItem,
    QueueOut,
    RejectedItem,
    Signal,
    UserDetail,
    UserOut,
    VideoBatch,
    VideoOut,
    VideosOut,
    VideosResponse,
    WhyOut,
)
from fyp.api.security import Caller, Guard, retry_after, too_many
from fyp.audit.commands import DEFAULT_WINDOW_DAYS
from fyp.catalog.ingest import validate_videos
from fyp.config import Settings
from fyp.engine import Engine, ErasureInProgressError, InvalidModerationError, UnknownVideoError
from fyp.privacy.keys import KEYS_FILE, SqliteKeyStore
from fyp.privacy.residency import ResidencyError
from fyp.types import DAY_MS, DEFAULT_SURFACE, UserProfile
from fyp.users.controls import ControlsIn, ProfileIn, UserControls
from fyp.validation import ID_PATTERN, MAX_ID_CHARS
from fyp.web.routes import install_web

IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
IdQuery = Annotated[str, Query(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
RETENTION_EVERY_S = 3600.0  # how often the learning loop deletes what retention expired
STORAGE_RETRY_S = 1.0
MIN_STEPS_PER_SLICE = 2  # training steps before new events may cut in (see _steps)

log = logging.getLogger(__name__)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body; 413 past ``max_bytes`` (checked while streaming, so a
    lying or absent Content-Length does not get a large body through), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None


def _batch(body: Any, key: str, limit: int) -> list[object]:
    if not isinstance(body, dict) or key not in body:
        raise HTTPException(422, f'body must be a JSON object with a "{key}" list')
    items = body[key]
    if not isinstance(items, list):
        raise HTTPException(422, f'"{key}" must be a list, got {type(items).__name__}')
    extra = set(body) - {key}
    if extra:
        raise HTTPException(422, f"unknown top-level fields: {sorted(extra)}")
    if len(items) > limit:
        raise HTTPException(413, f"{len(items)} {key} in one batch; the limit is {limit}")
    return items


def _json_body(schema: str) -> dict[str, Any]:
    """OpenAPI for a JSON body the route parses itself (each item validated on its own,
    so FastAPI must not reject the whole batch for one bad item)."""
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _with_body_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that also publishes the hand-parsed request bodies' schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _, defs = models_json_schema(
                [(EventBatch, "validation"), (VideoBatch, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            spec.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi


def _json(body: BaseModel, status: int) -> Response:
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


def _reason_kind(reason: str) -> str:
    """A bounded label for metrics: the field the reason names (``video_id``, ``ts``...)."""
    head = reason.split(":", 1)[0].split(".", 1)[0]
    return head if len(head) <= 32 and head.replace("_", "").isalnum() else "other"


class LearningLoop:
    """The learning loop as a task of the server's event loop: woken by every accepted
    batch, it applies the log in small slices, yielding between them so feeds are
    served while a backlog drains. If it dies, ``failure`` says why (``/healthz``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wake = asyncio.Event()  # made here, inside the running loop it belongs to
        self._slice_error: str | None = None  # the last slice's, until one goes through
        self._expired_at = -RETENTION_EVERY_S
        self._task = asyncio.create_task(self._run())
        self._wake.set()  # catch up with anything logged before the start

    def wake(self) -> None:
        self._wake.set()

    @property
    def storage_error(self) -> str | None:
        """A storage failure the loop is retrying (a slice's write), else the last
        checkpoint's, until a checkpoint is written: a slice that goes through says
        nothing about the checkpoint file."""
        return self._slice_error or self.engine.checkpoint_error

    @property
    def failure(self) -> str | None:
        if not self._task.done() or self._task.cancelled():
            return None
        exc = self._task.exception()
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    async def _run(self) -> None:
        while True:
            try:
                await self._steps()
            except (sqlite3.Error, OSError) as err:
                # The disk (full, read-only, failing). Nothing is lost: the next step
                # redoes the writes that failed (a review is due again, a checkpoint
                # is written again), so wait and try again.
                self._slice_error = f"{type(err).__name__}: {err}"
                log.warning("the learning loop hit a storage error (%s); retrying", err)
                await asyncio.sleep(STORAGE_RETRY_S)
                self._wake.set()
            except Exception:
                log.exception("the learning loop stopped; feeds are served from the last state")
                raise

    async def _steps(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - self._expired_at >= RETENTION_EVERY_S:
                self._expired_at = loop.time()
                self.engine.expire()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that arrives as the event is set (it returns the result), and stop() then
            # waited for the next wake, up to an hour (tests/api/test_learning_loop.py).
            # While a checkpoint child writes, look every second whether it is done.
            idle_s = 1.0 if self.engine.checkpoint_writing else RETENTION_EVERY_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle_s):
                    await self._wake.wait()
            self._wake.clear()
            self.engine.poll_checkpoint()  # a failure stays in engine.checkpoint_error
            while self.engine.learning_due() or self.engine.training_due():
                # Not while training is far behind (a stream faster than it): the events
                # wait in the log, durable, rather than as examples in memory.
                if self.engine.learning_due() and not self.engine.training_backlogged():
                    self.engine.learn(max_events=256, train=False)
                    self._slice_error = None
                    await asyncio.sleep(0)
                # The learned models' steps one at a time, feeds served in between. New
                # events go first (what a user just did shows in their next feed, not
                # after a backlog of training: a whole-catalog index refresh is ~200
                # steps), but not before MIN_STEPS_PER_SLICE steps, so that training
                # keeps up with a steady stream (a slice makes about 1.7 steps due).
                steps = 0
                while self.engine.train_step():
                    steps += 1
                    await asyncio.sleep(0)
                    if (
                        steps >= MIN_STEPS_PER_SLICE
                        and self.engine.pending() > 0
                        and not self.engine.training_backlogged()
                    ):
                        break
                self.engine.poll_checkpoint()
                if self.engine.checkpoint_due():
                    self.engine.start_checkpoint()  # written by a child; feeds go on
                    await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The API over ``engine`` (opened from ``settings`` at startup when not given)."""
    metrics = Metrics()
    live = LiveStats()  # the console's figures (GET /v1/stats)
    limits = settings.limits
    holder: dict[str, Engine] = {}
    loops: dict[str, LearningLoop] = {}
    keys = SqliteKeyStore(settings.data_dir / KEYS_FILE) if settings.auth.required else None
    guard = Guard(settings, keys)
    metrics.watch_guard(guard)
    # The scope each route needs (../API.md): 401 without a valid key, 403 without it.
    # (Type aliases, so named like classes.)
    EventsWrite = Annotated[Caller, Depends(guard.require("events:write"))]  # noqa: N806
    FeedRead = Annotated[Caller, Depends(guard.require("feed:read"))]  # noqa: N806
    CatalogWrite = Annotated[Caller, Depends(guard.require("catalog:write"))]  # noqa: N806
    ModerationWrite = Annotated[Caller, Depends(guard.require("moderation:write"))]  # noqa: N806
    UsersAdmin = Annotated[Caller, Depends(guard.require("users:admin"))]  # noqa: N806
    AuditRead = Annotated[Caller, Depends(guard.require("audit:read"))]  # noqa: N806

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine if engine is not None else Engine.open(settings)
        if eng.checkpoint_due():
            # A start that replayed more of the log than a checkpoint covers writes one
            # now, before serving: else the loop's first slice would, holding the lock
            # (1.7 s at 100k videos, bench/freshness.py's first trial), and every feed
            # and POST waited for it.
            try:
                await asyncio.to_thread(eng.checkpoint)
            except (sqlite3.Error, OSError) as err:  # the loop tries again
                log.warning("could not write the start-up checkpoint (%s)", err)
        if holder.get("engine") is not eng:
            metrics.watch_engine(eng)
        holder["engine"] = eng
        loops["learning"] = learning = LearningLoop(eng)
        try:
            yield
        finally:
            await learning.stop()
            if engine is None:
                if settings.checkpoint_every_events and eng.pending() == 0:
                    eng.checkpoint()  # a clean shutdown: the next start replays nothing
                eng.close()
            if keys is not None:
                keys.close()

    app = FastAPI(
        title="fyp",
        version=__version__,
        summary="An open, self-hostable For You feed engine.",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = _with_body_schemas(app)  # type: ignore[method-assign]
    install_storage_errors(app, settings.data_dir)
    install_web(app)  # the feed player at /, the operator console at /console

    def eng() -> Engine:
        return holder["engine"]

    def refused(request: Request, what: dict[str, Any]) -> None:
        """A cross-region request, into the audit log: what was asked, by which key,
        never about whom (not even a pseudonym: the user is not this region's)."""
        caller = getattr(request.state, "caller", None)
        route = request.scope.get("route")
        eng().audit.append(
            "residency.refused",
            caller.actor if isinstance(caller, Caller) else "unknown",
            outcome="refused",
            details={
                "method": request.method,
                "route": getattr(route, "path", "?"),
                **what,
            },
        )
        metrics.residency_refused.inc()

    @app.exception_handler(ResidencyError)
    async def residency_error(request: Request, err: ResidencyError) -> JSONResponse:
        refused(request, {})
        return JSONResponse({"detail": str(err)}, status_code=421)

    @app.exception_handler(ErasureInProgressError)
    async def erasure_in_progress(request: Request, err: ErasureInProgressError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["operations"],
        responses={503: {"model": Health, "description": "the learning loop stopped"}},
    )
    async def healthz() -> Response:
        """Liveness and readiness: 200 while the learning loop runs, 503 if it stopped
        (feeds are still served, from the state as it was)."""
        e = eng()
        learning = loops["learning"]
        failure = learning.failure
        lag = e.pending()
        status = "ok" if failure is None else f"degraded: learning stopped ({failure})"
        if failure is None and learning.storage_error is not None:
            status = f"degraded: storage ({learning.storage_error}); retrying"
        body = Health(
            status=status,
            region=settings.region,
            videos=len(e.catalog),
            events=e.state.applied_offset + lag,
            learning_lag=lag,
        )
        return _json(body, 200 if failure is None else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        dependencies=[Depends(guard.metrics_access(settings.host in LOOPBACK))],
    )
    async def prometheus() -> PlainTextResponse:
        """Prometheus text: open when the server binds this machine only (127.0.0.1),
        else for any valid API key."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/videos",
        response_model=VideosResponse,
        tags=["catalog"],
        openapi_extra=_json_body("VideoBatch"),
        responses={422: {"model": VideosResponse, "description": "some videos rejected"}},
    )
    async def upsert_videos(request: Request, caller: CatalogWrite) -> Response:
        """Insert or update a batch of videos. Each is validated on its own: the valid ones
        are stored even when others are rejected (then the status is 422)."""
        items = _batch(
            await read_json(request, limits.max_body_bytes), "videos", limits.max_batch_videos
        )
        videos, bad = validate_videos(items)
        eng().upsert_videos(videos)
        rejected = [RejectedItem(index=i, id=vid, reason=r) for i, vid, r in bad]
        body = VideosResponse(upserted=len(videos), rejected=rejected)
        if rejected:
            body.detail = f"{len(rejected)} of {len(items)} videos rejected; the rest were stored"
        return _json(body, 422 if rejected else 200)

    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        tags=["events"],
        openapi_extra=_json_body("EventBatch"),
        responses={
            422: {"model": EventsResponse, "description": "some events rejected"},
            413: {"description": "batch or body too large"},
        },
    )
    async def post_events(request: Request, caller: EventsWrite) -> Response:
        """Record a batch of events. Each is validated on its own; the valid ones are
        durably stored (fsynced) before this returns, even when others are rejected (then
        the status is 422 and ``rejected`` says which and why). Sending the same
        ``event_id`` again changes nothing, so a failed batch can simply be retried."""
        items = _batch(
            await read_json(request, limits.max_body_bytes), "events", limits.max_batch_events
        )
        result = eng().ingest(items, user_limit=guard.user_wait)
        if result.accepted:
            loops["learning"].wake()
            live.events_accepted(result.accepted, eng().event_log.last_offset())
        residency = sum(r.kind == "residency" for r in result.rejected)
        if residency:
            refused(request, {"events_refused": residency})
        metrics.events.labels("accepted").inc(result.accepted)
        metrics.events.labels("duplicate").inc(result.duplicates)
        metrics.events.labels("rejected").inc(len(result.rejected))
        for r in result.rejected:
            metrics.events_rejected.labels(_reason_kind(r.reason)).inc()
        body = EventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                RejectedItem(index=r.index, id=r.event_id, reason=r.reason) for r in result.rejected
            ],
        )
        if result.rejected:
            body.detail = (
                f"{len(result.rejected)} of {len(items)} events rejected; the others were stored"
            )
        if residency and residency == len(items):
            body.detail = "every event is of a user not homed in this deployment; none stored"
            return _json(body, 421)
        limited = [r for r in result.rejected if r.kind == "rate_limited"]
        if limited and len(limited) == len(items):
            response = _json(body, 429)
            response.headers["Retry-After"] = str(retry_after(1 / settings.auth.user_rate_per_s))
            return response
        return _json(body, 422 if result.rejected else 200)

    @app.get("/v1/feed", response_model=FeedResponse, tags=["feed"])
    async def feed(
        caller: FeedRead,
        user_id: IdQuery,
        count: Annotated[int, Query(ge=1, le=settings.feed.max_count)] = (
            settings.feed.default_count
        ),
        surface: IdQuery = DEFAULT_SURFACE,
    ) -> Response:
        """The next ``count`` videos for ``user_id``, each with its source, reason and
        score. Served items are recorded as impressions under ``request_id``."""
        wait = guard.user_wait(user_id)
        if wait > 0:
            raise too_many(wait, "feed requests for this user")
        t0 = time.perf_counter()
        f = eng().feed(user_id, count, surface)
        live.feed_served((time.perf_counter() - t0) * 1000.0, (i.source for i in f.items))
        # Serialised straight from the domain objects: the response model documents the
        # shape, and re-validating what the engine just built would only cost time.
        body = {
            "request_id": f.request_id,
            "surface": f.surface,
            "items": [
                {
                    "video_id": i.video_id,
                    "position": i.position,
                    "source": i.source,
                    "reason": i.reason,
                    "score": i.score,
                    "signals": [{"name": n, "weight": w} for n, w in i.signals],
                }
                for i in f.items
            ],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    def _user_out(user_id: str, p: UserProfile) -> UserOut:
        return UserOut(
            user_id=user_id,  # p holds the pseudonym
            age_band=p.age_band,
            language=p.language,
            region=p.region,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )

    def _controls_out(user_id: str, c: UserControls, refreshed: bool = False) -> ControlsOut:
        return ControlsOut(user_id=user_id, refreshed=refreshed, **c.to_json())

    def _known(user_id: str) -> None:
        eng().home(user_id)  # ResidencyError (421) first: the same answer, known or not
        if not eng().knows_user(user_id):
            raise HTTPException(
                404, f"unknown user {user_id!r}: create it with PUT /v1/users/{{id}} first"
            )

    @app.put(
        "/v1/users/{user_id}",
        response_model=UserOut,
        tags=["users"],
        responses={
            201: {"model": UserOut, "description": "created"},
            409: {"description": "the user is being erased; created anew once erased"},
        },
    )
    async def put_user(user_id: IdPath, profile: ProfileIn, caller: EventsWrite) -> Response:
        """Create or update a user: the fields given are set, the others kept. The
        region, if given, must be this deployment's (a user is homed where created:
        421 otherwise, nothing stored). Unknown fields (precise location, device ids,
        contact data...) are rejected. A user whose erasure was accepted and is not
        complete is refused (409); once erased, the id is a new, empty user."""
        saved, created = eng().put_user(user_id, profile)
        return _json(_user_out(user_id, saved), 201 if created else 200)

    @app.get("/v1/users/{user_id}", response_model=UserDetail, tags=["users"])
    async def get_user(user_id: IdPath, caller: FeedRead) -> UserDetail:
        """The user's profile (null if they never set one) and controls. Audited."""
        _known(user_id)
        e = eng()
        p = e.profile_of(user_id)
        detail = UserDetail(
            profile=None if p is None else _user_out(user_id, p),
            controls=_controls_out(user_id, e.controls_of(user_id)),
        )
        e.audit.append(
            "user.read",
            caller.actor,
            subject=e.pseudonyms.audit_ref(user_id),
            details={"route": "/v1/users/{user_id}"},
        )
        return detail

    @app.post("/v1/users/{user_id}/controls", response_model=ControlsOut, tags=["users"])
    async def set_controls(user_id: IdPath, change: ControlsIn, caller: EventsWrite) -> ControlsOut:
        """Mute keywords, hashtags and creators (each list given replaces that setting),
        set topic preferences (``more`` / ``less`` / ``neutral``), turn personalisation
        off or on, or ``refresh``: forget what was learned of this user's tastes (mutes
        and safety settings stay). In force for the user's next feed."""
        _known(user_id)
        try:
            controls = eng().set_controls(user_id, change)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        if change.refresh:
            loops["learning"].wake()  # the learning loop forgets, at the log's current end
        return _controls_out(user_id, controls, change.refresh)

    @app.get(
        "/v1/users/{user_id}/why/{video_id}",
        response_model=WhyOut,
        tags=["users"],
        responses={404: {"description": "not served to this user in the last 30 days"}},
    )
    async def why(user_id: IdPath, video_id: IdPath, caller: FeedRead) -> WhyOut:
        """Why ``video_id`` was shown to ``user_id``: what was recorded when it was last
        served (within 30 days) — its source, the reason given, and the signals."""
        imp = eng().why(user_id, video_id)
        if imp is None:
            raise HTTPException(
                404, f"video {video_id!r} was not served to user {user_id!r} in the last 30 days"
            )
        return WhyOut(
            user_id=user_id,
            video_id=video_id,
            served_at=imp.ts,
            request_id=imp.request_id,
            position=imp.position,
            surface=imp.surface,
            source=imp.source,
            reason=imp.reason,
            score=imp.score,
            signals=[Signal(name=n, weight=w) for n, w in imp.signals],
        )

    @app.post("/v1/moderation", response_model=ModerationOut, tags=["moderation"])
    async def moderate(action: ModerationIn, caller: ModerationWrite) -> ModerationOut:
        """Set a video's state (``pending``, ``approved``, ``limited``, ``removed``) and/or
        its labels (the whole set: ``misinformation``, ``unverified_claim``, ``graphic``,
        ``mature``, ``creator_under_16``, ``sensitive:<topic>``...), with the reason,
        which is kept. In force for the very next feed request."""
        e = eng()
        try:
            done = e.moderate(
                action.video_id,
                None if action.state is None else action.state.value,
                action.labels,
                action.reason,
                caller.actor,
            )
        except UnknownVideoError:
            raise HTTPException(404, f"unknown video {action.video_id!r}") from None
        except InvalidModerationError as err:
            raise HTTPException(422, str(err)) from None
        row = e.catalog.row_of[done.video_id]
        return ModerationOut(
            video_id=done.video_id,
            state=e.catalog.states[row].value,
            labels=list(e.catalog.labels[row]),
            reason=done.reason,
            actor=done.actor,
            ts=done.ts,
        )

    @app.get("/v1/moderation/queue", response_model=QueueOut, tags=["moderation"])
    async def moderation_queue(
        caller: ModerationWrite,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> QueueOut:
        """Videos waiting for review (``pending``), and reported videos, most reported first."""
        return QueueOut(
            items=[
                QueueItem(
                    video_id=i.video.video_id,
                    creator_id=i.video.creator_id,
                    caption=i.video.caption,
                    state=i.state.value,
                    labels=list(i.labels),
                    reporters=i.reporters,
                    report_weight=round(i.report_weight, 4),
                    last_reason=i.last_reason,
                )
                for i in eng().review_queue(limit)
            ]
        )

    @app.get(
        "/v1/users/{user_id}/export",
        tags=["users"],
        responses={200: {"description": "everything held about the user, as JSON"}},
    )
    async def export_user(user_id: IdPath, caller: UsersAdmin) -> Response:
        """Everything held about the user — profile, controls, events, impressions, the
        learned state and what it means (top creators, hashtags...), embedding rows — as
        JSON (the right of access). Audited."""
        _known(user_id)
        # Off the event loop: it reads every event and impression of the user.
        doc = await asyncio.to_thread(eng().export_user, user_id, caller.actor)
        return Response(orjson.dumps(doc), media_type="application/json")

    @app.delete(
        "/v1/users/{user_id}",
        response_model=ErasureOut,
        tags=["users"],
        responses={
            404: {"description": "no such user here (never created, or erased already)"},
            409: {"description": "another request is erasing this user now"},
            421: {"description": "the user is not homed in this deployment"},
            503: {
                "description": "a storage fault stopped the erasure; if it was accepted, "
                "nothing more of the user is stored, and asking again (or the next "
                "start) completes it"
            },
        },
    )
    async def erase_user(user_id: IdPath, caller: UsersAdmin) -> ErasureOut:
        """Erase the user (the right to erasure): events, impressions, profile,
        controls, learned state and embedding rows, their reports' weight, and the
        checkpoint, rewritten without them — done when this returns. From the moment
        it is accepted nothing new of the user is stored or learned (their events,
        feeds, controls and profile changes are refused with 409 until it completes).
        Audited (the request, then the completion), without the erased data. Asking
        again completes an erasure a failure cut short. Created again, the id is a new,
        empty user."""
        e = eng()
        if not e.erasing(user_id):  # (one accepted earlier is completed, not refused)
            _known(user_id)
        # Off the event loop: the checkpoint rewrite takes seconds, and feeds go on.
        done = await asyncio.to_thread(e.erase_user, user_id, caller.actor)
        return ErasureOut(
            user_id=user_id,
            erased=True,
            events=done.events,
            impressions=done.impressions,
            checkpoint_rewritten=done.checkpoint_rewritten,
        )

    @app.get("/v1/videos", response_model=VideosOut, tags=["catalog"])
    async def get_videos(
        caller: FeedRead,
        ids: Annotated[
            str,
            Query(
                min_length=1,
                max_length=4_096,
                description="Comma-separated video ids: at most 100, 4,096 characters.",
            ),
        ],
    ) -> VideosOut:
        """The catalog's public data of these videos (what a player shows on a card);
        unknown ids are left out."""
        wanted = [i for i in ids.split(",") if i]
        if len(wanted) > 100:
            raise HTTPException(422, f"{len(wanted)} ids; at most 100 per request")
        cat = eng().catalog
        out = []
        for video_id in dict.fromkeys(wanted):
            v = cat.get(video_id)
            if v is not None:
                out.append(VideoOut.model_validate(v, from_attributes=True))
        return VideosOut(videos=out)

    @app.get("/v1/stats", tags=["operations"])
    async def stats(caller: AuditRead) -> Response:
        """Live figures for the operator console: events and feed requests per second,
        feed latency (server side) and the candidate-source mix over the last minute,
        learning lag (events, and how long the oldest unlearned event has waited), what
        each filter rule removed since the start."""
        e = eng()
        rules = e.pipeline.counters.filtered_by_rule
        lag = e.pending()
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

    @app.get("/v1/audit/report", tags=["operations"])
    async def audit_report(
        caller: AuditRead, days: Annotated[int, Query(ge=1, le=365)] = DEFAULT_WINDOW_DAYS
    ) -> Response:
        """The algorithm audit of the last ``days`` (what ``fyp audit report --json``
        writes): source mix, exposure concentration, cohorts, filter counts, moderation."""
        e = eng()
        until = e.clock()
        report = await asyncio.to_thread(e.audit_report, until - days * DAY_MS, until)
        return Response(orjson.dumps(report.to_dict()), media_type="application/json")

    @app.get("/v1/audit", response_model=AuditOut, tags=["operations"])
    async def audit_records(
        caller: AuditRead,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    ) -> AuditOut:
        """The audit log's records after ``after_seq`` (to ship them elsewhere)."""
        every = await asyncio.to_thread(eng().audit.records)  # reads the whole file
        records = [r for r in every if r.seq > after_seq][:limit]
        return AuditOut(
            records=[AuditRecordOut.model_validate(r, from_attributes=True) for r in records]
        )

    return app
