"""The algorithm audit report: what the feed served over a period, for an outside reviewer.

:func:`build_audit` is pure computation over what the stores hold (impressions, the
catalog, user profiles, filter counts, moderation history); :func:`write_html` and
:func:`write_json` are the only I/O. The HTML page is self-contained (plots are PNGs
embedded as data URLs), so it can be mailed or archived with the JSON it was made from.

Definitions used throughout (the page's "how to read this" repeats them):

* An impression counts when ``since_ms <= ts < until_ms``; days are UTC days.
* **Topics** of a video are its hashtags, lower-cased, without a leading ``#``; a video
  without hashtags has the one topic ``(none)``. An impression of a video with k topics
  gives 1/k to each, so every impression weighs 1 in topic measures as in creator ones.
* **Entropy** is the Shannon entropy, in bits, of one user's impressions over creators
  (or topics), averaged over the users of a group: 0 when a user saw one creator only,
  log2(k) when they saw k creators equally often.
* **Gini** is the Gini coefficient of the group's impressions across the creators (or
  topics) it was served: 0 when each got as many, near 1 when one got nearly everything.
  Only creators served at least once count.
* Impressions of videos missing from the catalog count in totals, sources and cohorts,
  but not in creator or topic measures (their creator and topics are unknown).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fyp.eval.metrics import gini
from fyp.report_page import BASE_CSS, png_data_uri
from fyp.types import (
    DAY_MS,
    FilterCount,
    Impression,
    ModerationAction,
    UserProfile,
    Video,
    now_ms,
)

__all__ = [
    "AGE_BANDS",
    "ESTABLISHED_MIN_IMPRESSIONS",
    "EXPLORATION_SOURCES",
    "KNOWN_SOURCES",
    "NON_PERSONALISED_SOURCE",
    "NO_TOPIC",
    "AuditReport",
    "CohortStats",
    "Concentration",
    "CreatorShare",
    "DayStats",
    "FilterDay",
    "FilterSummary",
    "ModerationSummary",
    "NonPersonalised",
    "Period",
    "RuleCount",
    "SourceMix",
    "TopCreators",
    "Totals",
    "activity_cohort",
    "age_cohort",
    "build_audit",
    "gini",
    "shannon_entropy_bits",
    "shares",
    "top_share",
    "topics_of",
    "write_html",
    "write_json",
]

# The candidate sources, in the order the report lists them; others seen come after.
KNOWN_SOURCES: tuple[str, ...] = (
    "followed",
    "co_engagement",
    "topics",
    "tastes",
    "trending",
    "fresh",
    "explore",
    "discover",
    "repeat",
    "two_tower",
    "non_personalised",
)
EXPLORATION_SOURCES: frozenset[str] = frozenset({"fresh", "explore", "discover"})
NON_PERSONALISED_SOURCE = "non_personalised"
AGE_BANDS: tuple[str, ...] = ("13-15", "16-17", "18+", "unknown")
ACTIVITY_COHORTS: tuple[str, ...] = ("new", "established")
ESTABLISHED_MIN_IMPRESSIONS = 50  # impressions in the window from which a user is established
NO_TOPIC = "(none)"
TOP_CREATORS_LISTED = 10


# ----------------------------------------------------------------------------- measures


def shannon_entropy_bits(counts: Iterable[float]) -> float:
    """Shannon entropy, in bits, of the distribution proportional to ``counts``:
    ``H = −Σ p_i log2 p_i`` with ``p_i = c_i / Σ c``. Zeros are ignored. 0 for one
    non-zero count (or none); log2(k) for k equal counts."""
    values = [float(c) for c in counts if c > 0]
    total = sum(values)
    if total <= 0:
        return 0.0
    h = -sum(c / total * math.log2(c / total) for c in values)
    return max(0.0, h)  # one count gives -0.0; rounding can give a hair below zero


def shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Each key's fraction of the total (0 for every key when the total is 0)."""
    total = sum(counts.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in counts.items()}


