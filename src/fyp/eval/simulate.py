"""Closed-loop simulator: a synthetic short-video world and simulated users.

The world (creators, sounds, hashtags, videos) and the users' hidden tastes are pure,
seeded numpy. Users watch, skip, like, share and follow through the engine's real HTTP
API (``GET /v1/feed``, ``POST /v1/events``); the engine only ever sees ids, hashtags,
sounds, creators, captions and the users' behaviour, never a topic or a taste.

The behaviour model is deliberately not tuned to any algorithm: the expected watch
ratio rises with the user's taste for the video's topic and with the video's latent
quality, falls for long videos and for repeats, and trending sounds help a little. A
feed that learns tastes from behaviour therefore beats a random one, and a feed that
merely repeats yesterday's hits does not get a free ride.

Times are Unix milliseconds, durations milliseconds, watch ratio ``watch_ms /
duration_ms`` (up to about 2 with replays).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt
from rich.table import Table

from fyp.types import Video
from fyp.types import now_ms as wall_now_ms

__all__ = [
    "GENERIC_HASHTAGS",
    "AudienceReport",
    "EngineFeed",
    "FeedPage",
    "FeedPolicy",
    "OracleFeed",
    "RandomFeed",
    "Reaction",
    "RequestStats",
    "SimVideo",
    "SimulatedUser",
    "SimulationError",
    "UserState",
    "World",
    "build_world",
    "event_kinds",
    "post_events",
    "post_videos",
    "reaction_events",
    "run_audience",
    "seed_catalog",
    "summarize",
    "watch_ratio_of",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_MS = 86_400_000
MIN_DURATION_MS = 5_000
MAX_DURATION_MS = 180_000
CATALOG_DAYS = 30
RECENT_UPLOAD_SHARE = 0.03  # share of the catalog uploaded in the last 24 h

GENERIC_HASHTAGS: tuple[str, ...] = ("#fyp", "#foryou", "#viral", "#trending")

_TOPIC_WORDS: tuple[str, ...] = (
    "dance", "cooking", "pets", "comedy", "fitness", "gaming", "travel", "fashion",
    "makeup", "diy", "cars", "music", "science", "history", "football", "basketball",
    "books", "art", "gardening", "tech", "finance", "parenting", "skate", "fishing",
    "camping", "asmr", "magic", "anime", "movies", "nature",
)  # fmt: skip
_TAG_SUFFIXES: tuple[str, ...] = (
    "tok", "tips", "life", "challenge", "daily", "hacks", "lover", "101", "goals", "vibes",
    "pov", "check",
)  # fmt: skip
_CAPTION_OPENERS: tuple[str, ...] = (
    "pov:", "wait for it", "day 12 of", "you need this", "trying", "my favourite",
    "quick", "honest", "part 2:", "when", "how I do", "new",
)  # fmt: skip
_CAPTION_CLOSERS: tuple[str, ...] = (
    "ever", "today", "in 30 seconds", "for beginners", "at home", "gone wrong",
    "that works", "you asked for", "no way", "lol", "again", "update",
)  # fmt: skip

# Behaviour model. The engagement logit is
#   bias + TASTE_WEIGHT * (taste[topic] - TASTE_PIVOT) + QUALITY_WEIGHT * quality
#   + TRENDING_BONUS * trending_sound - DURATION_WEIGHT * ln(duration / REF_DURATION)
#   - REPEAT_PENALTY * times_already_seen
# Taste dominates so that personalisation is what pays; quality is shared by every user
# so that popularity is a sensible (but weaker) signal; the repeat penalty stops a feed
# from winning by serving the same favourite video again and again.
_TASTE_WEIGHT = 5.0
_TASTE_PIVOT = 0.4
_QUALITY_WEIGHT = 0.7
_TRENDING_BONUS = 0.3
_DURATION_WEIGHT = 0.35
_REF_DURATION_MS = 20_000.0
_REPEAT_PENALTY = 2.5
_MIN_SKIP_MS = 300  # a flick never registers as less than this
_SKIP_FRACTION = (0.6, 1.0)  # skip time as a fraction of the user's patience
_PARTIAL_RATIO = (0.25, 0.95)  # an engaged view that does not finish
_REPLAY_RATE = 0.4  # times P(engaged): chance a finished view is replayed
_REPLAY_EXTRA = (0.2, 1.0)  # extra ratio a replay adds
_STRONG_MISMATCH = 0.15  # taste below this may earn "not interested"
_SWIPE_GAP_MS = (300, 1_500)  # time between two views, on the simulated clock


class SimulationError(RuntimeError):
    """The engine answered badly (non-2xx, rejected or duplicate items, unknown ids)."""


# --------------------------------------------------------------------------- world


@dataclass(frozen=True, slots=True)
class SimVideo:
    """A synthetic video: what the engine sees plus its hidden ``topic`` and ``quality``.

    ``row`` is the index in ``World.videos``; ``created_at`` is Unix ms; ``duration_ms``
    is in milliseconds.
    """

    row: int
    video_id: str
    creator_id: str
    topic: int
    quality: float
    duration_ms: int
    sound_id: str
    sound_trending: bool
    hashtags: tuple[str, ...]
    caption: str
    created_at: int
    language: str = "en"

    def as_video(self) -> Video:
        """The engine-side view of this video (no topic, no quality)."""
        return Video(
            video_id=self.video_id,
            creator_id=self.creator_id,
            duration_ms=self.duration_ms,
            sound_id=self.sound_id,
            hashtags=self.hashtags,
            caption=self.caption,
            language=self.language,
            created_at=self.created_at,
        )

    def payload(self) -> dict[str, object]:
        """The ``POST /v1/videos`` item for this video."""
        return {
            "video_id": self.video_id,
            "creator_id": self.creator_id,
            "duration_ms": self.duration_ms,
            "sound_id": self.sound_id,
            "hashtags": list(self.hashtags),
            "caption": self.caption,
            "language": self.language,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Reaction:
    """What a user did with one served video. ``watch_ms`` in ms; ``watch_ratio`` is
    ``watch_ms / duration_ms``; ``skipped`` marks a flick within the user's patience."""

    watch_ms: int
    watch_ratio: float
    skipped: bool = False
    liked: bool = False
    shared: bool = False
    followed: bool = False
    not_interested: bool = False


