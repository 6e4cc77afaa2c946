"""Fuzzing event validation: whatever a client sends, each item is either accepted as
exactly what was sent or rejected with a reason naming the field, and validation never
raises; in a batch, the valid items are stored and each invalid one is rejected by its
index, none dropped silently."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fyp.catalog.index import CatalogIndex
from fyp.config import LimitsConfig
from fyp.events.ingest import MAX_WATCH_MS, ingest, validate_event
from fyp.events.log import AppendResult
from fyp.types import Event, EventType, LoggedEvent, Video
from fyp.validation import MAX_ID_CHARS

NOW = 1_750_000_000_000
DURATION_MS = 20_000
LIMITS = LimitsConfig()
VIDEOS = [f"v{i}" for i in range(5)]
FIELDS = ["event_id", "user_id", "video_id", "type", "ts", "watch_ms", "request_id", "surface"]
ID_FIELDS = ["event_id", "user_id", "video_id", "request_id", "surface"]
REQUIRED = ["event_id", "user_id", "video_id", "type", "ts"]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CATALOG = CatalogIndex()
CATALOG.upsert([Video(v, "c1", DURATION_MS) for v in VIDEOS])


class RecordingLog:
    """An event log that keeps what it was given: the batch test checks exactly which
    events reached the store (a real log's durability is tested elsewhere)."""

    def __init__(self) -> None:
        self.appended: list[Event] = []

    def append(self, events: Sequence[Event]) -> AppendResult:
        self.appended.extend(events)
        return AppendResult(list(range(len(events))), [])

    def read(self, after_offset: int, limit: int) -> list[LoggedEvent]:
        return []

    def last_offset(self) -> int:
        return len(self.appended)

    def count(self) -> int:
        return len(self.appended)

    def contains(self, event_id: str) -> bool:
        return any(e.event_id == event_id for e in self.appended)

    def for_user(self, user_id: str) -> list[LoggedEvent]:
        return []

    def erase_user(self, user_id: str) -> int:
        return 0

    def delete_before(self, ts: int) -> int:
        return 0

    def close(self) -> None:
        pass


# -- strategies ------------------------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

# Ids: printable text in NFC (no control, format, surrogate, private-use or unassigned
# characters, no separators but the ASCII space), no surrounding whitespace.
_id_chars = st.characters(blacklist_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"])
ids = st.text(_id_chars | st.just(" "), min_size=1, max_size=MAX_ID_CHARS).filter(
    lambda s: not s[0].isspace() and not s[-1].isspace() and unicodedata.is_normalized("NFC", s)
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from(list(EventType)))
    body: dict[str, Any] = {
        "event_id": draw(ids),
        "user_id": draw(ids),
        "video_id": draw(st.sampled_from(VIDEOS)),
        "type": type_.value,
        "ts": draw(st.integers(0, NOW + LIMITS.max_future_ms)),
    }
    max_watch = int(LIMITS.max_watch_ratio * DURATION_MS)
    if type_ is EventType.VIEW:
        body["watch_ms"] = draw(st.integers(0, max_watch))
    elif draw(st.booleans()):
        body["watch_ms"] = draw(st.none() | st.integers(0, max_watch))
    for name in ("request_id", "surface"):
        if draw(st.booleans()):
            body[name] = draw(st.none() | ids)
    return body


def _not_str(allow_none: bool) -> st.SearchStrategy[Any]:
    others: st.SearchStrategy[Any] = st.one_of(
        st.booleans(),
        st.integers(),
        st.floats(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    return others | st.none() if allow_none else others


def _not_strict_int(allow_none: bool) -> st.SearchStrategy[Any]:
    others = st.booleans() | st.floats() | st.text(max_size=10) | st.lists(st.integers())
    return others | st.none() if allow_none else others


odd_ids = st.one_of(
    st.just(""),
    st.sampled_from([" ", "\t", "\n", "\u3000", "\x85", "\u2028"]).flatmap(
        lambda ws: st.sampled_from([ws, f"{ws}id", f"id{ws}", f"a{ws}\n{ws}b", "a\nb"])
    ),
    st.text(_id_chars, min_size=MAX_ID_CHARS + 1, max_size=MAX_ID_CHARS + 100),
    st.just("é" * (MAX_ID_CHARS + 1)),
    st.just("a\ud800b"),  # a lone surrogate: Python can hold it, UTF-8 cannot
    st.sampled_from(["a\x00b", "a\rb", "a\u202eb", "a\u200bb", "a\ue000b", "cafe\u0301"]),
)


@st.composite
def nearly_valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid event with one thing wrong, and the field its rejection must name."""
    body = draw(valid_events())
    kind = draw(
        st.sampled_from(["wrong_type", "range", "odd_id", "missing", "extra", "unknown_video"])
    )
    if kind == "wrong_type":
        name = draw(st.sampled_from(FIELDS))
        optional = name in ("request_id", "surface") or (
            name == "watch_ms" and body["type"] != "view"
        )
        if name in ("ts", "watch_ms"):
            body[name] = draw(_not_strict_int(allow_none=not optional))
        elif name == "type":
            body[name] = draw(
                _not_str(allow_none=True)
                | st.text(max_size=20).filter(lambda s: s not in set(EventType))
            )
        else:
            body[name] = draw(_not_str(allow_none=not optional))
        return body, name
    if kind == "range":
        name, value = draw(
            st.sampled_from(["ts", "watch_ms"]).flatmap(
                lambda n: st.tuples(st.just(n), _out_of_range(n, body["type"]))
            )
        )
        body[name] = value
        return body, name
    if kind == "odd_id":
        name = draw(st.sampled_from(ID_FIELDS))
        body[name] = draw(odd_ids)
        return body, name
    if kind == "missing":
        name = draw(
            st.sampled_from([*REQUIRED, "watch_ms"] if body["type"] == "view" else REQUIRED)
        )
        del body[name]
        return body, name
    if kind == "extra":
        name = draw(st.text(max_size=12).filter(lambda k: k not in FIELDS))
        body[name] = draw(json_values)
        return body, name
    body["video_id"] = draw(ids.filter(lambda v: v not in VIDEOS))
    return body, "video_id"


def _out_of_range(name: str, type_: str) -> st.SearchStrategy[int]:
    if name == "ts":
        return st.integers(max_value=-1) | st.integers(min_value=NOW + LIMITS.max_future_ms + 1)
    too_long = int(LIMITS.max_watch_ratio * DURATION_MS) + 1
    high = too_long if type_ == "view" else MAX_WATCH_MS + 1  # the duration bounds views only
    return st.integers(max_value=-1) | st.integers(min_value=high)


def names_field(reason: str, name: str) -> bool:
    """Whether the reason has a ``name: ...`` part (parts are joined by ``; ``)."""
    shown = name or '""'  # an empty key is shown quoted
    return reason.startswith(f"{shown}:") or f"; {shown}:" in reason


def assert_round_trip(event: Event, raw: dict[str, Any]) -> None:
    assert event.event_id == raw["event_id"]
    assert event.user_id == raw["user_id"]
    assert event.video_id == raw["video_id"]
    assert event.type is EventType(raw["type"])
    assert event.ts == raw["ts"]
    assert event.watch_ms == raw.get("watch_ms")
    assert event.request_id == raw.get("request_id")
    assert event.surface == raw.get("surface")


# -- properties ------------------------------------------------------------------------


@FUZZ
@given(json_values)
def test_arbitrary_json_never_raises_and_is_explained(raw: Any) -> None:
    result = validate_event(raw, CATALOG, LIMITS, NOW)
    if isinstance(result, Event):  # possible in principle; then it is what was sent
        assert_round_trip(result, raw)
        return
    assert isinstance(result, str) and result
    if isinstance(raw, dict):
        assert any(names_field(result, k) for k in [*raw, *FIELDS]), result
    else:
        assert result.startswith("item:"), result


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)))
def test_dicts_of_the_right_keys_never_raise(raw: dict[str, Any]) -> None:
    result = validate_event(raw, CATALOG, LIMITS, NOW)
    if isinstance(result, Event):
        assert_round_trip(result, raw)
    else:
        assert any(names_field(result, k) for k in FIELDS), result


@FUZZ
@given(valid_events())
def test_a_valid_event_round_trips(raw: dict[str, Any]) -> None:
    result = validate_event(raw, CATALOG, LIMITS, NOW)
    assert isinstance(result, Event), result
    assert_round_trip(result, raw)


@FUZZ
@given(nearly_valid_events())
def test_one_thing_wrong_is_rejected_naming_it(case: tuple[dict[str, Any], str]) -> None:
    raw, name = case
    result = validate_event(raw, CATALOG, LIMITS, NOW)
    assert isinstance(result, str), f"accepted {raw!r}"
    assert names_field(result, name), (name, result)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[object, bool]]:
    """Items, each with whether it is valid; valid ones have distinct event ids."""
    items: list[tuple[object, bool]] = []
    seen: set[str] = set()
    for _ in range(draw(st.integers(0, 25))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            body = draw(valid_events().filter(lambda b: b["event_id"] not in seen))
            seen.add(body["event_id"])
            items.append((body, True))
        elif choice == 1:
            items.append((draw(nearly_valid_events())[0], False))
        else:
            # Not a dict at all (a valid event is always a dict).
            items.append((draw(json_values.filter(lambda v: not isinstance(v, dict))), False))
    return items


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_a_mixed_batch_stores_exactly_the_valid_items(items: list[tuple[object, bool]]) -> None:
    log = RecordingLog()
    raw = [item for item, _ in items]
    result = ingest(raw, CATALOG, log, LIMITS, NOW)
    valid = [item for item, ok in items if ok]
    assert len(log.appended) == len(valid) == result.accepted
    for event, body in zip(log.appended, valid, strict=True):
        assert isinstance(body, dict)
        assert_round_trip(event, body)
    assert [r.index for r in result.rejected] == [i for i, (_, ok) in enumerate(items) if not ok]
    for r in result.rejected:
        item = raw[r.index]
        eid = item.get("event_id") if isinstance(item, dict) else None
        assert r.event_id == (eid if isinstance(eid, str) else None)
        assert r.reason
