"""Closed-loop evaluation: simulated users in sessions against several feed methods.

Every method faces the same world (catalog, hidden tastes), the same seed and the same
session schedule, on a simulated clock:

* The clock starts ``sessions_per_user`` days before the world's ``now_ms``. Videos whose
  ``created_at`` lies before the start form the initial catalog; the others are uploaded
  when the clock reaches their ``created_at`` (about 3% of the catalog a day, more on the
  last day), so that there are new videos to give a first audience to.
* Each user has one session a day, starting at a seeded random time of the day, the same
  for every method. A session is up to ``session_length`` feed requests of ``count``
  videos; the user watches them in order (``SimulatedUser.react``) and leaves early when
  bored (consecutive skips; the chance grows with each), possibly mid-page.
* Sessions interleave on the clock: the next request of any session is served in time
  order, and a page's events reach the method when the user has finished with the page
  (at the time of its last view), so every request sees exactly what happened before it.

Methods (:data:`METHODS`):

* ``fyp``: the engine, an :class:`~fyp.engine.Engine` on a temporary data directory (in
  ``/dev/shm`` where there is one: the run measures the engine's choices, not its disk,
  and an fsync per event batch costs 2-3x the time) with the simulated clock. Each page
  is ``Engine.feed``; its events go through ``Engine.ingest`` (the validation and the
  durable log that ``POST /v1/events`` uses), then ``Engine.learn`` until the log is
  consumed: the calls, in the order, that the HTTP app and its learning loop make when
  the loop has caught up before the next request. It skips only the JSON and ASGI round
  trips, and is about 2.5x faster than ``fyp-http``, with the same results (a test holds
  the two to identical reports).
* ``fyp-http``: the same engine driven through the HTTP app in-process
  (``GET /v1/feed``, ``POST /v1/events``, ``POST /v1/videos`` on a Starlette
  ``TestClient``), waiting after each event batch until the learning loop has applied it.
* ``fyp-learned``: ``fyp`` with its learned models on (``[model] enabled``): the
  multi-task ranker and two-tower retrieval take over once warm.
* ``fyp-scorer``: ``fyp-learned`` with the page scorer on (``[scorer] enabled``): once
  it has labelled pools from a simulated day, it orders the page.
* ``random``: uniformly random videos the user has not been served yet.
* ``popular``: the videos with most watched (not skipped) views so far, counted online
  from the events of this run, no personalisation (ties in a fixed random order).
* ``oracle``: a ceiling: each user's unserved videos by decreasing expected watch ratio
  under the simulator's own behaviour model (the hidden tastes).

The local methods serve only uploaded videos never served to the user before; the engine
applies its own rules. Runs are reproducible: the simulation is seeded, and so are the
engine's request ids (the pipeline's ``new_request_id`` is a seeded generator here; the
engine's ``fresh`` source seeds its draws with the request id). What
could still differ between machines is a candidate source overrunning its time budget
and failing open; the budget is raised to 1 s here so that a busy machine does not
change what is measured.

An *impression* is a served video the user watched (it was on screen); videos left on a
page when the user quit are served but not impressions. Times are Unix ms; watch times
are reported in seconds; entropies in bits.
"""

from __future__ import annotations

import heapq
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from rich.progress import Progress, TaskID
from rich.table import Table

from fyp.eval.metrics import ages_ms, bootstrap_ci, bootstrap_ci_grouped, gini
from fyp.eval.simulate import (
    _SWIPE_GAP_MS,
    CATALOG_DAYS,
    DAY_MS,
    EngineFeed,
    Reaction,
    SimulatedUser,
    SimulationError,
    UserState,
    World,
    build_world,
    post_events,
    post_videos,
    reaction_events,
)

