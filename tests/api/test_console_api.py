"""The routes the web player and the operator console read: video cards, live figures,
the audit report; and the pages themselves."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_videos_by_id_give_the_public_card_data(api: Any, catalog: Any) -> None:
    resp = api.client.get("/v1/videos", params={"ids": "v001,v002,nope,v001"})
    assert resp.status_code == 200, resp.text
    videos = resp.json()["videos"]
    assert [v["video_id"] for v in videos] == ["v001", "v002"]  # unknown left out, once each
    assert videos[0] == {
        "video_id": "v001",
        "creator_id": "c1",
        "duration_ms": api.duration_ms,
        "sound_id": "s1",
        "hashtags": ["#tag1"],
        "caption": "video 1",
        "created_at": catalog[1]["created_at"],
        "attributes": {},
    }
    many = ",".join(f"v{i:03d}" for i in range(101))
    assert api.client.get("/v1/videos", params={"ids": many}).status_code == 422


def test_stats_count_events_feeds_and_the_source_mix(api: Any, catalog: Any) -> None:
    events = [api.event(f"e{i}", user_id="u1", video_id=f"v{i:03d}") for i in range(6)]
    assert api.client.post("/v1/events", json={"events": events}).status_code == 200
    api.wait_until_learned()
    served = [i["source"] for _ in range(3) for i in api.feed("u1", count=5)["items"]]
    stats = api.client.get("/v1/stats").json()
    assert stats["events_total"] == 6 and stats["learning_lag"] == 0
    assert stats["freshness_ms"] == 0.0  # nothing waits to be learned
    assert stats["events_per_s"] == 6 / stats["window_s"]
    assert stats["feed_requests_per_s"] == 3 / stats["window_s"]
    assert stats["feed_latency_ms"]["p99"] >= stats["feed_latency_ms"]["p50"] > 0
    mix = stats["source_mix"]
    assert abs(sum(mix.values()) - 1.0) < 1e-9
    assert set(mix) == set(served)
    assert stats["videos"] == api.n_videos


def test_the_audit_report_route_gives_the_reports_json(api: Any, catalog: Any) -> None:
    api.feed("u1", count=5)
    resp = api.client.get("/v1/audit/report", params={"days": 7})
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["totals"]["impressions"] == 5
    assert api.client.get("/v1/audit/report", params={"days": 0}).status_code == 422


def test_the_pages_are_served_with_a_strict_policy_and_no_key(client: TestClient) -> None:
    client.headers.pop("Authorization")
    for path in ("/", "/console"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert client.get("/static/player.js").status_code == 200
    assert client.get("/v1/stats").status_code == 401  # the data needs a key
