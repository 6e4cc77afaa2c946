"""``POST /v1/moderation`` and ``GET /v1/moderation/queue``: a moderator's decision,
in force for the very next feed, and the videos waiting for one."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from fyp.api.running import Running
from fyp.api.schemas import ModerationIn, ModerationOut, QueueItem, QueueOut
from fyp.api.security import Caller, Guard
from fyp.safety.moderator import InvalidModerationError, UnknownVideoError


def moderation_router(guard: Guard, running: Running) -> APIRouter:
    """The moderation routes, over ``running``'s engine (its moderator)."""
    router = APIRouter()
    ModerationWrite = Annotated[Caller, Depends(guard.require("moderation:write"))]  # noqa: N806
    eng = running.eng

    @router.post(
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

    @router.get("/v1/moderation/queue", response_model=QueueOut, tags=["moderation"])
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

    return router
