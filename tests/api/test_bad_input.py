"""Bad input at the HTTP edge: every case is a 4xx whose body says what is wrong, the
good events of a batch are kept (exactly once), and nothing is half-written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.config import Settings
from fyp.engine import Engine
from fyp.types import now_ms
from fyp.users.controls import ProfileIn

if TYPE_CHECKING:
    from conftest import Api

HOUR_MS = 3_600_000
MAX_BODY = 5 * 1024 * 1024
MAX_EVENTS = 5_000

Change = Callable[[dict[str, Any]], object]


def _set(**fields: Any) -> Change:
    def change(e: dict[str, Any]) -> object:
        e.update(fields)
        return e

    return change


def _drop(*names: str) -> Change:
    def change(e: dict[str, Any]) -> object:
        for name in names:
            e.pop(name)
        return e

    return change


def _replace(value: object) -> Change:
    return lambda e: value


# (case id, how the middle event is spoilt, what the reason must say)
BAD_EVENTS: list[tuple[str, Change, list[str]]] = [
    # wrong types (ids are strings, times and durations integers; nothing is coerced)
    ("ts-as-string", _set(ts="1700000000000"), ["ts", "integer"]),
    ("ts-as-float", _set(ts=1.5e12), ["ts", "integer"]),
    ("ts-as-bool", _set(ts=True), ["ts", "integer"]),
    ("watch-ms-as-string", _set(watch_ms="5000"), ["watch_ms", "integer"]),
    ("user-id-as-int", _set(user_id=42), ["user_id", "string"]),
    ("video-id-as-list", _set(video_id=["v001"]), ["video_id", "string"]),
    ("type-as-int", _set(type=1), ["type"]),
    # missing fields
    ("no-user-id", _drop("user_id"), ["user_id", "required"]),
    ("no-video-id", _drop("video_id"), ["video_id", "required"]),
    ("no-type", _drop("type"), ["type", "required"]),
    ("no-ts", _drop("ts"), ["ts", "required"]),
    ("view-without-watch-ms", _drop("watch_ms"), ["watch_ms", "required"]),
    # unknown event type
    ("unknown-type", _set(type="dislike"), ["type", "view"]),
    # empty, blank and over-long ids
    ("empty-user-id", _set(user_id=""), ["user_id", "at least 1"]),
    ("empty-video-id", _set(video_id=""), ["video_id", "at least 1"]),
    ("blank-user-id", _set(user_id="   "), ["user_id", "blank"]),
    ("padded-video-id", _set(video_id=" v001"), ["video_id", "whitespace"]),
    ("user-id-129", _set(user_id="u" * 129), ["user_id", "128"]),
    ("video-id-129", _set(video_id="v" * 129), ["video_id", "128"]),
    ("request-id-129", _set(request_id="r" * 129), ["request_id", "128"]),
    ("empty-surface", _set(surface=""), ["surface"]),
    # out-of-range values
    ("watch-ms-negative", _set(watch_ms=-1), ["watch_ms", "greater than or equal to 0"]),
    ("watch-ms-over-10x", _set(watch_ms=100_001), ["watch_ms", "10x", "10000 ms"]),
    ("ts-negative", _set(ts=-1), ["ts"]),
    ("ts-25h-in-future", lambda e: _set(ts=now_ms() + 25 * HOUR_MS)(e), ["ts", "future"]),
    ("unknown-video", _set(video_id="no-such-video"), ["video_id", "unknown video"]),
    # unknown extra field: rejected, not ignored
    ("extra-latitude", _set(latitude=51.5), ["latitude", "unknown field"]),
]

# Events whose own id is unusable: rejected with id null.
BAD_EVENTS_NO_ID: list[tuple[str, Change, list[str]]] = [
    ("no-event-id", _drop("event_id"), ["event_id", "required"]),
    ("event-id-as-int", _set(event_id=7), ["event_id", "string"]),
    ("not-an-object-str", _replace("view"), ["dictionary"]),
    ("not-an-object-null", _replace(None), ["dictionary"]),
    ("not-an-object-list", _replace([1, 2]), ["dictionary"]),
]


def _mixed_batch(api: Api, tag: str, change: Change) -> list[object]:
    bad = change(api.event(f"{tag}-bad", "u-bad", "v003"))
    return [
        api.event(f"{tag}-good-1", "u-bad", "v001"),
        bad,
        api.event(f"{tag}-good-2", "u-bad", "v002", "like"),
    ]


def _check_mixed(
    client: TestClient,
    engine: Engine,
    batch: list[object],
    tag: str,
    expected_id: str | None,
    fragments: list[str],
) -> None:
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    assert len(body["rejected"]) == 1
    rejected = body["rejected"][0]
    assert rejected["index"] == 1
    assert rejected["id"] == expected_id
    for fragment in fragments:
        assert fragment in rejected["reason"], rejected["reason"]
    assert "1 of 3 events rejected" in body["detail"]

    # The good events are stored exactly once; the bad one not at all.
    assert engine.event_log.count() == 2
    assert engine.event_log.contains(f"{tag}-good-1")
    assert engine.event_log.contains(f"{tag}-good-2")
    assert not engine.event_log.contains(f"{tag}-bad")

    # Retrying the whole batch (what a client does after a 422) changes nothing.
    again = client.post("/v1/events", json={"events": batch}).json()
    assert again["accepted"] == 0
    assert again["duplicates"] == 2
    assert again["rejected"] == body["rejected"]
    assert engine.event_log.count() == 2


@pytest.mark.parametrize(
    ("change", "fragments"), [c[1:] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS]
)
def test_bad_event_is_rejected_and_the_good_ones_kept(
    api: Api,
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    change: Change,
    fragments: list[str],
) -> None:
    batch = _mixed_batch(api, "t", change)
    _check_mixed(client, engine, batch, "t", "t-bad", fragments)


@pytest.mark.parametrize(
    ("change", "fragments"),
    [c[1:] for c in BAD_EVENTS_NO_ID],
    ids=[c[0] for c in BAD_EVENTS_NO_ID],
)
def test_event_without_a_usable_id_is_rejected_with_id_null(
    api: Api,
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    change: Change,
    fragments: list[str],
) -> None:
    batch = _mixed_batch(api, "t", change)
    _check_mixed(client, engine, batch, "t", None, fragments)


def test_empty_and_overlong_event_ids_are_rejected(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    long_id = "e" * 129
    batch = [api.event("ok"), api.event(""), api.event(long_id), api.event(" padded")]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    body = resp.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["id"]) for r in body["rejected"]] == [
        (1, ""),
        (2, long_id),
        (3, " padded"),
    ]
    assert all(r["reason"].startswith("event_id:") for r in body["rejected"])
    assert "128" in body["rejected"][1]["reason"]
    assert engine.event_log.count() == 1
    assert engine.event_log.contains("ok")


def test_limits_are_inclusive(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    """Exactly at each limit is fine: 128-character ids, 10x the duration, ts 23 h ahead."""
    batch = [
        api.event("e" * 128, "u" * 128, "v001", request_id="r" * 128, surface="s" * 128),
        api.event("at-10x", video_id="v002", watch_ms=10 * api.duration_ms),
        api.event("ahead", video_id="v003", ts=now_ms() + 23 * HOUR_MS),
        api.event("zero-watch", video_id="v004", watch_ms=0),
    ]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 4
    assert engine.event_log.count() == 4


def test_several_bad_events_are_each_reported(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    batch = [
        api.event("a", video_id="gone"),
        api.event("b"),
        {"event_id": "c", "latitude": 1.0},
        api.event("d", watch_ms=-5),
        api.event("e", type="share"),
    ]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    body = resp.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["id"]) for r in body["rejected"]] == [(0, "a"), (2, "c"), (3, "d")]
    # One reason names every problem of the event.
    reason_c = body["rejected"][1]["reason"]
    for field in ("user_id", "video_id", "type", "ts", "latitude"):
        assert field in reason_c
    assert sorted(e.event.event_id for e in engine.event_log.read(0, 100)) == ["b", "e"]


# ------------------------------------------------------------- whole-body errors


@pytest.fixture
def one_good_event(api: Api) -> dict[str, Any]:
    return api.event("would-be-good")


BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], bytes], int, list[str]]] = [
    ("malformed-json", lambda e: b'{"events": [' + orjson.dumps(e), 400, ["malformed JSON"]),
    ("not-json-at-all", lambda e: b"events=1", 400, ["malformed JSON"]),
    ("empty-body", lambda e: b"", 400, ["malformed JSON"]),
    ("body-is-a-list", lambda e: orjson.dumps([e]), 422, ['"events"']),
    ("body-is-a-string", lambda e: b'"events"', 422, ['"events"']),
    ("no-events-key", lambda e: orjson.dumps({"event": [e]}), 422, ['"events" list']),
    ("events-is-an-object", lambda e: orjson.dumps({"events": e}), 422, ["list", "dict"]),
    ("events-is-null", lambda e: b'{"events": null}', 422, ["list", "NoneType"]),
    (
        "unknown-top-level-field",
        lambda e: orjson.dumps({"events": [e], "latitude": 1}),
        422,
        ["unknown top-level", "latitude"],
    ),
]


@pytest.mark.parametrize(
    ("make", "status", "fragments"),
    [c[1:] for c in BAD_BODIES],
    ids=[c[0] for c in BAD_BODIES],
)
def test_bad_event_body_is_refused_whole(
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    one_good_event: dict[str, Any],
    make: Callable[[dict[str, Any]], bytes],
    status: int,
    fragments: list[str],
) -> None:
    resp = client.post(
        "/v1/events", content=make(one_good_event), headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    for fragment in fragments:
        assert fragment in detail, detail
    assert engine.event_log.count() == 0  # nothing half-written, not even the good event


def test_batch_over_5000_events_is_413_and_stores_nothing(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    batch = [api.event(f"e{i}", video_id=f"v{i % api.n_videos:03d}") for i in range(MAX_EVENTS + 1)]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 413
    assert "5001" in resp.json()["detail"]
    assert "5000" in resp.json()["detail"]
    assert engine.event_log.count() == 0
    assert client.get("/healthz").json()["events"] == 0

    # 5,000 is allowed, and stored whole.
    resp = client.post("/v1/events", json={"events": batch[:MAX_EVENTS]})
    assert resp.status_code == 200
    assert resp.json()["accepted"] == MAX_EVENTS
    assert engine.event_log.count() == MAX_EVENTS


def _padded_body(event: dict[str, Any], size: int) -> bytes:
    """A valid events body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = orjson.dumps({"events": [event]})
    return body + b" " * (size - len(body))