__all__ = [
    "DEFAULT_NOW_MS",
    "HOUR_MS",
    "METHODS",
    "METRICS",
    "ProgressCallback",
    "closed_loop_table",
    "distinct_per_window",
    "first_hour_share",
    "run_closed_loop",
    "topic_entropy",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOUR_MS = 3_600_000
METHODS: tuple[str, ...] = (
    "fyp",
    "fyp-http",
    "fyp-learned",
    "fyp-scorer",
    "random",
    "popular",
    "oracle",
)
DEFAULT_NOW_MS = 1_750_000_000_000  # the world's "now" (2025-06-15): results do not
# depend on the day they are computed
DIVERSITY_WINDOW = 10  # items per window for distinct creators / topics
LEARN_TIMEOUT_S = 30.0

ProgressCallback = Callable[[str, int, int], None]  # (method, sessions done, sessions)


# --------------------------------------------------------------------------- metrics


def topic_entropy(topics: Sequence[int] | IntArray) -> float:
    """Shannon entropy, in bits, of the empirical distribution of ``topics`` (one entry
    per impression): 0 when all share one topic, ``log2(k)`` for ``k`` topics equally
    often. Raises ``ValueError`` on an empty input."""
    values = np.asarray(topics, dtype=np.int64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("topic entropy of no impressions is undefined")
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(max(0.0, -np.sum(p * np.log2(p))))


def first_hour_share(
    created_ms: Sequence[int] | IntArray,
    shown_ms: Sequence[int] | IntArray,
    window_ms: int = HOUR_MS,
) -> float:
    """Share of impressions shown within ``window_ms`` of the video's upload: the mean of
    ``0 <= shown_ms[i] - created_ms[i] < window_ms``. Raises ``ValueError`` on empty or
    mismatched inputs and when a video was shown before its upload."""
    age = ages_ms(
        created_ms, shown_ms, "created_ms and shown_ms", "shown", "uploaded", "impressions"
    )
    return float(np.mean(age < window_ms))


def distinct_per_window(values: Sequence[int], per: int = DIVERSITY_WINDOW) -> list[int]:
    """Distinct values in each window of ``per`` consecutive items (a trailing shorter
    window dropped), as :func:`fyp.eval.metrics.distinct_per_slate` counts them, one
    count per window."""
    if per < 1:
        raise ValueError(f"per must be at least 1, got {per}")
    return [len(set(values[i : i + per])) for i in range(0, len(values) - per + 1, per)]


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True, slots=True)
class _View:
    """One watched video of a page: its row, the reaction and the view's end (Unix ms)."""

    row: int
    reaction: Reaction
    ts: int


class _Method(Protocol):
    name: str

    def upload(self, rows: Sequence[int], now: int) -> None:
        """Make these videos servable (their ``created_at`` has come)."""

    def serve(self, user: SimulatedUser, count: int, now: int) -> tuple[str | None, list[int]]:
        """A page: the request id (None for local methods) and the video rows."""

    def observe(
        self, user: SimulatedUser, request_id: str | None, views: Sequence[_View], now: int
    ) -> None:
        """The events of a finished page, at ``now``."""

    def close(self) -> None:
        """Release resources."""


class _LocalMethod:
    """Shared bookkeeping of the local baselines: uploaded videos, what each user was
    served; subclasses choose among the eligible rows."""

    def __init__(self, world: World, name: str) -> None:
        self.name = name
        self.world = world
        self.uploaded = np.zeros(len(world.videos), dtype=np.bool_)
        self.served = np.zeros((len(world.users), len(world.videos)), dtype=np.bool_)

    def upload(self, rows: Sequence[int], now: int) -> None:
        self.uploaded[np.asarray(rows, dtype=np.int64)] = True

    def serve(self, user: SimulatedUser, count: int, now: int) -> tuple[str | None, list[int]]:
        eligible = self.uploaded & ~self.served[user.row]
        rows = self.choose(user, eligible, count)
        self.served[user.row, rows] = True
        return None, [int(r) for r in rows]

    def choose(self, user: SimulatedUser, eligible: npt.NDArray[np.bool_], count: int) -> IntArray:
        raise NotImplementedError

    def observe(
        self, user: SimulatedUser, request_id: str | None, views: Sequence[_View], now: int
    ) -> None:
        pass

    def close(self) -> None:
        pass


def _top(key: FloatArray, eligible: npt.NDArray[np.bool_], count: int) -> IntArray:
    """The eligible rows with the ``count`` largest keys, best first (ties by row)."""
    rows = np.flatnonzero(eligible)
    if len(rows) > count:
        part = np.argpartition(-key[rows], count - 1)[:count]
        rows = rows[part]
    order = np.lexsort((rows, -key[rows]))
    out: IntArray = rows[order].astype(np.int64)
    return out


class _RandomMethod(_LocalMethod):
    def __init__(self, world: World, seed: int) -> None:
        super().__init__(world, "random")
        self.rng = np.random.default_rng([seed, 101])

    def choose(self, user: SimulatedUser, eligible: npt.NDArray[np.bool_], count: int) -> IntArray:
        rows = np.flatnonzero(eligible)
        picked: IntArray = self.rng.choice(rows, size=min(count, len(rows)), replace=False)
        return picked.astype(np.int64)


class _PopularMethod(_LocalMethod):
    """Most watched so far: views that were not skips, counted from observed events."""

    def __init__(self, world: World, seed: int) -> None:
        super().__init__(world, "popular")
        self.watched = np.zeros(len(world.videos), dtype=np.float64)
        # Ties (at first, everything) in a fixed random order: a fraction below 1.
        self.tiebreak = np.random.default_rng([seed, 102]).random(len(world.videos))

    def choose(self, user: SimulatedUser, eligible: npt.NDArray[np.bool_], count: int) -> IntArray:
        return _top(self.watched + self.tiebreak, eligible, count)

    def observe(
        self, user: SimulatedUser, request_id: str | None, views: Sequence[_View], now: int
    ) -> None:
        for view in views:
            if not view.reaction.skipped:
                self.watched[view.row] += 1.0


class _OracleMethod(_LocalMethod):
    """Unserved videos by decreasing expected watch ratio (hidden tastes)."""

    def __init__(self, world: World) -> None:
        super().__init__(world, "oracle")
        self._expected: dict[int, FloatArray] = {}

    def choose(self, user: SimulatedUser, eligible: npt.NDArray[np.bool_], count: int) -> IntArray:
        expected = self._expected.get(user.row)
        if expected is None:
            expected = self._expected[user.row] = self.world.expected_watch_ratios(user)
        return _top(expected, eligible, count)


class _EngineMethod:
    """The engine on a temporary data directory, on the simulated clock; directly
    (``fyp``) or through the HTTP app in-process (``fyp-http``)."""

    def __init__(
        self,
        world: World,
        now: int,
        *,
        http: bool,
        learned: bool = False,
        scorer: bool = False,
        seed: int = 0,
    ) -> None:
        from fyp.config import LOAD_GENERATOR_AUTH, load_settings
        from fyp.engine import Engine
        from fyp.privacy.pseudonym import Pseudonyms

        self.name = (
            "fyp-http" if http else "fyp-scorer" if scorer else "fyp-learned" if learned else "fyp"
        )
        self.world = world
        self.now = now
        self._n_events = 0
        # In memory where the OS offers it (/dev/shm): the run measures the engine's
        # choices, not its disk, and an fsync per event batch would cost 2-3x the time.
        shm = Path("/dev/shm")
        fast = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self._tmp = tempfile.TemporaryDirectory(prefix="fyp-closed-loop-", dir=fast)
        settings = load_settings(
            overrides={
                "data_dir": Path(self._tmp.name) / "data",
                "model": {"enabled": learned or scorer},
                "scorer": {"enabled": scorer},
                # The simulated audience is this deployment's: no PUT /v1/users first,
                # and no rate limits on a simulation's pace; a known secret, so
                # that a seed gives the same run whatever the process.
                "privacy": {
                    "require_registered_users": False,
                    "secret_file": Pseudonyms.write_known_secret(
                        Path(self._tmp.name) / "secret", f"closed-loop-{seed}"
                    ),
                },
                "auth": LOAD_GENERATOR_AUTH,
            },
            environ={},
        )
        self._client: Any = None
        try:
            self.engine = Engine.open(settings, clock=lambda: self.now)
        except BaseException:
            self._tmp.cleanup()
            raise
        # Request ids seed the fresh source's draws: seeded ones make a run replayable.
        ids = random.Random(f"closed-loop-{seed}")
        self.engine.pipeline.new_request_id = lambda: f"{ids.getrandbits(128):032x}"
        if http:
            try:
                from fyp.api import create_app

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # starlette's notice about httpx
                    from fastapi.testclient import TestClient

                from fyp.privacy.keys import bearer, create_key

                _, token = create_key(settings.data_dir, label="closed loop")
                client = TestClient(create_app(settings, engine=self.engine), headers=bearer(token))
                client.__enter__()  # starts the app: its lifespan and learning loop
                self._client = client
            except BaseException:
                self.close()
                raise

    def upload(self, rows: Sequence[int], now: int) -> None:
        self.now = now
        videos = [self.world.videos[r] for r in rows]
        if self._client is None:
            self.engine.upsert_videos([v.as_video() for v in videos])
            return
        post_videos(self._client, [v.payload() for v in videos])

    def serve(self, user: SimulatedUser, count: int, now: int) -> tuple[str | None, list[int]]:
        self.now = now
        if self._client is None:
            feed = self.engine.feed(user.user_id, count, now=now)
            request_id: str | None = feed.request_id
            video_ids = [item.video_id for item in feed.items]
        else:
            page = EngineFeed(self._client, self.name).next_page(user.user_id, count)
            request_id, video_ids = page.request_id, page.video_ids
        try:
            return request_id, [self.world.video_rows[v] for v in video_ids]
        except KeyError as exc:
            raise SimulationError(f"{self.name} served unknown video {exc}") from None

    def observe(
        self, user: SimulatedUser, request_id: str | None, views: Sequence[_View], now: int
    ) -> None:
        self.now = now
        events: list[dict[str, object]] = []
        for view in views:
            video_id = self.world.videos[view.row].video_id
            for event in reaction_events(
                view.reaction, user.user_id, video_id, view.ts, request_id
            ):
                self._n_events += 1
                events.append({"event_id": f"cl-{self._n_events:09d}", **event})
        if not events:
            return
        if self._client is None:
            result = self.engine.ingest(events, now=now)
            if result.rejected or result.accepted != len(events):
                raise SimulationError(f"ingest rejected {result.rejected[:3]}")
            self.engine.learn()
            return
        post_events(self._client, events)
        deadline = time.monotonic() + LEARN_TIMEOUT_S
        while self.engine.pending() > 0:
            if time.monotonic() > deadline:
                raise SimulationError(f"learning loop behind for over {LEARN_TIMEOUT_S} s")
            time.sleep(0.0002)

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.__exit__(None, None, None)
            self.engine.close()
        finally:
            self._tmp.cleanup()


def _make_method(name: str, world: World, seed: int, start_ms: int) -> _Method:
    if name in ("fyp", "fyp-http", "fyp-learned", "fyp-scorer"):
        return _EngineMethod(
            world,
            start_ms,
            http=name == "fyp-http",
            learned=name == "fyp-learned",
            scorer=name == "fyp-scorer",
            seed=seed,
        )
    if name == "random":
        return _RandomMethod(world, seed)
    if name == "popular":
        return _PopularMethod(world, seed)
    if name == "oracle":
        return _OracleMethod(world)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


# --------------------------------------------------------------------------- the loop


@dataclass(slots=True)
class _Session:
    user: SimulatedUser
    index: int  # the user's session number, from 0
    start_ms: int
    rng: np.random.Generator
    requests: int = 0
    consecutive_skips: int = 0
    watch_ms: int = 0
    viewed: int = 0
    over: bool = False
    pending: tuple[str | None, list[_View]] | None = None
    served: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Log:
    """What one method's run produced, row per impression / session."""

    imp_user: list[int] = field(default_factory=list)
    imp_session: list[int] = field(default_factory=list)  # the user's session number
    imp_row: list[int] = field(default_factory=list)
    imp_ratio: list[float] = field(default_factory=list)
    imp_liked: list[bool] = field(default_factory=list)
    imp_shown: list[int] = field(default_factory=list)
    ses_user: list[int] = field(default_factory=list)
    ses_index: list[int] = field(default_factory=list)
    ses_watch_ms: list[int] = field(default_factory=list)
    ses_viewed: list[int] = field(default_factory=list)
    ses_served: list[list[int]] = field(default_factory=list)
    requests: int = 0


def _schedule(world: World, sessions_per_user: int, start_ms: int, seed: int) -> list[_Session]:
    """Each user's sessions, one a day at a seeded random time, in start order."""
    rng = np.random.default_rng([seed, 201])
    offsets = rng.integers(0, DAY_MS - 2 * HOUR_MS, size=(len(world.users), sessions_per_user))
    sessions = [
        _Session(
            user=user,
            index=k,
            start_ms=start_ms + k * DAY_MS + int(offsets[user.row, k]),
            rng=np.random.default_rng([seed, 202, user.row, k]),
        )
        for user in world.users
        for k in range(sessions_per_user)
    ]
    sessions.sort(key=lambda s: (s.start_ms, s.user.row))
    return sessions


def _run_method(
    name: str,
    world: World,
    sessions: list[_Session],
    *,
    seed: int,
    start_ms: int,
    session_length: int,
    count: int,
    on_session: Callable[[int], None],
) -> _Log:
    method = _make_method(name, world, seed, start_ms)
    try:
        return _simulate(
            world,
            method,
            sessions,
            start_ms=start_ms,
            session_length=session_length,
            count=count,
            on_session=on_session,
        )
    finally:
        method.close()


def _simulate(
    world: World,
    method: _Method,
    sessions: list[_Session],
    *,
    start_ms: int,
    session_length: int,
    count: int,
    on_session: Callable[[int], None],
) -> _Log:
    log = _Log()
    states = [UserState() for _ in world.users]
    created = np.array([v.created_at for v in world.videos], dtype=np.int64)
    upload_order = np.argsort(created, kind="stable")
    n_initial = int(np.searchsorted(created[upload_order], start_ms, side="right"))
    method.upload([int(r) for r in upload_order[:n_initial]], start_ms)
    next_upload = n_initial

    heap: list[tuple[int, int, int]] = [(s.start_ms, i, i) for i, s in enumerate(sessions)]
    heapq.heapify(heap)
    seq = len(sessions)
    done = 0
    while heap:
        now, _, sid = heapq.heappop(heap)
        # Videos whose upload time has come.
        end = int(np.searchsorted(created[upload_order], now, side="right"))
        if end > next_upload:
            method.upload([int(r) for r in upload_order[next_upload:end]], now)
            next_upload = end
        s = sessions[sid]
        user = s.user
        if s.pending is not None:
            method.observe(user, s.pending[0], s.pending[1], now)
            s.pending = None
        if s.over:
            done += 1
            on_session(done)
            continue
        request_id, rows = method.serve(user, count, now)
        log.requests += 1
        s.requests += 1
        state = states[user.row]
        views: list[_View] = []
        clock = now
        s.served.extend(rows)
        for row in rows:
            video = world.videos[row]
            reaction = user.react(video, s.rng, state)
            state.record(video, reaction)
            log.imp_user.append(user.row)
            log.imp_session.append(s.index)
            log.imp_row.append(row)
            log.imp_ratio.append(reaction.watch_ratio)
            log.imp_liked.append(reaction.liked)
            log.imp_shown.append(clock)
            clock += reaction.watch_ms
            views.append(_View(row, reaction, clock))
            clock += int(s.rng.integers(*_SWIPE_GAP_MS))
            if reaction.skipped:
                s.consecutive_skips += 1
                if s.rng.random() < user.quit_per_skip * s.consecutive_skips:
                    s.over = True
                    break
            else:
                s.consecutive_skips = 0
        s.watch_ms += sum(v.reaction.watch_ms for v in views)
        s.viewed += len(views)
        if not rows or s.requests >= session_length:
            s.over = True
        if s.over:
            log.ses_user.append(user.row)
            log.ses_index.append(s.index)
            log.ses_watch_ms.append(s.watch_ms)
            log.ses_viewed.append(s.viewed)
            log.ses_served.append(s.served)
        s.pending = (request_id, views)
        heapq.heappush(heap, (max(clock, now), seq, sid))
        seq += 1
    return log


# --------------------------------------------------------------------------- the report


METRICS: tuple[tuple[str, str, str], ...] = (
    # (key, table heading, format)
    ("watch_time_per_session_s", "watch s/session", "{:.1f}"),
    ("items_per_session", "views/session", "{:.1f}"),
    ("watch_ratio", "watch ratio", "{:.3f}"),
    ("like_rate", "likes/impr.", "{:.3f}"),
    ("distinct_creators_per_10", "creators/10", "{:.2f}"),
    ("distinct_topics_per_10", "topics/10", "{:.2f}"),
    ("creator_gini", "creator Gini", "{:.3f}"),
    ("first_hour_share", "first-hour share", "{:.2%}"),
    ("topic_entropy", "topic entropy", "{:.2f}"),
)


def _ci(point_lo_hi: tuple[float, float, float]) -> dict[str, Any]:
    point, lo, hi = point_lo_hi
    return {"mean": point, "ci95": [lo, hi]}


def _undefined() -> dict[str, Any]:
    return {"mean": None, "ci95": None}


def _report(
    world: World, log: _Log, *, sessions_per_user: int, n_boot: int, seed: int
) -> dict[str, Any]:
    """Every metric with a 95% bootstrap interval over users (``n_boot`` resamples)."""

    def mean_ci(groups: Sequence[int] | IntArray, values: FloatArray) -> dict[str, Any]:
        """The mean of ``values`` (one per row), rows grouped by user."""
        return _ci(
            bootstrap_ci_grouped(
                groups, lambda r: float(np.mean(values[r])), n_boot=n_boot, seed=seed
            )
        )

    imp_user = np.asarray(log.imp_user, dtype=np.int64)
    imp_session = np.asarray(log.imp_session, dtype=np.int64)
    imp_row = np.asarray(log.imp_row, dtype=np.int64)
    ratio = np.asarray(log.imp_ratio, dtype=np.float64)
    liked = np.asarray(log.imp_liked, dtype=np.float64)
    creator_of = {c: i for i, c in enumerate(world.creator_ids)}
    video_creator = np.array([creator_of[v.creator_id] for v in world.videos], dtype=np.int64)
    created = np.array([v.created_at for v in world.videos], dtype=np.int64)
    n_creators = len(world.creator_ids)
    out: dict[str, Any] = {}

    ses_user = np.asarray(log.ses_user, dtype=np.int64)
    watch_s = np.asarray(log.ses_watch_ms, dtype=np.float64) / 1000.0
    viewed = np.asarray(log.ses_viewed, dtype=np.float64)
    out["watch_time_per_session_s"] = mean_ci(ses_user, watch_s)
    out["items_per_session"] = mean_ci(ses_user, viewed)

    if len(imp_user) == 0:
        for key in ("watch_ratio", "like_rate", "creator_gini", "first_hour_share"):
            out[key] = _undefined()
    else:
        shown = np.asarray(log.imp_shown, dtype=np.int64)
        # Per impression (for the per-user interval); raises if shown before its upload.
        age = ages_ms(created[imp_row], shown, "created_ms and shown_ms", "shown", "uploaded")
        first_hour = (age < HOUR_MS).astype(np.float64)
        imp_creator = video_creator[imp_row]
        out["watch_ratio"] = mean_ci(imp_user, ratio)
        out["like_rate"] = mean_ci(imp_user, liked)
        out["creator_gini"] = _ci(
            bootstrap_ci_grouped(
                imp_user,
                lambda r: gini(np.bincount(imp_creator[r], minlength=n_creators)),
                n_boot=n_boot,
                seed=seed,
                # A resample repeats some users' impressions, so exposure looks more
                # concentrated than it is: every resample sits above the point.
                bias_corrected=True,
            )
        )
        out["first_hour_share"] = mean_ci(imp_user, first_hour)

    # Diversity of what was served, per window of 10 consecutive items of a session.
    win_user: list[int] = []
    win_creators: list[int] = []
    win_topics: list[int] = []
    for user_row, served in zip(log.ses_user, log.ses_served, strict=True):
        creators = distinct_per_window([int(video_creator[r]) for r in served])
        topics = distinct_per_window([int(world.video_topic[r]) for r in served])
        win_user.extend([user_row] * len(creators))
        win_creators.extend(creators)
        win_topics.extend(topics)
    if win_user:
        wc = np.asarray(win_creators, dtype=np.float64)
        wt = np.asarray(win_topics, dtype=np.float64)
        out["distinct_creators_per_10"] = mean_ci(win_user, wc)
        out["distinct_topics_per_10"] = mean_ci(win_user, wt)
    else:
        out["distinct_creators_per_10"] = out["distinct_topics_per_10"] = _undefined()

    # Topic entropy of each user's impressions, per session number.
    topics_of = world.video_topic[imp_row] if len(imp_row) else np.empty(0, np.int64)
    ent_user: list[int] = []
    ent_session: list[int] = []
    ent_value: list[float] = []
    if len(imp_user):
        user_session = imp_user * sessions_per_user + imp_session
        order = np.argsort(user_session, kind="stable")
        bounds = np.flatnonzero(np.diff(user_session[order])) + 1
        for chunk in np.split(order, bounds):
            ent_user.append(int(imp_user[chunk[0]]))
            ent_session.append(int(imp_session[chunk[0]]))
            ent_value.append(topic_entropy(topics_of[chunk]))
    ent = np.asarray(ent_value, dtype=np.float64)
    ent_s = np.asarray(ent_session, dtype=np.int64)
    out["topic_entropy"] = mean_ci(ent_user, ent) if ent_user else _undefined()
    by_session: list[float | None] = []
    by_session_ci: list[list[float] | None] = []
    for k in range(sessions_per_user):
        values = ent[ent_s == k]
        if len(values) == 0:
            by_session.append(None)
            by_session_ci.append(None)
            continue
        point, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        by_session.append(point)
        by_session_ci.append([lo, hi])
    out["topic_entropy_by_session"] = by_session
    out["topic_entropy_by_session_ci95"] = by_session_ci
    out["totals"] = {
        "sessions": len(log.ses_user),
        "requests": log.requests,
        "impressions": len(imp_user),
        "served": sum(len(s) for s in log.ses_served),
    }
    return out


def run_closed_loop(
    methods: Sequence[str] = ("fyp", "random", "popular", "oracle"),
    *,
    users: int = 200,
    sessions_per_user: int = 8,
    session_length: int = 3,
    count: int = 10,
    seed: int = 0,
    videos: int = 5000,
    creators: int = 300,
    topics: int = 30,
    sounds: int = 400,
    n_boot: int = 1000,
    progress: Progress | ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run every method of ``methods`` (see :data:`METHODS`) in the closed loop on one
    world built from ``seed`` and the sizes, and report.

    ``users`` simulated users have ``sessions_per_user`` sessions each (one a simulated
    day), each of up to ``session_length`` feed requests of ``count`` videos. Returns a
    JSON-able dict: ``{"protocol": {...}, "methods": {name: {metric: {"mean": x,
    "ci95": [lo, hi]}, ..., "topic_entropy_by_session": [...],
    "topic_entropy_by_session_ci95": [[lo, hi], ...], "totals": {...},
    "elapsed_s": s}}}``, intervals by bootstrap over users (``n_boot`` resamples, seeded
    with ``seed``). Metrics (see :data:`METRICS`): watch time per session in seconds,
    views per session, watch ratio and like rate per impression, distinct creators and
    topics per window of 10 served items, the Gini of impressions over the world's
    creators, the share of impressions in a video's first hour after upload, and the
    topic entropy (bits) of each user's impressions per session (a metric value is
    ``{"mean": None, "ci95": None}`` where undefined, e.g. nothing served). The Gini's
    interval is bias-corrected (``bootstrap_ci_grouped(..., bias_corrected=True)``); the
    others are plain percentile intervals.

    The world's uploads span 30 days before its ``now``, and the run covers the last
    ``sessions_per_user`` of them, so ``sessions_per_user`` must be below 30 (at 8,
    about 70% of the catalog is there at the start and the rest arrives during the run).

    ``progress``: a rich ``Progress`` (a task per method, advanced after each session) or
    a callback ``(method, sessions done, sessions in all)``, called every 50 sessions
    and after the last.
    """
    if not methods:
        raise ValueError("no methods to run")
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"a method is listed twice: {list(methods)}")
    for what, value in (
        ("users", users),
        ("sessions_per_user", sessions_per_user),
        ("session_length", session_length),
        ("count", count),
        ("n_boot", n_boot),
    ):
        if value < 1:
            raise ValueError(f"{what} must be at least 1, got {value}")
    if sessions_per_user >= CATALOG_DAYS:
        raise ValueError(
            f"sessions_per_user must be below {CATALOG_DAYS} (one a day, within the "
            f"catalog's {CATALOG_DAYS} days of uploads), got {sessions_per_user}"
        )

    world = build_world(
        seed=seed,
        n_videos=videos,
        n_creators=creators,
        n_topics=topics,
        n_sounds=sounds,
        n_users=users,
        now_ms=DEFAULT_NOW_MS,
    )
    start_ms = world.now_ms - sessions_per_user * DAY_MS
    n_sessions = users * sessions_per_user
    protocol: dict[str, Any] = {
        "users": users,
        "sessions_per_user": sessions_per_user,
        "session_length": session_length,
        "count": count,
        "seed": seed,
        "world": {
            "videos": videos,
            "creators": creators,
            "topics": topics,
            "sounds": sounds,
            "now_ms": world.now_ms,
            "start_ms": start_ms,
            "initial_videos": sum(v.created_at <= start_ms for v in world.videos),
        },
        "impression": "a served video the user watched (was on screen)",
        "diversity_window": DIVERSITY_WINDOW,
        "n_boot": n_boot,
    }

    tasks: dict[str, TaskID] = {}
    if isinstance(progress, Progress):
        for name in methods:
            tasks[name] = progress.add_task(name, total=n_sessions)

    results: dict[str, Any] = {}
    for name in methods:

        def on_session(done: int, name: str = name) -> None:
            if isinstance(progress, Progress):
                progress.update(tasks[name], completed=done)
            elif progress is not None and (done % 50 == 0 or done == n_sessions):
                progress(name, done, n_sessions)

        began = time.perf_counter()
        log = _run_method(
            name,
            world,
            _schedule(world, sessions_per_user, start_ms, seed),
            seed=seed,
            start_ms=start_ms,
            session_length=session_length,
            count=count,
            on_session=on_session,
        )
        report = _report(world, log, sessions_per_user=sessions_per_user, n_boot=n_boot, seed=seed)
        report["elapsed_s"] = round(time.perf_counter() - began, 2)
        results[name] = report
    return {"protocol": protocol, "methods": results}


def _cell(metric: dict[str, Any], fmt: str) -> str:
    if metric.get("mean") is None:
        return "-"
    lo, hi = metric["ci95"]
    return f"{fmt.format(metric['mean'])}\n[dim]{fmt.format(lo)}–{fmt.format(hi)}[/dim]"


def closed_loop_table(result: dict[str, Any]) -> Table:
    """The report of :func:`run_closed_loop` as a table: metrics as rows, methods as
    columns (so a narrow terminal fits it), each cell the mean over its 95% interval;
    the last rows give the topic entropy of each session in turn."""
    p = result["protocol"]
    table = Table(
        title=(
            f"Closed loop: {p['users']} users × {p['sessions_per_user']} sessions of up to "
            f"{p['session_length']} × {p['count']} videos, "
            f"{p['world']['videos']:,} videos, seed {p['seed']} (95% CI over users)"
        )
    )
    methods: dict[str, dict[str, Any]] = result["methods"]
    table.add_column("metric", no_wrap=True)
    for name in methods:
        table.add_column(name, justify="right")
    for key, heading, fmt in METRICS:
        table.add_row(heading, *(_cell(report[key], fmt) for report in methods.values()))
    sessions = max(len(r["topic_entropy_by_session"]) for r in methods.values())
    for i in range(sessions):
        cells = []
        for report in methods.values():
            trend = report["topic_entropy_by_session"]
            x = trend[i] if i < len(trend) else None
            cells.append("-" if x is None else f"{x:.2f}")
        table.add_row(f"topic entropy, session {i + 1}", *cells)
    return table
