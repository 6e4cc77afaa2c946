"""The attribute policy: categories, not personal data (fyp.attributes)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fyp.attributes import (
    MAX_ATTRIBUTES,
    MAX_VALUE_CHARS,
    as_attributes,
    attributes_problem,
    name_problem,
    value_problem,
)
from fyp.catalog.ingest import VideoIn, validate_videos
from fyp.users.controls import ProfileIn

# What apps send, and KuaiRand's own values: all categories.
CATEGORIES = [
    "full_active",
    "2_14_day_new",
    "[100,1k)",
    "(250,500]",
    "500+",
    "730+",
    "15-30",
    "-124",
    "0",
    "949",
    "LongImport",
    "NORMAL",
    "low end phone",
    "pt-BR",
    "18-24",
    "v2.1",
    "café",
]

REFUSED = {
    "ana@example.com": "email",
    "@ana_b": "handle",
    "https://x.io/ana": "URL",
    "www.example.org": "URL",
    "example.com": "domain",
    "example.com/ana": "domain",
    "+44 20 7946 0958": "phone",
    "(555) 123-4567": "phone",
    "5551234567": "phone",
    "user 12345678": "identifier",
    "123e4567e89b12d3a456426614174000": "identifier",
    "5f3a9c2e1b7d": "identifier",
    "tok_a8f3k29xq7mz": "identifier",
    "i love long cat videos": "free text",
    "x" * (MAX_VALUE_CHARS + 1): "characters",
    " padded": "whitespace",
    "": "empty",
    "tab\there": "control character",
}


@pytest.mark.parametrize("value", CATEGORIES)
def test_categories_are_accepted(value: str) -> None:
    assert value_problem(value) is None


@pytest.mark.parametrize(("value", "why"), REFUSED.items())
def test_ids_contact_data_and_free_text_are_refused_saying_why(value: str, why: str) -> None:
    problem = value_problem(value)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("name", ["activity", "device_class", "onehot_feat17", "a" * 40])
def test_names_are_lowercase_identifiers_any_of_them(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["Activity", "1st", "_x", "device-class", "a b", "é", "a" * 41])
def test_other_names_are_refused(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None and "lowercase identifier" in problem


def _errors(body: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as err:
        ProfileIn.model_validate(body)
    return str(err.value)


def test_a_profile_takes_up_to_the_bound_of_attributes_of_any_names() -> None:
    most = {f"made_up_name_{i}": "x" for i in range(MAX_ATTRIBUTES)}
    assert ProfileIn.model_validate({"attributes": most}).attributes == most
    too_many = {**most, "one_more": "x"}
    assert f"at most {MAX_ATTRIBUTES} attributes (got {MAX_ATTRIBUTES + 1})" in _errors(
        {"attributes": too_many}
    )
    assert attributes_problem(too_many) is not None


def test_a_profile_refuses_bad_names_values_and_types_naming_them() -> None:
    msg = _errors({"attributes": {"Device": "phone", "email": "a@b.co", "age": 30}})
    assert "attributes.Device.[key]" in msg and "lowercase identifier" in msg
    assert "attributes.email" in msg and "email address" in msg
    assert "attributes.age" in msg and 'send 30 as "30"' in msg
    assert "valid dictionary" in _errors({"attributes": ["a", "b"]})


def test_a_bad_video_in_a_batch_rejects_only_itself() -> None:
    base = {"creator_id": "c1", "duration_ms": 1000}
    good, bad = validate_videos(
        [
            {**base, "video_id": "v1", "attributes": {"video_type": "ad"}},
            {**base, "video_id": "v2", "attributes": {"uploader": "bob@example.com"}},
            {**base, "video_id": "v3"},
        ]
    )
    assert [v.video_id for v in good] == ["v1", "v3"]
    assert good[0].attributes == (("video_type", "ad"),) and good[1].attributes == ()
    assert [(i, vid) for i, vid, _ in bad] == [(1, "v2")]
    assert "attributes.uploader" in bad[0][2] and "email" in bad[0][2]


def test_the_stored_form_is_sorted_by_name() -> None:
    video = VideoIn.model_validate(
        {"video_id": "v", "creator_id": "c", "duration_ms": 1, "attributes": {"b": "1", "a": "2"}}
    )
    assert video.to_video().attributes == (("a", "2"), ("b", "1"))
    assert as_attributes({"z": "1", "m": "2"}) == (("m", "2"), ("z", "1"))