def test_body_over_5mb_with_content_length_is_413(
    client: TestClient, engine: Engine, catalog: list[dict[str, Any]], one_good_event: Any
) -> None:
    resp = client.post(
        "/v1/events",
        content=_padded_body(one_good_event, MAX_BODY + 1),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert str(MAX_BODY) in resp.json()["detail"]
    assert engine.event_log.count() == 0

    # Exactly at the limit is read.
    resp = client.post(
        "/v1/events",
        content=_padded_body(one_good_event, MAX_BODY),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert engine.event_log.count() == 1


def test_chunked_body_over_5mb_without_content_length_is_413(
    client: TestClient, engine: Engine, catalog: list[dict[str, Any]], one_good_event: Any
) -> None:
    body = _padded_body(one_good_event, MAX_BODY + 64 * 1024)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    resp = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413
    assert "over the limit" in resp.json()["detail"]
    assert engine.event_log.count() == 0


# --------------------------------------------------------------------- videos


def test_bad_videos_are_rejected_and_the_good_ones_stored(
    api: Api, client: TestClient, engine: Engine
) -> None:
    batch = [
        api.video(1),
        api.video(2, duration_ms=0),
        {k: v for k, v in api.video(3).items() if k != "creator_id"},
        api.video(4, latitude=1.0),
        api.video(5, video_id="x" * 129),
        "not a video",
        api.video(6, duration_ms="10000"),
        api.video(7),
    ]
    resp = client.post("/v1/videos", json={"videos": batch})
    assert resp.status_code == 422
    body = resp.json()
    assert body["upserted"] == 2
    got = [(r["index"], r["id"], r["reason"].split(":")[0]) for r in body["rejected"]]
    assert got == [
        (1, "v002", "duration_ms"),
        (2, "v003", "creator_id"),
        (3, "v004", "latitude"),
        (4, "x" * 129, "video_id"),
        (5, None, "item"),
        (6, "v006", "duration_ms"),
    ]
    assert "6 of 8 videos rejected" in body["detail"]
    assert engine.catalog_store.count() == 2
    assert {v.video_id for v in engine.catalog_store.all()} == {"v001", "v007"}
    assert len(engine.catalog) == 2


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{", 400, "malformed JSON"),
        (b"[]", 422, '"videos"'),
        (b'{"videos": {}}', 422, "list"),
        (b'{"videos": [], "extra": 1}', 422, "extra"),
    ],
    ids=["malformed", "list-body", "videos-not-a-list", "unknown-top-level-field"],
)
def test_bad_video_body_is_refused_whole(
    client: TestClient, engine: Engine, content: bytes, status: int, fragment: str
) -> None:
    resp = client.post("/v1/videos", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status
    assert fragment in resp.json()["detail"]
    assert engine.catalog_store.count() == 0


def test_video_batch_over_the_limit_is_413_and_stores_nothing(
    api: Api, client: TestClient, engine: Engine
) -> None:
    batch = [api.video(i, video_id=f"big{i}") for i in range(5_001)]
    resp = client.post("/v1/videos", json={"videos": batch})
    assert resp.status_code == 413
    assert engine.catalog_store.count() == 0
    assert client.get("/healthz").json()["videos"] == 0


# ----------------------------------------------------------------------- feed


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"user_id": "u1", "count": 0}, "count"),
        ({"user_id": "u1", "count": 51}, "count"),
        ({"user_id": "u1", "count": -3}, "count"),
        ({"user_id": "u1", "count": "ten"}, "count"),
        ({"count": 5}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "   "}, "user_id"),
        ({"user_id": "u" * 129}, "user_id"),
        ({"user_id": "u1", "surface": "s" * 129}, "surface"),
    ],
    ids=[
        "count-0",
        "count-51",
        "count-negative",
        "count-not-a-number",
        "missing-user-id",
        "empty-user-id",
        "blank-user-id",
        "user-id-129",
        "surface-129",
    ],
)
def test_bad_feed_request_is_422_naming_the_parameter(
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    params: dict[str, Any],
    field: str,
) -> None:
    resp = client.get("/v1/feed", params=params)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert [d["loc"] for d in detail] == [["query", field]]
    assert detail[0]["msg"]
    assert engine.impressions.count() == 0  # nothing served, nothing recorded