@dataclass(slots=True)
class UserState:
    """A user's memory during one audience run: what they have seen and whom they like.

    Kept apart from ``SimulatedUser`` so that the world stays immutable and two policies
    run on the same world start from the same users.
    """

    seen: dict[str, int] = field(default_factory=dict)  # video_id -> views so far
    liked_creators: dict[str, int] = field(default_factory=dict)  # creator_id -> likes
    followed: set[str] = field(default_factory=set)  # creator ids

    def record(self, video: SimVideo, reaction: Reaction) -> None:
        """Remember one reaction."""
        self.seen[video.video_id] = self.seen.get(video.video_id, 0) + 1
        if reaction.liked:
            self.liked_creators[video.creator_id] = self.liked_creators.get(video.creator_id, 0) + 1
        if reaction.followed:
            self.followed.add(video.creator_id)


def _sigmoid(x: float) -> float:
    # Written to stay finite for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _expected_ratio(p: FloatArray, skip_ratio: FloatArray) -> FloatArray:
    """E[watch ratio] given P(engaged) ``p`` and the mean ratio of a skip.

    Mirrors ``SimulatedUser.react``: skip with 1 - p; else finish with p (plus a replay
    with ``_REPLAY_RATE * p``), or stop part-way.
    """
    replay_mean = 0.5 * (_REPLAY_EXTRA[0] + _REPLAY_EXTRA[1])
    partial_mean = 0.5 * (_PARTIAL_RATIO[0] + _PARTIAL_RATIO[1])
    finished = p * (1.0 + _REPLAY_RATE * p * replay_mean)
    engaged = finished + (1.0 - p) * partial_mean
    out: FloatArray = (1.0 - p) * skip_ratio + p * engaged
    return out


