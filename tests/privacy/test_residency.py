"""Data residency between two deployments (us, eu) on data dirs of their own: a user's
data is taken, served and kept only where the user is homed."""

from __future__ import annotations

from typing import Any

import pytest

from fyp.engine import Engine
from fyp.privacy.audit_log import verify
from fyp.privacy.residency import DataDirError

US_USERS = ["alice-us-0a1f", "bob-us-9c2e"]
EU_USERS = ["chloe-eu-77d1", "dario-eu-31b8"]


def test_a_users_data_stays_in_their_regions_data_dir(deployments: Any) -> None:
    us, eu = deployments.start("us"), deployments.start("eu")
    for user in US_USERS:
        assert us.client.put(f"/v1/users/{user}", json={"region": "us"}).status_code == 201
    for user in EU_USERS:
        assert eu.client.put(f"/v1/users/{user}", json={}).status_code == 201

    # Creating a US user on the EU deployment: refused, nothing written.
    resp = eu.client.put(f"/v1/users/{US_USERS[0]}", json={"region": "us", "age_band": "18+"})
    assert resp.status_code == 421, resp.text
    assert "region 'us'" in resp.json()["detail"]

    # A US user's events sent to the EU deployment: refused, none stored.
    foreign = eu.events(US_USERS[0], 5)
    resp = eu.client.post("/v1/events", json={"events": foreign})
    assert resp.status_code == 421, resp.text
    body = resp.json()
    assert body["accepted"] == 0 and len(body["rejected"]) == len(foreign)
    assert all("not homed in this deployment" in r["reason"] for r in body["rejected"])
    # Mixed with an EU user's: the EU user's are stored, the US user's refused by index.
    home, away = eu.events(EU_USERS[0], 3), eu.events(US_USERS[1], 2)
    resp = eu.client.post("/v1/events", json={"events": home + away})
    assert resp.status_code == 422
    assert resp.json()["accepted"] == len(home)
    rejected = [r["index"] for r in resp.json()["rejected"]]
    assert rejected == list(range(len(home), len(home) + len(away)))

    # Every read or write of a US user's data on the EU deployment: refused.
    for method, path, json in [
        ("GET", f"/v1/feed?user_id={US_USERS[0]}", None),
        ("GET", f"/v1/users/{US_USERS[0]}", None),
        ("POST", f"/v1/users/{US_USERS[0]}/controls", {"personalized": False}),
        ("GET", f"/v1/users/{US_USERS[0]}/why/v001", None),
        ("GET", f"/v1/users/{US_USERS[0]}/export", None),
        ("DELETE", f"/v1/users/{US_USERS[0]}", None),
    ]:
        resp = eu.client.request(method, path, json=json)
        assert resp.status_code == 421, (method, path, resp.text)

    # The full run: each region's users watch and like, and get feeds, at home.
    for d, users in ((us, US_USERS), (eu, EU_USERS)):
        for user in users:
            assert (
                d.client.post("/v1/events", json={"events": d.events(user, 12)}).status_code == 200
            )
        d.wait_until_learned()
        for user in users:
            feed = d.client.get("/v1/feed", params={"user_id": user}).json()
            assert feed["items"]
            why = d.client.get(f"/v1/users/{user}/why/{feed['items'][0]['video_id']}")
            assert why.status_code == 200
            assert d.client.get(f"/v1/users/{user}/export").status_code == 200
            r = d.client.post(f"/v1/users/{user}/controls", json={"mute_keywords": ["x"]})
            assert r.status_code == 200
    us.engine.checkpoints.write()
    eu.engine.checkpoints.write()
    us_pseudonyms = [us.engine.pseudonym(u) for u in US_USERS]
    eu_pseudonyms = [eu.engine.pseudonym(u) for u in EU_USERS]
    us.close()
    eu.close()

    # No US user id or pseudonym anywhere in the EU data dir, and no raw id of anyone
    # in either (they are pseudonymised at rest); each user's data is where it belongs.
    assert deployments.scan(eu.data_dir, US_USERS + us_pseudonyms) == {}
    assert deployments.scan(us.data_dir, EU_USERS + eu_pseudonyms) == {}
    assert deployments.scan(eu.data_dir, EU_USERS) == {}
    assert deployments.scan(us.data_dir, US_USERS) == {}
    found = deployments.scan(eu.data_dir, eu_pseudonyms)
    assert all("events.db" in files for files in found.values()), found

    # The refusals are in the EU audit log, describing the requests, naming no one.
    records = [r for r in eu.engine.audit.records() if r.action == "residency.refused"]
    assert len(records) >= 8
    assert {r.details["route"] for r in records} >= {
        "/v1/events",
        "/v1/feed",
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/export",
    }
    assert all(r.subject is None and r.outcome == "refused" for r in records)
    assert verify(eu.data_dir).ok


def test_refusals_do_not_reveal_whether_the_user_exists_elsewhere(deployments: Any) -> None:
    us, eu = deployments.start("us"), deployments.start("eu")
    assert us.client.put("/v1/users/real-us-user", json={"region": "us"}).status_code == 201
    answers = []
    for user in ("real-us-user", "nobody-anywhere"):
        resp = eu.client.get("/v1/feed", params={"user_id": user})
        answers.append((resp.status_code, resp.json()["detail"].replace(user, "<id>")))
    assert answers[0] == answers[1]


def test_a_key_for_another_regions_users_is_refused(deployments: Any) -> None:
    eu = deployments.start("eu")
    assert eu.client.put("/v1/users/chloe", json={}).status_code == 201
    us_key = eu.key("feed:read", "events:write", region="us")
    resp = eu.client.get("/v1/feed", params={"user_id": "chloe"}, headers=us_key)
    assert resp.status_code == 403
    assert "region 'us'" in resp.json()["detail"]
    eu_key = eu.key("feed:read", region="eu")
    assert eu.client.get("/v1/feed", params={"user_id": "chloe"}, headers=eu_key).status_code == 200


def test_a_data_dir_is_opened_only_by_its_regions_deployment(deployments: Any) -> None:
    us = deployments.start("us")
    us.close()
    with pytest.raises(DataDirError, match="region 'us'"):
        Engine.open(us.settings.model_copy(update={"region": "eu"}))
    # The pseudonym secret lives beside the data dir, never inside it; without it the
    # data dir is refused rather than opened with a new one.
    secret = us.data_dir.with_name(us.data_dir.name + ".secret")
    assert secret.is_file() and not (us.data_dir / secret.name).exists()
    secret.rename(secret.with_name("moved"))
    with pytest.raises(RuntimeError, match="secret"):
        Engine.open(us.settings)
