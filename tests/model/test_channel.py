"""The model channel's contract, run against every implementation (the Redis one of the
cluster issue joins ``CHANNELS``): versions in order, a snapshot superseding what came
before, a reader behind it starting from it, and an erased user's rows rewritten out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fyp.model.channel import (
    FileModelChannel,
    IndexChanges,
    ModelChannel,
    ModelUpdate,
    decode,
    encode,
)
from fyp.model.embeddings import TableChanges

CHANNELS: dict[str, Callable[[Path], ModelChannel]] = {
    "files": lambda d: FileModelChannel(d / "models"),
}


@pytest.fixture(params=sorted(CHANNELS))
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> ModelChannel:
    return CHANNELS[request.param](tmp_path)


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
