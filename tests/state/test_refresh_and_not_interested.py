"""The learning step's user controls: "not interested" lowers similar content, and a
refresh forgets tastes at its point in the log."""

from __future__ import annotations

from pathlib import Path

from fyp.config import load_settings
from fyp.engine import Engine
from fyp.types import Video
from fyp.users.controls import ControlsIn, ProfileIn

NOW = 1_700_000_000_000


def _engine(tmp_path: Path) -> Engine:
    settings = load_settings(
        overrides={"data_dir": tmp_path, "privacy": {"require_registered_users": False}},
        environ={},
    )
    e = Engine.open(settings, clock=lambda: NOW)
    e.upsert_videos(
        [Video(f"v{i}", f"c{i % 3}", 10_000, hashtags=(f"#t{i % 3}",)) for i in range(30)]
    )
    return e


def _event(i: int, video: str, type_: str = "view", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": f"e{i}",
        "user_id": "u",
        "video_id": video,
        "type": type_,
        "ts": NOW - 100_000 + i * 1_000,
    }
    if type_ == "view":
        body["watch_ms"] = 10_000
    return body | extra


def test_not_interested_lowers_the_videos_hashtags(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    try:
        e.ingest([_event(0, "v0"), _event(1, "v0", "not_interested")], now=NOW)
        e.learn()
        tag = e.state.users[e.pseudonym("u")].hashtags["#t0"]
        # the long view, then "less" (decayed by a second of the half-life)
        assert round(tag.views, 4) == 2.0 and round(tag.positives, 4) == 1.0
    finally:
        e.close()


def test_refresh_forgets_only_what_came_before_it(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    try:
        e.put_user("u", ProfileIn())
        e.ingest([_event(i, f"v{3 * i}") for i in range(5)], now=NOW)  # creator c0 only
        e.set_controls("u", ControlsIn(refresh=True))  # asked before they are learned
        e.ingest([_event(10 + i, f"v{3 * i + 1}") for i in range(2)], now=NOW)  # c1
        e.learn()
        user = e.state.users[e.pseudonym("u")]
        assert [e.catalog.videos[r].creator_id for r in user.history] == ["c1", "c1"]
        assert set(user.creators) == {"c1"}
        assert len(user.viewed) == 7  # what was seen is still not served again
        assert e.state.refreshes_done == 1
    finally:
        e.close()
