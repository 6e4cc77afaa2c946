"""The user's copy of their data (``GET /v1/users/{id}/export``): everything held about
them, and what the learned parts mean, as plain JSON.

Under their own id (the pseudonym is how the engine files them; it is not theirs to
need). Videos are named by id, creator and hashtags, so the learned state reads as
"what the feed thinks you like"."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fyp.catalog.index import CatalogIndex
from fyp.state.feedback import LABELS
from fyp.state.users import Affinity, UserState
from fyp.types import Impression, LoggedEvent, UserProfile
from fyp.users.controls import UserControls

FORMAT = 1
TOP = 10  # creators, hashtags, sounds listed per kind


def _top(affinities: dict[str, Affinity], now: int, half_life_ms: float) -> list[dict[str, Any]]:
    decayed = sorted(
        ((key, *aff.decayed(now, half_life_ms)) for key, aff in affinities.items()),
        key=lambda r: (-r[2], -r[1], r[0]),
    )
    out = []
    for key, views, positives in decayed[:TOP]:
        aff = affinities[key]
        fade = aff.session_fade(now)
        out.append(
            {
                "id": key,
                "views": round(views, 3),
                "positives": round(positives, 3),
                "session_finishes": round(aff.session_finishes * fade, 3),
                "session_views": round(aff.session_views * fade, 3),
            }
        )
    return out


def _learned(
    state: UserState | None, catalog: CatalogIndex, now: int, half_life_ms: float
) -> dict[str, Any] | None:
    if state is None:
        return None
    videos = catalog.videos

    def ids(rows: Sequence[int]) -> list[str]:
        return [videos[r].video_id for r in rows if r < len(videos)]

    return {
        "meaning": (
            "what the feed learned from your activity: your recent views, the creators, "
            "hashtags and sounds you engage with most (time-decayed counts; "
            "session_finishes and session_views: this session's finished views and quick "
            "skips of each, fading within minutes), and how often you like, share, "
            "finish... what you watch"
        ),
        "top_creators": _top(state.creators, now, half_life_ms),
        "top_hashtags": _top(state.hashtags, now, half_life_ms),
        "top_sounds": _top(state.sounds, now, half_life_ms),
        "engagement_counts": {
            label: round(n, 3) for label, n in zip(LABELS, state.label_counts, strict=False)
        },
        "views_counted": round(state.views, 3),
        "session_finish_rate": round(state.session_rate(now), 3),
        "recent_views": ids(list(state.history)),
        "recent_positives": ids(list(state.recent_positives)),
        "follows": sorted(state.follows),
        "not_interested": ids(sorted(state.not_interested_videos)),
        "creators_hidden_until": dict(state.muted_creators_until),
        "sounds_hidden_until": dict(state.muted_sounds_until),
        "videos_seen": len(state.viewed),
        "first_seen": state.first_seen,
    }


def build_export(
    user_id: str,
    profile: UserProfile | None,
    controls: UserControls,
    events: Sequence[LoggedEvent],
    impressions: Sequence[Impression],
    state: UserState | None,
    catalog: CatalogIndex,
    vectors: dict[str, list[float] | None],
    now: int,
    half_life_ms: float = 14 * 86_400_000,
) -> dict[str, Any]:
    def own(record: dict[str, Any]) -> dict[str, Any]:
        record.pop("user_id", None)
        return record

    return {
        "format": FORMAT,
        "user_id": user_id,
        "exported_at": now,
        "profile": None
        if profile is None
        else own(
            {
                **dataclasses.asdict(profile),
                "user_id": None,
                "attributes": dict(profile.attributes),
            }
        ),
        "controls": controls.to_json(),
        "events": [
            own({**dataclasses.asdict(e.event), "type": e.event.type.value, "offset": e.offset})
            for e in events
        ],
        "impressions": [
            own({**dataclasses.asdict(i), "signals": [list(s) for s in i.signals]})
            for i in impressions
        ],
        "learned": _learned(state, catalog, now, half_life_ms),
        "learned_vectors": {
            "meaning": (
                "your rows in the learned models' user embedding tables (null: none yet, "
                "the shared vector every new user starts from)"
            ),
            **vectors,
        },
    }
