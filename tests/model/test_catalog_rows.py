"""The replica's kept rows of catalog videos read as a fresh lookup would, whatever the
published updates did to the tables meanwhile."""

from __future__ import annotations

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.model.catalog_rows import CatalogRankRows
from fyp.model.embeddings import TableChanges
from fyp.model.replica import ReplicaTable
from fyp.model.serving import RankBatch, rank_rows
from fyp.types import ModerationAction, Video

DIM = 3


def changes(ids: list[str], removed: list[str] = ()) -> TableChanges:  # type: ignore[assignment]
    vectors = np.arange(len(ids) * DIM, dtype=np.float32).reshape(len(ids), DIM)
    return TableChanges(ids, vectors, list(removed), np.zeros(DIM, np.float32))


def catalog_of(videos: list[Video]) -> CatalogIndex:
    catalog = CatalogIndex()
    catalog.upsert(videos)
    return catalog


VIDEOS = [
    Video("v0", "c0", 1000, sound_id="s0", hashtags=("a", "b")),
    Video("v1", "c1", 1000, sound_id=None, hashtags=()),
    Video("v2", "c0", 1000, sound_id="s1", hashtags=tuple("abcdefghij")),  # over MAX_TAGS
    Video("v3", "c2", 1000, sound_id="", hashtags=("z",)),
]


def tables() -> dict[str, ReplicaTable]:
    return {
        "user": ReplicaTable.of(changes(["u0"])),
        "surface": ReplicaTable.of(changes(["for_you"])),
        "video": ReplicaTable.of(changes(["v0", "v2"])),
        "creator": ReplicaTable.of(changes(["c0", "c1"])),
        "sound": ReplicaTable.of(changes(["s1"])),
        "hashtag": ReplicaTable.of(changes(["b", "c", "h", "j"])),
    }


def fresh(
    t: dict[str, ReplicaTable], catalog: CatalogIndex, rows: list[int], user: str
) -> RankBatch:
    videos = [catalog.videos[r] for r in rows]
    return rank_rows(
        t,
        [user] * len(rows),
        [v.video_id for v in videos],
        [v.creator_id for v in videos],
        [v.sound_id for v in videos],
        [v.hashtags for v in videos],
        ["for_you"] * len(rows),
        0,
        train=False,
    )


def assert_same(a: RankBatch, b: RankBatch) -> None:
    assert a.rows.keys() == b.rows.keys()
    for name in a.rows:
        np.testing.assert_array_equal(a.rows[name], b.rows[name], err_msg=name)
    np.testing.assert_array_equal(a.tag_rows, b.tag_rows)
    np.testing.assert_array_equal(a.tag_mask, b.tag_mask)


def check(cache: CatalogRankRows, t: dict[str, ReplicaTable], catalog: CatalogIndex) -> None:
    for rows in ([0, 1, 2, 3], [3, 3, 0], [2], []):
        for user in ("u0", "unknown-user"):
            got = cache.rank_batch(t, catalog, rows, user, "for_you", 0)
            assert_same(got, fresh(t, catalog, rows, user))


def test_kept_rows_equal_a_fresh_lookup_through_every_kind_of_change() -> None:
    t, catalog = tables(), catalog_of(VIDEOS)
    cache = CatalogRankRows()
    check(cache, t, catalog)
    # Ids gained: a video, creator, sound and hashtag that had no row now have one.
    t["video"].set(changes(["v1", "v3"]))
    t["creator"].set(changes(["c2"]))
    t["sound"].set(changes(["s0", ""]))
    t["hashtag"].set(changes(["a", "z"]))
    check(cache, t, catalog)
    # Ids lost, and their rows taken by other ids.
    t["video"].set(changes(["v9"], removed=["v0"]))
    t["hashtag"].set(changes(["y", "x"], removed=["a", "b"]))
    check(cache, t, catalog)
    # A table replaced whole (a snapshot).
    t["creator"] = ReplicaTable.of(changes(["c2", "c1", "c0"]))
    check(cache, t, catalog)
    # The catalog changed: a video's creator and tags, and a new video.
    catalog.upsert(
        [
            Video("v0", "c1", 1000, sound_id="s1", hashtags=("z",)),
            Video("v4", "c0", 1000, sound_id="s0", hashtags=("c",)),
        ]
    )
    check(cache, t, catalog)
    rows = [4, 0]
    assert_same(
        cache.rank_batch(t, catalog, rows, "u0", "for_you", 0), fresh(t, catalog, rows, "u0")
    )
    # Uploads and moderation between reads, some rows read only at a later version: a
    # re-upload of a row not read since, new videos (past the cache's room), a removal.
    catalog.upsert([Video("v3", "c1", 1000, sound_id="s0", hashtags=("j", "c"))])
    cache.rank_batch(t, catalog, [0, 1], "u0", "for_you", 0)
    catalog.upsert([Video(f"n{i}", "c2", 1000, hashtags=("h",)) for i in range(5)])
    catalog.moderate([ModerationAction("v1", "removed", None, "test", "api", 0)])
    check(cache, t, catalog)
    catalog.upsert([Video("v1", "c9", 1000, sound_id="s1"), Video("n9", "c0", 1000)])
    rows = [1, 3, len(catalog) - 1, 5]
    assert_same(
        cache.rank_batch(t, catalog, rows, "u0", "for_you", 0), fresh(t, catalog, rows, "u0")
    )
    # Another catalog index (a restored checkpoint's): nothing kept is trusted.
    other = catalog_of([Video(v.video_id, "c0", 1000) for v in catalog.videos])
    check(cache, t, other)