def test_feed_accepts_a_128_character_user_id(
    api: Api, client: TestClient, catalog: list[dict[str, Any]]
) -> None:
    assert len(api.feed("u" * 128, count=50)["items"]) == 50


# ------------------------------------------------------- integers past SQLite's range

INT64_PAST_MAX = 2**63  # JSON and pydantic take it; SQLite's INTEGER stops at 2**63 - 1


def test_integer_past_int64_in_an_event_is_rejected_not_a_500(
    api: Api, settings: Settings, engine: Engine
) -> None:
    with TestClient(
        create_app(settings, engine=engine),
        raise_server_exceptions=False,
        headers=dict(api.client.headers),
    ) as c:
        assert c.post("/v1/videos", json={"videos": [api.video(1)]}).status_code == 200
        batch = [api.event("good"), api.event("huge", type="like", watch_ms=INT64_PAST_MAX)]
        resp = c.post("/v1/events", json={"events": batch})
        assert engine.event_log.contains("good")
        assert resp.status_code == 422, resp.text
        assert resp.json()["rejected"][0]["id"] == "huge"


def test_integer_past_int64_in_a_video_is_rejected_not_a_500(
    api: Api, settings: Settings, engine: Engine
) -> None:
    with TestClient(
        create_app(settings, engine=engine),
        raise_server_exceptions=False,
        headers=dict(api.client.headers),
    ) as c:
        batch = [api.video(1), api.video(2, created_at=INT64_PAST_MAX)]
        resp = c.post("/v1/videos", json={"videos": batch})
        assert engine.catalog_store.get("v001") is not None
        assert resp.status_code == 422, resp.text
        assert resp.json()["rejected"][0]["id"] == "v002"


