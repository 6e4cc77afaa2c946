"""The learner and a server apart, the models crossing through a Redis server
(``model.channel``) instead of the data dir's files: what the server serves is what a
replay of the log learns, and an erased user's rows are in no process, no file of the
data dir and no file of the Redis server (its AOF and RDB files scrubbed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.learning.link import channel_of
from fyp.model.publisher import USER_TABLES
from fyp.model.redis_channel import RedisModelChannel
from fyp.privacy.keys import bearer, create_key
from redis_servers import RedisServer, unique_prefix


@pytest.fixture
def redis_server(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[RedisServer]:
    # rdbcompression no: the check reads the files for the user's bytes, which LZF
    # could hide.
    server = RedisServer(
        tmp_path / "redis", unavailable, appendonly="yes", save="3600 1", rdbcompression="no"
    )
    yield server
    server.stop()


@pytest.fixture
def on_redis(learning: Any, redis_server: RedisServer) -> Any:
    url = f"{redis_server.url}?prefix={unique_prefix()}"
    model = {**learning.settings.model.model_dump(), "channel": url}
    learning.settings = learning.settings_for(learning.data, model=model)
    return learning


def test_the_learner_publishes_through_redis_and_the_server_serves_what_a_replay_learns(
    on_redis: Any, lkit: Any, redis_server: RedisServer
) -> None:
    learning = on_redis
    assert isinstance(channel_of(learning.settings), RedisModelChannel)
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():
        assert learning.sync(server) == 1 and server.replica.version == 1
        learning.ingest(server, 1_500, 1_500, seed=1)
        while learner.step():
            pass
        learner.publish()
        assert learning.sync(server) >= 1
        lkit.assert_serves(server.replica, learner.models)
        lkit.assert_serves(server.replica, learning.replay())
    models_dir = learning.data / "models"  # nothing was published into the data dir
    assert not models_dir.exists() or not list(models_dir.iterdir())


def test_an_erased_users_rows_are_in_no_process_and_no_file_of_the_redis_server(
    on_redis: Any, lkit: Any, redis_server: RedisServer
) -> None:
    learning = on_redis
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 2_000)
    learning.learner_thread()
    learning.wait_settled(server)
    pid = server.pseudonym("u7")
    held = server.replica.user_vectors(pid).values()
    rows = [np.asarray(v, np.float32).tobytes() for v in held if v is not None]
    assert len(rows) == 2
    redis_server.client().bgrewriteaof()  # so the server's files hold them: the check sees
    traces = [*rows, pid.encode(), pid.encode("utf-32-le")]
    learning.wait_settled(server)
    assert lkit.scan(redis_server.dir, rows)
    assert server.rights.erase_user("u7", "test").events > 0  # (it waited for the learner)
    assert not server.replica.holds_user(pid)
    assert lkit.scan(redis_server.dir, traces) == {}
    assert lkit.scan(learning.data, traces) == {}
    learning.wait_settled(server)  # what it publishes next does not bring them back
    assert not server.replica.holds_user(pid)
    published = channel_of(learning.settings).read_after(0)
    assert published and not [u for u in published if u.holds({t: {pid} for t in USER_TABLES})]


def test_a_server_whose_channel_is_down_at_its_start_serves_and_catches_up(
    on_redis: Any, redis_server: RedisServer
) -> None:
    learning = on_redis
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    _, token = create_key(learning.data, label="tests")
    redis_server.kill()
    with TestClient(create_app(learning.settings, server), headers=bearer(token)) as client:
        assert client.get("/healthz").json()["learned_models"]["version"] == 0
        feed = client.get("/v1/feed", params={"user_id": "u1"})
        assert feed.status_code == 200 and feed.json()["items"]  # the first ranker serves
        redis_server.start()
        learning.learner_thread()  # (it publishes a snapshot at its start)
        deadline = time.monotonic() + 60
        while (body := client.get("/healthz").json())["learned_models"]["version"] == 0:
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert server.replica.version >= 1


def test_a_server_with_another_data_dir_sees_the_learner_and_waits_for_its_erasures(
    on_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serving process whose data dir is not the learner's (``fyp cluster up``'s api-1,
    another machine) reads the learner's status from the channel: /healthz says whether
    it runs, and an erasure through that process waits for the learner to drop the
    user, rather than carrying it out at rest as if no learner ran."""
    from fyp.learning import link as link_module

    learning = on_redis
    elsewhere = learning.settings_for(
        tmp_path / "api-1", model=learning.settings.model.model_dump()
    )
    link = link_module.LearnerLink(elsewhere)
    assert link.remote_status() is None and link.status() is None  # (no learner yet)

    def at_rest(settings: Any, user_id: str) -> int:
        raise AssertionError("carried out at rest while a learner runs elsewhere")

    monkeypatch.setattr(link_module, "erase_at_rest", at_rest)
    for learner in learning.learner_here():
        status = link.remote_status()  # (what the server's model poller reads)
        assert status is not None and status.ready and link.status() == status
        assert status.host == link_module.HOST and status.version == learner.publisher.version
        assert not (elsewhere.data_dir / link_module.STATUS_FILE).exists()

        dropped = threading.Event()

        def carried_out(learner: Any, dropped: threading.Event) -> None:
            time.sleep(0.3)  # (the learner, following the tombstone)
            dropped.set()
            learner.status.erased.append("ref-1")
            learner.write_status()

        thread = threading.Thread(target=carried_out, args=(learner, dropped))
        thread.start()
        assert link.erase("u1", "ref-1") == learner.publisher.version
        # It waited for the learner (not a time: on a loaded machine the thread's sleep
        # may start well before a clock read here).
        assert dropped.is_set()
        thread.join()
    # The learner gone (its status stale), the erasure is carried out at rest again.
    stale = link.remote_status()
    assert stale is not None
    stale.heartbeat_ms -= link_module.STALE_MS + 1
    learner_channel = link_module.channel_of(elsewhere)
    learner_channel.put_learner_status(link_module.encode_status(stale))
    monkeypatch.setattr(link_module, "erase_at_rest", lambda settings, user_id: 7)
    assert link.erase("u2", "ref-2") == 7


def test_healthz_of_a_server_with_another_data_dir_says_the_learner_runs(
    on_redis: Any, tmp_path: Path
) -> None:
    """Its model poller reads the learner's status from the channel: "up" while the
    learner runs elsewhere (before, such a server said "down" and "degraded" always)."""
    learning = on_redis
    elsewhere = learning.settings_for(
        tmp_path / "api-1", model=learning.settings.model.model_dump()
    )
    server = learning.server(elsewhere)
    _, token = create_key(elsewhere.data_dir, label="tests")
    with TestClient(create_app(elsewhere, server), headers=bearer(token)) as client:
        assert client.get("/healthz").json()["learned_models"]["learner"] == "down"
        stop = learning.learner_thread()
        try:
            deadline = time.monotonic() + 60
            while (body := client.get("/healthz").json())["learned_models"]["learner"] != "up":
                assert time.monotonic() < deadline, body
                time.sleep(0.05)
            assert body["learned_models"]["version"] >= 1
            assert not body["status"].startswith("degraded: the learner")
        finally:
            stop.set()
