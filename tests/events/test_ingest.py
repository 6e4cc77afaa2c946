"""Event ingestion: each event is judged on its own; a bad one is rejected with a reason
naming the field, and the good ones in the same batch are appended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import LimitsConfig
from fyp.events.ingest import IngestResult, ingest, validate_event, validate_events
from fyp.events.log import SqliteEventLog
from fyp.types import Event, EventType, Video

NOW = 1_750_000_000_000
DURATION_MS = 20_000
LIMITS = LimitsConfig()


@pytest.fixture
def catalog() -> CatalogIndex:
    index = CatalogIndex()
    index.upsert([Video("v1", "c1", DURATION_MS), Video("v2", "c1", DURATION_MS)])
    return index


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteEventLog]:
    event_log = SqliteEventLog(tmp_path / "events.db")
    yield event_log
    event_log.close()


def good(event_id: str = "e1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "user_id": "u1",
        "video_id": "v1",
        "type": "view",
        "ts": NOW - 1_000,
        "watch_ms": 5_000,
    }
    body.update(changes)
    return body


def without(field: str) -> dict[str, Any]:
    body = good("missing")
    del body[field]
    return body


# (case, raw event, the field its rejection must name)
BAD: list[tuple[str, object, str]] = [
    ("missing event_id", without("event_id"), "event_id"),
    ("missing user_id", without("user_id"), "user_id"),
    ("missing video_id", without("video_id"), "video_id"),
    ("missing type", without("type"), "type"),
    ("missing ts", without("ts"), "ts"),
    ("ts as a string", good(ts="123"), "ts"),
    ("ts as a float", good(ts=float(NOW)), "ts"),
    ("ts as a bool", good(ts=True), "ts"),
    ("negative ts", good(ts=-1), "ts"),
    ("watch_ms as a float", good(watch_ms=1.5), "watch_ms"),
    ("watch_ms as a string", good(watch_ms="5000"), "watch_ms"),
    ("unknown type", good(type="dance"), "type"),
    ("empty event_id", good(""), "event_id"),
    ("event_id of 129 chars", good("x" * 129), "event_id"),
    ("whitespace-only user_id", good(user_id="   "), "user_id"),
    ("video_id with a trailing space", good(video_id="v1 "), "video_id"),
    ("negative watch_ms", good(watch_ms=-1), "watch_ms"),
    ("watch_ms over 10x the duration", good(watch_ms=10 * DURATION_MS + 1), "watch_ms"),
    ("a view without watch_ms", without("watch_ms"), "watch_ms"),
    ("ts more than a day ahead", good(ts=NOW + 24 * 3_600_000 + 1), "ts"),
    ("unknown video", good(video_id="no-such-video"), "video_id"),
    ("unknown extra field", good(latitude=48.1), "latitude"),
    ("empty request_id", good(request_id=""), "request_id"),
]


@pytest.mark.parametrize(("case", "raw", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_event_is_rejected_with_a_reason_naming_the_field(
    case: str, raw: object, field: str, catalog: CatalogIndex
) -> None:
    reason = validate_event(raw, catalog, LIMITS, NOW)
    assert isinstance(reason, str), f"{case}: accepted as {reason!r}"
    assert reason.startswith(f"{field}:"), reason


@pytest.mark.parametrize("raw", ["a string", None, 42, ["event_id", "e1"]])
def test_something_that_is_not_an_object_is_rejected(raw: object, catalog: CatalogIndex) -> None:
    assert isinstance(validate_event(raw, catalog, LIMITS, NOW), str)


@pytest.mark.parametrize(
    "raw",
    [
        good(),
        good("x" * 128),  # the longest id allowed
        good(watch_ms=0),
        good(watch_ms=10 * DURATION_MS),  # exactly the limit
        good(ts=NOW + 24 * 3_600_000),  # exactly a day ahead
        good(ts=0),
        good(type="like", watch_ms=None),
        good(request_id="req-1", surface="for_you"),
    ],
    ids=["view", "128-char id", "zero watch", "10x watch", "a day ahead", "ts 0", "like", "ids"],
)
def test_a_valid_event_becomes_a_domain_event(raw: dict[str, Any], catalog: CatalogIndex) -> None:
    got = validate_event(raw, catalog, LIMITS, NOW)
    assert isinstance(got, Event), got
    assert got.event_id == raw["event_id"]
    assert got.type is EventType(raw["type"])
    assert got.ts == raw["ts"]
    assert got.watch_ms == raw.get("watch_ms")


def test_limits_come_from_config(catalog: CatalogIndex) -> None:
    strict = LimitsConfig(max_watch_ratio=2.0, max_future_ms=0)
    assert isinstance(validate_event(good(watch_ms=2 * DURATION_MS), catalog, strict, NOW), Event)
    assert str(validate_event(good(watch_ms=2 * DURATION_MS + 1), catalog, strict, NOW)).startswith(
        "watch_ms:"
    )
    assert str(validate_event(good(ts=NOW + 1), catalog, strict, NOW)).startswith("ts:")


def test_bad_events_are_rejected_and_the_good_ones_in_the_same_batch_accepted(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    bad = [raw for _, raw, _ in BAD]
    batch: list[object] = [good("first"), *bad, good("last", video_id="v2", type="like")]
    result = ingest(batch, catalog, log, LIMITS, NOW)
    assert result.accepted == 2
    assert result.duplicates == 0
    assert [r.index for r in result.rejected] == list(range(1, len(bad) + 1))
    for r, (_, _, field) in zip(result.rejected, BAD, strict=True):
        assert r.reason.startswith(f"{field}:"), r
    assert [g.event.event_id for g in log.read(0, 10)] == ["first", "last"]
    assert not log.contains("")


def test_a_rejection_carries_the_event_id_when_there_is_one(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    unnamed = {**good(), "event_id": 123}
    result = ingest([good("named", watch_ms=-5), unnamed, "junk"], catalog, log, LIMITS, NOW)
    assert [(r.index, r.event_id) for r in result.rejected] == [(0, "named"), (1, None), (2, None)]


def test_ingesting_the_same_batch_twice_is_all_duplicates_the_second_time(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    batch = [good(f"e{i}", watch_ms=1_000 * i) for i in range(5)]
    first = ingest(batch, catalog, log, LIMITS, NOW)
    second = ingest(batch, catalog, log, LIMITS, NOW)
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (second.accepted, second.duplicates) == (0, 5)
    assert [g.event.event_id for g in log.read(0, 10)] == [f"e{i}" for i in range(5)]


def test_the_same_event_id_twice_in_one_batch_counts_once(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    result: IngestResult = ingest([good("e1"), good("e1", watch_ms=1)], catalog, log, LIMITS, NOW)
    assert (result.accepted, result.duplicates) == (1, 1)
    (stored,) = log.read(0, 10)
    assert stored.event.watch_ms == 5_000  # the first one is kept


def test_a_rejected_event_does_not_reserve_its_id(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    ingest([good("e1", watch_ms=-1)], catalog, log, LIMITS, NOW)
    retry = ingest([good("e1")], catalog, log, LIMITS, NOW)
    assert retry.accepted == 1


def test_a_batch_is_judged_exactly_as_each_of_its_events_alone(catalog: CatalogIndex) -> None:
    # A batch is validated in one call, and again one event at a time only when that
    # fails: both ways must give each event the result it gets on its own.
    valid: list[object] = [good(f"ok{i}", watch_ms=100 * i) for i in range(50)]
    valid.append(good("like", type="like", watch_ms=None, request_id="r", surface="s"))
    valid.append(good("late", ts=NOW + 1, video_id="v2"))
    mixed: list[object] = [*valid[:25], *(raw for _, raw, _ in BAD), "junk", *valid[25:]]
    mixed.append(good("ok3"))  # (a repeated id is the log's to count, not validation's)
    # Ids of the right shape that only the id check refuses (checked after a batch's
    # validation): a bidirectional override, an id not in NFC, in each id field.
    odd = [good("bidi", user_id="a\u202eb"), good("e\u0301"), good("s", surface="x\u200by")]
    odd.append(good("r", type="like", watch_ms=None, request_id="r\u0000"))
    for batch in (valid, mixed, [*valid, *odd], [*valid, odd[0]]):
        alone = [validate_event(raw, catalog, LIMITS, NOW) for raw in batch]
        assert validate_events(batch, catalog, LIMITS, NOW) == alone
    assert all(isinstance(e, Event) for e in validate_events(valid, catalog, LIMITS, NOW))


def test_a_batch_with_one_bad_event_stores_every_other_and_names_the_bad_one(
    catalog: CatalogIndex, log: SqliteEventLog
) -> None:
    batch: list[object] = [good(f"e{i}") for i in range(500)]
    batch[317] = good("e317", watch_ms="a lot")
    result = ingest(batch, catalog, log, LIMITS, NOW)
    assert (result.accepted, result.duplicates) == (499, 0)
    assert [(r.index, r.event_id) for r in result.rejected] == [(317, "e317")]
    assert result.rejected[0].reason.startswith("watch_ms:")
    assert not log.contains("e317")
    again = ingest(batch, catalog, log, LIMITS, NOW)  # a retry: nothing stored twice
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 499, 1)
    assert log.count() == 499
