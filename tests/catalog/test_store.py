"""The CatalogStore contract, run against every implementation.

A new backend is one more entry in ``IMPLEMENTATIONS``: a callable that opens the store
kept at a location (a directory, or a PostgreSQL URL on a schema of the test's own), so
that calling it again on the same location reopens it. The order of ``all()`` is not
part of the contract (the in-memory index assigns its own rows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fyp.catalog.store import CatalogStore, SqliteCatalogStore
from fyp.types import Video
from postgres_servers import opener

OpenStore = Callable[[], CatalogStore]

IMPLEMENTATIONS = [
    pytest.param(lambda where: SqliteCatalogStore(where / "catalog.db"), id="sqlite"),
    pytest.param(lambda url: pg_catalog(url), id="postgresql"),
]


def pg_catalog(url: str) -> CatalogStore:
    from fyp.storage.postgres.catalog import PgCatalogStore  # (psycopg: a skip if absent)
    from fyp.storage.postgres.database import Database

    return PgCatalogStore(Database(url))


@pytest.fixture(params=IMPLEMENTATIONS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    yield from opener(request, tmp_path)


def video(i: int, **changes: object) -> Video:
    fields: dict[str, object] = {
        "video_id": f"v{i}",
        "creator_id": f"c{i % 3}",
        "duration_ms": 1_000 * (i + 1),
    }
    fields.update(changes)
    return Video(**fields)  # type: ignore[arg-type]


FULL = Video(
    video_id="full",
    creator_id="c1",
    duration_ms=15_000,
    sound_id="s1",
    hashtags=("#cats", "#Ünïcode", "tag with space"),
    caption='a "quoted" caption, with commas\nand a newline',
    language="pt-BR",
    regions=("br", "pt"),
    created_at=1_750_000_000_000,
    labels=("sensitive",),
    attributes=(("upload_type", "duet"), ("video_type", "ad")),
)
BARE = Video("bare", "c2", 1)


def by_id(store: CatalogStore) -> dict[str, Video]:
    videos = list(store.all())
    ids = [v.video_id for v in videos]
    assert len(ids) == len(set(ids)), "all() lists a video twice"
    return {v.video_id: v for v in videos}


class TestCatalogStoreContract:
    def test_an_empty_store_has_nothing(self, open_store: OpenStore) -> None:
        store = open_store()
        assert store.count() == 0
        assert list(store.all()) == []
        assert store.get("v1") is None

    def test_every_field_round_trips_including_empty_and_missing_ones(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        store.upsert([FULL, BARE])
        assert store.get("full") == FULL
        assert store.get("bare") == BARE
        assert by_id(store) == {"full": FULL, "bare": BARE}

    def test_upsert_adds_new_videos(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([video(i) for i in range(5)])
        store.upsert([video(i) for i in range(5, 8)])
        assert store.count() == 8
        assert by_id(store) == {f"v{i}": video(i) for i in range(8)}

    def test_upsert_replaces_a_video_with_the_same_id(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([video(1), video(2)])
        takedown = video(1, labels=("removed",), caption="edited")
        store.upsert([takedown])
        assert store.count() == 2
        assert store.get("v1") == takedown
        assert by_id(store) == {"v1": takedown, "v2": video(2)}

    def test_within_one_batch_the_last_version_of_a_video_wins(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([video(1), video(1, caption="second")])
        assert store.count() == 1
        assert store.get("v1") == video(1, caption="second")

    def test_upserting_nothing_changes_nothing(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([video(1)])
        store.upsert([])
        assert store.count() == 1

    def test_ids_are_case_sensitive(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([video(1, video_id="abc"), video(2, video_id="ABC")])
        assert store.count() == 2
        assert store.get("Abc") is None

    def test_videos_survive_close_and_reopen(self, open_store: OpenStore) -> None:
        store = open_store()
        store.upsert([FULL, BARE, video(3)])
        store.upsert([video(3, duration_ms=99)])
        store.close()

        reopened = open_store()
        assert reopened.count() == 3
        assert by_id(reopened) == {"full": FULL, "bare": BARE, "v3": video(3, duration_ms=99)}
        reopened.upsert([video(4)])
        assert reopened.count() == 4


def test_a_catalog_made_before_attributes_opens_with_its_videos_and_none(tmp_path: Path) -> None:
    """Migration: the videos table of a data dir made before videos kept attributes."""
    import sqlite3

    path = tmp_path / "catalog.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE videos (video_id TEXT PRIMARY KEY, creator_id TEXT NOT NULL,"
        " duration_ms INTEGER NOT NULL, sound_id TEXT, hashtags TEXT NOT NULL,"
        " caption TEXT NOT NULL, language TEXT, regions TEXT NOT NULL, created_at INTEGER,"
        " labels TEXT NOT NULL)"
    )
    old.execute("INSERT INTO videos VALUES ('v1','c1',1000,NULL,'[]','',NULL,'[]',NULL,'[]')")
    old.commit()
    old.close()
    store = SqliteCatalogStore(path)
    try:
        assert list(store.all()) == [Video("v1", "c1", 1000)]
        store.upsert([Video("v1", "c1", 1000, attributes=(("video_type", "ad"),))])
        assert store.get("v1") == Video("v1", "c1", 1000, attributes=(("video_type", "ad"),))
    finally:
        store.close()


def test_a_whole_read_gives_videos_in_store_order_sharing_their_common_values(
    tmp_path: Path,
) -> None:
    """Issue 18 (memory): each video read back held its own copy of its creator, sound,
    hashtags...; the catalog index keeps them, in the server and the learner both."""
    store = SqliteCatalogStore(tmp_path / "catalog.db")
    try:
        a = video(1, creator_id="c", sound_id="s", hashtags=("#x", "#y"), language="en")
        b = video(2, creator_id="c", sound_id="s", hashtags=("#x", "#y"), language="en")
        c = video(3, creator_id="c", hashtags=("#y",), regions=("br",), labels=("l",))
        store.upsert([a, FULL, b, BARE, c])
        store.upsert([video(1, creator_id="c", caption="edited")])  # keeps its place
        read = list(store.all())
        assert read == [video(1, creator_id="c", caption="edited"), FULL, b, BARE, c]
        first, _, second, _, third = read
        assert first.creator_id is second.creator_id is third.creator_id
        assert second.hashtags[1] is third.hashtags[0]  # the one "#y"
        changed, _ = store.videos_since(0)
        assert sorted(changed, key=lambda v: v.video_id) == sorted(read, key=lambda v: v.video_id)
        one, two = (v for v in changed if v.video_id in ("v1", "v2"))
        assert one.creator_id is two.creator_id
    finally:
        store.close()
