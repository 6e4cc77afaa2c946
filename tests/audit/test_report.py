"""The audit report on small hand-made logs whose numbers can be worked out by hand.

The main fixture: four videos ``v0``..``v3`` by creators ``c0``..``c3``; ``alice`` (13-15)
sees ``v0`` four times on day 0 (one creator, one topic: entropy 0), ``bob`` (18+) sees
each video once on day 1 (four creators equally: entropy 2 bits). ``mallory`` is served
just outside the window on both sides and must not count.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fyp.audit.commands import audit_app, parse_time_ms
from fyp.audit.report import (
    AuditReport,
    build_audit,
    gini,
    shannon_entropy_bits,
    shares,
    top_share,
    topics_of,
    write_html,
    write_json,
)
from fyp.types import DAY_MS, FilterCount, Impression, ModerationAction, UserProfile, Video

BASE = int(datetime(2022, 4, 25, tzinfo=UTC).timestamp()) * 1000  # a UTC midnight
SINCE, UNTIL = BASE, BASE + 2 * DAY_MS

VIDEOS = {
    "v0": Video("v0", "c0", 20_000, hashtags=("#Cats",)),
    "v1": Video("v1", "c1", 20_000, hashtags=("dogs",)),
    "v2": Video("v2", "c2", 20_000, hashtags=("#cats", "Dogs")),
    "v3": Video("v3", "c3", 20_000),
}
PROFILES = {"alice": UserProfile("alice", "13-15"), "bob": UserProfile("bob", "18+")}


def imp(user: str, video: str, source: str, ts: int, n: int = 0) -> Impression:
    return Impression(f"{user}-{ts}-{n}", user, video, n, source, 1.0, "for_you", ts)


def logged() -> list[Impression]:
    day1 = BASE + DAY_MS
    return [
        imp("mallory", "v1", "trending", SINCE - 1),  # before the window
        imp("alice", "v0", "followed", SINCE),  # the first ms counts
        imp("alice", "v0", "followed", SINCE + 1_000),
        imp("alice", "v0", "explore", SINCE + 2_000),
        imp("alice", "v0", "fresh", SINCE + 3_000),
        imp("bob", "v0", "trending", day1),
        imp("bob", "v1", "non_personalised", day1 + 1_000),
        imp("bob", "v2", "two_tower", day1 + 2_000),
        imp("bob", "v3", "explore", UNTIL - 1),  # the last ms counts
        imp("mallory", "v1", "trending", UNTIL),  # the end is excluded
    ]


FILTERS = [
    FilterCount(BASE - DAY_MS, "for_you", "eligibility", "state:limited", 100),  # before
    FilterCount(BASE, "for_you", "eligibility", "state:limited", 3),
    FilterCount(BASE, "following", "eligibility", "state:limited", 2),
    FilterCount(BASE + DAY_MS, "for_you", "muted", "creator", 4),
    FilterCount(UNTIL, "for_you", "muted", "creator", 100),  # a day after the window
]

MODERATION = [
    ModerationAction("v3", "removed", None, "", "api", SINCE - 1),  # before the window
    ModerationAction("v0", "pending", None, "3 reports", "reports", SINCE + 1),
    ModerationAction("v0", "pending", None, "5 reports", "reports", SINCE + 2),
    ModerationAction("v1", "pending", None, "3 reports", "reports", SINCE + 3),
    ModerationAction("v1", "limited", ("misinformation",), "checked", "api", SINCE + 4),
    ModerationAction("v2", None, ("graphic", "mature"), "", "api", SINCE + 5),
    ModerationAction("v3", None, (), "labels cleared", "api", SINCE + 6),
]


def build() -> AuditReport:
    return build_audit(
        iter(logged()),
        VIDEOS,
        PROFILES,
        FILTERS,
        MODERATION,
        SINCE,
        UNTIL,
        generated_at_ms=UNTIL + 5,
    )


# ----------------------------------------------------------------------------- measures


def test_entropy_is_zero_for_one_value_and_log2_k_for_k_equal_ones() -> None:
    assert shannon_entropy_bits([5]) == 0.0
    assert shannon_entropy_bits([]) == 0.0
    assert shannon_entropy_bits([1, 1]) == pytest.approx(1.0)
    assert shannon_entropy_bits([3, 3, 3, 3, 0]) == pytest.approx(2.0)


def test_gini_is_zero_for_equal_counts_and_approaches_one_when_concentrated() -> None:
    assert gini([7, 7, 7, 7]) == pytest.approx(0.0, abs=1e-12)
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)  # (n − 1) / n
    assert gini([0] * 999 + [1]) == pytest.approx(0.999)
    assert gini([1, 1, 1, 5]) == pytest.approx(0.375)  # 2·26 / (4·8) − 5/4
    with pytest.raises(ValueError):
        gini([])
    with pytest.raises(ValueError):
        gini([0, 0])


def test_shares_and_top_share() -> None:
    assert shares({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert shares({"a": 0}) == {"a": 0.0}
    assert top_share([1, 5, 2, 2], 2) == pytest.approx(0.7)
    assert top_share([], 1) == 0.0


def test_topics_are_lower_cased_hashtags_without_the_hash() -> None:
    assert topics_of(Video("v", "c", 1, hashtags=("#Cats", "cats", " Dogs"))) == ("cats", "dogs")
    assert topics_of(Video("v", "c", 1)) == ("(none)",)


# ----------------------------------------------------------------------------- the report


def test_totals_count_only_the_window() -> None:
    t = build().totals
    assert (t.impressions, t.users, t.videos, t.creators) == (8, 2, 4, 4)
    assert t.days_covered == 2
    assert t.window_days == 2.0
    assert t.impressions_without_catalog_entry == 0


def test_source_mix_exploration_and_non_personalised_shares() -> None:
    r = build()
    assert r.source_mix.counts["followed"] == 2
    assert r.source_mix.shares["explore"] == pytest.approx(2 / 8)
    assert r.source_mix.shares["repeat"] == 0.0  # every known source is listed
    assert sum(r.source_mix.shares.values()) == pytest.approx(1.0)
    assert r.exploration_share == pytest.approx(3 / 8)  # 2 explore + 1 fresh
    assert r.non_personalised.share == pytest.approx(1 / 8)
    assert r.non_personalised.users_with_any == 1
    assert r.non_personalised.user_share == pytest.approx(0.5)
    day0, day1 = r.days
    assert day0.day == "2022-04-25"
    assert day0.exploration_share == pytest.approx(0.5)
    assert day1.source_shares["non_personalised"] == pytest.approx(0.25)


def test_concentration_one_creator_is_zero_bits_four_equal_creators_two() -> None:
    r = build()
    alice = r.cohorts["age"]["13-15"].concentration
    bob = r.cohorts["age"]["18+"].concentration
    assert alice.creator_entropy_bits == 0.0
    assert alice.topic_entropy_bits == 0.0
    assert bob.creator_entropy_bits == pytest.approx(2.0)
    assert bob.creator_gini == pytest.approx(0.0, abs=1e-12)  # c0..c3 once each
    # bob's topics: v0 cats, v1 dogs, v2 half cats half dogs, v3 (none) → 1.5, 1.5, 1.
    expected = -2 * 0.375 * math.log2(0.375) - 0.25 * math.log2(0.25)
    assert bob.topic_entropy_bits == pytest.approx(expected)
    overall = r.concentration
    assert overall.creator_entropy_bits == pytest.approx(1.0)  # mean of 0 and 2
    assert overall.creator_gini == pytest.approx(0.375)  # c0: 5, c1..c3: 1 each
    assert overall.topic_gini == pytest.approx(gini([5.5, 1.5, 1.0]))
    day0, day1 = r.days
    assert day0.concentration.creator_entropy_bits == 0.0
    assert day1.concentration.creator_entropy_bits == pytest.approx(2.0)
    assert r.cohorts["age"]["unknown"].users == 0
    assert r.cohorts["age"]["unknown"].concentration.creator_gini is None
    assert r.cohorts["age"]["16-17"].exploration_share is None
    assert r.cohorts["age"]["13-15"].exploration_share == pytest.approx(0.5)


def test_top_creators() -> None:
    tc = build().top_creators
    assert tc.creators == 4
    assert tc.top1_share == pytest.approx(5 / 8)
    assert tc.top10_share == pytest.approx(1.0)
    assert tc.top1pct_creators == 1
    assert tc.top1pct_share == pytest.approx(5 / 8)
    assert [(c.creator_id, c.impressions) for c in tc.top] == [
        ("c0", 5),
        ("c1", 1),
        ("c2", 1),
        ("c3", 1),
    ]


def test_filter_counts_are_summed_for_the_days_of_the_window() -> None:
    f = build().filters
    assert f.total == 9
    assert [(r.filter, r.rule, r.count) for r in f.by_rule] == [
        ("eligibility", "state:limited", 5),
        ("muted", "creator", 4),
    ]
    assert f.by_surface == {"for_you": 7, "following": 2}
    assert [(d.day, d.total) for d in f.by_day] == [("2022-04-25", 5), ("2022-04-26", 4)]


def test_moderation_counts() -> None:
    m = build().moderation
    assert (m.actions, m.videos) == (6, 4)
    assert m.by_state == {"pending": 3, "(unchanged)": 2, "limited": 1}
    assert m.by_label == {"misinformation": 1, "graphic": 1, "mature": 1, "(cleared)": 1}
    assert m.by_actor == {"reports": 3, "api": 3}
    assert m.by_actor_state["reports"] == {"pending": 3}
    assert (m.auto_pending_actions, m.auto_pending_videos) == (3, 2)


def test_activity_cohorts_split_at_fifty_impressions() -> None:
    log = [imp("u49", "v0", "followed", BASE + i, i) for i in range(49)]
    log += [imp("u50", "v1", "explore", BASE + i, i) for i in range(50)]
    r = build_audit(log, VIDEOS, {}, [], [], BASE, BASE + DAY_MS)
    new, established = r.cohorts["activity"]["new"], r.cohorts["activity"]["established"]
    assert (new.users, new.impressions, new.exploration_share) == (1, 49, 0.0)
    assert (established.users, established.impressions, established.exploration_share) == (
        1,
        50,
        1.0,
    )
    assert r.cohorts["age"]["unknown"].users == 2  # no profiles: unknown age


def test_days_without_impressions_are_listed_and_unknown_videos_counted() -> None:
    log = [imp("a", "v0", "followed", BASE), imp("a", "ghost", "trending", BASE + 2 * DAY_MS)]
    r = build_audit(log, VIDEOS, {}, [], [], BASE, BASE + 3 * DAY_MS)
    assert [d.impressions for d in r.days] == [1, 0, 1]
    assert r.days[1].exploration_share is None
    assert r.days[2].concentration.creator_entropy_bits is None  # its only video is unknown
    assert r.totals.impressions_without_catalog_entry == 1
    assert r.totals.creators == 1


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty window"):
        build_audit([], VIDEOS, {}, [], [], BASE, BASE)


# ----------------------------------------------------------------------------- output


def test_html_is_self_contained_with_embedded_plots(tmp_path: Path) -> None:
    path = tmp_path / "audit.html"
    write_html(build(), path)
    page = path.read_text()
    assert page.count("<img") >= 4
    assert page.count("data:image/png;base64,") == page.count("<img")
    assert "http://" not in page and "https://" not in page
    assert "How to read this" in page
    assert "2022-04-25T00:00:00+00:00" in page


def test_html_of_a_window_with_nothing_in_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.html"
    write_html(build_audit([], VIDEOS, {}, [], [], BASE, BASE + DAY_MS), path)
    assert "<img" not in path.read_text()


def test_json_round_trips(tmp_path: Path) -> None:
    report = build()
    path = tmp_path / "audit.json"
    write_json(report, path)
    with path.open() as f:
        loaded = json.load(f)
    assert loaded == report.to_dict()
    assert list(loaded) == [
        "period",
        "totals",
        "source_mix",
        "exploration_share",
        "non_personalised",
        "concentration",
        "cohorts",
        "days",
        "top_creators",
        "filters",
        "moderation",
    ]
    assert loaded["period"]["since"] == "2022-04-25T00:00:00+00:00"
    assert loaded["cohorts"]["activity"]["new"]["users"] == 2


# ----------------------------------------------------------------------------- command


def cli() -> typer.Typer:
    """``fyp`` as cli.py registers the audit commands (``fyp audit report``)."""
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    return app


def test_parse_time_ms() -> None:
    assert parse_time_ms("2022-04-25", "--since") == BASE
    assert parse_time_ms("1650844800123", "--since") == BASE + 123
    with pytest.raises(typer.BadParameter, match="YYYY-MM-DD"):
        parse_time_ms("25/04/2022", "--since")


def test_command_refuses_a_missing_data_dir_and_a_bad_date(tmp_path: Path) -> None:
    out = tmp_path / "a.html"
    result = CliRunner().invoke(
        cli(), ["audit", "report", "--data-dir", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "no data dir" in result.output
    result = CliRunner().invoke(
        cli(), ["audit", "report", "--data-dir", str(tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "impressions.db" in result.output
    result = CliRunner().invoke(
        cli(),
        ["audit", "report", "--data-dir", str(tmp_path), "--out", str(out), "--since", "nope"],
    )
    assert result.exit_code == 2
    assert "not a date" in result.output
    assert not out.exists()


def test_command_reads_the_stores_and_writes_both_files(tmp_path: Path) -> None:
    from fyp.catalog.moderation import SqliteModerationStore
    from fyp.catalog.store import SqliteCatalogStore
    from fyp.events.impressions import SqliteImpressionLog
    from fyp.users.store import SqliteUserStore

    data = tmp_path / "data"
    log = SqliteImpressionLog(data / "impressions.db")
    log.record(logged())
    log.close()
    catalog = SqliteCatalogStore(data / "catalog.db")
    catalog.upsert(list(VIDEOS.values()))
    catalog.close()
    users = SqliteUserStore(data / "users.db")
    for profile in PROFILES.values():
        users.put_profile(profile)
    users.close()
    moderation = SqliteModerationStore(data / "moderation.db")
    moderation.add(MODERATION)
    moderation.close()

    html_out, json_out = tmp_path / "out" / "audit.html", tmp_path / "out" / "audit.json"
    result = CliRunner().invoke(
        cli(),
        [
            "audit",
            "report",
            "--data-dir",
            str(data),
            "--since",
            "2022-04-25",
            "--until",
            str(UNTIL),
            "--out",
            str(html_out),
            "--json",
            str(json_out),
        ],
    )
    assert result.exit_code == 0, result.output
    # rich wraps long paths at the console's width: compare with the line breaks taken out
    unwrapped = result.output.replace("\n", "")
    assert str(html_out) in unwrapped and str(json_out) in unwrapped
    written = json.loads(json_out.read_text())
    assert written["totals"]["impressions"] == 8
    assert written["cohorts"]["age"]["13-15"]["users"] == 1
    assert written["moderation"]["auto_pending_videos"] == 2
    assert "data:image/png;base64," in html_out.read_text()
