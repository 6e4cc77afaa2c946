"""Watch time as evidence from a person's first view: a quick skip counts against the
skipped video's creator, sound and hashtags, a finished view for them, against the
person's own finish rate this session, and both fade within the session (one bad card
does not bury a topic)."""

from __future__ import annotations

import itertools
import pickle

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.privacy.export import build_export
from fyp.rank.first_ranker import FEATURES
from fyp.state.updater import LogState
from fyp.state.users import SESSION_CAP, SESSION_HALF_LIFE_MS, Affinity, session_lift
from fyp.types import Event, EventType, LoggedEvent, Video
from fyp.users.controls import NO_CONTROLS

T0 = 1_750_000_000_000
DURATION_MS = 20_000
CREATOR, SOUND, HASHTAGS = (FEATURES.index(k) for k in ("creator", "sound", "hashtags"))
_ids = itertools.count()


def state() -> LogState:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video(f"{c}{i}", c, DURATION_MS, sound_id=f"snd-{c}", hashtags=(f"#{c}",))
            for c in "ab"
            for i in range(4)
        ]
    )
    return LogState(load_settings(environ={}), catalog)


def watch(s: LogState, video: str, ts: int, watch_ms: int) -> None:
    offset = next(_ids)
    event = Event(f"e{offset}", "u", video, EventType.VIEW, ts, watch_ms)
    s.apply([LoggedEvent(s.applied_offset + 1, event)])


def affinity_features(s: LogState, video: str, now: int) -> tuple[float, float, float]:
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


def test_the_session_evidence_fades_within_the_session_and_is_capped() -> None:
    assert session_lift(0.0, 1.0, 1.0, 0.5) < -0.5
    assert abs(session_lift(0.0, 1.0, 0.5**10, 0.5)) < 0.01  # ten half-lives on
    assert session_lift(0.0, 100.0, 1.0, 0.5) == -SESSION_CAP  # lowered, not buried
    assert session_lift(100.0, 100.0, 1.0, 0.5) == SESSION_CAP
    assert session_lift(0.0, 0.0, 1.0, 0.5) == 0.0


def test_a_hashtag_on_everything_tells_nothing_the_topic_tells_a_lot() -> None:
    catalog = CatalogIndex()
    catalog.upsert(
        [Video(f"x{i}", f"c{i}", DURATION_MS, hashtags=(f"#x{i}", "#fyp")) for i in range(6)]
        + [Video(f"d{i}", "dancer", DURATION_MS, hashtags=("#dance", "#fyp")) for i in range(2)]
    )
    s = LogState(load_settings(environ={}), catalog)
    for i in range(5):  # five quick skips, one finish: #fyp was on all six
        watch(s, f"x{i}", T0 + i * 2_000, 1_000)
    watch(s, "d0", T0 + 10_000, DURATION_MS)
    user, now = s.user("u"), T0 + 12_000
    rate = user.session_rate(now)

    def lift(tag: str) -> float:
        a = user.hashtags[tag]
        fade = 0.5 ** ((now - a.ts) / SESSION_HALF_LIFE_MS)
        return session_lift(a.session_finishes, a.session_views, fade, rate)

    assert abs(lift("#fyp")) < 0.3
    assert lift("#dance") > 1.0
    assert lift("#x0") < -0.5


def test_the_session_evidence_survives_a_checkpoint() -> None:
    a = Affinity(2.0, 1.0, T0, 1.0, 2.0)
    assert pickle.loads(pickle.dumps(a)) == a


def test_the_export_shows_the_session_evidence() -> None:
    s = state()
    watch(s, "a0", T0, 1_000)
    watch(s, "b0", T0 + 1_000, DURATION_MS)
    doc = build_export("u", None, NO_CONTROLS, [], [], s.user("u"), s.catalog, {}, T0 + 1_000)
    tags = {t["id"]: t for t in doc["learned"]["top_hashtags"]}
    # A second's fading of a skip: still a view, no finish.
    assert tags["#a"]["session_views"] == pytest.approx(1.0, abs=0.01)
    assert tags["#a"]["session_finishes"] == 0.0
    assert tags["#b"]["session_finishes"] == 1.0
    assert doc["learned"]["session_finish_rate"] == 0.5
