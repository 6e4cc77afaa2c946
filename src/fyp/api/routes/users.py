"""The routes of a user: ``PUT`` and ``GET /v1/users/{user_id}`` (the profile and
controls), ``POST .../controls``, ``GET .../why/{video_id}``, and the data subject's
rights: ``GET .../export`` and ``DELETE /v1/users/{user_id}`` (erasure)."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response

from fyp.api.inputs import ID_RULES, NOT_KNOWN, IdPath, json_response
from fyp.api.running import Running
from fyp.api.schemas import ControlsOut, ErasureOut, Signal, UserDetail, UserOut, WhyOut
from fyp.api.security import Caller, Guard
from fyp.types import UserProfile
from fyp.users.controls import ControlsIn, ProfileIn, UserControls
from fyp.validation import id_problem


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


def users_router(guard: Guard, running: Running) -> APIRouter:
    """A user's routes, over ``running``'s engine; a refresh wakes its learning loop."""
    router = APIRouter()
    EventsWrite = Annotated[Caller, Depends(guard.require("events:write"))]  # noqa: N806
    UserEventsWrite = Annotated[  # noqa: N806
        Caller, Depends(guard.require("events:write", user_token=True))
    ]
    UserFeedRead = Annotated[  # noqa: N806
        Caller, Depends(guard.require("feed:read", user_token=True))
    ]
    UserExport = Annotated[  # noqa: N806
        Caller, Depends(guard.require("users:admin", user_token=True))
    ]
    UsersAdmin = Annotated[Caller, Depends(guard.require("users:admin"))]  # noqa: N806
    eng = running.eng

    async def rights_user_id(user_id: Annotated[str, Path(**ID_RULES)]) -> str:
        """The user of a data subject's right (export, erasure): a valid id, or one an
        older version let in (a control character, not NFC...) if that user exists, so
        that they can still be exported and erased; every other route refuses it."""
        problem = id_problem(user_id)
        if problem is not None and not eng().knows_user(user_id):
            raise HTTPException(422, f"user_id: {problem}")
        return user_id

    RightsUserId = Annotated[str, Depends(rights_user_id)]  # noqa: N806

    @router.put(
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
        return json_response(_user_out(user_id, saved), 201 if created else 200)

    @router.get(
        "/v1/users/{user_id}", response_model=UserDetail, tags=["users"], responses=NOT_KNOWN
    )
    async def get_user(request: Request, user_id: IdPath, caller: UserFeedRead) -> UserDetail:
        """The user's profile (null if they never set one) and controls. Audited."""
        guard.own(request, caller, user_id)
        running.known(user_id)
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

    @router.post(
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
        running.known(user_id)
        try:
            controls = eng().set_controls(user_id, change)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        if change.refresh:
            running.learning_loop().wake()  # the learning loop forgets, at the log's current end
        return _controls_out(user_id, controls, change.refresh)

    @router.get(
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

    @router.get(
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
        running.known(user_id)
        # Off the event loop: it reads every event and impression of the user.
        doc = await asyncio.to_thread(eng().rights.export_user, user_id, caller.actor)
        return Response(orjson.dumps(doc), media_type="application/json")

    @router.delete(
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
        if not e.rights.erasing(user_id):  # (one accepted earlier is completed, not refused)
            running.known(user_id)
        # Off the event loop: the checkpoint rewrite takes seconds, and feeds go on.
        done = await asyncio.to_thread(e.rights.erase_user, user_id, caller.actor)
        return ErasureOut(
            user_id=user_id,
            erased=True,
            events=done.events,
            impressions=done.impressions,
            checkpoint_rewritten=done.checkpoint_rewritten,
        )

    return router
