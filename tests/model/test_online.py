"""OnlineModels' upkeep of the item index: the last batch's rows and whole-catalog
refreshes reach it (re-clustered in the background once the IVF is on), and replaying the
same log leaves the same index; the two-tower source that reads it, whose candidates
name the watch they are most like; and a checkpoint of the code before (its ranker's queue
a list, Adam unfused) trained on as this code's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fyp.catalog.names import video_name
from fyp.config import load_settings
from fyp.engine import Engine, Role
from fyp.model import online
from fyp.model.ann import ItemIndex
from fyp.model.rank_queue import RankExample, RankQueue
from fyp.retrieve.base import FeedContext
from fyp.retrieve.two_tower import TwoTowerSource
from fyp.types import Video

NOW = 1_700_000_000_000
N_VIDEOS = 400


@pytest.fixture(autouse=True)
def small_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IVF (and its background builds) from 100 items, so a small catalog uses it
    (where the index is searched: a learner's is what it would be)."""
    new_index = online._new_index

    def small(dim: int, seed: int, searched: bool = True) -> ItemIndex:
        if not searched:
            return new_index(dim, seed, searched)
        return ItemIndex(dim, seed=seed, background=True, exact_below=100)

    monkeypatch.setattr(online, "_new_index", small)


def trained_engine(data_dir: Path, role: Role = "all") -> Engine:
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "privacy": {"require_registered_users": False},
            "model": {
                "enabled": True,
                "warmup_examples": 500,
                "retrieval_warmup": 128,
                "ranker_batch": 128,
                "retrieval_batch": 64,
                "min_count": 1,
            },
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW, role=role)
    engine.upsert_videos(
        [
            Video(f"v{i}", f"c{i % 20}", 20_000, hashtags=(f"t{i % 7}",), created_at=NOW)
            for i in range(N_VIDEOS)
        ]
    )
    rng = np.random.default_rng(0)
    events: list[dict[str, object]] = []
    for n in range(2_000):
        u, v = int(rng.integers(0, 60)), int(rng.integers(0, N_VIDEOS))
        watched = 20_000 if (v % 20) % 2 == u % 2 else 500
        events.append(
            {
                "event_id": f"e{n}",
                "user_id": f"u{u}",
                "video_id": f"v{v}",
                "type": "view",
                "ts": NOW - 3_600_000 + n * 1_000,
                "watch_ms": watched,
            }
        )
    assert not engine.ingest(events, now=NOW).rejected
    engine.learn()
    return engine


def current_vectors(models: online.OnlineModels, rows: list[int]) -> np.ndarray:
    return models.retrieval.item_vectors(rows, 0)


def test_the_index_follows_the_towers(tmp_path: Path) -> None:
    engine = trained_engine(tmp_path)
    try:
        models = engine.models
        assert models is not None and models.retrieval.warm
        index = models.index
        assert len(index) == N_VIDEOS and index.is_approximate and not index.building
        videos = engine.catalog.videos
        # A retrieval batch's rows are refreshed as the next step, a step of its own
        # (the batch itself is gone: some rows stand in for it).
        seen = models.retrieval.positives_seen
        rows = [3, 77, 150]
        models._batch_rows = rows
        assert models.due() and models.step()
        for r, want in zip(rows, current_vectors(models, rows), strict=True):
            np.testing.assert_allclose(index.vector(videos[r].video_id), want, rtol=1e-6)
        assert models.retrieval.positives_seen == seen and not models._batch_rows
        # A whole-catalog refresh: every vector current, the lists re-clustered on them.
        models._refresh_rows = list(range(N_VIDEOS))
        models.drain()
        assert not index.building
        every = list(range(N_VIDEOS))
        want = current_vectors(models, every)
        got = np.stack([index.vector(videos[r].video_id) for r in every])
        np.testing.assert_allclose(got, want, rtol=1e-6)
        q = want[:20] + 0.1
        found, _ = index.search(q, 20)
        exact = np.argsort(-(q @ want.T), axis=1)[:, :20]
        recall = np.mean(
            [
                len(set(f) & {videos[i].video_id for i in row}) / 20
                for f, row in zip(found, exact, strict=True)
            ]
        )
        assert recall >= 0.95, recall
    finally:
        engine.close()


def test_replaying_the_same_log_leaves_the_same_index(tmp_path: Path) -> None:
    answers = []
    for name in ("a", "b"):
        engine = trained_engine(tmp_path / name)
        try:
            models = engine.models
            assert models is not None and models.index.is_approximate
            q = current_vectors(models, list(range(0, N_VIDEOS, 20)))
            found, scores = models.index.search(q, 30)
            answers.append((found, [s.tolist() for s in scores]))
        finally:
            engine.close()
    assert answers[0] == answers[1]


def test_the_learners_index_holds_the_vectors_it_publishes_and_builds_no_lists(
    tmp_path: Path,
) -> None:
    """The learner process searches no index: its item vectors are published, and each
    serving process clusters its own copy. Lists built in the learner were CPU thrown
    away (at 100k videos a re-clustering took a tenth of its learning path)."""
    served = trained_engine(tmp_path / "all")
    learner = trained_engine(tmp_path / "learner", role="learner")
    try:
        a, b = served.models, learner.models
        assert a is not None and b is not None
        assert a.index.is_approximate and not b.index.is_approximate and not b.index.building
        ids = sorted(a.index.ids())
        assert ids == sorted(b.index.ids()) and len(ids) == N_VIDEOS
        np.testing.assert_array_equal(a.index.vectors_of(ids)[0], b.index.vectors_of(ids)[0])
        # What it publishes: every vector, and the re-clusterings a reader makes.
        changes = b.take_index_changes(everything=True)
        assert sorted(changes.ids) == ids and changes.recluster
        # Restored from its checkpoint, it still builds none.
        positives = b.retrieval.positives_seen
        learner.checkpoints.write()
        learner.close()
        learner = Engine.open(learner.settings, clock=lambda: NOW, replay=False, role="learner")
        b = learner.models
        assert b is not None and b.retrieval.positives_seen == positives and not b.searched
        b._refresh_rows = list(range(N_VIDEOS))
        b.drain()
        assert len(b.index) == N_VIDEOS and not b.index.is_approximate
    finally:
        served.close()
        learner.close()