def counted(t: dict[str, ReplicaTable]) -> list[str]:
    """The ids the video table is asked for from now on (every filled row asks once)."""
    looked_up: list[str] = []
    original = t["video"].lookup

    def counting(ids, now_ms, *, admit=False, touch=False):  # type: ignore[no-untyped-def]
        looked_up.extend(ids)
        return original(ids, now_ms, admit=admit, touch=touch)

    t["video"].lookup = counting  # type: ignore[method-assign]
    return looked_up


def test_a_request_looks_up_again_only_what_may_have_changed() -> None:
    t, catalog = tables(), catalog_of(VIDEOS)
    t["sound"].set(changes(["s0"]))
    t["hashtag"].set(changes(list("adefg")))  # v0 and v2 have a row for every id now
    cache = CatalogRankRows()
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    looked_up = counted(t)
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    assert looked_up == []
    # A table gained ids: the videos with an id that had no row (v1's, v3's) may have
    # one now; the others' rows stand.
    t["hashtag"].set(changes(["zz"]))
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    assert looked_up == ["v1", "v3"]
    looked_up.clear()
    # A table lost ids: a freed row may hold another id now, so every video again.
    t["creator"].set(changes([], removed=["c1"]))
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    assert looked_up == ["v0", "v1", "v2", "v3"]


def test_a_catalog_change_refills_only_the_rows_of_replaced_videos() -> None:
    t, catalog = tables(), catalog_of(VIDEOS)
    cache = CatalogRankRows()
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    looked_up = counted(t)
    # New uploads (the catalog grows past the cache's room) and a moderation action.
    catalog.upsert([Video(f"n{i}", "c0", 1000) for i in range(6)])
    catalog.moderate([ModerationAction("v1", None, ("spam",), "test", "api", 0)])
    cache.rank_batch(t, catalog, [0, 1, 2, 3, 4], "u0", "for_you", 0)
    assert looked_up == ["n0"]
    looked_up.clear()
    # A re-upload: that video's row only, also when first read versions later.
    catalog.upsert([Video("v2", "c1", 1000, hashtags=("b",))])
    cache.rank_batch(t, catalog, [0, 1], "u0", "for_you", 0)
    catalog.upsert([Video("n9", "c0", 1000)])
    cache.rank_batch(t, catalog, [0, 1, 2, 3], "u0", "for_you", 0)
    assert looked_up == ["v2"]


def test_a_replica_table_reads_the_fallback_for_rows_without_an_id() -> None:
    """Row -1 (an id without a row) reads the fallback, as published, through the
    table's growth (more ids than its first room), removals and later updates."""
    t = ReplicaTable.of(changes(["a", "b"]))
    np.testing.assert_array_equal(
        t.vectors(np.array([-1, 1, -1])), [[0] * DIM, [3, 4, 5], [0] * DIM]
    )
    ids = [f"id{i}" for i in range(40)]  # past the first room
    grown = changes(ids)
    t.set(TableChanges(ids, grown.vectors + 1, ["a"], np.full(DIM, 9.0, np.float32)))
    rows = t.lookup(["a", "id39", "b", "zz"], 0)
    assert rows[0] == -1 and rows[3] == -1
    want = [[9.0] * DIM, grown.vectors[39] + 1, [3, 4, 5], [9.0] * DIM]
    np.testing.assert_array_equal(t.vectors(rows), want)
    # The vectors are a copy: the caller may write them.
    out = t.vectors(rows)
    out[:] = -5.0
    np.testing.assert_array_equal(t.vectors(rows), want)
    # The fallback of a later update only: the ids' rows stand.
    t.set(TableChanges([], np.zeros((0, DIM), np.float32), [], np.full(DIM, 2.0, np.float32)))
    np.testing.assert_array_equal(t.vectors(rows[:2]), [[2.0] * DIM, grown.vectors[39] + 1])