@dataclass(frozen=True, eq=False)
class SimulatedUser:
    """A simulated user with hidden tastes.

    ``taste[t]`` in [0, 1] is the liking for topic ``t`` (a few favourites near 1, mild
    interest elsewhere); ``bias`` shifts the engagement logit; ``patience_ms`` is how long
    a skip takes (1-3 s); the propensities scale the chance of each action;
    ``session_length`` is the mean number of videos per session and ``quit_per_skip`` the
    chance, per consecutive skip, of ending a session out of boredom.
    """

    row: int
    user_id: str
    taste: FloatArray
    favourite_topics: tuple[int, ...]
    bias: float
    patience_ms: float
    like_propensity: float
    share_propensity: float
    follow_propensity: float
    not_interested_propensity: float
    session_length: float
    quit_per_skip: float

    def engagement_logit(self, video: SimVideo, times_seen: int = 0) -> float:
        """The logit of P(engaged) for ``video``; see the module's behaviour constants."""
        return (
            self.bias
            + _TASTE_WEIGHT * (float(self.taste[video.topic]) - _TASTE_PIVOT)
            + _QUALITY_WEIGHT * video.quality
            + (_TRENDING_BONUS if video.sound_trending else 0.0)
            - _DURATION_WEIGHT * math.log(video.duration_ms / _REF_DURATION_MS)
            - _REPEAT_PENALTY * times_seen
        )

    def expected_watch_ratio(self, video: SimVideo) -> float:
        """E[watch ratio] of a first view of ``video`` (skips approximated at their mean)."""
        p = _sigmoid(self.engagement_logit(video))
        skip_ms = max(_MIN_SKIP_MS, self.patience_ms * 0.5 * sum(_SKIP_FRACTION))
        skip = min(skip_ms, video.duration_ms) / video.duration_ms
        return float(_expected_ratio(np.array([p]), np.array([skip]))[0])

    def react(
        self, video: SimVideo, rng: np.random.Generator, state: UserState | None = None
    ) -> Reaction:
        """Watch ``video`` once: a pure function of the user, the video, ``state``
        (repeats, liked and followed creators; read, not written) and ``rng``."""
        seen = state.seen.get(video.video_id, 0) if state is not None else 0
        p = _sigmoid(self.engagement_logit(video, seen))
        duration = video.duration_ms
        taste = float(self.taste[video.topic])
        if rng.random() >= p:
            skip_ms = self.patience_ms * rng.uniform(*_SKIP_FRACTION)
            watch = int(min(duration, max(_MIN_SKIP_MS, skip_ms)))
            # "Not interested" is a strong statement: only for clear mismatches, rarely.
            not_interested = (
                taste < _STRONG_MISMATCH and rng.random() < self.not_interested_propensity
            )
            return Reaction(
                watch_ms=watch,
                watch_ratio=watch / duration,
                skipped=True,
                not_interested=not_interested,
            )
        finished = rng.random() < p
        if finished:
            ratio = 1.0
            if rng.random() < _REPLAY_RATE * p:
                ratio += rng.uniform(*_REPLAY_EXTRA)
        else:
            ratio = rng.uniform(*_PARTIAL_RATIO)
        watch = max(1, round(ratio * duration))
        # Likes need a long watch of a liked topic; quality helps a little.
        p_like = (
            self.like_propensity * (0.25 + 0.75 * taste) * (1.0 + 0.5 * math.tanh(video.quality))
        )
        if not finished:
            p_like *= 0.1
        liked = rng.random() < p_like
        shared = liked and rng.random() < self.share_propensity
        followed = False
        already = state is not None and video.creator_id in state.followed
        if finished and not already:
            # Each earlier like of this creator makes a follow more likely.
            prior = state.liked_creators.get(video.creator_id, 0) if state is not None else 0
            likes = prior + int(liked)
            p_follow = self.follow_propensity * (0.3 + taste) * (1.0 + 1.5 * likes)
            followed = rng.random() < min(1.0, p_follow)
        return Reaction(
            watch_ms=watch,
            watch_ratio=watch / duration,
            liked=liked,
            shared=shared,
            followed=followed,
        )


@dataclass(frozen=True, eq=False)
class World:
    """A synthetic catalog and audience. Arrays are indexed by video row
    (``videos[i].row == i``); ``created_at`` values lie in ``[now_ms - 30 days, now_ms]``."""

    seed: int
    now_ms: int
    topic_names: tuple[str, ...]
    topic_hashtags: tuple[tuple[str, ...], ...]  # each topic's vocabulary, commonest first
    creator_ids: tuple[str, ...]
    creator_topics: tuple[tuple[int, ...], ...]  # main topic first
    sound_ids: tuple[str, ...]
    sound_topic: IntArray
    sound_trending: BoolArray
    videos: tuple[SimVideo, ...]
    users: tuple[SimulatedUser, ...]
    video_topic: IntArray
    video_quality: FloatArray
    video_duration_ms: IntArray
    video_trending: BoolArray
    video_rows: dict[str, int] = field(repr=False)
    user_rows: dict[str, int] = field(repr=False)

    @property
    def n_topics(self) -> int:
        """Number of topics."""
        return len(self.topic_names)

    def video(self, video_id: str) -> SimVideo:
        """The video with this id (``KeyError`` if unknown)."""
        return self.videos[self.video_rows[video_id]]

    def user(self, user_id: str) -> SimulatedUser:
        """The user with this id (``KeyError`` if unknown)."""
        return self.users[self.user_rows[user_id]]

    def videos_payload(self) -> list[dict[str, object]]:
        """Every video as a ``POST /v1/videos`` item."""
        return [v.payload() for v in self.videos]

    def engagement_logits(self, user: SimulatedUser) -> FloatArray:
        """``user.engagement_logit`` for every video (first views), vectorised."""
        out: FloatArray = (
            user.bias
            + _TASTE_WEIGHT * (user.taste[self.video_topic] - _TASTE_PIVOT)
            + _QUALITY_WEIGHT * self.video_quality
            + _TRENDING_BONUS * self.video_trending.astype(np.float64)
            - _DURATION_WEIGHT * np.log(self.video_duration_ms / _REF_DURATION_MS)
        )
        return out

    def expected_watch_ratios(self, user: SimulatedUser) -> FloatArray:
        """``user.expected_watch_ratio`` for every video, vectorised."""
        p: FloatArray = 1.0 / (1.0 + np.exp(-self.engagement_logits(user)))
        duration = self.video_duration_ms.astype(np.float64)
        skip_ms = max(_MIN_SKIP_MS, user.patience_ms * 0.5 * sum(_SKIP_FRACTION))
        skip: FloatArray = np.minimum(skip_ms, duration) / duration
        return _expected_ratio(p, skip)


def _zipf(n: int, exponent: float) -> FloatArray:
    w: FloatArray = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    out: FloatArray = w / w.sum()
    return out


