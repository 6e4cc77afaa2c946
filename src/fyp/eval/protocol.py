"""The offline protocol on KuaiRand: a split by day, and what each side of it may hold.

Training rows (dated up to ``train_until``) are all a method may learn from. Test rows
(dated ``test_from`` … ``test_until``) are read twice, by different parties:

* the *requests*: for each test user, the time and page (``tab``) of their first test
  impression, and which logged impressions they received — what a method is asked to
  rank;
* the *outcomes* (positives, long views, likes, watch ratios) — read only by the scorer.

:class:`EvalData` keeps the two apart: methods get :class:`Requests` and :class:`Train`;
:class:`Outcomes` go to the metrics. Nothing in ``Requests`` is derived from what the user
did with a test impression.

Dates are the logs' own ``date`` column (YYYYMMDD, the app's local day), as in the
reference figures of the dataset's README; rows without one are dated by ``time_ms`` in
UTC+8 (Beijing, where the app runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fyp.eval.kuairand import read_logs, read_videos
from fyp.types import DEFAULT_SURFACE, Video

__all__ = [
    "IMPRESSION_LABELS",
    "Catalog",
    "EvalData",
    "Outcomes",
    "Requests",
    "Split",
    "Train",
    "WalkDay",
    "impression_sessions",
    "load_eval_data",
    "load_walk_data",
    "parse_day",
]

# A positive for the full-ranking metrics: what the dataset's README calls ``is_positive``.
POSITIVE_FLAGS: tuple[str, ...] = ("long_view", "is_like", "is_follow", "is_comment", "is_forward")
# Labels the impression metrics score (AUC / GAUC each).
IMPRESSION_LABELS: tuple[str, ...] = ("long_view", "finish", "like", "click")
_LOCAL_OFFSET_MS = 8 * 3_600_000  # UTC+8
_FINISH_RATIO = 0.95  # KuaiRand's own "finish": watch ratio >= 0.95
_MAX_WATCH_RATIO = 5.0  # as the dataset caps it

# A user's impressions at most this far apart are one session (the gap the session
# literature usually takes).
SESSION_GAP_MS = 30 * 60_000

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` (or ``YYYYMMDD``) as a date; ValueError with the input otherwise."""
    cleaned = text.strip()
    try:
        if len(cleaned) == 8 and cleaned.isdigit():
            return date(int(cleaned[:4]), int(cleaned[4:6]), int(cleaned[6:]))
        return date.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"not a day (want YYYY-MM-DD): {text!r}") from None


