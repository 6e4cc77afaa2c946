"""How a reason names a video to a person: by its creator and caption, never its id.

"Because you enjoyed @ana's “5-minute pasta”" says which watch led to a card; "(v01520)"
says nothing to anyone but the database.
"""

from __future__ import annotations

from fyp.types import Video

CAPTION_CHARS = 40  # of the caption quoted, at most (cut at a word, with an ellipsis)


def video_name(video: Video) -> str:
    """``@creator's “caption”`` (the caption cut to :data:`CAPTION_CHARS` at a word);
    ``@creator's #tag video`` without a caption; ``a video by @creator`` with neither."""
    caption = " ".join(video.caption.split())
    if caption:
        return f"@{video.creator_id}'s “{_cut(caption)}”"
    if video.hashtags:
        tag = video.hashtags[0]
        return f"@{video.creator_id}'s {tag if tag.startswith('#') else '#' + tag} video"
    return f"a video by @{video.creator_id}"


def _cut(text: str) -> str:
    if len(text) <= CAPTION_CHARS:
        return text
    head = text[: CAPTION_CHARS + 1]
    cut = head.rfind(" ")
    return (head[:cut] if cut > CAPTION_CHARS // 2 else text[:CAPTION_CHARS]).rstrip(" ,.;:-") + "…"