def build_world(
    seed: int = 0,
    n_videos: int = 5000,
    n_creators: int = 300,
    n_topics: int = 30,
    n_sounds: int = 400,
    n_users: int = 200,
    now_ms: int | None = None,
) -> World:
    """Build a seeded synthetic world. Everything but ``now_ms`` (default: wall clock) is
    a function of ``seed`` and the sizes; upload times are relative to ``now_ms``."""
    for name, value in (
        ("n_videos", n_videos),
        ("n_creators", n_creators),
        ("n_topics", n_topics),
        ("n_sounds", n_sounds),
        ("n_users", n_users),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    now = wall_now_ms() if now_ms is None else now_ms
    rng = np.random.default_rng(seed)

    # Topics: a few big ones, a long tail (popularity order shuffled so that topic 0 is
    # not always the biggest).
    topic_names = tuple(
        _TOPIC_WORDS[k % len(_TOPIC_WORDS)]
        + ("" if k < len(_TOPIC_WORDS) else str(k // len(_TOPIC_WORDS) + 1))
        for k in range(n_topics)
    )
    topic_pop = _zipf(n_topics, 0.8)[rng.permutation(n_topics)]
    topic_hashtags = tuple(
        (
            f"#{name}",
            *(
                f"#{name}{_TAG_SUFFIXES[i]}"
                for i in rng.choice(len(_TAG_SUFFIXES), size=4, replace=False)
            ),
        )
        for name in topic_names
    )
    tag_weights = _zipf(5, 1.0)

    # Sounds: each leans to a topic; a few trend across topics.
    sound_ids = tuple(f"s{i + 1:04d}" for i in range(n_sounds))
    sound_topic: IntArray = rng.choice(n_topics, size=n_sounds, p=topic_pop).astype(np.int64)
    sound_trending: BoolArray = rng.random(n_sounds) < 0.05
    if not sound_trending.any():
        sound_trending[int(rng.integers(n_sounds))] = True
    sound_pop = rng.lognormal(0.0, 1.0, size=n_sounds)
    trending_rows = np.flatnonzero(sound_trending)
    trending_p = sound_pop[trending_rows] / sound_pop[trending_rows].sum()
    topic_sound_rows: list[IntArray] = [
        np.flatnonzero(sound_topic == t).astype(np.int64) for t in range(n_topics)
    ]

    # Creators: a main topic, sometimes a second; a quality level; a productivity.
    creator_ids = tuple(f"c{i + 1:04d}" for i in range(n_creators))
    main_topic = rng.choice(n_topics, size=n_creators, p=topic_pop)
    second_topic = rng.choice(n_topics, size=n_creators, p=topic_pop)
    has_second = (rng.random(n_creators) < 0.3) & (second_topic != main_topic)
    creator_topics = tuple(
        (int(main_topic[c]), int(second_topic[c])) if has_second[c] else (int(main_topic[c]),)
        for c in range(n_creators)
    )
    creator_quality = rng.normal(0.0, 0.5, size=n_creators)
    productivity = rng.lognormal(0.0, 1.0, size=n_creators)

    video_creator = rng.choice(n_creators, size=n_videos, p=productivity / productivity.sum())
    durations = np.clip(
        rng.lognormal(math.log(_REF_DURATION_MS), 0.8, size=n_videos),
        MIN_DURATION_MS,
        MAX_DURATION_MS,
    ).astype(np.int64)
    quality = creator_quality[video_creator] + rng.normal(0.0, 0.8, size=n_videos)

    videos: list[SimVideo] = []
    topics = np.empty(n_videos, dtype=np.int64)
    trending = np.empty(n_videos, dtype=np.bool_)
    for i in range(n_videos):
        c = int(video_creator[i])
        own = creator_topics[c]
        u = rng.random()
        if u < 0.85:
            topic = own[0]
        elif u < 0.97:
            topic = own[-1]  # the second topic if any, else the main one again
        else:
            topic = int(rng.choice(n_topics, p=topic_pop))
        topics[i] = topic

        pool = topic_sound_rows[topic]
        if rng.random() < 0.2 or len(pool) == 0:
            sound = int(rng.choice(trending_rows, p=trending_p))
        else:
            sound = int(rng.choice(pool, p=sound_pop[pool] / sound_pop[pool].sum()))
        trending[i] = bool(sound_trending[sound])

        # 1-4 hashtags, mostly from the topic's vocabulary, some generic.
        tags: list[str] = []
        for j in range(1 + int(rng.binomial(3, 0.4))):
            if rng.random() < (0.9 if j == 0 else 0.6):
                tag = topic_hashtags[topic][int(rng.choice(5, p=tag_weights))]
            else:
                tag = GENERIC_HASHTAGS[int(rng.integers(len(GENERIC_HASHTAGS)))]
            if tag not in tags:
                tags.append(tag)

        word = topic_hashtags[topic][int(rng.integers(1, 5))][1 + len(topic_names[topic]) :]
        caption = (
            f"{_CAPTION_OPENERS[int(rng.integers(len(_CAPTION_OPENERS)))]} "
            f"{topic_names[topic]} {word} "
            f"{_CAPTION_CLOSERS[int(rng.integers(len(_CAPTION_CLOSERS)))]}"
        )

        if rng.random() < RECENT_UPLOAD_SHARE:
            age = int(rng.integers(0, DAY_MS))
        else:
            age = int(rng.integers(DAY_MS, CATALOG_DAYS * DAY_MS))
        videos.append(
            SimVideo(
                row=i,
                video_id=f"v{i + 1:05d}",
                creator_id=creator_ids[c],
                topic=topic,
                quality=float(quality[i]),
                duration_ms=int(durations[i]),
                sound_id=sound_ids[sound],
                sound_trending=bool(sound_trending[sound]),
                hashtags=tuple(tags),
                caption=caption,
                created_at=now - age,
            )
        )

    users: list[SimulatedUser] = []
    for r in range(n_users):
        n_fav = min(n_topics, 1 + int(rng.binomial(2, 0.5)))
        favourites = rng.choice(n_topics, size=n_fav, replace=False, p=topic_pop)
        # Sparse mild interest elsewhere (mean ~0.12, capped below the favourites).
        taste = np.minimum(rng.dirichlet(np.full(n_topics, 0.3)) * n_topics * 0.12, 0.45)
        taste[favourites] = rng.uniform(0.7, 1.0, size=n_fav)
        users.append(
            SimulatedUser(
                row=r,
                user_id=f"u{r + 1:04d}",
                taste=taste.astype(np.float64),
                favourite_topics=tuple(int(t) for t in favourites),
                bias=float(rng.normal(0.0, 0.3)),
                patience_ms=float(rng.uniform(1_000.0, 3_000.0)),
                like_propensity=float(rng.beta(2.0, 10.0)),
                share_propensity=float(rng.beta(1.0, 9.0)),
                follow_propensity=float(rng.beta(1.0, 80.0)),
                not_interested_propensity=float(rng.uniform(0.0, 0.04)),
                session_length=float(rng.lognormal(math.log(25.0), 0.5)),
                quit_per_skip=float(rng.uniform(0.03, 0.08)),
            )
        )

    return World(
        seed=seed,
        now_ms=now,
        topic_names=topic_names,
        topic_hashtags=topic_hashtags,
        creator_ids=creator_ids,
        creator_topics=creator_topics,
        sound_ids=sound_ids,
        sound_topic=sound_topic,
        sound_trending=sound_trending,
        videos=tuple(videos),
        users=tuple(users),
        video_topic=topics,
        video_quality=quality.astype(np.float64),
        video_duration_ms=durations,
        video_trending=trending,
        video_rows={v.video_id: v.row for v in videos},
        user_rows={u.user_id: u.row for u in users},
    )


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One feed response: the engine's ``request_id`` (None for local policies) and
    the video ids in display order."""

    request_id: str | None
    video_ids: list[str]


class FeedPolicy(Protocol):
    """Anything that serves feed pages: the engine over HTTP, or a local baseline."""

    name: str

    def next_page(self, user_id: str, count: int) -> FeedPage:
        """The next page of at most ``count`` videos for ``user_id``."""
        ...


def _check_response(resp: httpx.Response, what: str) -> Any:
    """The JSON body of a 2xx response; ``SimulationError`` otherwise."""
    if not resp.is_success:
        raise SimulationError(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
    try:
        return resp.json()
    except ValueError as exc:
        raise SimulationError(f"{what}: body is not JSON: {resp.text[:200]!r}") from exc


class EngineFeed:
    """The engine's feed: ``GET /v1/feed?user_id=U&count=N`` on ``client``."""

    def __init__(self, client: httpx.Client, name: str = "engine") -> None:
        self.client = client
        self.name = name

    def next_page(self, user_id: str, count: int) -> FeedPage:
        """Ask the engine for a page; raise ``SimulationError`` on a bad answer."""
        body = _check_response(
            self.client.get("/v1/feed", params={"user_id": user_id, "count": count}),
            "GET /v1/feed",
        )
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise SimulationError(f"GET /v1/feed: no items list in {str(body)[:200]}")
        try:
            video_ids = [str(item["video_id"]) for item in items]
        except (KeyError, TypeError) as exc:
            raise SimulationError(f"GET /v1/feed: malformed item ({exc!r})") from None
        request_id = body.get("request_id")
        return FeedPage(
            request_id=None if request_id is None else str(request_id), video_ids=video_ids
        )


class _PerUserOrder:
    """Per-user cursor over an order of video rows, renewed once exhausted."""

    def __init__(self, world: World, order: Callable[[SimulatedUser, int], IntArray]) -> None:
        self._world = world
        self._order = order  # (user, epoch) -> permutation of video rows
        self._cursor: dict[str, tuple[int, IntArray, int]] = {}  # user -> (epoch, rows, pos)

    def take(self, user_id: str, count: int) -> list[str]:
        user = self._world.user(user_id)
        epoch, rows, pos = self._cursor.get(user_id, (-1, np.empty(0, np.int64), 0))
        out: list[str] = []
        # A page never holds a video twice, even when a new round starts mid-page; so a
        # page is at most the catalog's size.
        while len(out) < min(count, len(self._world.videos)):
            if pos >= len(rows):
                epoch += 1
                rows, pos = self._order(user, epoch), 0
            video_id = self._world.videos[int(rows[pos])].video_id
            if video_id not in out:
                out.append(video_id)
            pos += 1
        self._cursor[user_id] = (epoch, rows, pos)
        return out


class RandomFeed:
    """The baseline: uniformly random videos the user has not been shown yet (a fresh
    seeded permutation per user; a new one only once the catalog is exhausted)."""

    def __init__(self, world: World, seed: int, name: str = "random") -> None:
        self.name = name
        n = len(world.videos)

        def order(user: SimulatedUser, epoch: int) -> IntArray:
            rng = np.random.default_rng([seed, user.row, epoch])
            return rng.permutation(n).astype(np.int64)

        self._orders = _PerUserOrder(world, order)

    def next_page(self, user_id: str, count: int) -> FeedPage:
        """The next ``count`` unseen videos for ``user_id``."""
        return FeedPage(request_id=None, video_ids=self._orders.take(user_id, count))


class OracleFeed:
    """A ceiling, not a baseline: it reads the hidden tastes and serves each user's
    unseen videos by decreasing expected watch ratio. No engine can do better on average
    without repeating videos."""

    def __init__(self, world: World, name: str = "oracle") -> None:
        self.name = name

        def order(user: SimulatedUser, epoch: int) -> IntArray:
            # Stable sort so that ties break by row, deterministically.
            rows = np.argsort(-world.expected_watch_ratios(user), kind="stable")
            return rows.astype(np.int64)

        self._orders = _PerUserOrder(world, order)

    def next_page(self, user_id: str, count: int) -> FeedPage:
        """The user's best ``count`` unseen videos."""
        return FeedPage(request_id=None, video_ids=self._orders.take(user_id, count))


# --------------------------------------------------------------------------- audience


def seed_catalog(client: httpx.Client, world: World, batch: int = 1000) -> int:
    """``POST /v1/videos`` every video of ``world`` in batches of ``batch``; returns the
    number upserted. Raises ``SimulationError`` on a non-2xx answer or any rejection."""
    return post_videos(client, world.videos_payload(), batch)


def post_videos(client: httpx.Client, payload: list[dict[str, object]], batch: int = 1000) -> int:
    """``POST /v1/videos`` of ``payload`` in batches of ``batch``; returns the number
    upserted. Raises ``SimulationError`` on a non-2xx answer or any rejection."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    upserted = 0
    for start in range(0, len(payload), batch):
        chunk = payload[start : start + batch]
        body = _check_response(client.post("/v1/videos", json={"videos": chunk}), "POST /v1/videos")
        rejected = body.get("rejected") if isinstance(body, dict) else None
        if rejected:
            raise SimulationError(f"POST /v1/videos rejected {len(rejected)}: {rejected[:3]}")
        upserted += int(body.get("upserted", 0))
    return upserted


# What share of a demo world gets which moderation decision, and the age bands of its
# users: enough for every safety rule to have something to do (and to show in /metrics
# and the audit report), not so much that the feed is mostly filtering.
_DEMO_MODERATION: tuple[tuple[str | None, str | None, float], ...] = (
    (None, "unverified_claim", 0.03),
    (None, "mature", 0.02),
    (None, "sensitive:sadness", 0.02),
    ("limited", None, 0.01),
    ("removed", None, 0.005),
)
_DEMO_AGE_BANDS: tuple[tuple[str | None, float], ...] = (
    ("18+", 0.6),
    ("16-17", 0.15),
    ("13-15", 0.1),
    (None, 0.15),
)


def register_users(client: httpx.Client, world: World) -> int:
    """Create every user of ``world`` (``PUT /v1/users/{id}``, homed in the server's
    region), as an app does at sign-up: a deployment takes events only of its users."""
    for user in world.users:
        _check_response(client.put(f"/v1/users/{user.user_id}", json={}), "PUT /v1/users")
    return len(world.users)


def seed_trust_and_safety(client: httpx.Client, world: World, seed: int) -> tuple[int, int]:
    """Give ``world`` what a real deployment has: moderation decisions on a few videos
    (``POST /v1/moderation``) and profiles with age bands for its users (``PUT
    /v1/users``). Seeded; returns (videos moderated, profiles set)."""
    rng = np.random.default_rng(seed + 7_919)
    order = rng.permutation(len(world.videos))
    start = 0
    moderated = 0
    for state, label, share in _DEMO_MODERATION:
        n = round(share * len(world.videos))
        for row in order[start : start + n].tolist():
            body: dict[str, object] = {
                "video_id": world.videos[row].video_id,
                "reason": "demo: seeded decision",
            }
            if state is not None:
                body["state"] = state
            if label is not None:
                body["labels"] = [label]
            _check_response(client.post("/v1/moderation", json=body), "POST /v1/moderation")
            moderated += 1
        start += n
    bands = [b for b, _ in _DEMO_AGE_BANDS]
    weights = np.array([w for _, w in _DEMO_AGE_BANDS])
    picks = rng.choice(len(bands), size=len(world.users), p=weights / weights.sum())
    for user, pick in zip(world.users, picks.tolist(), strict=True):
        band = bands[pick]
        body = {} if band is None else {"age_band": band}
        _check_response(client.put(f"/v1/users/{user.user_id}", json=body), "PUT /v1/users")
    return moderated, len(world.users)


@dataclass(frozen=True, slots=True)
class RequestStats:
    """One feed request as the user experienced it. ``mean_watch_ratio`` is over the
    viewed items (0.0 if none were viewed); ``distinct_creators`` counts the page's
    creators, viewed or not."""

    index: int
    user_id: str
    request_id: str | None
    items_served: int
    items_viewed: int
    mean_watch_ratio: float
    likes: int
    shares: int
    follows: int
    not_interested: int
    distinct_creators: int
    session_ended: bool  # the user left after (or during) this page


def watch_ratio_of(stats: Sequence[RequestStats]) -> float:
    """Mean watch ratio over every viewed item of ``stats`` (0.0 if none)."""
    viewed = sum(s.items_viewed for s in stats)
    if viewed == 0:
        return 0.0
    return sum(s.mean_watch_ratio * s.items_viewed for s in stats) / viewed


@dataclass(frozen=True, slots=True)
class AudienceReport:
    """What an audience run measured for one policy. Rates are per viewed item;
    ``distinct_creators_per_page`` is the mean over non-empty pages."""

    policy: str
    requests: int
    sessions: int
    items_viewed: int
    mean_watch_ratio: float
    like_rate: float
    distinct_creators_per_page: float
    stats: list[RequestStats]

    @classmethod
    def from_stats(cls, policy: str, sessions: int, stats: list[RequestStats]) -> AudienceReport:
        """Aggregate per-request stats."""
        viewed = sum(s.items_viewed for s in stats)
        pages = [s.distinct_creators for s in stats if s.items_served > 0]
        return cls(
            policy=policy,
            requests=len(stats),
            sessions=sessions,
            items_viewed=viewed,
            mean_watch_ratio=watch_ratio_of(stats),
            like_rate=sum(s.likes for s in stats) / viewed if viewed else 0.0,
            distinct_creators_per_page=sum(pages) / len(pages) if pages else 0.0,
            stats=stats,
        )

    def last_window_watch_ratio(self, n: int = 1000) -> float:
        """Mean watch ratio over the viewed items of the last ``n`` requests."""
        return watch_ratio_of(self.stats[-n:] if n > 0 else [])


def event_kinds(reaction: Reaction) -> list[str]:
    """The event types a reaction produces, in the order they happen: ``view`` first,
    then ``like``, ``share``, ``follow``, ``not_interested`` as the reaction says."""
    kinds = ["view"]
    if reaction.liked:
        kinds.append("like")
    if reaction.shared:
        kinds.append("share")
    if reaction.followed:
        kinds.append("follow")
    if reaction.not_interested:
        kinds.append("not_interested")
    return kinds


def reaction_events(
    reaction: Reaction, user_id: str, video_id: str, ts: int, request_id: str | None
) -> list[dict[str, object]]:
    """The ``POST /v1/events`` items for one reaction, all at ``ts`` (Unix ms), without
    ``event_id`` (the caller numbers them): ``watch_ms`` on the view, ``request_id`` on
    every event when the page had one."""
    events: list[dict[str, object]] = []
    for kind in event_kinds(reaction):
        event: dict[str, object] = {
            "user_id": user_id,
            "video_id": video_id,
            "type": kind,
            "ts": ts,
        }
        if kind == "view":
            event["watch_ms"] = reaction.watch_ms
        if request_id is not None:
            event["request_id"] = request_id
        events.append(event)
    return events


def post_events(client: httpx.Client, events: list[dict[str, object]]) -> None:
    """``POST /v1/events``; raises ``SimulationError`` unless every event was accepted."""
    body = _check_response(client.post("/v1/events", json={"events": events}), "POST /v1/events")
    if not isinstance(body, dict):
        raise SimulationError(f"POST /v1/events: unexpected body {str(body)[:200]}")
    rejected = body.get("rejected") or []
    if rejected:
        raise SimulationError(f"POST /v1/events rejected {len(rejected)}: {rejected[:3]}")
    accepted, duplicates = int(body.get("accepted", 0)), int(body.get("duplicates", 0))
    # Event ids are fresh per run, so a duplicate (or a miscount) means a bug somewhere.
    if duplicates or accepted != len(events):
        raise SimulationError(
            f"POST /v1/events: sent {len(events)}, accepted {accepted}, duplicates {duplicates}"
        )


def run_audience(
    world: World,
    policy: FeedPolicy,
    *,
    client: httpx.Client | None,
    requests: int,
    count: int = 10,
    seed: int = 0,
    on_request: Callable[[RequestStats], None] | None = None,
) -> AudienceReport:
    """Let the world's users consume ``requests`` pages of ``count`` from ``policy``.

    Users take turns in seeded shuffled rounds, one session per turn; a session spans
    pages until the user's session length is reached or boredom (consecutive skips)
    ends it, possibly mid-page, leaving the rest of the page unviewed. With a
    ``client``, each page's events are POSTed to ``/v1/events`` in one batch; the event
    clock starts at ``world.now_ms``, advances by watch time plus a swipe gap and never
    passes the wall clock. Raises ``SimulationError`` on any rejected event.
    """
    if requests < 0 or count < 1:
        raise ValueError(f"need requests >= 0 and count >= 1, got {requests}, {count}")
    rng = np.random.default_rng([seed, world.seed])
    states = {u.user_id: UserState() for u in world.users}
    run_token = uuid.uuid4().hex[:12]  # fresh per run: ids never collide across runs
    n_events = 0
    clock = world.now_ms
    stats: list[RequestStats] = []
    queue: list[int] = []
    sessions = 0

    while len(stats) < requests:
        if not queue:
            queue = [int(r) for r in rng.permutation(len(world.users))]
        user = world.users[queue.pop()]
        state = states[user.user_id]
        sessions += 1
        budget = max(1, int(rng.poisson(user.session_length)))
        viewed_in_session = 0
        consecutive_skips = 0
        session_over = False
        while not session_over and len(stats) < requests:
            page = policy.next_page(user.user_id, count)
            try:
                served = [world.video(v) for v in page.video_ids]
            except KeyError as exc:
                raise SimulationError(f"{policy.name} served unknown video {exc}") from None
            events: list[dict[str, object]] = []
            ratios: list[float] = []
            likes = shares = follows = dislikes = 0
            for video in served:
                reaction = user.react(video, rng, state)
                state.record(video, reaction)
                gap = int(rng.integers(*_SWIPE_GAP_MS))
                clock = min(clock + reaction.watch_ms + gap, wall_now_ms())
                ratios.append(reaction.watch_ratio)
                viewed_in_session += 1
                likes += reaction.liked
                shares += reaction.shared
                follows += reaction.followed
                dislikes += reaction.not_interested
                for event in reaction_events(
                    reaction, user.user_id, video.video_id, clock, page.request_id
                ):
                    n_events += 1
                    events.append({"event_id": f"sim-{run_token}-{n_events:08d}", **event})
                if reaction.skipped:
                    consecutive_skips += 1
                    if rng.random() < user.quit_per_skip * consecutive_skips:
                        session_over = True
                else:
                    consecutive_skips = 0
                if viewed_in_session >= budget:
                    session_over = True
                if session_over:
                    break
            if not served:
                session_over = True  # nothing to watch: the user leaves
            if client is not None and events:
                post_events(client, events)
            request_stats = RequestStats(
                index=len(stats),
                user_id=user.user_id,
                request_id=page.request_id,
                items_served=len(served),
                items_viewed=len(ratios),
                mean_watch_ratio=sum(ratios) / len(ratios) if ratios else 0.0,
                likes=likes,
                shares=shares,
                follows=follows,
                not_interested=dislikes,
                distinct_creators=len({v.creator_id for v in served}),
                session_ended=session_over,
            )
            stats.append(request_stats)
            if on_request is not None:
                on_request(request_stats)

    return AudienceReport.from_stats(policy.name, sessions, stats)


def summarize(reports: Sequence[AudienceReport], window: int = 1000) -> Table:
    """A table comparing policies: watch ratio overall and over the last ``window``
    requests, like rate, creators per page, and lift over the ``random`` policy."""
    baseline = next((r for r in reports if r.policy == "random"), None)
    table = Table(title="Feed quality (closed-loop simulation)")
    table.add_column("policy")
    table.add_column("requests", justify="right")
    table.add_column("views", justify="right")
    table.add_column("watch ratio", justify="right")
    table.add_column(f"last {window}", justify="right")
    table.add_column("like rate", justify="right")
    table.add_column("creators/page", justify="right")
    table.add_column("vs random", justify="right")
    for r in reports:
        lift = "-"
        if baseline is not None and baseline.mean_watch_ratio > 0 and r is not baseline:
            lift = f"{r.mean_watch_ratio / baseline.mean_watch_ratio:.2f}x"
        table.add_row(
            r.policy,
            str(r.requests),
            str(r.items_viewed),
            f"{r.mean_watch_ratio:.3f}",
            f"{r.last_window_watch_ratio(window):.3f}",
            f"{r.like_rate:.2%}",
            f"{r.distinct_creators_per_page:.1f}",
            lift,
        )
    return table