def top_share(counts: Iterable[float], k: int) -> float:
    """The fraction of the total held by the ``k`` largest counts (0 when the total is 0)."""
    values = sorted((float(c) for c in counts), reverse=True)
    total = sum(values)
    return sum(values[:k]) / total if total > 0 else 0.0


def topics_of(video: Video) -> tuple[str, ...]:
    """The video's topics: its distinct hashtags, lower-cased and without a leading '#',
    in order; ``("(none)",)`` for a video without any."""
    topics: dict[str, None] = {}
    for tag in video.hashtags:
        topic = tag.strip().lstrip("#").strip().lower()
        if topic:
            topics[topic] = None
    return tuple(topics) or (NO_TOPIC,)


def age_cohort(profile: UserProfile | None) -> str:
    """``13-15``, ``16-17``, ``18+``, or ``unknown`` (no profile, no or another age band)."""
    if profile is None or profile.age_band not in AGE_BANDS[:-1]:
        return "unknown"
    return str(profile.age_band)


def activity_cohort(impressions_in_window: int) -> str:
    """``new`` below :data:`ESTABLISHED_MIN_IMPRESSIONS` impressions in the window,
    ``established`` from there."""
    return "established" if impressions_in_window >= ESTABLISHED_MIN_IMPRESSIONS else "new"


def _day_start(ts_ms: int) -> int:
    return ts_ms // DAY_MS * DAY_MS


def _iso_day(day_ms: int) -> str:
    return datetime.fromtimestamp(day_ms / 1000, UTC).date().isoformat()


def _iso_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def _ordered_sources(seen: Iterable[str]) -> list[str]:
    extra = sorted(set(seen) - set(KNOWN_SOURCES))
    return [*KNOWN_SOURCES, *extra]


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Period:
    """The window ``[since_ms, until_ms)`` in Unix ms, and when the report was made."""

    since_ms: int
    until_ms: int
    since: str  # ISO 8601, UTC
    until: str
    generated_at_ms: int
    generated_at: str


@dataclass(frozen=True, slots=True)
class Totals:
    impressions: int
    users: int
    videos: int
    creators: int  # distinct creators of the catalogued videos served
    days_covered: int  # UTC days with at least one impression
    window_days: float  # (until_ms − since_ms) in days
    impressions_without_catalog_entry: int


@dataclass(frozen=True, slots=True)
class SourceMix:
    counts: dict[str, int]
    shares: dict[str, float]


@dataclass(frozen=True, slots=True)
class NonPersonalised:
    share: float  # of impressions
    users_with_any: int
    user_share: float  # of users


@dataclass(frozen=True, slots=True)
class Concentration:
    """Topic and creator concentration of a group of users. None where undefined (no
    catalogued impression)."""

    users: int  # users with at least one catalogued impression
    creator_entropy_bits: float | None  # mean over users
    topic_entropy_bits: float | None  # mean over users
    creator_gini: float | None  # across creators, the group's impressions pooled
    topic_gini: float | None


@dataclass(frozen=True, slots=True)
class CohortStats:
    users: int
    impressions: int
    exploration_share: float | None  # None: no impression
    non_personalised_share: float | None
    concentration: Concentration


@dataclass(frozen=True, slots=True)
class DayStats:
    day: str  # YYYY-MM-DD, UTC
    day_ms: int
    impressions: int
    users: int
    source_counts: dict[str, int]
    source_shares: dict[str, float]
    exploration_share: float | None  # None: no impression that day
    non_personalised_share: float | None
    concentration: Concentration


@dataclass(frozen=True, slots=True)
class CreatorShare:
    creator_id: str
    impressions: int
    share: float


@dataclass(frozen=True, slots=True)
class TopCreators:
    creators: int
    top1_share: float
    top10_share: float
    top1pct_share: float
    top1pct_creators: int  # how many creators the top 1% is (at least one)
    top: list[CreatorShare]


@dataclass(frozen=True, slots=True)
class RuleCount:
    filter: str
    rule: str
    count: int


