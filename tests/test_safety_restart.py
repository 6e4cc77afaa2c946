"""What users and moderators set survives a restart, and "refresh" forgets at one point
of the log: a restart from a checkpoint, a replay from scratch and the live engine agree
— also after ``kill -9``."""

from __future__ import annotations

from pathlib import Path

from fyp.engine import Engine
from fyp.model.embeddings import EmbeddingTable
from fyp.users.controls import ControlsIn, ProfileIn
from server_process import Server
from test_checkpoint import NOW, _events, _fingerprint, _settings, _videos


def _history(engine: Engine, user_id: str) -> list[int]:
    return list(engine.state.users[engine.pseudonym(user_id)].history)


def _user_tables(engine: Engine) -> list[EmbeddingTable]:
    assert engine.models is not None
    return [engine.models.ranker.tables["user"], engine.models.retrieval.tables["user"]]


def test_refresh_forgets_at_its_log_offset_whatever_the_restart(tmp_path: Path) -> None:
    """A refresh forgets the user's history and their rows in both models' embedding
    tables (keyed by the pseudonym, never by the id).

    Mutation: removing the row-forgetting from ``OnlineModels.forget_user`` (the two
    ``tables["user"].forget`` calls) leaves u1's rows, and fails this test."""
    engine = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    engine.ingest(_events(0, 2_000, seed=1), now=NOW)
    engine.learn()
    engine.checkpoints.write()
    u1 = engine.pseudonym("u1")
    assert all(u1 in table for table in _user_tables(engine))  # rows to forget
    # More events, not yet learned when u1 asks for a refresh: they are forgotten too.
    engine.ingest(_events(2_000, 500, seed=2), now=NOW)
    engine.put_user("u1", ProfileIn())
    engine.set_controls("u1", ControlsIn(refresh=True, mute_creators=["c3"]))
    engine.learn()
    assert _history(engine, "u1") == []
    assert not any(u1 in table for table in _user_tables(engine))
    engine.ingest(_events(2_500, 800, seed=3), now=NOW)  # after the refresh: learned
    engine.learn()
    live, live_history = _fingerprint(engine), _history(engine, "u1")
    assert live_history  # the new feed is learned from what came after
    engine.close()

    restored = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    replayed = Engine.open(_settings(tmp_path), clock=lambda: NOW, from_checkpoint=False)
    try:
        for e in (restored, replayed):
            assert _fingerprint(e) == live
            assert _history(e, "u1") == live_history
            assert e.controls_of("u1").mute_creators == ("c3",)  # mutes stay
    finally:
        restored.close()
        replayed.close()


def test_moderation_profiles_and_controls_survive_a_restart(tmp_path: Path) -> None:
    engine = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    engine.upsert_videos(_videos())
    engine.moderator.moderate("v1", "removed", None, "takedown")
    engine.moderator.moderate("v2", None, ["mature"], "age gate")
    engine.put_user("teen", ProfileIn(age_band="13-15", region="local"))
    engine.set_controls("teen", ControlsIn(mute_hashtags=["t0"], personalized=False))
    engine.close()

    again = Engine.open(_settings(tmp_path), clock=lambda: NOW)
    try:
        cat = again.catalog
        assert cat.states[cat.row_of["v1"]].value == "removed"
        assert cat.labels[cat.row_of["v2"]] == ("mature",)
        assert again.users.profiles[again.pseudonym("teen")].age_band == "13-15"
        assert not again.controls_of("teen").personalized
        served = [i.video_id for _ in range(10) for i in again.feed("teen", 10, now=NOW).items]
        assert served and not {"v1", "v2"} & set(served)
        assert all(int(v[1:]) % 6 != 0 for v in served)  # hashtag t0 muted
    finally:
        again.close()


def test_kill_9_keeps_every_acknowledged_moderation_and_user_setting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = Engine.open(_settings(data))
    engine.upsert_videos(_videos())
    engine.close()
    server = Server(data, tmp_path / "server.log")
    try:
        server.wait_ready()
        with server.client(10.0) as c:
            for i in range(20):
                r = c.post(
                    "/v1/moderation",
                    json={"video_id": f"v{i}", "state": "limited", "reason": f"case {i}"},
                )
                assert r.status_code == 200, r.text
                assert c.put(f"/v1/users/p{i}", json={"age_band": "18+"}).status_code == 201
                r = c.post(f"/v1/users/p{i}/controls", json={"mute_keywords": [f"word{i}"]})
                assert r.status_code == 200, r.text
        server.kill9()
    finally:
        server.stop()
    after = Engine.open(_settings(data))
    try:
        history = after.moderation_store.history()
        assert [a.reason for a in history] == [f"case {i}" for i in range(20)]
        assert all(
            after.catalog.states[after.catalog.row_of[f"v{i}"]].value == "limited"
            for i in range(20)
        )
        for i in range(20):
            assert after.users.profiles[after.pseudonym(f"p{i}")].age_band == "18+"
            assert after.controls_of(f"p{i}").mute_keywords == (f"word{i}",)
    finally:
        after.close()
