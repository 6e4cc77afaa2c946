"""Shared pieces of the domain tests: settings on a temporary data dir, a small synthetic
catalog with a known structure, event builders, and engines that are closed at teardown.

Test modules reach the helpers through the ``kit`` fixture rather than ``import
conftest``: with several ``conftest.py`` files and no packages, the name ``conftest``
may be bound to another directory's file.

The catalog (``Kit.catalog``): creators ``c0``..``c3``, ten videos each, ``c{k}-v{i}``,
20 s long, uploaded 30 days before ``Kit.NOW`` (so none is "fresh"); every video of
``c{k}`` carries the hashtag ``tag-c{k}`` and one of the two sounds ``snd-c{k}-0`` /
``snd-c{k}-1``, so two creators never share a hashtag or a sound.

Tests that need what a developer's machine may lack (the KuaiRand data, root, a browser)
end through the ``unavailable`` fixture: a skip here, a failure under CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import settings as hypothesis_settings

from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.state.users import UserState
from fyp.types import Video

# Unit tests never assert timings: hypothesis's per-example deadline (200 ms) fails
# property tests on a loaded machine (two test workers beside servers and browsers).
hypothesis_settings.register_profile("fyp", deadline=None)
hypothesis_settings.load_profile("fyp")


class Kit:
    NOW = 1_750_000_000_000  # the fixed clock of every engine opened here, Unix ms
    HOUR_MS = 3_600_000
    DAY_MS = 86_400_000
    DURATION_MS = 20_000
    N_CREATORS = 4
    PER_CREATOR = 10

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self._engines: list[Engine] = []
        self._n_events = 0
        self.ts = self.NOW - 2 * self.DAY_MS  # the event clock: +1 s per event built

    # -- settings and catalog ------------------------------------------------------------

    def settings(self, **overrides: Any) -> Settings:
        """Settings on this test's data dir, blind to the process environment."""
        # Users need not be created first (PUT /v1/users) here: these tests are about
        # what the engine learns; residency has tests of its own (tests/privacy).
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "privacy": {"require_registered_users": False},
            **overrides,
        }
        return load_settings(overrides=values, environ={})

    @classmethod
    def video(cls, video_id: str, creator_id: str, **changes: Any) -> Video:
        fields: dict[str, Any] = {
            "duration_ms": cls.DURATION_MS,
            "sound_id": f"snd-{video_id}",
            "created_at": cls.NOW - 30 * cls.DAY_MS,
        }
        fields.update(changes)
        return Video(video_id, creator_id, **fields)

    @classmethod
    def catalog(cls, n_creators: int = N_CREATORS, per_creator: int = PER_CREATOR) -> list[Video]:
        return [
            cls.video(
                f"c{c}-v{i}",
                f"c{c}",
                sound_id=f"snd-c{c}-{i % 2}",
                hashtags=(f"tag-c{c}",),
            )
            for c in range(n_creators)
            for i in range(per_creator)
        ]

    @staticmethod
    def creator_of(video_id: str) -> str:
        return video_id.split("-")[0]

    # -- events ----------------------------------------------------------------------------

    def _next(self, ts: int | None) -> tuple[str, int]:
        self._n_events += 1
        if ts is None:
            self.ts += 1_000
            ts = self.ts
        return f"ev-{self._n_events:06d}", ts

    def view(
        self, user_id: str, video_id: str, watch_ms: int = DURATION_MS, ts: int | None = None
    ) -> dict[str, Any]:
        """A view event as a client sends it (a full 20 s view unless told)."""
        event_id, ts = self._next(ts)
        return {
            "event_id": event_id,
            "user_id": user_id,
            "video_id": video_id,
            "type": "view",
            "ts": ts,
            "watch_ms": watch_ms,
        }

    def act(self, user_id: str, video_id: str, type: str, ts: int | None = None) -> dict[str, Any]:
        """An explicit action (like, follow, not_interested, ...) as a client sends it."""
        event_id, ts = self._next(ts)
        return {
            "event_id": event_id,
            "user_id": user_id,
            "video_id": video_id,
            "type": type,
            "ts": ts,
        }

    # -- engines ---------------------------------------------------------------------------

    def open_engine(
        self, settings: Settings | None = None, videos: Sequence[Video] | None = None
    ) -> Engine:
        """``Engine.open`` with the clock fixed at ``NOW``; ``videos`` are upserted (none
        when reopening an existing data dir). Closed at teardown."""
        engine = Engine.open(settings or self.settings(), clock=lambda: self.NOW)
        self._engines.append(engine)
        if videos:
            engine.upsert_videos(videos)
        return engine

    def run(self, engine: Engine, events: Sequence[dict[str, Any]]) -> None:
        """Ingest ``events`` (all must be accepted) and learn from them."""
        result = engine.ingest(events)
        assert result.rejected == [], result.rejected
        engine.learn()

    @staticmethod
    def state_of(engine: Engine, user_id: str) -> UserState:
        """The learned state of ``user_id`` (the engine files it under its pseudonym)."""
        return engine.state.users[engine.pseudonym(user_id)]

    def feed_ids(self, engine: Engine, user_id: str, count: int = 10) -> list[str]:
        return [item.video_id for item in engine.feed(user_id, count=count, now=self.NOW).items]

    def close(self) -> None:
        for engine in self._engines:
            engine.close()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture
def settings(kit: Kit) -> Settings:
    return kit.settings()


@pytest.fixture
def engine(kit: Kit) -> Engine:
    """An engine over the standard 40-video catalog, with no events yet."""
    return kit.open_engine(videos=kit.catalog())


def skip_or_fail_under_ci(reason: str) -> NoReturn:
    """Skip a test that cannot run here, saying why; under CI (``CI`` set and not empty)
    fail instead. CI has everything such tests need (root, ../shared/data, a browser): a
    skip there would report green for a guarantee nobody checked."""
    if os.environ.get("CI"):
        pytest.fail(f"cannot run under CI, where it must: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def unavailable() -> Callable[[str], NoReturn]:
    """:func:`skip_or_fail_under_ci`, for test modules and fixtures of any scope."""
    return skip_or_fail_under_ci


@pytest.fixture
def postgres_url(unavailable: Callable[[str], NoReturn]) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of this test's own, dropped after it
    (tests/postgres_servers.py)."""
    from postgres_servers import fresh_schema

    with fresh_schema(unavailable) as url:
        yield url