@dataclass(frozen=True, slots=True)
class FilterDay:
    day: str
    day_ms: int
    total: int
    by_rule: dict[str, int]  # "filter/rule" -> candidates removed


@dataclass(frozen=True, slots=True)
class FilterSummary:
    """Candidates the safety and feed filters removed, from the days starting in the window."""

    total: int
    by_rule: list[RuleCount]  # most removed first
    by_surface: dict[str, int]
    by_day: list[FilterDay]


@dataclass(frozen=True, slots=True)
class ModerationSummary:
    """Moderation actions in the window. ``by_state``: the state each action set
    (``(unchanged)`` where it left the state); ``by_label``: how many actions set a label
    set containing each label (``(cleared)``: set an empty one)."""

    actions: int
    videos: int
    by_state: dict[str, int]
    by_label: dict[str, int]
    by_actor: dict[str, int]
    by_actor_state: dict[str, dict[str, int]]
    auto_pending_actions: int  # actor "reports", state "pending"
    auto_pending_videos: int  # distinct videos put in pending by reports


@dataclass(frozen=True, slots=True)
class AuditReport:
    period: Period
    totals: Totals
    source_mix: SourceMix
    exploration_share: float
    non_personalised: NonPersonalised
    concentration: Concentration  # all users
    cohorts: dict[str, dict[str, CohortStats]]  # "age" / "activity" -> cohort -> stats
    days: list[DayStats]  # every UTC day from the first impression's to the last's
    top_creators: TopCreators
    filters: FilterSummary
    moderation: ModerationSummary

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data (dicts, lists, str, int, float, None)."""
        return asdict(self)


@dataclass(slots=True)
class _Exposure:
    """What one group of impressions showed: sources, and creators and topics of the
    catalogued videos (topics weighted 1/k for a video with k topics)."""

    impressions: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    creators: Counter[str] = field(default_factory=Counter)
    topics: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, source: str, video: Video | None, topics: tuple[str, ...]) -> None:
        self.impressions += 1
        self.sources[source] += 1
        if video is not None:
            self.creators[video.creator_id] += 1
            for topic in topics:
                self.topics[topic] += 1.0 / len(topics)

    def merge(self, other: _Exposure) -> None:
        self.impressions += other.impressions
        self.sources.update(other.sources)
        self.creators.update(other.creators)
        for topic, w in other.topics.items():
            self.topics[topic] += w

    def exploration_share(self) -> float | None:
        if not self.impressions:
            return None
        return sum(self.sources[s] for s in EXPLORATION_SOURCES) / self.impressions

    def non_personalised_share(self) -> float | None:
        if not self.impressions:
            return None
        return self.sources[NON_PERSONALISED_SOURCE] / self.impressions


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _concentration(users: Iterable[_Exposure], pooled: _Exposure) -> Concentration:
    """Mean per-user entropy over ``users`` and Gini of ``pooled`` (their sum)."""
    served = [u for u in users if u.creators]
    return Concentration(
        users=len(served),
        creator_entropy_bits=_mean([shannon_entropy_bits(u.creators.values()) for u in served]),
        topic_entropy_bits=_mean([shannon_entropy_bits(u.topics.values()) for u in served]),
        creator_gini=gini(list(pooled.creators.values())) if pooled.creators else None,
        topic_gini=gini(list(pooled.topics.values())) if pooled.topics else None,
    )


def _cohort(users: Sequence[_Exposure]) -> CohortStats:
    pooled = _Exposure()
    for u in users:
        pooled.merge(u)
    return CohortStats(
        users=len(users),
        impressions=pooled.impressions,
        exploration_share=pooled.exploration_share(),
        non_personalised_share=pooled.non_personalised_share(),
        concentration=_concentration(users, pooled),
    )


def _top_creators(creators: Counter[str]) -> TopCreators:
    ranked = sorted(creators.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(creators.values())
    counts = [n for _, n in ranked]
    top1pct = max(1, math.ceil(len(ranked) / 100))
    return TopCreators(
        creators=len(ranked),
        top1_share=top_share(counts, 1),
        top10_share=top_share(counts, 10),
        top1pct_share=top_share(counts, top1pct),
        top1pct_creators=top1pct if ranked else 0,
        top=[
            CreatorShare(c, n, n / total if total else 0.0) for c, n in ranked[:TOP_CREATORS_LISTED]
        ],
    )


def _filters(filter_counts: Sequence[FilterCount], since_ms: int, until_ms: int) -> FilterSummary:
    by_rule: Counter[tuple[str, str]] = Counter()
    by_surface: Counter[str] = Counter()
    by_day: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for fc in filter_counts:
        # The same days the impression log returns: those starting in the window.
        if not since_ms <= fc.day < until_ms:
            continue
        by_rule[(fc.filter, fc.rule)] += fc.count
        by_surface[fc.surface] += fc.count
        by_day[_day_start(fc.day)][f"{fc.filter}/{fc.rule}"] += fc.count
    return FilterSummary(
        total=sum(by_rule.values()),
        by_rule=[
            RuleCount(f, r, n) for (f, r), n in sorted(by_rule.items(), key=lambda kv: -kv[1])
        ],
        by_surface=dict(sorted(by_surface.items(), key=lambda kv: -kv[1])),
        by_day=[
            FilterDay(_iso_day(d), d, sum(c.values()), dict(sorted(c.items())))
            for d, c in sorted(by_day.items())
        ],
    )


def _moderation(
    moderation: Sequence[ModerationAction], since_ms: int, until_ms: int
) -> ModerationSummary:
    by_state: Counter[str] = Counter()
    by_label: Counter[str] = Counter()
    by_actor: Counter[str] = Counter()
    by_actor_state: defaultdict[str, Counter[str]] = defaultdict(Counter)
    videos: set[str] = set()
    auto_pending: list[str] = []
    for a in moderation:
        if not since_ms <= a.ts < until_ms:
            continue
        state = a.state if a.state is not None else "(unchanged)"
        by_state[state] += 1
        by_actor[a.actor] += 1
        by_actor_state[a.actor][state] += 1
        videos.add(a.video_id)
        if a.labels is not None:
            for label in sorted(set(a.labels)) or ["(cleared)"]:
                by_label[label] += 1
        if a.actor == "reports" and a.state == "pending":
            auto_pending.append(a.video_id)
    return ModerationSummary(
        actions=sum(by_actor.values()),
        videos=len(videos),
        by_state=dict(by_state.most_common()),
        by_label=dict(by_label.most_common()),
        by_actor=dict(by_actor.most_common()),
        by_actor_state={a: dict(c.most_common()) for a, c in sorted(by_actor_state.items())},
        auto_pending_actions=len(auto_pending),
        auto_pending_videos=len(set(auto_pending)),
    )


def build_audit(
    impressions: Iterable[Impression],
    videos: Mapping[str, Video],
    profiles: Mapping[str, UserProfile],
    filter_counts: Sequence[FilterCount],
    moderation: Sequence[ModerationAction],
    since_ms: int,
    until_ms: int,
    *,
    generated_at_ms: int | None = None,
) -> AuditReport:
    """The audit of what was served in ``[since_ms, until_ms)`` (Unix ms); impressions
    outside it are skipped, as are filter counts of days starting outside it and
    moderation actions outside it. ``generated_at_ms`` defaults to now."""
    if until_ms <= since_ms:
        raise ValueError(f"empty window: until ({until_ms}) must be after since ({since_ms})")
    overall = _Exposure()
    per_user: defaultdict[str, _Exposure] = defaultdict(_Exposure)
    per_day: defaultdict[int, _Exposure] = defaultdict(_Exposure)
    per_day_user: defaultdict[int, defaultdict[str, _Exposure]] = defaultdict(
        lambda: defaultdict(_Exposure)
    )
    distinct_videos: set[str] = set()
    uncatalogued = 0
    topic_cache: dict[str, tuple[str, ...]] = {}
    for imp in impressions:
        if not since_ms <= imp.ts < until_ms:
            continue
        video = videos.get(imp.video_id)
        topics: tuple[str, ...] = ()
        if video is None:
            uncatalogued += 1
        else:
            cached = topic_cache.get(imp.video_id)
            if cached is None:
                cached = topic_cache[imp.video_id] = topics_of(video)
            topics = cached
        day = _day_start(imp.ts)
        distinct_videos.add(imp.video_id)
        for group in (overall, per_user[imp.user_id], per_day[day], per_day_user[day][imp.user_id]):
            group.add(imp.source, video, topics)

    sources = _ordered_sources(overall.sources)
    users_with_np = sum(1 for u in per_user.values() if u.sources[NON_PERSONALISED_SOURCE])
    days: list[DayStats] = []
    if per_day:
        for day in range(min(per_day), max(per_day) + 1, DAY_MS):
            exp = per_day.get(day, _Exposure())
            day_users: Mapping[str, _Exposure] = per_day_user.get(day, {})
            counts = {s: exp.sources[s] for s in sources}
            days.append(
                DayStats(
                    day=_iso_day(day),
                    day_ms=day,
                    impressions=exp.impressions,
                    users=len(day_users),
                    source_counts=counts,
                    source_shares=shares(counts),
                    exploration_share=exp.exploration_share(),
                    non_personalised_share=exp.non_personalised_share(),
                    concentration=_concentration(day_users.values(), exp),
                )
            )

    by_age: dict[str, list[_Exposure]] = {band: [] for band in AGE_BANDS}
    by_activity: dict[str, list[_Exposure]] = {c: [] for c in ACTIVITY_COHORTS}
    for user_id, exp in per_user.items():
        by_age[age_cohort(profiles.get(user_id))].append(exp)
        by_activity[activity_cohort(exp.impressions)].append(exp)

    generated = now_ms() if generated_at_ms is None else generated_at_ms
    source_counts = {s: overall.sources[s] for s in sources}
    return AuditReport(
        period=Period(
            since_ms,
            until_ms,
            _iso_time(since_ms),
            _iso_time(until_ms),
            generated,
            _iso_time(generated),
        ),
        totals=Totals(
            impressions=overall.impressions,
            users=len(per_user),
            videos=len(distinct_videos),
            creators=len(overall.creators),
            days_covered=len(per_day),
            window_days=(until_ms - since_ms) / DAY_MS,
            impressions_without_catalog_entry=uncatalogued,
        ),
        source_mix=SourceMix(source_counts, shares(source_counts)),
        exploration_share=overall.exploration_share() or 0.0,
        non_personalised=NonPersonalised(
            share=overall.non_personalised_share() or 0.0,
            users_with_any=users_with_np,
            user_share=users_with_np / len(per_user) if per_user else 0.0,
        ),
        concentration=_concentration(per_user.values(), overall),
        cohorts={
            "age": {band: _cohort(users) for band, users in by_age.items()},
            "activity": {c: _cohort(users) for c, users in by_activity.items()},
        },
        days=days,
        top_creators=_top_creators(overall.creators),
        filters=_filters(filter_counts, since_ms, until_ms),
        moderation=_moderation(moderation, since_ms, until_ms),
    )


# ----------------------------------------------------------------------------- output


def write_json(report: AuditReport, path: Path) -> None:
    """Write :meth:`AuditReport.to_dict` as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _day_ticks(ax: Any, labels: Sequence[str]) -> None:
    step = max(1, math.ceil(len(labels) / 15))  # at most ~15 labels, however long the window
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[i] for i in ticks], rotation=45, ha="right", fontsize=8)


