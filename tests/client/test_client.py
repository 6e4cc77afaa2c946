"""The client (``fyp.client``) against a real server: the app under uvicorn on 127.0.0.1
in a thread of this process (its lifespan and learning loop running), reached over TCP.
Results are the API's response models; refusals are exceptions carrying the API's
message; retries are what the retry policy says (on a scripted transport, where the
exact sequence of answers is chosen, and on a real server whose Redis event log is down
for a moment)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import uvicorn

from fyp.api import create_app
from fyp.api.schemas import EventsResponse, FeedResponse, ModerationIn
from fyp.client import (
    AsyncFypClient,
    AuthError,
    FypClient,
    InvalidRequestError,
    NotFoundError,
    NotHomedError,
    RateLimitedError,
    RetryPolicy,
    UnavailableError,
    UnreachableError,
)
from fyp.config import LOAD_GENERATOR_AUTH, Settings, load_settings
from fyp.privacy.keys import create_key
from fyp.types import now_ms
from fyp.users.controls import ControlsIn, ProfileIn
from redis_servers import RedisServer
from server_process import free_port


class Live:
    """The app served by uvicorn on 127.0.0.1 in a thread; :meth:`stop` ends it."""

    def __init__(self, settings: Settings) -> None:
        self.key = create_key(settings.data_dir, label="client tests")[1]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "auth": LOAD_GENERATOR_AUTH,
            **overrides,
        },
        environ={},
    )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = Live(settings_for(tmp_path / "data"))
    try:
        yield server
    finally:
        server.stop()


def video(i: int) -> dict[str, Any]:
    return {
        "video_id": f"v{i}",
        "creator_id": f"c{i % 3}",
        "duration_ms": 10_000,
        "hashtags": [f"tag{i % 2}"],
        "caption": f"video {i}",
        "created_at": now_ms() - 3_600_000,
    }


def view(event_id: str, user_id: str, video_id: str, **changes: Any) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "user_id": user_id,
        "video_id": video_id,
        "type": "view",
        "ts": now_ms(),
        "watch_ms": 9_000,
    }
    body.update(changes)
    return body


def test_a_user_s_whole_life_through_the_sync_client(live: Live) -> None:
    with FypClient(live.url, live.key) as fyp:
        assert fyp.health().status == "ok"
        assert fyp.upsert_videos([video(i) for i in range(12)], batch_size=5).upserted == 12
        created = fyp.put_user("alice", ProfileIn(region="local", language="en"))
        assert (created.user_id, created.language) == ("alice", "en")

        page = fyp.feed("alice", count=5)
        assert isinstance(page, FeedResponse)
        assert len(page.items) == 5
        first = page.items[0].video_id
        events = [
            view(f"a{i}", "alice", item.video_id, request_id=page.request_id)
            for i, item in enumerate(page.items)
        ]
        events.insert(3, view("bad", "alice", first, watch_ms=-1))  # one bad item
        result = fyp.send_events(events, batch_size=2)  # three batches
        assert isinstance(result, EventsResponse)
        assert (result.accepted, result.duplicates) == (5, 0)
        assert [(r.index, r.id) for r in result.rejected] == [(3, "bad")]  # into the whole list
        again = fyp.send_events(events[:3])
        assert (again.accepted, again.duplicates) == (0, 3)

        assert fyp.why("alice", first).request_id == page.request_id
        with pytest.raises(NotFoundError) as unknown:
            fyp.why("alice", "never-served")
        assert unknown.value.status_code == 404
        controls = fyp.set_controls("alice", ControlsIn(mute_hashtags=["tag1"]))
        assert controls.mute_hashtags == ["tag1"]
        assert fyp.get_user("alice").controls.mute_hashtags == ["tag1"]
        assert fyp.get_videos(["v1", "nope"]).videos[0].video_id == "v1"

        moderated = fyp.moderate(ModerationIn(video_id="v2", state="removed", reason="spam"))
        assert moderated.state == "removed"
        assert isinstance(fyp.moderation_queue(limit=5).items, list)

        exported = fyp.export_user("alice")
        assert exported["profile"]["language"] == "en"
        erased = fyp.erase_user("alice")
        assert erased.erased
        assert erased.events == 5
        with pytest.raises(NotHomedError) as err:  # no longer anyone's here
            fyp.get_user("alice")
        assert err.value.status_code == 421
        assert "not homed" in str(err.value.detail)  # the API's own message
        assert "{user_id}" in str(err.value)  # the route, not the path


def test_tokens_issued_used_and_revoked(live: Live) -> None:
    with FypClient(live.url, live.key) as fyp:
        fyp.put_user("bob", ProfileIn(region="local"))
        token = fyp.issue_token("bob", ttl_s=60)
        assert token.user_id == "bob"
        with FypClient(live.url, token.token) as as_bob:
            assert as_bob.renew_token().user_id == "bob"
            assert as_bob.get_user("bob").controls.user_id == "bob"
            with pytest.raises(AuthError):
                as_bob.get_user("someone-else")
            fyp.revoke_tokens()
            with pytest.raises(AuthError, match="HTTP 401"):
                as_bob.get_user("bob")


def test_refusals_are_exceptions_with_the_api_s_message(live: Live) -> None:
    with FypClient(live.url, "not-a-key") as stranger, pytest.raises(AuthError) as denied:
        stranger.feed("u1")
    assert denied.value.status_code == 401
    with FypClient(live.url, live.key) as fyp, pytest.raises(InvalidRequestError) as bad:
        fyp.feed("u1", count=0)
    assert isinstance(bad.value.detail, list)  # FastAPI's issues, kept as sent
    assert "query.count" in str(bad.value)  # and told as where: what


def test_the_async_client_does_the_same(live: Live) -> None:
    async def main() -> None:
        async with AsyncFypClient(live.url, live.key) as fyp:
            await fyp.upsert_videos([video(i) for i in range(6)])
            await fyp.put_user("carol", ProfileIn(region="local"))
            pages = await asyncio.gather(*(fyp.feed("carol", count=2) for _ in range(3)))
            assert all(len(p.items) == 2 for p in pages)
            sent = await fyp.send_events(
                [view(f"c{i}", "carol", f"v{i}") for i in range(6)], batch_size=4
            )
            assert sent.accepted == 6
            with pytest.raises(NotFoundError):
                await fyp.why("carol", "v-unknown")
            assert (await fyp.erase_user("carol")).events == 6

    asyncio.run(main())


# -- retries --------------------------------------------------------------------------------


def scripted(answers: list[httpx.Response | Exception]) -> tuple[httpx.Client, list[str]]:
    """An httpx client whose requests get ``answers`` in turn; the requests are listed."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(base_url="http://fyp.test", transport=httpx.MockTransport(handle)), seen


