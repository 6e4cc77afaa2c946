"""The catalog in memory, as dense rows: what serving and learning index by.

Every video gets a row the first time it is upserted and keeps it; per-video arrays
elsewhere (statistics, trending scores) are indexed by the same row. Creators, sounds
and hashtags get integer codes too, so per-request work over hundreds of candidates is
array lookups rather than Python loops.

The eligibility policy (:class:`fyp.safety.policy.PolicyConfig`) is compiled here into
per-row arrays — eligible per surface, demotion factor, label caps, minimum viewer age,
sensitive topic, creator-strike cap — recomputed for a row whenever its video or its
moderation changes, so a label takes effect on the very next request.

What the rows hold is held once per distinct value: a video's creator, sound, language,
hashtags (each and the tuple), regions, labels and attributes, its text's tag set, its
topic keys and sensitive topics are interned (:meth:`CatalogIndex._intern`), so the
many videos that share a creator or a tag set share one object rather than each keeping
a copy built by the store or the request that brought it. The catalog is held by both
processes (the server and the learner), so a per-video copy costs twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fyp.catalog.codes import Codes
from fyp.safety.labels import ModerationState, sensitive_topic
from fyp.safety.policy import PolicyConfig
from fyp.safety.text import VideoText
from fyp.state.attribute_codes import NO_VALUE, AttributeCodes, AttributeVocabulary
from fyp.types import ModerationAction, Video

_NO_TIME = np.iinfo(np.int64).min
_T = TypeVar("_T")
# Hashtags per video that ranking features look at (the first ones given).
TAGS_PER_VIDEO = 8


class CatalogIndex:
    def __init__(
        self, excluded_labels: Iterable[str] = (), policy: PolicyConfig | None = None
    ) -> None:
        self.excluded_labels = frozenset(excluded_labels)
        self.policy = PolicyConfig() if policy is None else policy
        self.videos: list[Video] = []
        self.row_of: dict[str, int] = {}
        self.rows_by_creator: dict[str, list[int]] = {}
        # folded hashtag (no '#') -> rows carrying it, in catalog order (the topics source
        # reads from a moving start, so no order is needed, and none is kept up)
        self.rows_by_topic: dict[str, list[int]] = {}
        self.creators, self.sounds, self.hashtags = Codes(), Codes(), Codes()
        self._capacity = 0
        self.version = 0  # bumped by every upsert, so caches of derived data can check it
        self.created_at = np.zeros(0, dtype=np.int64)
        self.duration_ms = np.zeros(0, dtype=np.int64)
        # False where a label excludes the video from every feed (checked again per request).
        self.label_ok = np.zeros(0, dtype=bool)
        self.region_free = np.zeros(0, dtype=bool)  # True: no region restriction
        self.creator_code = np.zeros(0, dtype=np.int32)
        self.sound_code = np.zeros(0, dtype=np.int32)  # -1: no sound
        self.tag_codes = np.zeros((0, TAGS_PER_VIDEO), dtype=np.int32)  # -1 padded
        # The videos' attributes, interned; a column per attribute a ranker asked for
        # (attribute_column), kept up from then on: not one per name any client sent.
        self.attributes = AttributeVocabulary()
        self.attribute_codes: list[AttributeCodes] = []
        self._attribute_columns: dict[str, npt.NDArray[np.int32]] = {}
        # -- moderation and the policy, per row --------------------------------------
        # video_id -> (state, labels or None: the uploaded ones): the moderation overlay,
        # kept by id so a video moderated before (re)upload gets it too
        self.moderation: dict[str, tuple[ModerationState | None, tuple[str, ...] | None]] = {}
        self.label_ts: dict[str, int] = {}  # video_id -> when moderation last set labels
        self.labels: list[tuple[str, ...]] = []  # effective labels (moderation wins)
        self.states: list[ModerationState] = []
        self.text: list[VideoText] = []
        self.topic_keys: list[frozenset[str]] = []  # hashtags (folded) + sensitive topics
        surfaces = self.policy.surfaces
        self.eligible = {s: np.zeros(0, dtype=bool) for s in surfaces}
        self.demote = {s: np.ones(0, dtype=np.float64) for s in surfaces}
        self.capped = {s: np.zeros(0, dtype=bool) for s in surfaces}  # carries a capped label
        # How many rows are capped / sensitive: a request skips the sequence rules at 0.
        self.capped_count = dict.fromkeys(surfaces, 0)
        self.sensitive_count = 0
        self.min_age = np.zeros(0, dtype=np.int16)
        self.sensitive_sets: list[frozenset[int]] = []  # codes of its sensitive topics
        self.sensitive_topics = Codes()
        # Creator strikes: rows of struck creators' new uploads (distribution capped)
        self.strike_capped = np.zeros(0, dtype=bool)
        self.struck_since: dict[str, int] = {}  # creator -> Unix ms of the strike
        # Each distinct value the rows share (strings, tuples and frozensets of them,
        # attribute codes), keyed by itself: see the module's doc. Values only ever join
        # it: there are as many as distinct creators, tag sets, labels... ever seen.
        self._interned: dict[object, object] = {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "_interned" not in state:  # a checkpoint of the code before: its rows unshared,
            self._interned = {}  # what comes next shared

    def __len__(self) -> int:
        return len(self.videos)

    def get(self, video_id: str) -> Video | None:
        row = self.row_of.get(video_id)
        return None if row is None else self.videos[row]

    def upsert(self, videos: Sequence[Video]) -> list[int]:
        """Add or replace videos; returns their rows. A video's moderation (state and
        labels set by :meth:`moderate`) survives its re-upload."""
        needed = len(self.videos) + len(videos)
        if needed > self._capacity:
            self._grow(max(needed, 2 * self._capacity, 1024))
        self.version += 1
        rows: list[int] = []
        strike_label = self.policy.strikes.label
        strikes_to_check: set[str] = set()  # creators whose strike count may have moved
        for v in videos:
            v = self._shared(v)
            row = self.row_of.get(v.video_id)
            if row is None:
                row = len(self.videos)
                self.videos.append(v)
                self.row_of[v.video_id] = row
                self.labels.append(())
                self.states.append(self.policy.initial_state)
                self.text.append(VideoText("", ()))
                self.sensitive_sets.append(frozenset())
                self.topic_keys.append(frozenset())
                self.attribute_codes.append(())
            else:
                old = self.videos[row]
                if strike_label in self.labels[row]:
                    strikes_to_check.add(old.creator_id)
                if old.creator_id != v.creator_id:
                    self.rows_by_creator[old.creator_id].remove(row)
                self.videos[row] = v
            row_list = self.rows_by_creator.setdefault(v.creator_id, [])
            if row not in row_list:
                row_list.append(row)
            self.created_at[row] = _NO_TIME if v.created_at is None else v.created_at
            self.duration_ms[row] = v.duration_ms
            self.region_free[row] = not v.regions
            self.creator_code[row] = self.creators.code(v.creator_id)
            self.sound_code[row] = -1 if v.sound_id is None else self.sounds.code(v.sound_id)
            tags = [self.hashtags.code(h) for h in v.hashtags[:TAGS_PER_VIDEO]]
            self.tag_codes[row] = -1
            self.tag_codes[row, : len(tags)] = tags
            codes = self._intern(self.attributes.encode(v.attributes))
            self.attribute_codes[row] = codes
            for name, column in self._attribute_columns.items():
                column[row] = self.attributes.value_code(codes, name)
            # Only the topics that changed move: a re-upsert (every video, when a
            # checkpoint's catalog catches up) must not rescan each topic's list per row.
            was, text = self.text[row].tags, VideoText(v.caption, v.hashtags)
            text.tags = self._intern(text.tags)
            self.text[row] = text
            for topic in was - text.tags:
                self.rows_by_topic[topic].remove(row)
            for topic in text.tags - was:
                self.rows_by_topic.setdefault(topic, []).append(row)
            self._derive(row)
            if strike_label in self.labels[row] or v.creator_id in self.struck_since:
                strikes_to_check.add(v.creator_id)
            rows.append(row)
        for creator in {v.creator_id for v in videos}:
            # Newest first, so "followed creators" reads the head of the list.
            self.rows_by_creator[creator].sort(key=lambda r: -int(self.created_at[r]))
        for creator in strikes_to_check:
            self._update_strikes(creator)
        return rows

    def attribute_column(self, name: str) -> npt.NDArray[np.int32]:
        """Per row, the code of the video's value of attribute ``name``
        (:data:`~fyp.state.attribute_codes.NO_VALUE` where it has none): index it by
        candidate rows. Kept up from the first call on; the array is replaced when the
        catalog grows, so read it anew per request rather than keeping it."""
        column = self._attribute_columns.get(name)
        if column is None:
            column = np.full(self._capacity, NO_VALUE, dtype=np.int32)
            for row, codes in enumerate(self.attribute_codes):
                column[row] = self.attributes.value_code(codes, name)
            self._attribute_columns[name] = column
        return column

    def moderate(self, actions: Sequence[ModerationAction]) -> list[int]:
        """Apply moderation actions (in order); returns the rows they changed (a video
        not in the catalog yet gets its moderation when it arrives)."""
        changed: list[int] = []
        creators: set[str] = set()
        for a in actions:
            state, labels = self.moderation.get(a.video_id, (None, None))
            if a.state is not None:
                state = ModerationState(a.state)
            if a.labels is not None:
                labels = self._intern(tuple(map(self._intern, a.labels)))
                self.label_ts[a.video_id] = a.ts
            self.moderation[a.video_id] = (state, labels)
            row = self.row_of.get(a.video_id)
            if row is not None:
                self._derive(row)
                changed.append(row)
                creators.add(self.videos[row].creator_id)
        if changed:
            self.version += 1
        for creator in creators:
            self._update_strikes(creator)
        return changed

    def update_from(self, other: CatalogIndex) -> None:
        """Catch up with ``other``'s videos and moderation: a restored checkpoint's index
        and the one just read from the stores. Rows of videos known here are kept."""
        self.moderation = dict(other.moderation)
        self.label_ts = dict(other.label_ts)
        self.upsert(other.videos)

    def _derive(self, row: int) -> None:
        """Recompute the row's moderation-dependent fields from its video and overlay."""
        v = self.videos[row]
        state, labels = self.moderation.get(v.video_id, (None, None))
        state = self.policy.initial_state if state is None else state
        labels = v.labels if labels is None else labels
        self.labels[row] = labels
        self.states[row] = state
        have = set(labels)
        ok = not (self.excluded_labels & have) and state is not ModerationState.REMOVED
        self.label_ok[row] = ok
        for name, sp in self.policy.surfaces.items():
            was_capped = bool(self.capped[name][row])
            self.eligible[name][row] = (
                ok and state not in sp.exclude_states and not have.intersection(sp.exclude_labels)
            )
            factor = 1.0
            for label in have.intersection(sp.demote_labels):
                factor *= sp.demote_labels[label]
            self.demote[name][row] = factor
            self.capped[name][row] = bool(have.intersection(sp.cap_labels))
            self.capped_count[name] += int(self.capped[name][row]) - int(was_capped)
        ages = self.policy.min_age
        self.min_age[row] = max((ages[x] for x in have if x in ages), default=0)
        topics = sorted(t for t in map(sensitive_topic, labels) if t is not None)
        self.sensitive_count += int(bool(topics)) - int(bool(self.sensitive_sets[row]))
        intern = self._intern
        self.sensitive_sets[row] = intern(frozenset(self.sensitive_topics.code(t) for t in topics))
        tags = self.text[row].tags
        self.topic_keys[row] = intern(tags | frozenset(topics)) if topics else tags

    def _intern(self, value: _T) -> _T:
        """The one object kept for values equal to ``value`` (``value`` if it is the first):
        only for immutable values of one type per equality (strings, tuples and
        frozensets of strings or of ints)."""
        return self._interned.setdefault(value, value)  # type: ignore[return-value]

    def _shared(self, v: Video) -> Video:
        """``v`` with its fields that videos share interned: equal to ``v``, the same
        object if they already were."""
        intern = self._intern
        creator = intern(v.creator_id)
        sound = None if v.sound_id is None else intern(v.sound_id)
        hashtags = v.hashtags if not v.hashtags else intern(tuple(map(intern, v.hashtags)))
        language = None if v.language is None else intern(v.language)
        regions = v.regions if not v.regions else intern(tuple(map(intern, v.regions)))
        labels = v.labels if not v.labels else intern(tuple(map(intern, v.labels)))
        attributes = v.attributes if not v.attributes else intern(v.attributes)
        if (
            creator is v.creator_id
            and sound is v.sound_id
            and hashtags is v.hashtags
            and language is v.language
            and regions is v.regions
            and labels is v.labels
            and attributes is v.attributes
        ):
            return v
        return Video(
            v.video_id,
            creator,
            v.duration_ms,
            sound,
            hashtags,
            v.caption,
            language,
            regions,
            v.created_at,
            labels,
            attributes,
        )

    def _update_strikes(self, creator: str) -> None:
        """Whether ``creator`` is struck (the strike label on enough distinct videos),
        since when, and which of their videos are new uploads since then."""
        strikes = self.policy.strikes
        rows = self.rows_by_creator.get(creator, [])
        times = sorted(
            self.label_ts.get(self.videos[r].video_id, int(max(self.created_at[r], 0)))
            for r in rows
            if strikes.label in self.labels[r]
        )
        since = times[strikes.threshold - 1] if len(times) >= strikes.threshold else None
        if since is None:
            self.struck_since.pop(creator, None)
        else:
            self.struck_since[creator] = since
        for r in rows:
            # No upload time: counted as new (the cautious side).
            new = self.created_at[r] == _NO_TIME or int(self.created_at[r]) >= (since or 0)
            self.strike_capped[r] = (
                since is not None and new and strikes.label not in self.labels[r]
            )

    def _grow(self, capacity: int) -> None:
        def grow(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            out = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.created_at = grow(self.created_at, _NO_TIME)  # type: ignore[assignment]
        self.duration_ms = grow(self.duration_ms, 0)  # type: ignore[assignment]
        self.label_ok = grow(self.label_ok, False)
        self.region_free = grow(self.region_free, False)
        self.creator_code = grow(self.creator_code, -1)  # type: ignore[assignment]
        self.sound_code = grow(self.sound_code, -1)  # type: ignore[assignment]
        self.tag_codes = grow(self.tag_codes, -1)  # type: ignore[assignment]
        self._attribute_columns = {
            name: grow(a, NO_VALUE)  # type: ignore[misc]
            for name, a in self._attribute_columns.items()
        }
        self.eligible = {s: grow(a, False) for s, a in self.eligible.items()}
        self.demote = {s: grow(a, 1.0) for s, a in self.demote.items()}  # type: ignore[misc]
        self.capped = {s: grow(a, False) for s, a in self.capped.items()}
        self.min_age = grow(self.min_age, 0)  # type: ignore[assignment]
        self.strike_capped = grow(self.strike_capped, False)
        self._capacity = capacity

    def shown_in(self, row: int, region: str) -> bool:
        """Whether the video may be shown in ``region``."""
        v = self.videos[row]
        return not v.regions or region in v.regions