def test_two_tower_candidates_cite_the_watch_they_are_most_like(tmp_path: Path) -> None:
    engine = trained_engine(tmp_path)
    try:
        models = engine.models
        assert models is not None and models.retrieval.warm
        pid = engine.pseudonyms.of("u4")
        user = engine.state.users[pid]
        history = models.retrieval.pooled(user.history)
        models._refresh_rows = list(range(N_VIDEOS))  # every vector in the index current
        models.drain()
        ctx = FeedContext("r", pid, user, 10, "for_you", "local", NOW)
        source = TwoTowerSource(models, 30)
        found = source.fetch(ctx)
        assert len(found) == 30
        # Worded for the served ones only: until then, the generic reason.
        assert {c.reason for c in found} == {TwoTowerSource.reason}
        source.cite(ctx, found[5:] + found[:5])
        videos = engine.catalog.videos
        seen = current_vectors(models, history)
        for c in found:
            # The watch it is most like, named for a person (creator and caption).
            sims = seen @ current_vectors(models, [c.row])[0]
            best = {
                f"Like {video_name(videos[history[k]])}, which you watched"
                for k in np.flatnonzero(sims >= sims.max() - 1e-6)
            }
            assert c.reason in best, c.reason
            assert c.video_id not in c.reason and not any(
                videos[r].video_id in c.reason for r in history
            )
        # A user with no history in the index gets the generic reason.
        source = TwoTowerSource(models, 5)
        ctx = FeedContext("r", "new", engine.state.user("new"), 10, "for_you", "local", NOW)
        blank = source.fetch(ctx)
        source.cite(ctx, blank)
        assert blank and {c.reason for c in blank} == {TwoTowerSource.reason}
    finally:
        engine.close()


def test_a_checkpoint_of_the_code_before_the_queue_columns_and_fused_adam_trains_on_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint written before the ranker's queue was kept as columns and Adam's step
    fused holds a list of ``fyp.model.ranker.RankExample`` (the class's place then) and
    optimiser groups that are not fused. Restored, the queue reads as columns and Adam is
    fused: trained on from there, the models are those of the same checkpoint written
    by this code, bit for bit (the queued examples are not lost, nor is the optimiser's
    state; an unfused step rounds otherwise)."""
    engine = trained_engine(tmp_path / "a")
    models = engine.models
    assert models is not None
    # Examples queued and not trained on yet, as a checkpoint taken between steps holds.
    models.step = lambda: False  # type: ignore[method-assign]
    more = [
        {
            "event_id": f"q{n}",
            "user_id": f"u{n % 60}",
            "video_id": f"v{(7 * n) % N_VIDEOS}",
            "type": "view",
            "ts": NOW - 600_000 + n * 1_000,
            "watch_ms": 20_000 if n % 3 else 500,
        }
        for n in range(300)
    ]
    assert not engine.ingest(more, now=NOW).rejected
    engine.learn()
    del models.step
    queued = len(models._rank_queue)
    assert queued >= 200
    engine.checkpoints.write()
    engine.close()
    shutil.copytree(tmp_path / "a", tmp_path / "old")
    shutil.copy(tmp_path / "a.secret", tmp_path / "old.secret")  # (kept beside a data dir)

    def reopen(name: str) -> Engine:
        settings = engine.settings.model_copy(update={"data_dir": tmp_path / name})
        return Engine.open(settings, clock=lambda: NOW, replay=False)

    # The copy's checkpoint written again as the code before wrote it.
    old = reopen("old")
    assert old.models is not None
    old.models._rank_queue = list(old.models._rank_queue)  # type: ignore[assignment]
    for optimizer in (old.models.ranker.optimizer, old.models.retrieval.optimizer):
        for group in optimizer.param_groups:
            group["fused"] = None
    monkeypatch.setattr(RankExample, "__module__", "fyp.model.ranker")
    old.checkpoints.write()
    monkeypatch.undo()
    old.close()

    a, b = reopen("a"), reopen("old")
    try:
        assert a.models is not None and b.models is not None
        assert isinstance(b.models._rank_queue, RankQueue) and len(b.models._rank_queue) == queued
        for optimizer in (b.models.ranker.optimizer, b.models.retrieval.optimizer):
            assert all(group["fused"] for group in optimizer.param_groups)
        later = [e | {"event_id": f"later-{e['event_id']}", "ts": NOW + 1_000} for e in more]
        for e in (a, b):
            assert not e.ingest(later, now=NOW + 2_000).rejected
            e.learn()
        assert b.models.ranker.examples_seen == a.models.ranker.examples_seen > 0
        for name, tensor in a.models.ranker.net.state_dict().items():
            assert torch.equal(tensor, b.models.ranker.net.state_dict()[name]), name
        for name, tensor in a.models.retrieval.user_tower.state_dict().items():
            assert torch.equal(tensor, b.models.retrieval.user_tower.state_dict()[name]), name
    finally:
        b.close()
        a.close()
