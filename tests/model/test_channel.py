"""The model channel's contract, run against every implementation (the files in a data
dir; Redis, on the shared server under a key prefix of each test's own, deleted after
it): versions in order, a snapshot superseding what came before, a reader behind it
starting from it, and an erased user's rows rewritten out. Then what only the Redis one
does: chunks, refusing a second writer, and the server's files scrubbed after a forget."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from fyp.model.channel import (
    FileModelChannel,
    IndexChanges,
    ModelChannel,
    ModelUpdate,
    decode,
    encode,
    open_channel,
)
from fyp.model.embeddings import TableChanges
from fyp.model.redis_channel import RedisModelChannel, split_url
from redis_servers import SHARED_URL, RedisServer, delete_prefix, shared_redis, unique_prefix

Unavailable = Callable[[str], NoReturn]


@pytest.fixture(params=["files", "redis"])
def channel(
    request: pytest.FixtureRequest, tmp_path: Path, unavailable: Unavailable
) -> Iterator[ModelChannel]:
    if request.param == "files":
        yield FileModelChannel(tmp_path / "models")
        return
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    # Chunks of 64 bytes: every update here spans several, as a large snapshot does.
    redis_channel = RedisModelChannel(SHARED_URL, prefix=prefix, chunk_bytes=64)
    try:
        yield redis_channel
    finally:
        redis_channel.close()
        delete_prefix(client, prefix)
        client.close()


def _update(version: int, full: bool, users: dict[str, float], dense: bool = True) -> ModelUpdate:
    ids = sorted(users)
    vectors = np.array([[users[i], -users[i]] for i in ids], dtype=np.float32).reshape(-1, 2)
    return ModelUpdate(
        version=version,
        full=full,
        published_ms=1_000 * version,
        offset=10 * version,
        ranker_examples=100 * version,
        retrieval_positives=7 * version,
        tables={
            "ranker.user": TableChanges(ids, vectors, [], np.full(2, 0.5, np.float32)),
            "ranker.video": TableChanges(
                ["v1"], np.ones((1, 3), np.float32), ["v0"], np.zeros(3, np.float32)
            ),
        },
        index=IndexChanges(["v1"], np.ones((1, 4), np.float32), [], full),
        dense={"ranker.w1": np.arange(6, dtype=np.float32).reshape(2, 3)} if dense else None,
    )


def _same(a: ModelUpdate, b: ModelUpdate) -> bool:
    return encode(a) == encode(b)


def test_an_update_survives_its_bytes() -> None:
    update = _update(3, True, {"u1": 1.0, "u2": 2.0})
    back = decode(encode(update))
    assert _same(back, update)
    assert back.tables["ranker.user"].ids == ["u1", "u2"]
    assert back.tables["ranker.video"].removed == ["v0"]
    assert back.dense is not None and back.dense["ranker.w1"].shape == (2, 3)
    assert decode(encode(_update(4, False, {}, dense=False))).dense is None


def test_a_reader_gets_every_delta_after_its_version_in_order(channel: ModelChannel) -> None:
    assert channel.latest() == 0 and channel.read_after(0) == []
    channel.publish(_update(1, True, {"u1": 1.0}))
    for v in (2, 3, 4):
        channel.publish(_update(v, False, {"u1": float(v)}))
    assert channel.latest() == 4
    assert [(u.version, u.full) for u in channel.read_after(0)] == [
        (1, True),
        (2, False),
        (3, False),
        (4, False),
    ]
    assert [u.version for u in channel.read_after(2)] == [3, 4]
    assert channel.read_after(4) == []


def test_a_snapshot_supersedes_what_came_before(channel: ModelChannel) -> None:
    channel.publish(_update(1, True, {"u1": 1.0}))
    channel.publish(_update(2, False, {"u1": 2.0}))
    channel.publish(_update(3, True, {"u1": 3.0}))
    channel.publish(_update(4, False, {"u1": 4.0}))
    # A reader behind the snapshot (or new) starts from it; one past it reads deltas.
    assert [(u.version, u.full) for u in channel.read_after(0)] == [(3, True), (4, False)]
    assert [(u.version, u.full) for u in channel.read_after(1)] == [(3, True), (4, False)]
    assert [u.version for u in channel.read_after(3)] == [4]


def test_forget_rewrites_every_update_without_the_rows(channel: ModelChannel) -> None:
    channel.publish(_update(1, True, {"gone": 1.0, "kept": 2.0}))
    channel.publish(_update(2, False, {"gone": 3.0}))
    channel.publish(_update(3, False, {"kept": 4.0}))
    removal = _update(4, False, {})
    removal.tables["ranker.user"].removed.append("gone")
    channel.publish(removal)
    assert channel.forget({"ranker.user": {"gone"}}) == 3
    updates = channel.read_after(0)
    assert [u.version for u in updates] == [1, 2, 3, 4]
    for u in updates:
        t = u.tables["ranker.user"]
        assert "gone" not in t.ids and "gone" not in t.removed and len(t.ids) == len(t.vectors)
    assert updates[0].tables["ranker.user"].ids == ["kept"]
    assert updates[0].tables["ranker.user"].vectors.tolist() == [[2.0, -2.0]]
    assert channel.forget({"ranker.user": {"gone"}}) == 0  # (nothing left to rewrite)


def test_no_file_holds_a_forgotten_users_id_or_rows(tmp_path: Path) -> None:
    channel = FileModelChannel(tmp_path / "models")
    channel.publish(_update(1, True, {"gone-7f3a": 1.25, "kept": 2.0}))
    channel.publish(_update(2, False, {"gone-7f3a": 3.5}))
    channel.forget({"ranker.user": {"gone-7f3a"}})
    needles = [np.array([v, -v], dtype=np.float32).tobytes() for v in (1.25, 3.5)] + [
        "gone-7f3a".encode("utf-32-le")
    ]
    files = list((tmp_path / "models").iterdir())
    assert len(files) == 2
    for path in files:
        data = path.read_bytes()
        assert not [n for n in needles if n in data], path.name


def test_the_channel_is_chosen_by_url(tmp_path: Path) -> None:
    assert isinstance(open_channel(None, tmp_path), FileModelChannel)
    redis_channel = open_channel("redis://127.0.0.1:6379/0?prefix=p9", tmp_path)
    assert isinstance(redis_channel, RedisModelChannel)
    redis_channel.close()
    assert split_url("redis://h:1/2?prefix=p1&health_check_interval=3") == (
        "redis://h:1/2?health_check_interval=3",
        "p1",
    )
    assert split_url("unix:///run/redis.sock") == ("unix:///run/redis.sock", "fyp")
    for bad in ("http://h/0", "redis://h/0?prefix={x}", "redis://h/0?prefix="):
        with pytest.raises(ValueError):
            split_url(bad)


def test_settings_name_the_channel(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from fyp.config import load_settings

    url = "redis://127.0.0.1:6379/0?prefix=m"
    config = tmp_path / "fyp.toml"
    config.write_text('[model]\nenabled = true\nchannel = "redis://elsewhere:6379/0"\n')
    assert load_settings(environ={}).model.channel is None
    assert load_settings(config, environ={}).model.channel == "redis://elsewhere:6379/0"
    env = {"FYP_MODEL_CHANNEL": url}
    from_env = load_settings(config, environ=env).model
    assert from_env.channel == url and from_env.enabled  # the rest of [model] kept
    flag = load_settings(config, {"model": {"channel": "redis://flag:1/0"}}, environ=env)
    assert flag.model.channel == "redis://flag:1/0" and flag.model.enabled
    assert load_settings(config, {"model": {"channel": None}}, environ={}).model.enabled
    with pytest.raises(ValidationError, match="scheme"):
        load_settings(environ={"FYP_MODEL_CHANNEL": "memcached://h/0"})


def _redis_channel(server: RedisServer, **options: int) -> RedisModelChannel:
    return RedisModelChannel(server.url, prefix=unique_prefix(), **options)


@pytest.fixture
def server(tmp_path: Path, unavailable: Unavailable) -> Iterator[RedisServer]:
    # AOF and snapshots on, rdbcompression off: the check reads the files for the
    # user's bytes, which LZF could hide.
    started = RedisServer(
        tmp_path / "redis",
        unavailable,
        appendonly="yes",
        appendfsync="always",
        save="3600 1",
        rdbcompression="no",
    )
    yield started
    started.stop()


def test_a_second_writer_is_refused_not_interleaved(server: RedisServer) -> None:
    channel = _redis_channel(server)
    try:
        channel.publish(_update(1, True, {"u1": 1.0}))
        channel.publish(_update(2, False, {"u1": 2.0}))
        with pytest.raises(ValueError, match="holds version 2"):
            channel.publish(_update(2, False, {"u1": 9.0}))
        assert [u.tables["ranker.user"].vectors[0, 0] for u in channel.read_after(0)] == [1, 2]
        # nothing left behind by the refused publish
        assert server.client().keys("*tmp*") == []
    finally:
        channel.close()


def test_after_forget_no_server_file_holds_the_users_id_or_rows(server: RedisServer) -> None:
    channel = _redis_channel(server, chunk_bytes=1 << 20)
    gone = "gone-7f3a9e1c"
    needles = [np.array([v, -v], dtype=np.float32).tobytes() for v in (1.25, 3.5)] + [
        gone.encode("utf-32-le")
    ]

    def holding() -> list[str]:
        files = [(p.name, p.read_bytes()) for p in server.files()]
        return [name for name, data in files for n in needles if n in data]

    try:
        channel.publish(_update(1, True, {gone: 1.25, "kept": 2.0}))
        channel.publish(_update(2, False, {gone: 3.5}))
        server.client().bgrewriteaof()
        channel.publish(_update(3, False, {"kept": 4.0}))
        assert holding()  # the check can see them before
        assert channel.forget({"ranker.user": {gone}}) == 2
        assert holding() == []
        assert [u.version for u in channel.read_after(0)] == [1, 2, 3]
    finally:
        channel.close()
    # what is left loads: a restart from the rewritten files has the rest
    server.kill()
    server.start()
    again = RedisModelChannel(server.url, prefix=channel._key[1:].split("}")[0])
    try:
        assert again.latest() == 3
        assert again.read_after(0)[0].tables["ranker.user"].ids == ["kept"]
    finally:
        again.close()