def end_of_local_day(ms: int) -> int:
    """The first Unix ms of the local day after the one ``ms`` falls in (midnight)."""
    day = 86_400_000
    return ((ms + _LOCAL_OFFSET_MS) // day + 1) * day - _LOCAL_OFFSET_MS


def _day_number(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _day_of(number: int) -> date:
    return date(number // 10_000, number // 100 % 100, number % 100)


@dataclass(frozen=True, slots=True)
class Split:
    """Train on days ``<= train_until``; test on ``test_from`` … ``test_until`` (inclusive;
    open-ended when None). The test must start after training ends."""

    train_until: date
    test_from: date
    test_until: date | None = None

    def __post_init__(self) -> None:
        if self.test_from <= self.train_until:
            raise ValueError(
                f"the test ({self.test_from}) must start after training ends "
                f"({self.train_until}): a test day inside training would leak its outcomes"
            )
        if self.test_until is not None and self.test_until < self.test_from:
            raise ValueError(f"test_until {self.test_until} is before test_from {self.test_from}")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "train_until": self.train_until.isoformat(),
            "test_from": self.test_from.isoformat(),
            "test_until": None if self.test_until is None else self.test_until.isoformat(),
        }


@dataclass(frozen=True)
class Catalog:
    """The videos every method ranks over (the feature file plus videos only the training
    logs know), in one fixed order: row ``i`` is ``videos[i]`` for every method."""

    videos: list[Video]
    row_of: dict[str, int]
    creator: NDArray[np.str_]
    created_at: IntArray  # ms; -1 where unknown

    @classmethod
    def of(cls, videos: list[Video]) -> Catalog:
        return cls(
            videos,
            {v.video_id: i for i, v in enumerate(videos)},
            np.array([v.creator_id for v in videos], dtype=np.str_),
            np.array([-1 if v.created_at is None else v.created_at for v in videos], np.int64),
        )

    def __len__(self) -> int:
        return len(self.videos)


@dataclass(frozen=True)
class Train:
    """The training rows, as every method may read them."""

    frame: pl.DataFrame  # the log rows (read_logs columns), time-ordered
    end_ms: int  # the last training row's time: "now" at the end of training
    user: NDArray[np.str_]  # per row
    row: IntArray  # per row: catalog row
    time_ms: IntArray
    positive: NDArray[np.bool_]
    long_view: NDArray[np.bool_]
    seen: dict[str, set[int]]  # user -> catalog rows they had in training

    @classmethod
    def of(cls, frame: pl.DataFrame, catalog: Catalog) -> Train:
        """From log rows with labels (``user_id``, ``video_id``, ``time_ms``,
        ``positive``, ``long_view``, and for the regression ``finish``, ``is_like``,
        ``is_click``), every video in ``catalog``."""
        return _train(frame, catalog)


@dataclass(frozen=True)
class Requests:
    """What a method is asked, and nothing of what followed.

    Full ranking: ``users[i]`` asks at ``at_ms[i]`` on ``surface[i]`` (their first test
    impression). Impression ranking: impression ``j`` was ``imp_user[j]`` shown catalog row
    ``imp_row[j]`` at ``imp_time_ms[j]`` on ``imp_surface[j]``.
    """

    users: list[str]
    at_ms: IntArray
    surface: list[str]
    imp_user: NDArray[np.str_]
    imp_row: IntArray
    imp_time_ms: IntArray
    imp_surface: list[str]


@dataclass(frozen=True)
class Outcomes:
    """The test outcomes, for the scorer only.

    ``relevant[i]``: catalog rows user ``Requests.users[i]`` engaged with positively in the
    test period, less those they had in training. ``labels[name][j]`` and
    ``watch_ratio[j]``: what impression ``j`` led to. ``frame``: the test log rows, row
    ``j`` being impression ``j`` — what the prequential (online) protocol replays into an
    engine *after* scoring each impression.
    """

    relevant: list[set[int]]
    labels: dict[str, NDArray[np.bool_]]
    watch_ratio: FloatArray
    frame: pl.DataFrame


@dataclass(frozen=True)
class EvalData:
    data_dir: Path
    split: Split
    catalog: Catalog
    train: Train
    requests: Requests
    outcomes: Outcomes
    protocol: dict[str, object] = field(default_factory=dict)


def _with_day(frame: pl.DataFrame) -> pl.DataFrame:
    local_day = (
        ((pl.col("time_ms") + _LOCAL_OFFSET_MS) * 1_000)
        .cast(pl.Datetime("us"))
        .dt.strftime("%Y%m%d")
        .cast(pl.Int64)
    )
    return frame.with_columns(pl.coalesce(pl.col("date"), local_day).alias("day"))


def _with_labels(frame: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """Watch ratio and finish from the log where it has them, else from durations."""
    durations = pl.DataFrame(
        {
            "video_id": [int(v.video_id) for v in catalog.videos],
            "catalog_duration": [v.duration_ms for v in catalog.videos],
        }
    )
    duration = pl.coalesce(
        pl.when(pl.col("duration_ms") > 0).then(pl.col("duration_ms")),
        pl.col("catalog_duration"),
    )
    ratio = pl.coalesce(
        pl.col("watch_ratio"),
        (pl.col("play_time_ms") / duration).clip(0.0, _MAX_WATCH_RATIO),
        pl.lit(0.0),
    )
    return (
        frame.join(durations, on="video_id", how="left")
        .with_columns(ratio.alias("watch_ratio"))
        .with_columns(
            pl.coalesce(
                pl.col("finish").cast(pl.Boolean),
                pl.col("watch_ratio") >= _FINISH_RATIO,
            ).alias("finish"),
            pl.any_horizontal([pl.col(c) != 0 for c in POSITIVE_FLAGS]).alias("positive"),
        )
        .drop("catalog_duration")
    )


def _surface(tab: int | None) -> str:
    # The same naming as the import: the page a KuaiRand row ran on is surface "tab{n}".
    return DEFAULT_SURFACE if tab is None else f"tab{tab}"


@dataclass(frozen=True)
class _SplitLogs:
    """The logs on either side of a split, labelled. Rows of a video outside the
    catalog (one only the test logs know: no method can rank it) are dropped, and
    counted in the protocol."""

    catalog: Catalog
    train: pl.DataFrame
    train_dropped: int
    test: pl.DataFrame
    test_dropped: pl.DataFrame  # the test rows dropped


def _split_logs(data: Path, split: Split) -> _SplitLogs:
    logs = _with_day(read_logs(data))
    train_frame = logs.filter(pl.col("day") <= _day_number(split.train_until))
    test_filter = pl.col("day") >= _day_number(split.test_from)
    if split.test_until is not None:
        test_filter &= pl.col("day") <= _day_number(split.test_until)
    test_frame = logs.filter(test_filter)
    if train_frame.height == 0:
        raise ValueError(f"no log rows dated on or before {split.train_until} in {data}")
    if test_frame.height == 0:
        raise ValueError(f"no log rows in the test period {split.as_dict()} in {data}")

    catalog = Catalog.of(read_videos(data, train_frame))
    train_frame = _with_labels(train_frame, catalog)
    test_frame = _with_labels(test_frame, catalog)
    known = pl.col("video_id").cast(pl.String).is_in(list(catalog.row_of))
    kept = train_frame.filter(known)
    return _SplitLogs(
        catalog,
        kept,
        train_frame.height - kept.height,
        test_frame.filter(known),
        test_frame.filter(~known),
    )


def _users_of(frame: pl.DataFrame) -> list[str]:
    return sorted(set(frame["user_id"].cast(pl.String).to_list()), key=int)


def _sample(users: list[str], max_users: int | None, seed: int) -> list[str] | None:
    """A random sample (``seed``) of ``max_users`` of ``users``; None to keep them all."""
    if max_users is None or max_users >= len(users):
        return None
    picked = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
    return sorted((users[i] for i in picked), key=int)


def load_eval_data(
    data: Path,
    split: Split,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> EvalData:
    """Read the logs in ``data`` and split them.

    ``max_users`` (``--quick``) keeps a random sample (``seed``) of the test users, with
    only their test impressions; training keeps every row (methods learn from everyone).
    Raises ValueError when either side of the split is empty.
    """
    logs = _split_logs(data, split)
    catalog, train_frame, test_frame = logs.catalog, logs.train, logs.test
    test_users_all = _users_of(test_frame)
    sample = _sample(test_users_all, max_users, seed)
    if sample is not None:
        test_frame = test_frame.filter(pl.col("user_id").cast(pl.String).is_in(sample))

    train = _train(train_frame, catalog)
    requests, outcomes = _test(test_frame, catalog, train.seen)
    protocol: dict[str, object] = {
        **split.as_dict(),
        "data": str(data),
        "train_rows": train_frame.height,
        "train_rows_dropped_unknown_video": logs.train_dropped,
        "train_users": len(train.seen),
        "test_rows": test_frame.height,
        "test_rows_dropped_unknown_video": logs.test_dropped.height,
        "test_users": len(set(requests.imp_user.tolist())),
        "test_users_sampled_from": len(test_users_all),
        "ranking_users": len(requests.users),
        "ranking_users_without_training": sum(1 for u in requests.users if u not in train.seen),
        "catalog_videos": len(catalog),
        "sample_seed": seed,
    }
    if max_users is not None:
        protocol["max_users"] = max_users
    return EvalData(data, split, catalog, train, requests, outcomes, protocol)


@dataclass(frozen=True)
class WalkDay:
    """One day of the daily walk (:mod:`fyp.eval.walk`).

    ``data`` asks the day's questions (its requests; its outcomes for the scorer) of
    methods whose :class:`Train` is every row before the day: the training rows, then
    the walk's earlier days. ``rows``: every log row of the day, every user's (a
    ``--quick`` sample asks only some users, but everyone's rows are learned), in time
    order: what the methods learn once they have answered the day."""

    day: date
    data: EvalData
    rows: pl.DataFrame


def load_walk_data(
    data: Path,
    split: Split,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> list[WalkDay]:
    """The logs in ``data`` as a walk over the test days of ``split``, one
    :class:`WalkDay` per test day that has rows.

    Day ``d``'s training side is the rows dated up to ``split.train_until`` plus those of
    the test days before ``d``; its test side is the rows of ``d``. The catalog is the one
    of the first day (the feature file and the videos the training logs know) for every
    day: a video only later logs know is outside it, its rows dropped and counted, as in
    :func:`load_eval_data`. ``max_users`` keeps a random sample (``seed``) of the users of
    any test day, asked on each day they have rows. Raises ValueError when the training
    or the test side is empty."""
    logs = _split_logs(data, split)
    catalog, learned = logs.catalog, logs.train
    sample = _sample(_users_of(logs.test), max_users, seed)
    user = pl.col("user_id").cast(pl.String)

    days: list[WalkDay] = []
    last_learned = split.train_until
    for number in sorted(set(logs.test["day"].to_list())):
        day = _day_of(int(number))
        rows = logs.test.filter(pl.col("day") == number)  # time-ordered, as read_logs
        asked = rows if sample is None else rows.filter(user.is_in(sample))
        train = _train(learned, catalog)
        requests, outcomes = _test(asked, catalog, train.seen)
        split_of_day = Split(last_learned, day, day)
        protocol: dict[str, object] = {
            **split_of_day.as_dict(),
            "data": str(data),
            "train_rows": learned.height,
            "train_rows_dropped_unknown_video": logs.train_dropped,
            "train_users": len(train.seen),
            "test_rows": asked.height,
            "test_rows_dropped_unknown_video": logs.test_dropped.filter(
                pl.col("day") == number
            ).height,
            "test_users": len(set(requests.imp_user.tolist())),
            "test_users_sampled_from": rows["user_id"].n_unique(),
            "ranking_users": len(requests.users),
            "ranking_users_without_training": sum(1 for u in requests.users if u not in train.seen),
            "catalog_videos": len(catalog),
            "sample_seed": seed,
        }
        if max_users is not None:
            protocol["max_users"] = max_users
        data_of_day = EvalData(data, split_of_day, catalog, train, requests, outcomes, protocol)
        days.append(WalkDay(day, data_of_day, rows))
        learned = pl.concat([learned, rows], how="vertical_relaxed")
        last_learned = day
    return days


def _rows(frame: pl.DataFrame, catalog: Catalog) -> IntArray:
    return np.array([catalog.row_of[str(v)] for v in frame["video_id"].to_list()], dtype=np.int64)


def _train(frame: pl.DataFrame, catalog: Catalog) -> Train:
    users = np.array(frame["user_id"].cast(pl.String).to_list(), dtype=np.str_)
    rows = _rows(frame, catalog)
    seen: dict[str, set[int]] = {}
    for user, row in zip(users.tolist(), rows.tolist(), strict=True):
        seen.setdefault(user, set()).add(row)
    times = frame["time_ms"].to_numpy().astype(np.int64)
    return Train(
        frame=frame,
        end_ms=int(times.max()),
        user=users,
        row=rows,
        time_ms=times,
        positive=frame["positive"].to_numpy().astype(bool),
        long_view=(frame["long_view"].to_numpy() != 0),
        seen=seen,
    )


def _test(
    frame: pl.DataFrame, catalog: Catalog, seen: dict[str, set[int]]
) -> tuple[Requests, Outcomes]:
    frame = frame.sort(["user_id", "time_ms"], maintain_order=True)
    users = np.array(frame["user_id"].cast(pl.String).to_list(), dtype=np.str_)
    rows = _rows(frame, catalog)
    times = frame["time_ms"].to_numpy().astype(np.int64)
    surfaces = [_surface(t) for t in frame["tab"].to_list()]
    positive = frame["positive"].to_numpy().astype(bool)

    first: dict[str, tuple[int, str]] = {}
    relevant: dict[str, set[int]] = {}
    for user, row, at, surface, pos in zip(
        users.tolist(), rows.tolist(), times.tolist(), surfaces, positive.tolist(), strict=True
    ):
        first.setdefault(user, (at, surface))  # rows are time-ordered per user
        if pos and row not in seen.get(user, ()):
            relevant.setdefault(user, set()).add(row)
    ranking_users = sorted(relevant, key=int)
    requests = Requests(
        users=ranking_users,
        at_ms=np.array([first[u][0] for u in ranking_users], dtype=np.int64),
        surface=[first[u][1] for u in ranking_users],
        imp_user=users,
        imp_row=rows,
        imp_time_ms=times,
        imp_surface=surfaces,
    )
    outcomes = Outcomes(
        relevant=[relevant[u] for u in ranking_users],
        labels={
            "long_view": frame["long_view"].to_numpy() != 0,
            "finish": frame["finish"].to_numpy().astype(bool),
            "like": frame["is_like"].to_numpy() != 0,
            "click": frame["is_click"].to_numpy() != 0,
        },
        watch_ratio=frame["watch_ratio"].to_numpy().astype(np.float64),
        frame=frame,
    )
    return requests, outcomes


def impression_sessions(
    users: NDArray[np.str_], times_ms: IntArray, gap_ms: int = SESSION_GAP_MS
) -> IntArray:
    """A session number for each impression: one user's impressions, in time order, start
    a new session after a gap of more than ``gap_ms``. Read from the requests alone (who
    was shown something when), never from outcomes."""
    n = len(users)
    order = np.lexsort((times_ms, users))
    u, t = users[order], times_ms[order]
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (u[1:] != u[:-1]) | (np.diff(t) > gap_ms)
    sessions = np.empty(n, dtype=np.int64)
    sessions[order] = np.cumsum(new) - 1
    return sessions
