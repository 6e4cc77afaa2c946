"""The HTTP API over a real engine, in-process: health, metrics, catalog upserts, events,
the feed, and the OpenAPI document."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fyp.api import create_app
from fyp.config import Settings
from fyp.engine import Engine
from fyp.privacy.keys import create_key
from fyp.retrieve.base import FeedContext
from fyp.types import Candidate

if TYPE_CHECKING:
    from conftest import Api


def metric(text: str, sample_name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0.0 when absent: a counter never
    incremented has no sample yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# ------------------------------------------------------------------------- health


def test_healthz_on_an_empty_engine(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "region": "local",
        "videos": 0,
        "events": 0,
        "learning_lag": 0,
        "learned_models": None,  # (the learned models are off)
        "changes_lag_s": None,  # (one process: no other's changes to follow)
    }


def test_healthz_says_503_when_the_learning_loop_has_died(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    """A learning loop that dies must not go unnoticed while feeds keep being served."""

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("disk on fire")

    engine.learn = broken  # type: ignore[method-assign]
    assert client.post("/v1/events", json={"events": [api.event("e1")]}).status_code == 200
    deadline = time.monotonic() + 5
    while (resp := client.get("/healthz")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert resp.status_code == 503
    assert "learning stopped (RuntimeError: disk on fire)" in resp.json()["status"]
    assert client.get("/v1/feed", params={"user_id": "u1"}).status_code == 200


def test_the_app_can_start_twice(settings: Settings, engine: Engine) -> None:
    """Regression: the learning loop's wake-up event was made with the app, so a second
    start (a new event loop) killed the learning task."""
    app = create_app(settings, engine=engine)
    for _ in range(2):
        with TestClient(app) as c:
            assert c.get("/healthz").status_code == 200


def test_a_start_up_that_fails_stops_what_it_had_started(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the API keys' refresher (a thread), started before a later step of
    the start-up failed (here the change follower's), was left running: the start-up's
    error path now stops what it started, in reverse order."""
    import fyp.api.app as app_module

    def refused(*args: Any) -> None:
        raise RuntimeError("the change notices cannot be followed (the test)")

    monkeypatch.setattr(app_module, "follow_changes", refused)
    create_key(settings.data_dir, label="tests")
    assert settings.auth.required, "(no keys to check: no refresher started)"
    before = {t for t in threading.enumerate() if t.name == "fyp-keys"}
    app = create_app(settings, engine=engine)
    with pytest.raises(RuntimeError, match="cannot be followed"), TestClient(app):
        pass
    left = [t for t in threading.enumerate() if t.name == "fyp-keys" and t not in before]
    assert not [t for t in left if t.is_alive()], "the key refresher was left running"