def _gaps(values: Sequence[float | None]) -> list[float]:
    """Values to plot, None (undefined that day) as a gap in the line."""
    return [math.nan if v is None else v for v in values]


def _top(values: Iterable[float | None], floor: float) -> float:
    """An upper y limit a little above the largest value and at least ``floor`` (a line
    flat at zero would otherwise leave matplotlib an empty range)."""
    return 1.1 * max([floor, *(v for v in values if v is not None)])


def _plots(report: AuditReport) -> list[tuple[str, str]]:
    """(title, PNG data URL) for each plot the data allows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str]] = []
    days = report.days
    labels = [d.day for d in days]
    x = list(range(len(days)))
    if days:
        sources = [s for s in report.source_mix.counts if report.source_mix.counts[s] > 0]
        fig, ax = plt.subplots(figsize=(9, 4))
        bottom = [0.0] * len(days)
        cmap = plt.get_cmap("tab10")
        for i, source in enumerate(sources):
            heights = [d.source_shares.get(source, 0.0) for d in days]
            ax.bar(x, heights, bottom=bottom, label=source, color=cmap(i % 10), width=0.85)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_ylabel("share of the day's impressions")
        ax.set_ylim(0, 1)
        _day_ticks(ax, labels)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.grid(axis="y", alpha=0.3)
        plots.append(("Source mix per day (UTC)", png_data_uri(fig)))
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 3.5))
        lines = {
            "exploration (fresh + explore)": [d.exploration_share for d in days],
            "non-personalised": [d.non_personalised_share for d in days],
        }
        for name, values in lines.items():
            ax.plot(x, _gaps(values), marker="o", ms=3, label=name)
        ax.set_ylabel("share of the day's impressions")
        ax.set_ylim(0, _top([v for vs in lines.values() for v in vs], 0.1))
        _day_ticks(ax, labels)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        plots.append(("Exploration and non-personalised share per day", png_data_uri(fig)))
        plt.close(fig)

        fig, (ent, gin) = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, (a, b), ylabel in (
            (ent, ("creator_entropy_bits", "topic_entropy_bits"), "mean per-user entropy (bits)"),
            (gin, ("creator_gini", "topic_gini"), "Gini across creators / topics"),
        ):
            drawn: list[float | None] = []
            for attr, name in ((a, "creators"), (b, "topics")):
                line: list[float | None] = [getattr(d.concentration, attr) for d in days]
                ax.plot(x, _gaps(line), marker="o", ms=3, label=name)
                drawn += line
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, _top(drawn, 1.0))
            _day_ticks(ax, labels)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        gin.set_ylim(0, 1.05)
        fig.tight_layout()
        plots.append(("Concentration per day, all users", png_data_uri(fig)))
        plt.close(fig)

    fdays = report.filters.by_day
    if fdays and report.filters.total > 0:
        rules = [f"{r.filter}/{r.rule}" for r in report.filters.by_rule if r.count > 0]
        shown, rest = rules[:9], set(rules[9:])  # the rest in one "other" band
        fx = list(range(len(fdays)))
        fig, ax = plt.subplots(figsize=(9, 4))
        bottom = [0.0] * len(fdays)
        cmap = plt.get_cmap("tab10")
        series = [(r, [float(d.by_rule.get(r, 0)) for d in fdays]) for r in shown]
        if rest:
            series.append(
                ("other", [float(sum(n for k, n in d.by_rule.items() if k in rest)) for d in fdays])
            )
        for i, (name, heights) in enumerate(series):
            ax.bar(fx, heights, bottom=bottom, label=name, color=cmap(i % 10), width=0.85)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_ylabel("candidates removed")
        _day_ticks(ax, [d.day for d in fdays])
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.grid(axis="y", alpha=0.3)
        plots.append(("Candidates removed per day, by filter and rule", png_data_uri(fig)))
        plt.close(fig)
    return plots


_CSS = (
    BASE_CSS
    + """