# ------------------------------------------------- ids: printable text in normal form NFC

# (case id, a spoilt id, what the reason must say). Issue 17: NUL, CR and the
# right-to-left override were taken in ids, in paths as in bodies.
BAD_IDS: list[tuple[str, str, list[str]]] = [
    ("nul", "a\x00b", ["U+0000", "control character"]),
    ("carriage-return", "a\rb", ["U+000D", "control character"]),
    ("tab", "a\tb", ["U+0009", "control character"]),
    ("escape", "a\x1b[31mb", ["U+001B", "control character"]),
    ("rtl-override", "a\u202eb", ["U+202E", "RIGHT-TO-LEFT OVERRIDE", "format character"]),
    ("zero-width-space", "a\u200bb", ["U+200B", "format character"]),
    ("byte-order-mark", "a\ufeffb", ["U+FEFF", "format character"]),
    ("lone-surrogate", "a\ud800b", ["U+D800", "surrogate"]),
    ("private-use", "a\ue000b", ["U+E000", "private-use"]),
    ("unassigned", "a\u0378b", ["U+0378", "unassigned"]),
    ("line-separator", "a\u2028b", ["U+2028", "line separator"]),
    ("no-break-space", "a\u00a0b", ["U+00A0", "space other than U+0020"]),
    ("nfd", "cafe\u0301", ["normal form NFC", "'café'"]),
]
GOOD_IDS = ["café", "用户-1", "a b", "🎵", "\ufffd", "Ωmega"]


