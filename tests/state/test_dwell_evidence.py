"""Watch time as evidence from a person's first view: a quick skip counts against the
skipped video's creator, sound and hashtags, a finished view for them, and both fade
within the session (one bad card does not bury a topic)."""

from __future__ import annotations

import itertools
import pickle

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.rank.first_ranker import FEATURES
from fyp.state.updater import FeedState
from fyp.state.users import SESSION_HALF_LIFE_MS, Affinity
from fyp.types import Event, EventType, LoggedEvent, Video

T0 = 1_750_000_000_000
DURATION_MS = 20_000
CREATOR, SOUND, HASHTAGS = (FEATURES.index(k) for k in ("creator", "sound", "hashtags"))
_ids = itertools.count()


def state() -> FeedState:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video(f"{c}{i}", c, DURATION_MS, sound_id=f"snd-{c}", hashtags=(f"#{c}",))
            for c in "ab"
            for i in range(4)
        ]
    )
    return FeedState(load_settings(environ={}), catalog)


def watch(s: FeedState, video: str, ts: int, watch_ms: int) -> None:
    offset = next(_ids)
    event = Event(f"e{offset}", "u", video, EventType.VIEW, ts, watch_ms)
    s.apply([LoggedEvent(s.applied_offset + 1, event)])


def affinity_features(s: FeedState, video: str, now: int) -> tuple[float, float, float]:
    x = s.ranker.features(s.user("u"), [s.catalog.row_of[video]], now)[0, 0]
    return float(x[CREATOR]), float(x[SOUND]), float(x[HASHTAGS])


def test_a_first_quick_skip_counts_against_the_creator_sound_and_hashtags() -> None:
    s = state()
    watch(s, "a0", T0, 1_000)
    # Another video of the same creator, sound and hashtag, a second later: each lift is
    # at least a full log-odds unit down (the long-term rate alone moved it about 0.3).
    for lift in affinity_features(s, "a1", T0 + 1_000):
        assert lift < -1.0
    assert affinity_features(s, "b1", T0 + 1_000) == (0.0, 0.0, 0.0)


def test_a_finished_view_counts_for_them_and_outweighs_an_earlier_skip() -> None:
    s = state()
    watch(s, "a0", T0, 1_000)
    skipped = affinity_features(s, "a2", T0 + 2_000)[2]
    watch(s, "a1", T0 + 1_000, DURATION_MS)
    # One skip, then one finish: the topic is back above where the skip left it.
    assert affinity_features(s, "a2", T0 + 2_000)[2] > skipped + 1.0


def test_a_card_lifted_by_a_finish_outranks_one_lowered_by_a_skip() -> None:
    s = state()
    watch(s, "b0", T0, 1_000)
    watch(s, "a0", T0 + 1_000, DURATION_MS)
    scored = s.ranker.score(s.user("u"), [s.catalog.row_of["a1"], s.catalog.row_of["b1"]], T0)
    assert scored.values[0] > scored.values[1]


def test_the_session_evidence_fades_within_the_session() -> None:
    a = Affinity()
    a.add(False, T0, 7 * 86_400_000, -1.0)
    assert a.session_evidence(T0) == -1.0
    assert a.session_evidence(T0 + SESSION_HALF_LIFE_MS) == -0.5
    assert abs(a.session_evidence(T0 + 10 * SESSION_HALF_LIFE_MS)) < 1e-3
    for _ in range(10):  # a run of skips is capped: the topic comes back within the session
        a.add(False, T0, 7 * 86_400_000, -1.0)
    assert a.session_evidence(T0) == -3.0


def test_the_session_evidence_survives_a_checkpoint() -> None:
    a = Affinity(2.0, 1.0, T0, -1.5)
    assert pickle.loads(pickle.dumps(a)) == a