.howto { background: #f8f9fa; border-left: 4px solid #495057; padding: .6rem 1rem; }
.meta { color: #495057; }
"""
)

_HOW_TO_READ = """
<p>This report describes what the feed served in the period above, from the engine's own
logs: every impression (a video shown at a position of a feed response), the candidate
source that proposed it, the filter counts and the moderation history. It measures what
was <em>served</em>, not what was watched. Days are UTC days.</p>
<p><b>Source mix</b>: the share of impressions each candidate source produced.
<b>Exploration share</b>: the share from <code>fresh</code> and <code>explore</code>,
sources that show videos the user's history would not have picked.
<b>Non-personalised share</b>: the share from <code>non_personalised</code>, the feed
served to users who chose a feed not based on their profile.</p>
<p><b>Concentration</b>. Topics are a video's hashtags (lower-cased, without
<code>#</code>; <code>(none)</code> for a video without any; an impression of a video
with k topics counts 1/k for each). <i>Entropy</i> is, for each user, the Shannon entropy
in bits of their impressions over creators (or topics), averaged over the users of the
group: 0 means a user saw a single creator, 2 bits is as varied as four creators seen
equally often, 3 bits as eight. Higher is more varied. <i>Gini</i> measures how unequally
the group's impressions were spread across the creators (or topics) it was shown: 0 when
each got as many, close to 1 when a few got nearly all. Cohorts: age band as the user
told the app (<code>unknown</code>: not told, treated as the youngest by the safety
rules); <code>new</code> users had fewer than 50 impressions in the period,
<code>established</code> users 50 or more.</p>
<p><b>Filters</b>: how many candidates each filter rule removed before ranking, per
surface and per day (days starting in the period). <b>Moderation</b>: decisions on
videos in the period, by moderators through the API (<code>api</code>) or by the
automatic review queue fed by user reports (<code>reports</code>).</p>
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    esc = html.escape
    parts = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr>"]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _img(plots: Mapping[str, str], title: str) -> str:
    """The plot titled ``title`` as a heading and an embedded image ("" if not drawn)."""
    if title not in plots:
        return ""
    esc = html.escape
    return f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='{plots[title]}'>"


def _concentration_row(name: str, users: int, impressions: int, c: Concentration) -> list[str]:
    return [
        name,
        f"{users:,}",
        f"{impressions:,}",
        _num(c.creator_entropy_bits, 2),
        _num(c.topic_entropy_bits, 2),
        _num(c.creator_gini),
        _num(c.topic_gini),
    ]


def write_html(report: AuditReport, path: Path) -> None:
    """Write the report as one self-contained HTML page (tables, and plots as PNG data
    URLs; no external assets)."""
    esc = html.escape
    p, t = report.period, report.totals
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fyp algorithm audit</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>fyp algorithm audit</h1>",
        f"<p class='meta'>Period: <b>{esc(p.since)}</b> to <b>{esc(p.until)}</b> "
        f"(UTC, end excluded) · generated {esc(p.generated_at)}</p>",
        "<h2>How to read this</h2><div class='howto'>",
        _HOW_TO_READ,
        "</div>",
        "<h2>Totals</h2>",
        _table(
            ["", "value"],
            [
                ["impressions", f"{t.impressions:,}"],
                ["distinct users", f"{t.users:,}"],
                ["distinct videos", f"{t.videos:,}"],
                ["distinct creators", f"{t.creators:,}"],
                ["days with impressions", f"{t.days_covered:,}"],
                ["days in the period", f"{t.window_days:.1f}"],
                [
                    "impressions of videos not in the catalog",
                    f"{t.impressions_without_catalog_entry:,}",
                ],
            ],
        ),
    ]
    plots = dict(_plots(report))

    parts.append("<h2>Source mix</h2>")
    mix = report.source_mix
    parts.append(
        _table(
            ["source", "impressions", "share"],
            [[s, f"{mix.counts[s]:,}", _pct(mix.shares[s])] for s in mix.counts],
        )
    )
    parts.append(_img(plots, "Source mix per day (UTC)"))

    np_ = report.non_personalised
    parts.append("<h2>Exploration and non-personalised feeds</h2>")
    parts.append(
        _table(
            ["", "value"],
            [
                ["exploration share (fresh + explore)", _pct(report.exploration_share)],
                ["non-personalised share", _pct(np_.share)],
                ["users served any non-personalised item", f"{np_.users_with_any:,}"],
                ["… as a share of users", _pct(np_.user_share)],
            ],
        )
    )
    cohort_rows: list[list[str]] = []
    for kind, cohorts in report.cohorts.items():
        for name, c in cohorts.items():
            cohort_rows.append(
                [
                    f"{kind}: {name}",
                    f"{c.users:,}",
                    f"{c.impressions:,}",
                    _pct(c.exploration_share),
                    _pct(c.non_personalised_share),
                ]
            )
    parts.append(
        _table(
            ["cohort", "users", "impressions", "exploration share", "non-personalised share"],
            cohort_rows,
        )
    )
    parts.append(_img(plots, "Exploration and non-personalised share per day"))

    parts.append("<h2>Concentration</h2>")
    header = [
        "group",
        "users",
        "impressions",
        "creator entropy (bits)",
        "topic entropy (bits)",
        "creator Gini",
        "topic Gini",
    ]
    rows = [_concentration_row("all users", t.users, t.impressions, report.concentration)]
    for kind, cohorts in report.cohorts.items():
        rows.extend(
            _concentration_row(f"{kind}: {name}", c.users, c.impressions, c.concentration)
            for name, c in cohorts.items()
        )
    parts.append(_table(header, rows))
    parts.append(_img(plots, "Concentration per day, all users"))
    if report.days:
        parts.append("<h3>Per day</h3>")
        parts.append(
            _table(
                ["day", "users", "impressions", *header[3:], "exploration share"],
                [
                    [
                        *_concentration_row(d.day, d.users, d.impressions, d.concentration),
                        _pct(d.exploration_share),
                    ]
                    for d in report.days
                ],
            )
        )

    tc = report.top_creators
    parts.append("<h2>Top creators' share of impressions</h2>")
    parts.append(
        _table(
            ["", "share"],
            [
                ["top creator", _pct(tc.top1_share)],
                ["top 10 creators", _pct(tc.top10_share)],
                [
                    f"top 1% of creators ({tc.top1pct_creators:,} of {tc.creators:,})",
                    _pct(tc.top1pct_share),
                ],
            ],
        )
    )
    parts.append(
        _table(
            ["rank", "creator", "impressions", "share"],
            [
                [str(i), c.creator_id, f"{c.impressions:,}", _pct(c.share)]
                for i, c in enumerate(tc.top, start=1)
            ],
        )
    )

    f = report.filters
    parts.append(f"<h2>What the filters removed</h2><p>{f.total:,} candidates in all.</p>")
    if f.by_rule:
        parts.append(
            _table(
                ["filter", "rule", "candidates removed", "share"],
                [
                    [r.filter, r.rule, f"{r.count:,}", _pct(r.count / f.total if f.total else 0)]
                    for r in f.by_rule
                ],
            )
        )
        parts.append(
            _table(
                ["surface", "candidates removed"], [[s, f"{n:,}"] for s, n in f.by_surface.items()]
            )
        )
    parts.append(_img(plots, "Candidates removed per day, by filter and rule"))

    m = report.moderation
    parts.append(
        f"<h2>Moderation</h2><p>{m.actions:,} actions on {m.videos:,} videos; "
        f"{m.auto_pending_videos:,} videos put in <code>pending</code> automatically by "
        f"user reports ({m.auto_pending_actions:,} actions).</p>"
    )
    if m.actions:
        parts.append(
            _table(["state set", "actions"], [[s, f"{n:,}"] for s, n in m.by_state.items()])
        )
        if m.by_label:
            parts.append(
                _table(
                    ["label (in the label set applied)", "actions"],
                    [[s, f"{n:,}"] for s, n in m.by_label.items()],
                )
            )
        states = sorted({s for per in m.by_actor_state.values() for s in per})
        parts.append(
            _table(
                ["actor", "actions", *states],
                [
                    [a, f"{m.by_actor[a]:,}", *(f"{per.get(s, 0):,}" for s in states)]
                    for a, per in m.by_actor_state.items()
                ],
            )
        )
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