def _bad_id_case(bad: tuple[str, str, list[str]]) -> Any:
    return pytest.param(bad[1], bad[2], id=bad[0])


@pytest.mark.parametrize("field", ["user_id", "event_id", "request_id"])
@pytest.mark.parametrize(
    ("bad_id", "fragments"),
    # (A lone surrogate cannot be encoded in JSON as UTF-8: the body is malformed, 400.)
    [_bad_id_case(b) for b in BAD_IDS if b[0] != "lone-surrogate"],
)
def test_a_bad_id_in_an_event_rejects_that_event_only(
    api: Api,
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    field: str,
    bad_id: str,
    fragments: list[str],
) -> None:
    batch = _mixed_batch(api, "t", _set(**{field: bad_id}))
    expected_id = bad_id if field == "event_id" else "t-bad"  # echoed as sent
    _check_mixed(client, engine, batch, "t", expected_id, [field, *fragments])


def _json_bytes(body: Any) -> bytes:
    """JSON as a client that escapes non-ASCII sends it (a lone surrogate as \\ud800)."""
    import json

    return json.dumps(body).encode()


@pytest.mark.parametrize(("bad_id", "fragments"), [_bad_id_case(b) for b in BAD_IDS])
def test_a_bad_id_is_refused_in_paths_queries_and_bodies_alike(
    client: TestClient,
    engine: Engine,
    catalog: list[dict[str, Any]],
    bad_id: str,
    fragments: list[str],
) -> None:
    assert client.put("/v1/users/u1", json={}).status_code == 201
    # (A lone surrogate percent-encoded as UTF-8 would: the 400 of the test below.)
    quoted = quote(bad_id.encode("utf-8", "surrogatepass"), safe="")
    json_headers = {"Content-Type": "application/json"}
    answers = {
        "path": client.put(f"/v1/users/{quoted}", json={}),
        "query": client.get(f"/v1/feed?user_id={quoted}"),
        "moderation body": client.post(
            "/v1/moderation",
            content=_json_bytes({"video_id": bad_id, "state": "removed", "reason": "r"}),
            headers=json_headers,
        ),
        "controls body": client.post(
            "/v1/users/u1/controls",
            content=_json_bytes({"mute_creators": [bad_id]}),
            headers=json_headers,
        ),
        "videos query": client.get(f"/v1/videos?ids=v001%2C{quoted}"),
    }
    for where, resp in answers.items():
        if bad_id == "a\ud800b" and where in ("path", "query", "videos query"):
            assert resp.status_code == 400, (where, resp.text)
            assert "not valid UTF-8" in resp.json()["detail"]
            continue
        assert resp.status_code == 422, (where, resp.status_code, resp.text)
        text = str(resp.json())
        if bad_id == "a\ud800b" and "body" in where:
            # pydantic refuses it first: "unable to parse raw data as a unicode string"
            fragments = ["unicode string", "a?b"]  # echoed, the surrogate as "?"
        for fragment in fragments:
            assert fragment in text, (where, fragment, resp.text)
    assert len(engine.users.profiles) == 1  # u1's: no user was made
    assert not engine.controls_of("u1").mute_creators
    assert engine.impressions.count() == 0
    assert not engine.moderation_store.history()