EMPTY_BATCH = {"accepted": 1, "duplicates": 0, "rejected": []}


def test_a_503_and_a_429_are_waited_out_as_retry_after_says() -> None:
    http, seen = scripted(
        [
            httpx.Response(
                503, json={"detail": "storage unavailable"}, headers={"Retry-After": "5"}
            ),
            httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "2"}),
            httpx.Response(200, json=EMPTY_BATCH),
        ]
    )
    waits: list[float] = []
    with FypClient(http=http, sleep=waits.append) as fyp:
        assert fyp.send_events([view("e1", "u1", "v1")]).accepted == 1
    assert waits == [5.0, 2.0]
    assert seen == ["POST /v1/events"] * 3


def test_events_are_sent_again_when_the_answer_was_lost_but_an_erasure_is_not() -> None:
    lost = httpx.ReadError("connection reset")
    http, seen = scripted([lost, httpx.Response(200, json=EMPTY_BATCH), lost])
    waits: list[float] = []
    with FypClient(http=http, sleep=waits.append) as fyp:
        assert fyp.send_events([view("e1", "u1", "v1")]).accepted == 1  # idempotent
        with pytest.raises(UnreachableError, match=r"DELETE /v1/users/\{user_id\}"):
            fyp.erase_user("u1")  # may have been done: not sent twice
    assert seen == ["POST /v1/events", "POST /v1/events", "DELETE /v1/users/u1"]
    assert len(waits) == 1


def test_retries_end_after_the_policy_s_attempts_or_a_retry_after_past_its_patience() -> None:
    down = httpx.ConnectError("refused")
    http, seen = scripted([down, down, down])
    waits: list[float] = []
    with (
        FypClient(http=http, retries=RetryPolicy(attempts=3), sleep=waits.append) as fyp,
        pytest.raises(UnreachableError),
    ):
        fyp.feed("u1")  # not even sent: tried again though a feed is not idempotent
    assert len(seen) == 3
    assert len(waits) == 2
    assert 0.05 <= waits[0] <= 0.1 < waits[1] <= 0.2  # doubling, with jitter

    long = httpx.Response(429, json={"detail": "limit"}, headers={"Retry-After": "3600"})
    http, seen = scripted([long])
    with FypClient(http=http, sleep=waits.append) as fyp, pytest.raises(RateLimitedError) as err:
        fyp.feed("u1")
    assert err.value.retry_after == 3600.0
    assert seen == ["GET /v1/feed"]


def test_a_batch_sent_while_redis_is_down_goes_through_once_it_is_back(
    tmp_path: Path, unavailable: Callable[[str], NoReturn]
) -> None:
    redis_server = RedisServer(
        tmp_path / "redis", unavailable, appendonly="yes", appendfsync="always"
    )
    live = Live(
        settings_for(
            tmp_path / "data",
            event_log=redis_server.url,
            privacy={"require_registered_users": False},
        )
    )
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the server's Retry-After, then Redis is back
        waits.append(seconds)
        redis_server.start()

    try:
        with FypClient(live.url, live.key, sleep=sleep) as fyp:
            fyp.upsert_videos([video(1)])
            fyp.send_events([view("e1", "u1", "v1")])
            redis_server.kill()
            result = fyp.send_events([view("e1", "u1", "v1"), view("e2", "u1", "v1")])
            assert (result.accepted, result.duplicates) == (1, 1)
            assert waits == [5.0]  # the server's Retry-After for a store it cannot reach
            redis_server.kill()
            with (
                FypClient(live.url, live.key, retries=RetryPolicy(attempts=1)) as once,
                pytest.raises(UnavailableError, match="retry later"),
            ):
                once.send_events([view("e3", "u1", "v1")])
    finally:
        live.stop()
        redis_server.stop()
