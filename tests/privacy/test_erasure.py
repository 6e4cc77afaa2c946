"""The user's rights: export (everything held about them) and erasure (nothing left:
events, impressions, profile, controls, learned state, embedding rows, checkpoints)."""

from __future__ import annotations

from typing import Any

from fyp.engine import Engine
from fyp.privacy.audit_log import verify

MODEL = {
    "enabled": True,
    "warmup_examples": 50,
    "retrieval_warmup": 20,
    "ranker_batch": 16,
    "retrieval_batch": 8,
    "min_count": 1,
}
GONE = "erase-me-5b1c"  # distinctive, so a byte scan cannot match anything else
KEPT = ["keep-a-44f0", "keep-b-e3d9"]

PERSONAL_SOURCES = {"coengagement", "followed", "topics", "two_tower"}


def _activity(d: Any, user: str) -> list[str]:
    """Everything a user can leave behind: profile, controls, events (views, likes, a
    follow, a report, not interested), feeds and their impressions, a why."""
    c = d.client
    # An attribute value only this user has (against the policy's spirit, not its
    # letter): it must go with them, from the models' vocabulary and its checkpoint too.
    profile = {"age_band": "18+", "language": "en", "attributes": {"cohort": user, "tier": "a"}}
    assert c.put(f"/v1/users/{user}", json=profile).status_code == 201
    events = d.events(user, 30)
    events.append({**events[0], "event_id": f"{user}-follow", "type": "follow"})
    events.append({**events[0], "event_id": f"{user}-report", "type": "report"})
    events.append({**events[2], "event_id": f"{user}-ni", "type": "not_interested"})
    for e in events:
        e.pop("watch_ms") if e["type"] != "view" and "watch_ms" in e else None
    assert c.post("/v1/events", json={"events": events}).status_code == 200, events[-1]
    r = c.post(f"/v1/users/{user}/controls", json={"mute_keywords": ["spoilers"]})
    assert r.status_code == 200
    served = []
    for _ in range(3):
        served += [
            i["video_id"] for i in c.get("/v1/feed", params={"user_id": user}).json()["items"]
        ]
    assert c.get(f"/v1/users/{user}/why/{served[0]}").status_code == 200
    return served


def test_export_holds_everything_about_the_user_and_is_audited(deployments: Any) -> None:
    d = deployments.start("eu", model=MODEL)
    served = _activity(d, GONE)
    d.wait_until_learned()
    resp = d.client.get(f"/v1/users/{GONE}/export")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["user_id"] == GONE
    assert doc["profile"]["age_band"] == "18+" and doc["profile"]["region"] == "eu"
    assert doc["profile"]["attributes"] == {"cohort": GONE, "tier": "a"}
    assert doc["controls"]["mute_keywords"] == ["spoilers"]
    assert len(doc["events"]) == 43 and {e["type"] for e in doc["events"]} >= {
        "view",
        "like",
        "follow",
        "report",
        "not_interested",
    }
    assert sorted(i["video_id"] for i in doc["impressions"]) == sorted(served)
    learned = doc["learned"]
    assert learned["top_creators"] and learned["top_hashtags"]
    assert learned["follows"] and learned["not_interested"]
    assert learned["engagement_counts"]["like"] > 0
    assert "ranker" in doc["learned_vectors"]
    # No pseudonym in what the user gets; the audit names them by another reference.
    assert d.engine.pseudonym(GONE) not in resp.text
    exports = [r for r in d.engine.audit.records() if r.action == "user.export"]
    assert len(exports) == 1 and exports[0].subject == d.engine.pseudonyms.audit_ref(GONE)
    assert exports[0].subject != d.engine.pseudonym(GONE)


def test_erasure_leaves_nothing_of_the_user_in_any_file(deployments: Any) -> None:
    """Nothing of the user in any file: not their id, not their pseudonym, and not the
    bytes of their learned embedding rows (the scan of the checkpoint finds a freed row
    that was not zeroed).

    Mutation: deleting the zeroing of freed rows in ``EmbeddingTable._release``
    (``model/embeddings.py``) leaves the user's vector in the checkpoint rewritten
    without them, and fails this test; so does deleting the release of the user's
    attribute codes in ``LogState.erase_user`` (``state/updater.py``): a value only they
    had stays in the vocabulary the checkpoint holds."""
    d = deployments.start("eu", model=MODEL, checkpoint_every_events=0)
    for user in [*KEPT, GONE]:
        _activity(d, user)
    d.wait_until_learned()
    d.engine.checkpoints.write()
    pseudonym = d.engine.pseudonym(GONE)
    kept = [d.engine.pseudonym(u) for u in KEPT]
    assert d.engine.models is not None
    assert d.engine.models.ranker.tables["user"].row_of(pseudonym) >= 0  # a learned row
    vectors = deployments.vector_bytes(d.engine, pseudonym)
    assert vectors  # the rows whose bytes the scan looks for
    gone_user = d.engine.state.users[pseudonym]
    cohort = d.engine.state.user_attribute(gone_user, "cohort")
    tier = d.engine.state.user_attribute(gone_user, "tier")
    before = deployments.scan(d.data_dir, [pseudonym, *vectors])
    assert set(vectors) <= set(before), "the scan finds the vectors in the checkpoint"
    assert {"events.db", "users.db", "checkpoint.pkl"} <= {
        f.removesuffix("-wal") for f in before[pseudonym]
    }, before

    resp = d.client.delete(f"/v1/users/{GONE}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["erased"] and body["events"] == 43 and body["impressions"] > 0
    assert body["checkpoint_rewritten"]

    # While the server runs (databases, WALs, checkpoint, audit log, keys): nothing.
    assert deployments.scan(d.data_dir, [GONE, pseudonym, *vectors]) == {}
    # The others are untouched.
    assert set(deployments.scan(d.data_dir, kept)) == set(kept)
    e = d.engine
    assert pseudonym not in e.state.users and pseudonym not in e.users.profiles
    vocab = e.state.user_attributes
    assert vocab.value_of("cohort", cohort) is None  # the models' vocabulary forgot it
    assert vocab.value_of("tier", tier) == "a"  # the others still hold "a"
    assert e.models is not None and e.models.ranker.tables["user"].row_of(pseudonym) < 0
    assert all(pseudonym not in seen for seen in e.state.reports.reporters.values())
    # The erasure is audited, without the erased data.
    erasures = [r for r in e.audit.records() if r.action == "user.erase"]
    assert len(erasures) == 1 and erasures[0].details == {
        "events": 43,
        "impressions": body["impressions"],
    }
    # Gone for the API too: a new sign-up with the same id is a new user.
    assert d.client.get(f"/v1/feed?user_id={GONE}").status_code == 421
    assert d.client.put(f"/v1/users/{GONE}", json={}).status_code == 201
    items = d.client.get("/v1/feed", params={"user_id": GONE, "count": 20}).json()["items"]
    assert items and not {i["source"] for i in items} & PERSONAL_SOURCES
    assert e.state.users[pseudonym].views == 0 and not e.state.users[pseudonym].follows
    # A restart (from the rewritten checkpoint, or replaying the log) knows nothing more.
    d.close()
    # (the pseudonym is back: the user was created again; their old vectors are not)
    assert deployments.scan(d.data_dir, [GONE, *vectors]) == {}
    assert verify(d.data_dir).ok
    for from_checkpoint in (True, False):
        again = Engine.open(d.settings, from_checkpoint=from_checkpoint)
        try:
            user = again.state.users.get(pseudonym)
            assert user is None or (not user.history and not user.follows), from_checkpoint
            assert again.event_log.for_user(pseudonym) == []
        finally:
            again.close()
