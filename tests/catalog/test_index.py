"""The in-memory catalog index: stable dense rows, per-creator lists newest first, and
the eligibility arrays that filters read."""

from __future__ import annotations

from fyp.catalog.index import CatalogIndex
from fyp.types import ModerationAction, Video


def video(video_id: str, creator: str = "c1", **changes: object) -> Video:
    fields: dict[str, object] = {"duration_ms": 10_000, "created_at": 1_000}
    fields.update(changes)
    return Video(video_id, creator, **fields)  # type: ignore[arg-type]


def test_rows_are_dense_in_upsert_order_and_kept_on_replace() -> None:
    index = CatalogIndex()
    assert index.upsert([video("a"), video("b")]) == [0, 1]
    assert index.upsert([video("c"), video("a", duration_ms=5)]) == [2, 0]
    assert len(index) == 3
    assert index.row_of == {"a": 0, "b": 1, "c": 2}
    assert index.videos[0].duration_ms == 5
    assert int(index.duration_ms[0]) == 5
    assert index.get("a") == video("a", duration_ms=5)
    assert index.get("zzz") is None


def test_rows_by_creator_lists_each_creators_videos_newest_first() -> None:
    index = CatalogIndex()
    index.upsert(
        [
            video("old", created_at=100),
            video("new", created_at=300),
            video("undated", created_at=None),
            video("mid", created_at=200),
            video("other", creator="c2"),
        ]
    )
    rows = index.rows_by_creator["c1"]
    assert [index.videos[r].video_id for r in rows] == ["new", "mid", "old", "undated"]
    assert [index.videos[r].video_id for r in index.rows_by_creator["c2"]] == ["other"]
    index.upsert([video("newest", created_at=400)])
    assert index.videos[index.rows_by_creator["c1"][0]].video_id == "newest"


def test_a_video_that_changes_creator_moves_between_creator_lists() -> None:
    index = CatalogIndex()
    index.upsert([video("a", creator="c1"), video("b", creator="c1")])
    index.upsert([video("a", creator="c2")])
    assert index.rows_by_creator["c1"] == [index.row_of["b"]]
    assert index.rows_by_creator["c2"] == [index.row_of["a"]]


def test_the_same_video_twice_in_one_upsert_gets_one_row() -> None:
    index = CatalogIndex()
    rows = index.upsert([video("a"), video("a", duration_ms=7)])
    assert rows == [0, 0]
    assert len(index) == 1
    assert index.rows_by_creator["c1"] == [0]
    assert index.videos[0].duration_ms == 7


def test_an_excluded_label_makes_a_video_ineligible_until_it_is_lifted() -> None:
    index = CatalogIndex(excluded_labels=("removed",))
    index.upsert([video("a"), video("b", labels=("removed", "other")), video("c", labels=("x",))])
    assert index.label_ok[:3].tolist() == [True, False, True]
    index.upsert([video("a", labels=("removed",))])  # taken down
    index.upsert([video("b")])  # reinstated
    assert index.label_ok[:3].tolist() == [False, True, True]


def test_regions_decide_where_a_video_may_be_shown() -> None:
    index = CatalogIndex()
    index.upsert(
        [video("anywhere"), video("br-only", regions=("br",)), video("two", regions=("br", "pt"))]
    )
    assert index.region_free[:3].tolist() == [True, False, False]
    assert index.shown_in(0, "xx")
    assert index.shown_in(1, "br")
    assert not index.shown_in(1, "pt")
    assert index.shown_in(2, "pt")
    index.upsert([video("br-only")])  # restriction lifted
    assert index.region_free[1]
    assert index.shown_in(1, "pt")


def test_the_arrays_grow_with_the_catalog_and_keep_their_values() -> None:
    index = CatalogIndex(excluded_labels=("removed",))
    first = [video(f"v{i}", created_at=i, duration_ms=i + 1) for i in range(1_000)]
    index.upsert(first)
    index.upsert([video(f"w{i}", labels=("removed",), created_at=5) for i in range(1_500)])
    n = len(index)
    assert n == 2_500
    assert len(index.created_at) >= n
    assert len(index.label_ok) >= n
    assert index.created_at[999] == 999
    assert index.duration_ms[999] == 1_000
    assert index.label_ok[:1_000].all()
    assert not index.label_ok[1_000:n].any()


def test_rows_share_one_object_per_distinct_value_and_keep_the_videos_equal() -> None:
    """Issue 18 (memory): every row held its own copy of its creator, hashtags, tag set,
    topic keys and (empty) sensitive topics, in both processes."""

    def fresh(s: str) -> str:  # an equal string that is another object, as a store reads
        return "".join(list(s))

    def made(i: int) -> Video:
        return video(
            f"v{i}",
            creator=fresh("creator"),
            sound_id=fresh("sound"),
            hashtags=(fresh("#Cats"), fresh("#dogs")),
            language=fresh("en"),
            regions=(fresh("br"),),
            labels=(fresh("label"),),
            attributes=((fresh("kind"), fresh("duet")),),
        )

    index = CatalogIndex()
    given = [made(i) for i in range(3)]
    index.upsert(given)
    first, second = index.videos[0], index.videos[2]
    assert list(index.videos) == given  # equal: nothing a reader sees changed
    assert first.creator_id is second.creator_id
    assert first.sound_id is second.sound_id and first.language is second.language
    assert first.hashtags is second.hashtags and first.regions is second.regions
    assert first.labels is second.labels and first.attributes is second.attributes
    assert index.text[0].tags is index.text[2].tags
    assert index.topic_keys[0] is index.text[0].tags  # no sensitive topic: its tags
    assert index.sensitive_sets[0] is index.sensitive_sets[2]
    # A re-upload with an equal video changes nothing a reader sees.
    index.upsert([made(0)])
    assert index.videos[0] == given[0] and index.videos[0].creator_id is second.creator_id


def test_moderation_labels_are_shared_between_rows_too() -> None:
    index = CatalogIndex()
    index.upsert([video("a"), video("b")])
    index.moderate(
        [
            ModerationAction("a", None, ("".join(["x", "y"]),), "r", "api", 1),
            ModerationAction("b", None, ("".join(["x", "y"]),), "r", "api", 1),
        ]
    )
    assert index.labels[0] == ("xy",)
    assert index.labels[0] is index.labels[1]


def test_a_checkpoint_of_the_code_before_shared_values_opens_and_takes_uploads() -> None:
    """A catalog pickled by code without the shared values (a checkpoint on disk at an
    upgrade) restores and takes new videos, which share values from then on."""
    import pickle

    index = CatalogIndex()
    index.upsert([video("v1", "c1")])
    old = pickle.loads(pickle.dumps(index))
    del old.__dict__["_interned"]  # what the code before pickled
    restored = pickle.loads(pickle.dumps(old))
    restored.upsert([video("v2", "c1"), video("v3", "c1")])
    assert [v.video_id for v in restored.videos] == ["v1", "v2", "v3"]
    assert restored.videos[1].creator_id is restored.videos[2].creator_id
