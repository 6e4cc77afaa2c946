"""Attributes the app knows, through the API: on users (``PUT /v1/users/{id}``) and on
videos (``POST /v1/videos``), validated at the edge, stored, returned, and read by the
models as codes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fyp.attributes import MAX_ATTRIBUTES
from fyp.engine import Engine
from fyp.state.attribute_codes import NO_VALUE

DEVICE = {"device_class": "low end phone", "activity": "high"}


def test_a_users_attributes_are_set_returned_kept_replaced_and_cleared(
    client: TestClient, engine: Engine
) -> None:
    r = client.put("/v1/users/ana", json={"age_band": "18+", "attributes": DEVICE})
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == DEVICE
    # Another field changed: the attributes stay.
    r = client.put("/v1/users/ana", json={"language": "pt-BR"})
    assert r.json()["attributes"] == DEVICE
    assert client.get("/v1/users/ana").json()["profile"]["attributes"] == DEVICE
    # Given again: the whole set is replaced; {} clears it.
    r = client.put("/v1/users/ana", json={"attributes": {"activity": "low"}})
    assert r.json()["attributes"] == {"activity": "low"}
    state = engine.state
    user = state.users[engine.pseudonym("ana")]
    assert state.user_attribute(user, "activity") != NO_VALUE
    assert state.user_attribute(user, "device_class") == NO_VALUE
    r = client.put("/v1/users/ana", json={"attributes": {}})
    assert r.json()["attributes"] == {} and r.json()["age_band"] == "18+"
    assert state.user_attribute(user, "activity") == NO_VALUE


def test_bad_attributes_are_refused_saying_what_is_wrong_and_nothing_changes(
    client: TestClient,
) -> None:
    assert client.put("/v1/users/bo", json={"attributes": DEVICE}).status_code == 201
    bad: list[tuple[dict[str, Any], str]] = [
        ({f"a{i}": "x" for i in range(MAX_ATTRIBUTES + 1)}, f"at most {MAX_ATTRIBUTES}"),
        ({"Device": "phone"}, "lowercase identifier"),
        ({"device": "x" * 33}, "at most 32"),
        ({"contact": "bo@example.com"}, "email address"),
        ({"phone": "+1 415 555 0100"}, "phone number"),
        ({"site": "https://bo.example"}, "URL"),
        ({"ref": "a81f3c9e0b7d4f21"}, "identifier"),
        ({"bio": "i make videos about my dog"}, "free text"),
        ({"age": 30}, "is a string"),
    ]
    for attributes, words in bad:
        r = client.put("/v1/users/bo", json={"attributes": attributes})
        assert r.status_code == 422, (attributes, r.text)
        assert words in r.text, (attributes, r.text)
    assert client.get("/v1/users/bo").json()["profile"]["attributes"] == DEVICE


def test_videos_carry_attributes_and_a_bad_one_rejects_only_its_video(
    client: TestClient, engine: Engine
) -> None:
    def video(i: int, attributes: dict[str, Any]) -> dict[str, Any]:
        return {
            "video_id": f"v{i}",
            "creator_id": "c",
            "duration_ms": 9000,
            "attributes": attributes,
        }

    r = client.post(
        "/v1/videos",
        json={
            "videos": [
                video(1, {"video_type": "ad", "made_up_by_the_app": "yes"}),
                video(2, {"video_type": "see https://spam.example/now please"}),
                video(3, {"video_type": "normal"}),
            ]
        },
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["upserted"] == 2
    assert [(x["index"], x["id"]) for x in body["rejected"]] == [(1, "v2")]
    assert "attributes.video_type" in body["rejected"][0]["reason"]
    got = client.get("/v1/videos", params={"ids": "v1,v2,v3"}).json()["videos"]
    assert {v["video_id"]: v["attributes"] for v in got} == {
        "v1": {"video_type": "ad", "made_up_by_the_app": "yes"},
        "v3": {"video_type": "normal"},
    }
    # The models read them as codes, per catalog row.
    cat = engine.catalog
    column = cat.attribute_column("video_type")
    codes = {v: int(column[cat.row_of[v]]) for v in ("v1", "v3")}
    assert codes["v1"] != codes["v3"] and NO_VALUE not in codes.values()
    assert cat.attributes.value_of("video_type", codes["v1"]) == "ad"


def test_a_refresh_forgets_what_was_learned_not_what_the_app_told(
    client: TestClient, engine: Engine
) -> None:
    assert client.put("/v1/users/cy", json={"attributes": DEVICE}).status_code == 201
    r = client.post("/v1/users/cy/controls", json={"refresh": True})
    assert r.status_code == 200 and r.json()["refreshed"], r.text
    engine.learn()  # the refresh happens in the learning step
    assert engine.state.refreshes_done == 1
    assert client.get("/v1/users/cy").json()["profile"]["attributes"] == DEVICE
    user = engine.state.users[engine.pseudonym("cy")]
    assert engine.state.user_attribute(user, "activity") != NO_VALUE
    # Non-personalised mode serves from a blank state: nothing of the user's, nor these.
    assert engine.users.blank_state(engine.pseudonym("cy"), "local").attributes == ()
