"""What a client is told when storage fails: true of the route it asked."""

from fyp.api.errors import UNREACHABLE, storage_message


def test_only_an_event_batch_is_told_that_a_retry_is_safe_by_event_id() -> None:
    down = ConnectionError("connection refused")
    events = storage_message(UNREACHABLE, down, "POST /v1/events")
    feed = storage_message(UNREACHABLE, down, "GET /v1/feed")
    assert events.endswith("retry later (events are idempotent by event_id)")
    assert feed.endswith("retry later")
    assert "event_id" not in feed
