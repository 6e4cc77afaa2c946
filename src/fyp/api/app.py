"""``create_app(settings)``: the FastAPI application over one :class:`~fyp.engine.Engine`.

Routes are ``async`` and call the engine inline: its calls take milliseconds, and one
event loop with one engine needs no thread hand-offs. The learning loop runs as a task
of the same loop, woken by every accepted event batch.
"""

__all__ = ["MIN_STEPS_PER_SLICE", "LearningLoop", "create_app"]

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures,
# which refer to this module's closures (the settings' limits).

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from fyp import __version__
from fyp.api.errors import (
    install_storage_errors,
    install_validation_errors,
    route_template,
    storage_error_response,
)
from fyp.api.learning_loop import MIN_STEPS_PER_SLICE, LearningLoop
from fyp.api.live import LiveStats
from fyp.api.metrics import Metrics, MetricsMiddleware
from fyp.api.model_sync import ModelSync, ModelSyncCollector
from fyp.api.openapi import install_openapi, json_body
from fyp.api.schemas import (
    AuditOut,
    AuditRecordOut,
    ControlsOut,
    ErasureOut,
    EventBatch,
    EventsResponse,
    FeedResponse,
    Health,
    LearnedModelsHealth,
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
from fyp.api.security import Caller, Guard, too_many
from fyp.api.token_routes import install_tokens
from fyp.audit.commands import DEFAULT_WINDOW_DAYS
from fyp.catalog.ingest import validate_videos
from fyp.cluster.changes import ChangeFollower, follow_changes
from fyp.config import Settings
from fyp.engine import Engine, ErasureInProgressError, UnknownPageError, serving_role
from fyp.events.ingest import IngestResult, Rejected
from fyp.learning.link import channel_of
from fyp.learning.supervisor import Supervisor
from fyp.privacy.keys import KeyStore
from fyp.privacy.ratelimit import retry_after
from fyp.privacy.residency import ResidencyError
from fyp.privacy.tokens import TokenSigner
from fyp.safety.moderator import InvalidModerationError, UnknownVideoError
from fyp.storage.backends import open_key_store
from fyp.types import DAY_MS, DEFAULT_SURFACE, UserProfile
from fyp.users.controls import ControlsIn, ProfileIn, UserControls
from fyp.validation import ID_PATTERN, ID_RULE, MAX_ID_CHARS, CheckedId, id_problem, utf8_problem
from fyp.web.routes import install_web

_ID = {"min_length": 1, "max_length": MAX_ID_CHARS, "pattern": ID_PATTERN, "description": ID_RULE}
IdPath = Annotated[str, Path(**_ID), CheckedId]
IdQuery = Annotated[str, Query(**_ID), CheckedId]
# The routes that look a user up (_known): their 404 (the body: fyp.api.openapi).
NOT_KNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown user: create it with PUT /v1/users/{user_id} first"}
}

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


async def utf8_target(request: Request) -> None:
    """The app's first dependency: a path or query string that is not UTF-8 once
    percent-decoded is refused (400) before any route reads it, since the server hands
    the routes its text with the bad bytes replaced (two ids would become one)."""
    raw_path = request.scope.get("raw_path")
    for raw, what in ((raw_path, "path"), (request.scope.get("query_string"), "query string")):
        problem = utf8_problem(raw, what) if isinstance(raw, bytes) else None
        if problem is not None:
            raise HTTPException(400, problem)


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


def _json(body: BaseModel, status: int) -> Response:
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


def _asked(request: Request) -> dict[str, Any]:
    """What a refused request asked, for its audit record: the method and the route's
    template."""
    return {"method": request.method, "route": route_template(request)}


def _own_events(items: list[object], user: str | None) -> tuple[list[int], list[Rejected]]:
    """Which items a caller bound to ``user`` (a user token) may send, by index, and
    the others refused; every item for a service key (``user`` None). An item without a
    string ``user_id`` is left to validation, which rejects it."""
    if user is None:
        return list(range(len(items))), []
    own: list[int] = []
    foreign: list[Rejected] = []
    for i, item in enumerate(items):
        other = item.get("user_id") if isinstance(item, dict) else None
        if isinstance(other, str) and other != user:
            eid = item.get("event_id") if isinstance(item, dict) else None
            reason = "user_id: not this user token's user; a token sends its own user's events"
            foreign.append(Rejected(i, eid if isinstance(eid, str) else None, reason, "forbidden"))
        else:
            own.append(i)
    return own, foreign