@pytest.mark.parametrize("good_id", GOOD_IDS)
def test_printable_nfc_ids_are_accepted_everywhere(
    api: Api, client: TestClient, engine: Engine, catalog: list[dict[str, Any]], good_id: str
) -> None:
    assert client.put(f"/v1/users/{quote(good_id, safe='')}", json={}).status_code == 201
    assert client.get(f"/v1/users/{quote(good_id, safe='')}").json()["controls"]["user_id"] == (
        good_id
    )
    api.feed(good_id)
    resp = client.post("/v1/events", json={"events": [api.event(good_id, user_id=good_id)]})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("path", "query"),
    [
        pytest.param("/v1/users/%FF", {}, id="path-FF"),
        pytest.param("/v1/users/%FE", {}, id="path-FE"),
        pytest.param("/v1/users/a%C3", {}, id="path-truncated"),
        pytest.param("/v1/users/%ED%A0%80", {}, id="path-encoded-surrogate"),
        pytest.param("/v1/feed?user_id=%FF", None, id="query-FF"),
    ],
)
def test_a_path_or_query_that_is_not_utf8_is_400(
    client: TestClient, engine: Engine, path: str, query: dict[str, str] | None
) -> None:
    """Issue 17: ``%FF`` and ``%FE`` were both decoded to U+FFFD, two ids one user."""
    resp = client.put(path, json={}) if query is not None else client.get(path)
    assert resp.status_code == 400, resp.text
    assert "not valid UTF-8" in resp.json()["detail"]
    assert not engine.users.profiles


def test_ff_and_fe_are_not_one_user(client: TestClient, engine: Engine) -> None:
    assert client.put("/v1/users/%FF", json={}).status_code == 400
    assert client.put("/v1/users/%FE", json={}).status_code == 400
    # U+FFFD itself, sent as its UTF-8 bytes, is a printable id like any other.
    assert client.put("/v1/users/%EF%BF%BD", json={}).status_code == 201
    assert len(engine.users.profiles) == 1


def test_a_user_an_older_version_let_in_with_a_bad_id_can_still_be_exported_and_erased(
    client: TestClient, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    """Ids with control characters were accepted before: such a user must keep their
    rights (export, erasure) though every other route now refuses the id."""
    legacy = "a\x00b"
    engine.put_user(legacy, ProfileIn())  # as the old API stored it
    path = f"/v1/users/{quote(legacy, safe='')}"
    assert client.get("/v1/feed", params={"user_id": legacy}).status_code == 422
    assert client.get(path).status_code == 422
    assert client.get(f"{path}/export").status_code == 200
    resp = client.delete(path)
    assert resp.status_code == 200, resp.text
    assert resp.json()["erased"] is True
    assert not engine.knows_user(legacy)
    # Once gone (or never there), the id is refused like anywhere else.
    resp = client.delete(path)
    assert resp.status_code == 422
    assert "U+0000" in resp.json()["detail"]
