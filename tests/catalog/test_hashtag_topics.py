"""Topics from the catalog's hashtags: the hashtags uploaders use together are one topic;
one used alongside every topic alike is none."""

from __future__ import annotations

from fyp.catalog.hashtag_topics import TopicsCache, build_topics
from fyp.catalog.index import CatalogIndex
from fyp.types import Video

TOPICS = ("dance", "cooking", "pets", "cars", "books", "art", "music", "golf", "chess", "yoga")


def catalog() -> CatalogIndex:
    """Ten topics of 20 videos: each video carries its topic's own hashtag or one of two
    others of it (#dancetok, #dancetips), often two of them, and one video in three
    #fyp as well."""
    videos = []
    for t, name in enumerate(TOPICS):
        tags = (f"#{name}", f"#{name}tok", f"#{name}tips")
        for i in range(20):
            own = (tags[i % 3], tags[(i + 1) % 3]) if i % 2 else (tags[i % 3],)
            extra = ("#fyp",) if (i + t) % 3 == 0 else ()
            videos.append(Video(f"{name}-{i}", f"{name}-c", 10_000, hashtags=own + extra))
    index = CatalogIndex()
    index.upsert(videos)
    return index


def test_hashtags_used_together_are_one_topic() -> None:
    topics = build_topics(catalog())
    for name in TOPICS:
        assert (
            topics.topic_of[name] == topics.topic_of[f"{name}tok"] == topics.topic_of[f"{name}tips"]
        )
    assert len(set(topics.topic_of.values())) == len(TOPICS)
    dance = topics.topic_of["dance"]
    assert set(topics.members[dance]) == {"dance", "dancetok", "dancetips"}
    assert topics.topics_of_tags(frozenset({"dancetok", "cars", "nothing"})) == {
        dance,
        topics.topic_of["cars"],
    }


def test_a_hashtag_used_with_every_topic_is_none() -> None:
    topics = build_topics(catalog())
    assert "fyp" not in topics.topic_of
    assert "fyp" not in {t for m in topics.members.values() for t in m}


def test_rare_hashtags_belong_to_no_topic_and_the_cache_follows_growth() -> None:
    index = catalog()
    cache = TopicsCache(index)
    assert "new" not in cache.get().topic_of
    index.upsert([Video(f"new-{i}", "n", 10_000, hashtags=("#new",)) for i in range(4)])
    assert "new" not in cache.get().topic_of  # under MIN_VIDEOS, and not rebuilt yet
    index.upsert([Video(f"new-{i}", "n", 10_000, hashtags=("#new",)) for i in range(4, 30)])
    assert "new" in cache.get().topic_of  # the catalog grew by more than a tenth