def _with_foreign(result: IngestResult, own: list[int], foreign: list[Rejected]) -> IngestResult:
    """``result`` of ingesting the items at ``own``, indexed in the whole batch, with the
    ``foreign`` items' refusals among its rejections."""
    if not foreign:
        return result
    moved = [dataclasses.replace(r, index=own[r.index]) for r in result.rejected]
    rejected = sorted(moved + foreign, key=lambda r: r.index)
    return dataclasses.replace(result, rejected=rejected)


def _reason_kind(reason: str) -> str:
    """A bounded label for metrics: the field the reason names (``video_id``, ``ts``...)."""
    head = reason.split(":", 1)[0].split(".", 1)[0]
    return head if len(head) <= 32 and head.replace("_", "").isalnum() else "other"


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
    limits = settings.limits
    holder: dict[str, Engine] = {}
    loops: dict[str, LearningLoop] = {}
    syncs: dict[str, ModelSync] = {}
    model_metrics: dict[str, ModelSyncCollector] = {}
    followers: dict[str, ChangeFollower] = {}  # other processes' changes (fyp.cluster)
    keys: KeyStore | None = None
    if settings.auth.required:
        keys = open_key_store(settings.store, settings.data_dir)
    guard = Guard(settings, keys)
    metrics.watch_guard(guard)
    # The scope each route needs (../API.md): 401 without a valid key, 403 without it.
    # (Type aliases, so named like classes.)
    EventsWrite = Annotated[Caller, Depends(guard.require("events:write"))]  # noqa: N806
    # The same, also for a user token (the route checks the user: guard.own).
    UserEventsWrite = Annotated[  # noqa: N806
        Caller, Depends(guard.require("events:write", user_token=True))
    ]
    UserFeedRead = Annotated[  # noqa: N806
        Caller, Depends(guard.require("feed:read", user_token=True))
    ]
    UserExport = Annotated[  # noqa: N806
        Caller, Depends(guard.require("users:admin", user_token=True))
    ]
    CatalogWrite = Annotated[Caller, Depends(guard.require("catalog:write"))]  # noqa: N806
    ModerationWrite = Annotated[Caller, Depends(guard.require("moderation:write"))]  # noqa: N806
    UsersAdmin = Annotated[Caller, Depends(guard.require("users:admin"))]  # noqa: N806
    AuditRead = Annotated[Caller, Depends(guard.require("audit:read"))]  # noqa: N806

    async def rights_user_id(user_id: Annotated[str, Path(**_ID)]) -> str:
        """The user of a data subject's right (export, erasure): a valid id, or one an
        older version let in (a control character, not NFC...) if that user exists, so
        that they can still be exported and erased; every other route refuses it."""
        problem = id_problem(user_id)
        if problem is not None and not eng().knows_user(user_id):
            raise HTTPException(422, f"user_id: {problem}")
        return user_id

    RightsUserId = Annotated[str, Depends(rights_user_id)]  # noqa: N806

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine if engine is not None else Engine.open(settings, role=serving_role(settings))
        if eng.checkpoints.due():
            # A start that replayed more of the log than a checkpoint covers writes one
            # now, before serving: else the loop's first slice would, holding the lock
            # (1.7 s at 100k videos, bench/freshness.py's first trial), and every feed
            # and POST waited for it.
            try:
                await asyncio.to_thread(eng.checkpoints.write)
            except (sqlite3.Error, OSError) as err:  # the loop tries again
                log.warning("could not write the start-up checkpoint (%s)", err)
        if holder.get("engine") is not eng:
            metrics.watch_engine(eng)
        holder["engine"] = eng
        guard.tokens = TokenSigner.of(eng.pseudonyms)
        loops["learning"] = learning = LearningLoop(eng)
        running = asyncio.get_running_loop()

        def wake() -> None:  # (from the follower's thread: a refresh is the loop's to do)
            running.call_soon_threadsafe(learning.wake)

        follower = follow_changes(eng, settings, wake)
        if follower is not None:
            followers["changes"] = follower
        supervisor: Supervisor | None = None
        if eng.replica is not None:
            syncs["models"] = sync = ModelSync(eng, channel_of(settings))
            try:
                await asyncio.to_thread(sync.catch_up)  # the last published models, first
            except OSError as err:  # (a channel's server down: serve, and the poller retries)
                sync.error = f"{type(err).__name__}: {err}"
                log.warning("could not read the published models at the start (%s)", err)
            if supervise_learner:
                supervisor = Supervisor(settings, settings.data_dir / "learner.log")
                supervisor.start()
                sync.restarts = lambda: supervisor.restarts if supervisor is not None else 0
                sync.supervised_pid = lambda: (
                    supervisor.pid if supervisor is not None and supervisor.alive else None
                )
            sync.start()
            collector = model_metrics.get("collector")
            if collector is None:
                model_metrics["collector"] = collector = ModelSyncCollector(sync, eng)
                metrics.registry.register(collector)
            collector.sync, collector.engine = sync, eng
        try:
            yield
        finally:
            if follower is not None:
                await asyncio.to_thread(followers.pop("changes").stop)
            await learning.stop()
            if "models" in syncs:
                await syncs.pop("models").stop()
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
            if engine is None:
                if settings.checkpoint_every_events and eng.pending() == 0:
                    eng.checkpoints.write()  # a clean shutdown: the next start replays nothing
                eng.close()
            if keys is not None:
                keys.close()
            await guard.close()

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

    def eng() -> Engine:
        return holder["engine"]

    def refused(request: Request, counts: dict[str, int]) -> None:
        """A cross-region request, into the audit log: what was asked, by which key,
        never about whom (not even a pseudonym: the user is not this region's). Any key
        can ask as often as it likes, so past a few per key and minute they are counted,
        not written one by one (AuditLog.append_repeated)."""
        caller = getattr(request.state, "caller", None)
        eng().audit.append_repeated(
            "residency.refused",
            caller.actor if isinstance(caller, Caller) else "unknown",
            outcome="refused",
            details=_asked(request),
            counts=counts,
        )
        metrics.residency_refused.inc()

    def token_refused(request: Request, caller: Caller, what: Mapping[str, Any]) -> None:
        """A request refused to a user token, into the audit log: the route, the key,
        the token's user and the user asked for (by their audit references). A token's
        holder can repeat it at will, so it is bounded per key and window like 421s."""
        e = eng()
        details = _asked(request)
        for name, value in what.items():
            details[name] = e.pseudonyms.audit_ref(value) if name == "asked_for" else value
        e.audit.append_repeated(
            "token.refused",
            caller.actor,
            outcome="refused",
            subject=None if caller.user is None else e.pseudonyms.audit_ref(caller.user),
            details=details,
        )

    guard.on_token_refused = token_refused
    guard.user_born = lambda user_id: eng().born(user_id)

    @app.exception_handler(ResidencyError)
    async def residency_error(request: Request, err: ResidencyError) -> Response:
        try:
            refused(request, {})
        except Exception as exc:  # the refusal could not be audited: a 503, or a 500
            return await storage_error_response(request, exc)
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
        learned = None
        sync = syncs.get("models")
        if sync is not None and e.learner is not None:
            h = sync.health(e.learner.status(), e.event_log.last_offset())
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
        follower = followers.get("changes")
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
        return _json(body, 200 if failure is None else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        dependencies=[Depends(guard.metrics_access(settings.auth.metrics_public))],
    )
    async def prometheus() -> PlainTextResponse:
        """Prometheus text, for any valid API key (whatever its scopes); open without
        one only where ``auth.metrics_public`` is set."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/videos",
        response_model=VideosResponse,
        tags=["catalog"],
        openapi_extra=json_body(VideoBatch),
        responses={
            422: {"model": VideosResponse, "description": "some videos rejected"},
            413: {"description": "batch or body too large; nothing stored"},
        },
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
        openapi_extra=json_body(EventBatch),
        responses={
            422: {"model": EventsResponse, "description": "some events rejected"},
            403: {"model": EventsResponse, "description": "a user token's, all of others"},
            413: {"description": "batch or body too large; nothing stored"},
            421: {"model": EventsResponse, "description": "every event's user is not homed here"},
            429: {"model": EventsResponse, "description": "every event's user is rate-limited"},
        },
    )
    async def post_events(request: Request, caller: UserEventsWrite) -> Response:
        """Record a batch of events. Each is validated on its own; the valid ones are
        durably stored (fsynced) before this returns, even when others are rejected (then
        the status is 422 and ``rejected`` says which and why). Sending the same
        ``event_id`` again changes nothing, so a failed batch can simply be retried.
        With a user token, events of other users are refused (403 if all are)."""
        items = _batch(
            await read_json(request, limits.max_body_bytes), "events", limits.max_batch_events
        )
        own, foreign = _own_events(items, caller.user)
        if foreign:
            guard.token_refused(request, caller, events_refused=len(foreign))
        waits: list[float] = []
        # Each event counts one against its user's limit: taken for the whole batch at
        # once (one round trip where the limits are on Redis), in order, then handed out
        # per event as validation lets each through.
        senders: list[str] = []
        for i in own:
            item = items[i]
            sender = item.get("user_id") if isinstance(item, dict) else None
            if isinstance(sender, str):
                senders.append(sender)
        taken: dict[str, deque[float]] = {}
        for user_id, wait in zip(senders, await guard.user_waits(senders), strict=True):
            taken.setdefault(user_id, deque()).append(wait)

        def user_limit(user_id: str) -> float:
            # Called from the ingest thread: only this request's tokens, taken above for
            # every event with a user id (the limiter itself is the event loop's). None
            # left would break that count: refused then, never let through unlimited.
            queue = taken.get(user_id)
            wait = queue.popleft() if queue else 1.0
            waits.append(wait)
            return wait

        # Validation and the append (an fsync) off the event loop: feeds go on meanwhile.
        batch = [items[i] for i in own]
        ingested = await asyncio.to_thread(eng().ingest, batch, user_limit=user_limit)
        result = _with_foreign(ingested, own, foreign)
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
        if foreign and len(foreign) == len(items):
            body.detail = "every event is of another user than this token's; none stored"
            return _json(body, 403)
        limited = [r for r in result.rejected if r.kind == "rate_limited"]
        if limited and len(limited) == len(items):
            response = _json(body, 429)
            # The longest of the waits the events' reasons name: then all may be retried.
            response.headers["Retry-After"] = str(retry_after(max(waits)))
            return response
        return _json(body, 422 if result.rejected else 200)

    @app.get(
        "/v1/feed",
        response_model=FeedResponse,
        tags=["feed"],
        responses={404: {"description": "after: no such page was served to this user"}},
    )
    async def feed(
        request: Request,
        caller: UserFeedRead,
        user_id: IdQuery,
        count: Annotated[int, Query(ge=1, le=settings.feed.max_count)] = (
            settings.feed.default_count
        ),
        surface: IdQuery = DEFAULT_SURFACE,
        after: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                description="The request_id of a page of which only the first `shown` cards "
                "were shown: the rest is withdrawn and this page takes its place, ranked "
                "with what was learned since (`count` defaults to the cards withdrawn).",
            ),
        ] = None,
        shown: Annotated[
            int | None,
            Query(ge=0, description="With `after`: how many of that page's cards were shown."),
        ] = None,
    ) -> Response:
        """The next ``count`` videos for ``user_id``, each with its source, reason and
        score. Served items are recorded as impressions under ``request_id``. With
        ``after`` and ``shown``: the rest of an earlier page, re-ranked (and replaced where
        something better now fits), the cards not shown no longer recorded as served."""
        guard.own(request, caller, user_id)
        if (after is None) != (shown is None):
            raise HTTPException(
                422,
                "after and shown go together: the page to replace the rest of, and how "
                "many of its cards were shown",
            )
        wait = await guard.user_wait(user_id)
        if wait > 0:
            raise too_many(wait, "feed requests for this user")
        t0 = time.perf_counter()
        try:
            f = eng().feed(
                user_id,
                count if after is None or "count" in request.query_params else None,
                surface,
                after=after,
                shown=shown or 0,
            )
        except UnknownPageError as err:
            raise HTTPException(404, str(err)) from None
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
            attributes=dict(p.attributes),
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
        contact data...) are rejected. A key creates at most
        ``auth.user_creations_per_key`` users per window (429 past it). A user whose
        erasure was accepted and is not complete is refused (409); once erased, the id
        is a new, empty user."""
        if not eng().knows_user(user_id):
            await guard.check_creation(caller)
        saved, created = eng().put_user(user_id, profile)
        if created:
            await guard.created_user(caller)
        return _json(_user_out(user_id, saved), 201 if created else 200)

    @app.get("/v1/users/{user_id}", response_model=UserDetail, tags=["users"], responses=NOT_KNOWN)
    async def get_user(request: Request, user_id: IdPath, caller: UserFeedRead) -> UserDetail:
        """The user's profile (null if they never set one) and controls. Audited."""
        guard.own(request, caller, user_id)
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

    @app.post(
        "/v1/users/{user_id}/controls",
        response_model=ControlsOut,
        tags=["users"],
        responses=NOT_KNOWN,
    )
    async def set_controls(
        request: Request, user_id: IdPath, change: ControlsIn, caller: UserEventsWrite
    ) -> ControlsOut:
        """Mute keywords, hashtags and creators (each list given replaces that setting),
        set topic preferences (``more`` / ``less`` / ``neutral``), turn personalisation
        off or on, or ``refresh``: forget what was learned of this user's tastes (mutes
        and safety settings stay). In force for the user's next feed."""
        guard.own(request, caller, user_id)
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
    async def why(
        request: Request, user_id: IdPath, video_id: IdPath, caller: UserFeedRead
    ) -> WhyOut:
        """Why ``video_id`` was shown to ``user_id``: what was recorded when it was last
        served (within 30 days) — its source, the reason given, and the signals."""
        guard.own(request, caller, user_id)
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

    @app.post(
        "/v1/moderation",
        response_model=ModerationOut,
        tags=["moderation"],
        responses={404: {"description": "unknown video"}},
    )
    async def moderate(action: ModerationIn, caller: ModerationWrite) -> ModerationOut:
        """Set a video's state (``pending``, ``approved``, ``limited``, ``removed``) and/or
        its labels (the whole set: ``misinformation``, ``unverified_claim``, ``graphic``,
        ``mature``, ``creator_under_16``, ``sensitive:<topic>``...), with the reason,
        which is kept. In force for the very next feed request."""
        e = eng()
        try:
            done = e.moderator.moderate(
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
                for i in eng().moderator.queue(limit)
            ]
        )

    @app.get(
        "/v1/users/{user_id}/export",
        tags=["users"],
        responses={
            200: {"description": "everything held about the user, as JSON"},
            **NOT_KNOWN,
        },
    )
    async def export_user(request: Request, user_id: RightsUserId, caller: UserExport) -> Response:
        """Everything held about the user — profile, controls, events, impressions, the
        learned state and what it means (top creators, hashtags...), embedding rows — as
        JSON (the right of access). Audited. A user token exports its own user only."""
        guard.own(request, caller, user_id)
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
    async def erase_user(user_id: RightsUserId, caller: UsersAdmin) -> ErasureOut:
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
        caller: UserFeedRead,  # public card data, of no user: the player shows it
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
        for i, video_id in enumerate(wanted):
            problem = id_problem(video_id)
            if problem is not None:
                raise HTTPException(422, f"ids: id {i} {problem}")
        cat = eng().catalog
        out = []
        for video_id in dict.fromkeys(wanted):
            v = cat.get(video_id)
            if v is not None:
                out.append(
                    VideoOut(
                        video_id=v.video_id,
                        creator_id=v.creator_id,
                        duration_ms=v.duration_ms,
                        sound_id=v.sound_id,
                        hashtags=list(v.hashtags),
                        caption=v.caption,
                        created_at=v.created_at,
                        attributes=dict(v.attributes),
                    )
                )
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
        """The audit log's records after ``after_seq`` (to ship them elsewhere), at most
        ``limit``, in order: the next page starts after the last seq of this one."""
        records = await asyncio.to_thread(eng().audit.page, after_seq, limit)
        return AuditOut(
            records=[AuditRecordOut.model_validate(r, from_attributes=True) for r in records]
        )

    install_tokens(app, settings, guard, eng, _known)
    return app
