"""A video named for a person: creator and caption (or hashtag), never its id."""

from __future__ import annotations

from fyp.catalog.names import CAPTION_CHARS, video_name
from fyp.types import Video


def test_a_video_is_named_by_its_creator_and_caption() -> None:
    v = Video("v01520", "ana", 10_000, caption="5-minute  pasta\n", hashtags=("#food",))
    assert video_name(v) == "@ana's “5-minute pasta”"


def test_a_long_caption_is_cut_at_a_word() -> None:
    caption = "the best street food in the old town of Lisbon, and where to find it"
    name = video_name(Video("v1", "ana", 10_000, caption=caption))
    quoted = name.removeprefix("@ana's “").removesuffix("”")
    assert quoted.endswith("…") and len(quoted) <= CAPTION_CHARS + 1
    assert caption.startswith(quoted[:-1]) and caption[len(quoted) - 1] == " "


def test_without_a_caption_the_hashtag_or_the_creator_names_it() -> None:
    assert video_name(Video("v1", "ana", 10_000, hashtags=("#dance",))) == "@ana's #dance video"
    assert video_name(Video("v1", "ana", 10_000, hashtags=("dance",))) == "@ana's #dance video"
    assert video_name(Video("v1", "ana", 10_000)) == "a video by @ana"
