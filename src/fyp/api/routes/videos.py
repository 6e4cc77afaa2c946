"""``POST /v1/videos`` and ``GET /v1/videos``: the catalog, written in batches (each
video validated on its own) and read by a player for its cards."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures.

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from fyp.api.inputs import batch_items, json_response, read_json
from fyp.api.openapi import json_body
from fyp.api.running import Running
from fyp.api.schemas import RejectedItem, VideoBatch, VideoOut, VideosOut, VideosResponse
from fyp.api.security import Caller, Guard
from fyp.catalog.ingest import validate_videos
from fyp.config import Settings
from fyp.validation import id_problem


def videos_router(settings: Settings, guard: Guard, running: Running) -> APIRouter:
    """The catalog's routes, over ``running``'s engine."""
    router = APIRouter()
    CatalogWrite = Annotated[Caller, Depends(guard.require("catalog:write"))]  # noqa: N806
    UserFeedRead = Annotated[  # noqa: N806
        Caller, Depends(guard.require("feed:read", user_token=True))
    ]
    eng = running.eng

    @router.post(
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
        items = batch_items(
            await read_json(request, settings.limits.max_body_bytes),
            "videos",
            settings.limits.max_batch_videos,
        )
        videos, bad = validate_videos(items)
        eng().upsert_videos(videos)
        rejected = [RejectedItem(index=i, id=vid, reason=r) for i, vid, r in bad]
        body = VideosResponse(upserted=len(videos), rejected=rejected)
        if rejected:
            body.detail = f"{len(rejected)} of {len(items)} videos rejected; the rest were stored"
        return json_response(body, 422 if rejected else 200)

    @router.get("/v1/videos", response_model=VideosOut, tags=["catalog"])
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

    return router