def test_a_start_up_that_fails_closes_the_key_store_the_shutdown_would(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the API key store the app opened (a connection; a pool on PostgreSQL)
    was closed only by the shutdown, which a start-up that fails never reaches."""
    import fyp.api.app as app_module

    def refused(*args: Any) -> None:
        raise RuntimeError("the change notices cannot be followed (the test)")

    opened: list[Any] = []

    def open_key_store(*args: Any) -> Any:
        opened.append(real_open(*args))
        return opened[-1]

    real_open = app_module.open_key_store
    monkeypatch.setattr(app_module, "open_key_store", open_key_store)
    monkeypatch.setattr(app_module, "follow_changes", refused)
    create_key(settings.data_dir, label="tests")
    app = create_app(settings, engine=engine)
    assert len(opened) == 1
    with pytest.raises(RuntimeError, match="cannot be followed"), TestClient(app):
        pass
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0]._conn.execute("SELECT 1")


def test_healthz_counts_videos_and_events(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    resp = client.post(
        "/v1/events", json={"events": [api.event(f"e{i}", video_id="v001") for i in range(3)]}
    )
    assert resp.status_code == 200, resp.text
    health = api.wait_until_learned()
    assert health["videos"] == api.n_videos
    assert health["events"] == 3


# ------------------------------------------------------------------------ metrics


def test_metrics_is_prometheus_text_counting_requests_by_route(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    for _ in range(3):
        client.get("/healthz")
    api.feed("u-metrics", count=2)
    api.feed("u-other", count=2)
    client.get("/v1/feed", params={"user_id": "u1", "count": 0})  # 422
    client.get("/no/such/route")

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    # Every line is a comment or a sample the Prometheus parser reads.
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"fyp_http_requests", "fyp_http_request_seconds", "fyp_events"} <= families
    assert {"fyp_catalog_top_ups", "fyp_learning_lag_events", "fyp_filtered"} <= families
    assert {"fyp_late_outcome_corrections", "fyp_learning_skipped_events"} <= families

    def requests(route: str, method: str, status: str) -> float:
        return metric(text, "fyp_http_requests_total", route=route, method=method, status=status)

    assert requests("/healthz", "GET", "200") == 3
    # Labelled by route template, not by raw path and query: two users, one series.
    assert requests("/v1/feed", "GET", "200") == 2
    assert requests("/v1/feed", "GET", "422") == 1
    assert requests("/v1/videos", "POST", "200") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert "u-metrics" not in text
    assert metric(text, "fyp_http_request_seconds_count", route="/v1/feed", method="GET") == 3
    assert metric(text, "fyp_catalog_videos") == api.n_videos


def test_metrics_count_events_by_outcome_and_rejection_reason(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    batch = [
        api.event("ok-1"),
        api.event("ok-2", type="like"),
        api.event("bad-video", video_id="nope"),
        api.event("bad-watch", watch_ms=-1),
        api.event("bad-video-2", video_id="nope-2"),
        api.event("ok-1"),  # a duplicate within the batch
    ]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    resp = client.post("/v1/events", json={"events": [api.event("ok-2", type="like")]})
    assert resp.json() == {"accepted": 0, "duplicates": 1, "rejected": [], "detail": None}

    text = client.get("/metrics").text
    assert metric(text, "fyp_events_total", outcome="accepted") == 2
    assert metric(text, "fyp_events_total", outcome="duplicate") == 2
    assert metric(text, "fyp_events_total", outcome="rejected") == 3
    assert metric(text, "fyp_events_rejected_total", reason="video_id") == 2
    assert metric(text, "fyp_events_rejected_total", reason="watch_ms") == 1


class BrokenSource:
    """A candidate source that always raises."""

    name = "broken"

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        raise RuntimeError("index unavailable")


class SlowSource:
    """A candidate source that answers, but far past the per-source budget."""

    name = "slow"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        time.sleep(2 * self.engine.settings.sources.budget_ms / 1000)
        row = 0
        return [Candidate(row, self.engine.catalog.videos[row].video_id, self.name, "slow")]


def test_failing_candidate_sources_fail_open_and_are_counted(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    engine.pipeline.sources = [BrokenSource(), SlowSource(engine), *engine.pipeline.sources]
    for user in ("u1", "u2"):
        body = api.feed(user, count=5)
        assert len(body["items"]) == 5  # the feed still serves
        assert "broken" not in {i["source"] for i in body["items"]}

    text = client.get("/metrics").text
    fails = "fyp_candidate_source_failures_total"
    assert metric(text, fails, source="broken", why="RuntimeError") == 2
    # A late source has finished: its candidate is kept, and it is counted as late.
    assert metric(text, "fyp_candidate_source_late_total", source="slow") == 2
    assert metric(text, "fyp_candidates_total", source="slow") == 2


# ------------------------------------------------------------------------- videos


def test_video_upsert_stores_and_update_replaces(
    api: Api, client: TestClient, engine: Engine
) -> None:
    resp = client.post("/v1/videos", json={"videos": [api.video(1), api.video(2)]})
    assert resp.status_code == 200
    assert resp.json() == {"upserted": 2, "rejected": [], "detail": None}
    first = engine.catalog.get("v001")
    assert first is not None
    assert first.creator_id == "c1"

    changed = api.video(
        1, creator_id="c-new", duration_ms=4 * api.duration_ms, hashtags=["#new"], caption="new"
    )
    resp = client.post("/v1/videos", json={"videos": [changed]})
    assert resp.status_code == 200
    assert resp.json()["upserted"] == 1

    assert client.get("/healthz").json()["videos"] == 2  # replaced, not added
    for stored in (engine.catalog.get("v001"), engine.catalog_store.get("v001")):
        assert stored is not None
        assert stored.creator_id == "c-new"
        assert stored.duration_ms == 4 * api.duration_ms
        assert stored.hashtags == ("#new",)
        assert stored.caption == "new"
    assert engine.catalog_store.count() == 2
    assert "v001" not in [
        engine.catalog.videos[r].video_id for r in engine.catalog.rows_by_creator.get("c1", [])
    ]

    # Events are now validated against the new duration: 15x the old one is under 10x
    # the new one.
    resp = client.post(
        "/v1/events", json={"events": [api.event("e1", watch_ms=15 * api.duration_ms)]}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1


# --------------------------------------------------------------- events and learning


def test_events_are_learned_quickly_and_change_the_feed(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    user = "u-learner"
    before = api.feed(user, count=20)
    assert all(i["source"] != "followed" for i in before["items"])

    # Follow the creator of v001 (c1); say "not interested" to v002 (creator c2).
    events = [
        api.event("e-view", user, "v001", watch_ms=api.duration_ms),
        api.event("e-follow", user, "v001", "follow"),
        api.event("e-view-2", user, "v002", watch_ms=500),
        api.event("e-ni", user, "v002", "not_interested"),
    ]
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 4, "duplicates": 0, "rejected": [], "detail": None}
    assert engine.event_log.count() == 4

    api.wait_until_learned()  # the loop is woken by the ingest; no explicit learn()
    assert engine.pending() == 0

    after = api.feed(user, count=20)
    items = after["items"]
    followed = [i for i in items if i["source"] == "followed"]
    assert followed, items
    assert all(api.creator_of(i["video_id"]) == "c1" for i in followed)
    assert all("follow" in i["reason"] for i in followed)
    assert all(api.creator_of(i["video_id"]) != "c2" for i in items)  # muted
    assert {"v001", "v002"}.isdisjoint(i["video_id"] for i in items)  # viewed


# --------------------------------------------------------------------------- feed


def test_feed_response_shape(api: Api, client: TestClient, catalog: list[dict[str, Any]]) -> None:
    body = api.feed("u1")
    assert set(body) == {"request_id", "surface", "items"}
    assert isinstance(body["request_id"], str)
    assert body["request_id"]
    assert body["surface"] == "for_you"
    items = body["items"]
    assert len(items) == 10  # the default count
    video_ids = {v["video_id"] for v in catalog}
    for position, item in enumerate(items):
        assert set(item) == {"video_id", "position", "source", "reason", "score", "signals"}
        assert item["position"] == position
        assert item["video_id"] in video_ids
        assert isinstance(item["source"], str)
        assert item["source"]
        assert isinstance(item["reason"], str)
        assert item["reason"]
        assert isinstance(item["score"], float)
    assert len({i["video_id"] for i in items}) == len(items)


@pytest.mark.parametrize("count", [1, 2, 7, 10, 49, 50])
def test_feed_count_is_honoured(
    api: Api, client: TestClient, catalog: list[dict[str, Any]], count: int
) -> None:
    items = api.feed(f"u-count-{count}", count=count)["items"]
    assert len(items) == count
    assert [i["position"] for i in items] == list(range(count))


def test_feed_never_repeats_for_a_user_and_spaces_creators(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    served: list[str] = []
    for _ in range(5):
        page = [i["video_id"] for i in api.feed("u-pages", count=10)["items"]]
        assert len(page) == 10
        assert not set(page) & set(served)
        # Six creators over ten items: spacing can always avoid adjacent repeats.
        for a, b in itertools.pairwise(page):
            assert api.creator_of(a) != api.creator_of(b), page
        served.extend(page)
    assert len(set(served)) == api.n_videos - 10


def test_feed_surface_is_recorded_in_impressions(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    body = api.feed("u-surface", count=5, surface="following_tab")
    assert body["surface"] == "following_tab"
    for item in body["items"]:
        imp = engine.impressions.find(engine.pseudonym("u-surface"), item["video_id"])
        assert imp is not None
        assert imp.surface == "following_tab"
        assert imp.request_id == body["request_id"]
        assert imp.position == item["position"]
        assert imp.source == item["source"]
        assert imp.reason == item["reason"]
        assert imp.score == pytest.approx(item["score"], abs=1e-6)
    # The default surface is recorded too.
    default = api.feed("u-surface", count=1)
    imp = engine.impressions.find(engine.pseudonym("u-surface"), default["items"][0]["video_id"])
    assert imp is not None
    assert imp.surface == "for_you"
    assert engine.impressions.count() == 6


def test_the_rest_of_a_page_is_replaced_ranked_with_what_was_just_learned(
    api: Api,
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of ten; the person watches its first three (finishing one video, skipping
    the others) and the client asks for the rest again: the seven cards not shown are
    withdrawn (no impression, no "why", servable again), and the new page (seven cards by
    default) is ranked with those three views."""
    # No slots for new uploads: every video here is one, and a slot (at a drawn position)
    # may lead a page with a video the ranker did not put first.
    monkeypatch.setattr(engine.pipeline.exploration, "share", 0.0)
    first = api.feed("u-after", count=10)
    shown = [i["video_id"] for i in first["items"][:3]]
    rest = {i["video_id"] for i in first["items"][3:]}
    creator = {v["video_id"]: v["creator_id"] for v in catalog}
    tag = {v["video_id"]: v["hashtags"][0] for v in catalog}
    # Finished: a video by a creator none of the shown cards has (the creator cap and the
    # no-clash-across-pages rule count the shown cards: they would hold that creator's
    # cards back from the page's head, by spacing, not by ranking).
    finished = next(v for v in creator if creator[v] not in {creator[s] for s in shown})
    liked = {v for v in creator if tag[v] == tag[finished] or creator[v] == creator[finished]}
    # Skipped: two cards of neither (a skipped card of the finished one's hashtag would
    # make the evidence mixed), the shown ones where the first page has them.
    others = [v for v in creator if v not in liked and v not in shown]
    skipped = [v for v in shown if v not in liked] + others
    views = [
        api.event(f"after-{k}", "u-after", v, watch_ms=10_000 if k == 0 else 500)
        for k, v in enumerate([finished, *skipped[:2]])
    ]
    assert client.post("/v1/events", json={"events": views}).status_code == 200
    api.wait_until_learned()
    pid = engine.pseudonym("u-after")
    again = api.feed("u-after", after=first["request_id"], shown=3)
    assert len(again["items"]) == 7 and again["request_id"] != first["request_id"]
    recorded = engine.impressions.for_user(pid, 100)
    assert {i.video_id for i in recorded if i.request_id == first["request_id"]} == set(shown)
    assert {i.video_id for i in recorded if i.request_id == again["request_id"]} == {
        i["video_id"] for i in again["items"]
    }
    for v in rest - {i["video_id"] for i in again["items"]}:
        assert client.get(f"/v1/users/u-after/why/{v}").status_code == 404
    new = [i["video_id"] for i in again["items"]]
    # Led by a video of what was just finished (its hashtag or its creator), but for a
    # discover card (the newcomer's search goes on, a slot at a drawn position).
    ranked = [i["video_id"] for i in again["items"] if i["source"] != "discover"]
    assert ranked[0] in liked, again["items"]
    assert not set(new) & set(shown)


def test_after_needs_shown_and_a_page_of_this_user(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    page = api.feed("u-a", count=3)
    resp = client.get("/v1/feed", params={"user_id": "u-a", "after": page["request_id"]})
    assert resp.status_code == 422 and "after and shown go together" in resp.text
    resp = client.get(
        "/v1/feed", params={"user_id": "u-b", "after": page["request_id"], "shown": 1}
    )
    assert resp.status_code == 404 and "no page" in resp.text
    resp = client.get(
        "/v1/feed", params={"user_id": "u-a", "after": page["request_id"], "shown": -1}
    )
    assert resp.status_code == 422


# ------------------------------------------------------------------------ OpenAPI


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def test_openapi_and_docs_exist(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "fyp"
    for path, method in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/v1/videos", "post"),
        ("/v1/events", "post"),
        ("/v1/feed", "get"),
    ]:
        assert method in doc["paths"][path], path
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text


def test_openapi_documents_the_events_body_and_the_feed(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/v1/events"]["post"]
    body = post["requestBody"]
    assert body["required"] is True
    schema = _resolve(doc, body["content"]["application/json"]["schema"])
    assert schema["required"] == ["events"]
    items = schema["properties"]["events"]["items"]
    # The item schema: inline under the body's $defs (or in components once hoisted).
    name = items["$ref"].rsplit("/", 1)[-1]
    event = schema.get("$defs", {}).get(name) or doc["components"]["schemas"][name]
    assert set(event["required"]) == {"event_id", "user_id", "video_id", "type", "ts"}
    assert {"watch_ms", "request_id", "surface"} <= set(event["properties"])
    assert event["additionalProperties"] is False
    assert event["properties"]["event_id"]["maxLength"] == 128
    assert {"200", "413", "422"} <= set(post["responses"])

    ok = _resolve(doc, post["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"accepted", "duplicates", "rejected"} <= set(ok["properties"])

    feed_op = doc["paths"]["/v1/feed"]["get"]
    params = {p["name"]: p for p in feed_op["parameters"]}
    assert params["user_id"]["required"] is True
    assert params["count"]["schema"]["maximum"] == 50
    assert params["count"]["schema"]["minimum"] == 1
    out = _resolve(doc, feed_op["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(out["properties"]) == {"request_id", "surface", "items"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_openapi_ref_resolves(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    dangling = []
    for ref in sorted(set(_refs(doc))):
        try:
            _resolve(doc, {"$ref": ref})
        except KeyError:
            dangling.append(ref)
    assert not dangling, f"$refs with no target: {dangling}"
