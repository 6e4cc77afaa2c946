"""``GET /v1/feed``'s hand-written handler (fyp.api.routes.feed, fyp.api.fast_route):
it answers only what FastAPI would accept, as FastAPI would, and hands the rest over."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from fyp.api.inputs import IdQuery
from fyp.api.routes.feed import plain_count, plain_id
from fyp.validation import MAX_ID_CHARS

ID_SAMPLES = [
    "",
    " ",
    "u1",
    "u 1",
    " u1",
    "u1 ",
    "a" * MAX_ID_CHARS,
    "a" * (MAX_ID_CHARS + 1),
    "u\t1",
    "u\n",
    "ué",
    "e\u0301",  # not NFC
    "u\u200b1",  # a format character
    "\u00a0u",  # a no-break space
    "ａ",  # a full-width letter (NFC, printable)
    string.punctuation,
    "{x}",
    "%41",
    *(chr(c) for c in range(0, 0x80)),
]


def test_a_plain_id_is_one_the_declared_rules_accept() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(IdQuery)
    taken = 0
    for value in ID_SAMPLES:
        if plain_id(value):
            taken += 1
            assert adapter.validate_python(value) == value, value
    assert taken > 90  # most ASCII ids take the plain path
    assert plain_id("user-42_a.b") and not plain_id("ué") and not plain_id(" u")


@pytest.mark.parametrize(
    "raw", ["1", "10", "007", "50", "51", "0", "", "+5", " 5", "1_0", "5.0", "٣", "9" * 7, "-1"]
)
def test_a_plain_count_is_the_int_the_declared_rules_read(raw: str) -> None:
    n = plain_count(raw, 50)
    if n is None:
        return  # FastAPI decides
    assert n == TypeAdapter(int).validate_python(raw) and 1 <= n <= 50


def test_a_count_past_the_limit_or_unusual_is_left_to_fastapi() -> None:
    assert plain_count("51", 50) is None
    assert plain_count("0", 50) is None
    assert plain_count("+5", 50) is None
    with pytest.raises(ValidationError):
        TypeAdapter(int).validate_python("٣")
    assert plain_count("٣", 50) is None


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the requests FastAPI solved the dependencies of (its handler ran)."""
    calls: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    yield calls


def test_a_plain_request_skips_fastapis_handler_and_others_take_it(
    client: TestClient, catalog: list[dict[str, Any]], solved: list[str]
) -> None:
    for params in ({"user_id": "u1"}, {"user_id": "u1", "count": 3, "surface": "following"}):
        resp = client.get("/v1/feed", params=params)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["items"]) == params.get("count", 10)
    assert solved == []
    # Anything else: a non-ASCII id, a repeated or unknown parameter, after, a bad value.
    resp = client.get("/v1/feed", params={"user_id": "ué", "count": 2})
    assert resp.status_code == 200 and len(resp.json()["items"]) == 2
    resp = client.get("/v1/feed?user_id=u2&user_id=u1&count=2&x=1")
    assert resp.status_code == 200 and len(resp.json()["items"]) == 2
    resp = client.get("/v1/feed", params={"user_id": "u1", "count": 0})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "count"]
    resp = client.get("/v1/feed", params={"user_id": "u1", "after": "r1"})
    assert resp.status_code == 422 and "after and shown go together" in resp.text
    assert solved == ["/v1/feed"] * 4


def test_the_plain_path_authenticates_and_checks_the_target(
    client: TestClient, catalog: list[dict[str, Any]], solved: list[str]
) -> None:
    resp = client.get("/v1/feed", params={"user_id": "u1"}, headers={"Authorization": ""})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    resp = client.get(
        "/v1/feed", params={"user_id": "u1"}, headers={"Authorization": "Bearer nope"}
    )
    assert resp.status_code == 401
    assert solved == []
    resp = client.get("/v1/feed?user_id=u1&x=%FF")  # not UTF-8: the app's check, a 400
    assert resp.status_code == 400 and "not valid UTF-8" in resp.text
    assert solved == ["/v1/feed"]
