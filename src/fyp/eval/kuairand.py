"""KuaiRand-Pure: read the logs and the video features, turn them into the engine's inputs.

Reads both the project's parquet extracts (``log_*.parquet``, ``smoke_2000.parquet``) and
the original KuaiRand-Pure CSV layout (``log_standard_*.csv``,
``video_features_basic_pure.csv``, ``user_features_pure.csv``); the two share column names.

One log row is one video shown to one user; it becomes one :class:`Impression` and the
raw event dicts a client would have POSTed to ``/v1/events`` afterwards: always a ``view``
(``watch_ms`` = ``play_time_ms``) plus one event per explicit action flag. Event ids are
derived from the row, so importing the same files twice adds nothing the second time.

All times are Unix milliseconds, all durations milliseconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from fyp.attributes import as_attributes, value_problem
from fyp.types import DAY_MS, DEFAULT_SURFACE, Attributes, EventType, Impression, Video

__all__ = [
    "ImportSummary",
    "ImportTarget",
    "IngestOutcome",
    "KuaiRandRow",
    "RejectedLike",
    "find_log_files",
    "import_kuairand",
    "read_logs",
    "read_user_attributes",
    "read_videos",
    "replay_rows",
    "rows_to_records",
]

log = logging.getLogger(__name__)

VIDEO_FEATURES_FILE = "video_features_basic_pure.csv"
USER_FEATURES_FILE = "user_features_pure.csv"

# The user features that become user attributes: the categorical ones (the exact counts,
# follow_user_num and the like, come as their ``_range`` bands), and the anonymous
# one-hot features, categories too.
USER_ATTRIBUTE_COLUMNS: tuple[str, ...] = (
    "user_active_degree",
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
    *(f"onehot_feat{i}" for i in range(18)),
)
# The video features that become video attributes (and ``orientation``, from the size).
VIDEO_ATTRIBUTE_COLUMNS: tuple[str, ...] = ("video_type", "upload_type", "music_type")


# A parquet file is a log when it has these; every row needs them to become an impression.
_REQUIRED_LOG_COLUMNS: tuple[str, ...] = ("user_id", "video_id", "time_ms", "play_time_ms")

# Every column read_logs returns, with its type. Besides the required ones: what the
# records need (tab, action flags), what evaluation needs (date, is_click, long_view) and
# the video facts the parquet logs carry (used to fill gaps in the feature file). The
# original CSV logs lack the video facts; they come back null.
_LOG_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "video_id": pl.Int64(),
    "time_ms": pl.Int64(),
    "date": pl.Int64(),
    "tab": pl.Int64(),
    "play_time_ms": pl.Int64(),
    "duration_ms": pl.Int64(),
    "is_click": pl.Int64(),
    "long_view": pl.Int64(),
    "is_like": pl.Int64(),
    "is_follow": pl.Int64(),
    "is_comment": pl.Int64(),
    "is_forward": pl.Int64(),
    "is_hate": pl.Int64(),
    "author_id": pl.Int64(),
    "tag": pl.String(),
    "upload_dt": pl.String(),
    "video_duration": pl.Float64(),
    # Evaluation labels the parquet extracts carry; the CSV logs lack them (null), and the
    # evaluation derives them from play and video durations.
    "watch_ratio": pl.Float64(),
    "finish": pl.Int64(),
}

# Flags that are 0 when absent or null (an action not logged did not happen).
_FLAG_COLUMNS: tuple[str, ...] = (
    "is_click",
    "long_view",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
)

# Log flag -> event type, in the order the events are emitted after the view.
_ACTIONS: tuple[tuple[str, EventType], ...] = (
    ("is_like", EventType.LIKE),
    ("is_follow", EventType.FOLLOW),
    ("is_comment", EventType.COMMENT),
    ("is_forward", EventType.SHARE),
    ("is_hate", EventType.NOT_INTERESTED),
)

# Text columns must stay text: a tag column whose first rows hold single ids would
# otherwise be inferred as integers and fail on "12,60" further down.
_CSV_TEXT_COLUMNS: dict[str, pl.DataType] = {"tag": pl.String(), "upload_dt": pl.String()}
_CSV_INFER_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class KuaiRandRow:
    """One log row: the impression served and the raw events that followed it."""

    impression: Impression
    events: list[dict[str, object]]  # exactly as a client would POST them to /v1/events


class RejectedLike(Protocol):
    """One event the engine refused: its index in the ingested batch and why."""

    @property
    def index(self) -> int: ...

    @property
    def reason(self) -> str: ...


class IngestOutcome(Protocol):
    """What the engine did with one ingested batch."""

    @property
    def accepted(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def rejected(self) -> Sequence[RejectedLike]: ...


class ImportTarget(Protocol):
    """What :func:`import_kuairand` needs of the engine (the Engine satisfies it)."""

    def upsert_videos(self, videos: Sequence[Video]) -> int:
        """Add or replace videos in the catalog; returns how many were upserted."""
        ...

    def register_users(self, user_ids: Sequence[str]) -> int:
        """Create the users not known yet, homed in the deployment's region."""
        ...

    def put_user_attributes(self, attributes: Mapping[str, Attributes]) -> int:
        """Set users' attributes (by user id), creating the users not known yet."""
        ...

    def pseudonym(self, user_id: str) -> str:
        """How the engine files ``user_id`` (what the import's ids may name)."""
        ...

    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        """Remember what was served, so later events can be joined to it."""
        ...

    def ingest(self, raw_events: Sequence[object]) -> IngestOutcome:
        """Validate raw event dicts and append the valid ones durably."""
        ...

    def learn(self) -> int:
        """Apply pending log entries to model state; returns how many were applied."""
        ...


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """Counts from one :func:`import_kuairand` run.

    ``videos``: upserted; ``rows``: log rows (impressions) imported; ``events_*``: what
    ingest accepted, found already logged, or refused; ``videos_skipped``: videos with no
    usable duration (or creator) anywhere, left out of the catalog; ``rejected_reasons``:
    refused events counted by reason; ``users_with_attributes``: users whose attributes
    (from ``user_features_pure.csv``) were set or changed; ``attributes_refused``: values
    of that file or of the videos' the attribute policy refused (left out).
    """

    videos: int
    rows: int
    events_accepted: int
    events_duplicate: int
    events_rejected: int
    videos_skipped: int
    rejected_reasons: dict[str, int]
    users_with_attributes: int = 0
    attributes_refused: int = 0


# --------------------------------------------------------------------------- files


def _parquet_columns(path: Path) -> set[str]:
    return set(pl.scan_parquet(path).collect_schema().names())


def _reason_kind(reason: str) -> str:
    """A rejection reason without its particulars (ids, numbers), so reasons of one kind
    are counted together: "video_id: unknown video '…' (add it …)"."""
    return re.sub(r"\b\d+\b", "N", re.sub(r"'[^']*'", "'…'", reason))


def find_log_files(data: Path, include_smoke: bool = False) -> list[Path]:
    """Every log file in ``data``, sorted by name.

    A log file is a ``*.parquet`` whose columns include user_id, video_id, time_ms and
    play_time_ms, or a ``log_*.csv`` (the original layout; ``log_random_*.csv``, the
    random-exposure log, is left out: pass it in ``files`` to use it). Files whose name starts with
    ``smoke`` are samples of the big log and are skipped, unless ``include_smoke`` or
    unless they are the only log files there. Raises FileNotFoundError if none is found.
    """
    if not data.is_dir():
        raise FileNotFoundError(f"KuaiRand data directory not found: {data}")
    found: list[Path] = []
    for path in data.iterdir():
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            if set(_REQUIRED_LOG_COLUMNS) <= _parquet_columns(path):
                found.append(path)
        elif (
            path.suffix == ".csv"
            and path.name.startswith("log_")
            # KuaiRand's log_random_* holds its randomly exposed videos, kept for unbiased
            # evaluation: it is not feed history to train on.
            and not path.name.startswith("log_random")
        ):
            found.append(path)
    found.sort(key=lambda p: p.name)
    if not found:
        raise FileNotFoundError(
            f"no KuaiRand log files in {data}: expected *.parquet logs (with columns "
            f"{', '.join(_REQUIRED_LOG_COLUMNS)}) or log_*.csv files (KuaiRand-Pure layout)"
        )
    full = [p for p in found if not p.name.startswith("smoke")]
    if include_smoke or not full:
        return found
    return full


def _scan_log(path: Path) -> pl.LazyFrame:
    """One log file, lazily, with exactly the columns and types of ``_LOG_SCHEMA``."""
    if path.suffix == ".parquet":
        lf = pl.scan_parquet(path)
    elif path.suffix == ".csv":
        lf = pl.scan_csv(
            path, schema_overrides=_CSV_TEXT_COLUMNS, infer_schema_length=_CSV_INFER_ROWS
        )
    else:
        raise ValueError(f"not a KuaiRand log file (want .parquet or .csv): {path}")
    names = set(lf.collect_schema().names())
    missing = [c for c in _REQUIRED_LOG_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: not a KuaiRand log, missing columns {missing}")
    exprs: list[pl.Expr] = []
    for name, dtype in _LOG_SCHEMA.items():
        if name in names:
            expr = pl.col(name).cast(dtype, strict=False)
        else:
            expr = pl.lit(None, dtype=dtype).alias(name)
        if name in _FLAG_COLUMNS or name == "play_time_ms":
            expr = expr.fill_null(0)
        exprs.append(expr)
    return lf.select(exprs)


def read_logs(
    data: Path,
    files: list[Path] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> pl.DataFrame:
    """The log rows of ``files`` (default: :func:`find_log_files`), concatenated.

    Only the columns of ``_LOG_SCHEMA`` are kept (absent optional ones come back null,
    absent or null action flags and play time as 0). Rows are sorted by ``time_ms`` then
    ``user_id`` (ties keep file order) and restricted to ``since_ms <= time_ms <
    until_ms`` when given. Rows without a user, video or time cannot be replayed; they
    are dropped with a warning. Relative ``files`` are taken relative to ``data``.
    """
    paths = find_log_files(data) if files is None else [_resolve(data, p) for p in files]
    if not paths:
        raise FileNotFoundError(f"no KuaiRand log files given (data directory {data})")
    lf = pl.concat([_scan_log(p) for p in paths], how="vertical")
    if since_ms is not None:
        lf = lf.filter(pl.col("time_ms") >= since_ms)
    if until_ms is not None:
        lf = lf.filter(pl.col("time_ms") < until_ms)
    frame = lf.sort(["time_ms", "user_id"], maintain_order=True).collect()
    complete = frame.drop_nulls(["user_id", "video_id", "time_ms"])
    if complete.height != frame.height:
        log.warning(
            "KuaiRand logs: dropped %d rows without user_id, video_id or time_ms",
            frame.height - complete.height,
        )
    return complete


def _resolve(data: Path, path: Path) -> Path:
    return path if path.is_absolute() or path.exists() else data / path


# -------------------------------------------------------------------------- videos


def _parse_tags(raw: str | None, cache: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    if raw is None:
        return ()
    tags = cache.get(raw)
    if tags is None:
        parts = (t.strip() for t in raw.split(","))
        tags = tuple(t for t in parts if t and t.lower() != "unknown")
        cache[raw] = tags
    return tags


def _read_video_features(data: Path) -> pl.DataFrame:
    path = data / VIDEO_FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"KuaiRand video features not found: {path}")
    lf = pl.scan_csv(path, schema_overrides=_CSV_TEXT_COLUMNS, infer_schema_length=_CSV_INFER_ROWS)
    names = set(lf.collect_schema().names())
    missing = [c for c in ("video_id", "author_id", "video_duration") if c not in names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")

    def col(name: str, dtype: pl.DataType) -> pl.Expr:
        if name in names:
            return pl.col(name).cast(dtype, strict=False)
        return pl.lit(None, dtype=dtype).alias(name)

    duration = col("video_duration", pl.Float64()).round(0).cast(pl.Int64)
    width, height = col("server_width", pl.Float64()), col("server_height", pl.Float64())
    return (
        lf.select(
            col("video_id", pl.Int64()),
            col("author_id", pl.Int64()),
            pl.when(duration > 0).then(duration).alias("duration"),
            col("music_id", pl.Int64()),
            col("tag", pl.String()),
            col("upload_dt", pl.String()),
            *(_category(col(c, pl.String()), c) for c in VIDEO_ATTRIBUTE_COLUMNS),
            pl.when((width > 0) & (height > 0))
            .then(
                pl.when(height > width)
                .then(pl.lit("portrait"))
                .when(width > height)
                .then(pl.lit("landscape"))
                .otherwise(pl.lit("square"))
            )
            .alias("orientation"),
        )
        .drop_nulls("video_id")
        .unique("video_id", keep="first", maintain_order=True)
        .collect()
    )


def _category(expr: pl.Expr, name: str) -> pl.Expr:
    """A feature column as attribute values: text, whole numbers without the ``.0`` a
    float column gives them, blanks and nulls as null."""
    text = expr.cast(pl.String).str.strip_chars()
    return (
        pl.when(text.str.len_chars() > 0)
        .then(text.str.replace(r"^(-?\d+)\.0+$", "${1}"))
        .alias(name)
    )


def _attributes(
    names: Sequence[str], values: Sequence[str | None], refused: dict[str, bool]
) -> tuple[Attributes, int]:
    """The attributes of one row (nulls left out), and how many values the attribute
    policy refused (left out too). ``refused``: value -> whether the policy refuses it,
    filled as values come (a feature file repeats a few values over many rows)."""
    kept: dict[str, str] = {}
    n_refused = 0
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue
        bad = refused.get(value)
        if bad is None:
            bad = refused[value] = value_problem(value) is not None
        if bad:
            n_refused += 1
        else:
            kept[name] = value
    return as_attributes(kept), n_refused


def read_user_attributes(data: Path) -> tuple[dict[str, Attributes], int]:
    """User id -> attributes from ``user_features_pure.csv`` (the columns of
    ``USER_ATTRIBUTE_COLUMNS`` it has), and how many values the attribute policy refused;
    empty when the file is not there (the project's extracts may lack it)."""
    path = data / USER_FEATURES_FILE
    if not path.is_file():
        log.info("KuaiRand: no %s in %s, users get no attributes", USER_FEATURES_FILE, data)
        return {}, 0
    lf = pl.scan_csv(path, infer_schema=False)  # every column as text, as it is written
    names = set(lf.collect_schema().names())
    if "user_id" not in names:
        raise ValueError(f"{path}: missing column user_id")
    columns = [c for c in USER_ATTRIBUTE_COLUMNS if c in names]
    frame = (
        lf.select(pl.col("user_id").str.strip_chars(), *(_category(pl.col(c), c) for c in columns))
        .drop_nulls("user_id")
        .unique("user_id", keep="first", maintain_order=True)
        .collect()
    )
    out: dict[str, Attributes] = {}
    refused = 0
    checked: dict[str, bool] = {}
    for user_id, *values in frame.iter_rows():
        out[str(user_id)], n = _attributes(columns, values, checked)
        refused += n
    return out, refused


def _videos_from_logs(logs: pl.DataFrame) -> pl.DataFrame:
    """Per video, the first non-null fact the log rows carry (positive durations only)."""
    frame = logs
    for name in ("author_id", "duration_ms", "video_duration", "tag", "upload_dt"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=_LOG_SCHEMA[name]).alias(name))
    log_dur = pl.col("duration_ms").cast(pl.Int64, strict=False)
    feat_dur = pl.col("video_duration").cast(pl.Float64, strict=False).round(0).cast(pl.Int64)
    return (
        frame.lazy()
        .select(
            pl.col("video_id").cast(pl.Int64),
            pl.col("author_id").cast(pl.Int64, strict=False).alias("log_author_id"),
            pl.when(log_dur > 0)
            .then(log_dur)
            .when(feat_dur > 0)
            .then(feat_dur)
            .alias("log_duration"),
            pl.col("tag").cast(pl.String).alias("log_tag"),
            pl.col("upload_dt").cast(pl.String).alias("log_upload_dt"),
        )
        .drop_nulls("video_id")
        .group_by("video_id", maintain_order=True)
        .agg(
            pl.col(c).drop_nulls().first()
            for c in ("log_author_id", "log_duration", "log_tag", "log_upload_dt")
        )
        .collect()
    )


def _read_videos_counted(data: Path, logs: pl.DataFrame | None) -> tuple[list[Video], int]:
    """The catalog and how many videos were skipped for want of a duration or creator."""
    feats = _read_video_features(data)
    if logs is not None and logs.height:
        # Feature-file values win; the logs only fill what the feature file lacks.
        merged = feats.join(
            _videos_from_logs(logs), on="video_id", how="full", coalesce=True
        ).select(
            "video_id",
            pl.coalesce("author_id", "log_author_id").alias("author_id"),
            pl.coalesce("duration", "log_duration").alias("duration"),
            "music_id",
            pl.coalesce("tag", "log_tag").alias("tag"),
            pl.coalesce("upload_dt", "log_upload_dt").alias("upload_dt"),
            *VIDEO_ATTRIBUTE_COLUMNS,
            "orientation",
        )
    else:
        merged = feats
    merged = merged.sort("video_id").with_columns(
        (
            pl.col("upload_dt")
            .str.strip_chars()
            .str.to_date("%Y-%m-%d", strict=False)
            .cast(pl.Int64)
            * DAY_MS
        ).alias("created_at")
    )
    usable = merged.filter(pl.col("duration").is_not_null() & pl.col("author_id").is_not_null())
    skipped = merged.height - usable.height
    if skipped:
        log.warning(
            "KuaiRand videos: skipped %d of %d with no usable duration or creator",
            skipped,
            merged.height,
        )
    cache: dict[str, tuple[str, ...]] = {}
    attribute_names = (*VIDEO_ATTRIBUTE_COLUMNS, "orientation")
    checked: dict[str, bool] = {}
    videos = []
    for vid, author, duration, music, tag, created, *values in usable.select(
        "video_id", "author_id", "duration", "music_id", "tag", "created_at", *attribute_names
    ).iter_rows():
        attributes, _ = _attributes(attribute_names, values, checked)  # (all pass)
        videos.append(
            Video(
                video_id=str(vid),
                creator_id=str(author),
                duration_ms=duration,
                sound_id=None if music is None else str(music),
                hashtags=_parse_tags(tag, cache),
                caption="",
                created_at=created,
                labels=(),
                attributes=attributes,
            )
        )
    return videos, skipped


def read_videos(data: Path, logs: pl.DataFrame | None = None) -> list[Video]:
    """The catalog from ``video_features_basic_pure.csv``, sorted by numeric video id.

    video_id = str(video_id), creator_id = str(author_id), duration_ms = video_duration,
    sound_id = str(music_id) (None if null), hashtags = the ``tag`` ids (null, empty and
    "unknown" skipped), created_at = ``upload_dt`` at 00:00 UTC in Unix ms (None if null),
    attributes = ``video_type``, ``upload_type``, ``music_type`` and ``orientation``
    (portrait, landscape or square, from ``server_width`` and ``server_height``), each
    where known.
    Videos in ``logs`` but not in the file, or with a null duration there, are filled in
    from the log columns (author_id, duration_ms, tag, upload_dt). Videos with no positive
    duration (or no creator) anywhere are skipped and logged.
    """
    return _read_videos_counted(data, logs)[0]


# ------------------------------------------------------------------------- records

_RECORD_COLUMNS: tuple[str, ...] = (
    "user_id",
    "video_id",
    "time_ms",
    "tab",
    "play_time_ms",
    *(flag for flag, _ in _ACTIONS),
)


def _record_frame(logs: pl.DataFrame, id_of: Mapping[str, str] | None = None) -> pl.DataFrame:
    """The per-row values of the records, strings built by polars (faster than Python).

    Columns: user, video, time_ms, request_id, surface, watch_ms, ts, event-id prefix,
    whether any action flag is set, then the action flags in ``_ACTIONS`` order. The
    request and event ids name the user by ``id_of[user]`` when given (the engine's
    pseudonym: ids are stored as they are, and must not carry a raw user id).
    """
    cols: list[pl.Expr] = []
    for name in _RECORD_COLUMNS:
        dtype = _LOG_SCHEMA[name]
        expr = (
            pl.col(name).cast(dtype, strict=False)
            if name in logs.columns
            else pl.lit(None, dtype=dtype).alias(name)
        )
        cols.append(expr if name == "tab" else expr.fill_null(0))
    flags = [flag for flag, _ in _ACTIONS]
    user = pl.col("user_id").cast(pl.String)
    named = user if id_of is None else user.replace(id_of)
    video = pl.col("video_id").cast(pl.String)
    time_ms = pl.col("time_ms").cast(pl.String)
    watch = pl.max_horizontal(pl.col("play_time_ms"), pl.lit(0, dtype=pl.Int64))
    tab_surface = pl.concat_str(pl.lit("tab"), pl.col("tab").cast(pl.String))
    return (
        logs.lazy()
        .select(cols)
        .select(
            user.alias("uid"),
            video.alias("vid"),
            pl.col("time_ms"),
            # KuaiRand has no request ids; a user can be shown two videos in the same
            # millisecond, so the video is part of the id (and a copied row is one impression).
            pl.concat_str(pl.lit("kr-"), named, pl.lit("-"), time_ms, pl.lit("-"), video).alias(
                "request_id"
            ),
            pl.when(pl.col("tab").is_null())
            .then(pl.lit(DEFAULT_SURFACE))
            .otherwise(tab_surface)
            .alias("surface"),
            watch.alias("watch_ms"),
            (pl.col("time_ms") + watch).alias("ts"),
            pl.concat_str(
                pl.lit("kr-"), named, pl.lit("-"), video, pl.lit("-"), time_ms, pl.lit("-")
            ).alias("id_prefix"),
            pl.any_horizontal(pl.col(flags) != 0).alias("any_action"),
            *(pl.col(flag) != 0 for flag in flags),
        )
        .collect()
    )


def rows_to_records(
    logs: pl.DataFrame, id_of: Callable[[str], str] | None = None
) -> Iterator[KuaiRandRow]:
    """One :class:`KuaiRandRow` per log row, in the frame's order.

    Impression: request_id ``kr-{user}-{time_ms}-{video_id}``, surface ``tab{tab}`` (the
    default feed surface if tab is null), position 0, source ``logged``, score 0, ts =
    time_ms. Events: a ``view`` with watch_ms = max(play_time_ms, 0), then like / follow /
    comment / share / not_interested for each flag set; all at ts = time_ms + watch_ms (the
    actions follow the start of the video), with id ``kr-{user}-{video}-{time_ms}-{type}``.
    ``{user}`` is ``id_of(user_id)`` when given (the engine's pseudonym: no raw id is
    stored in an id), else the user id; the events' ``user_id`` is the raw one either way.
    """
    view = EventType.VIEW.value
    actions = [kind.value for _, kind in _ACTIONS]
    names = None
    if id_of is not None:
        users = logs["user_id"].cast(pl.String).unique().to_list()
        names = {u: id_of(u) for u in users if u is not None}
    frame = _record_frame(logs, names)
    for (
        uid,
        vid,
        time_ms,
        request_id,
        surface,
        watch_ms,
        ts,
        prefix,
        any_action,
        *flags,
    ) in frame.iter_rows(named=False):
        events: list[dict[str, object]] = [
            {
                "event_id": prefix + view,
                "user_id": uid,
                "video_id": vid,
                "type": view,
                "ts": ts,
                "request_id": request_id,
                "surface": surface,
                "watch_ms": watch_ms,
            }
        ]
        if any_action:
            for flag, kind in zip(flags, actions, strict=True):
                if flag:
                    events.append(
                        {
                            "event_id": prefix + kind,
                            "user_id": uid,
                            "video_id": vid,
                            "type": kind,
                            "ts": ts,
                            "request_id": request_id,
                            "surface": surface,
                        }
                    )
        yield KuaiRandRow(
            Impression(
                request_id=request_id,
                user_id=uid,
                video_id=vid,
                position=0,
                source="logged",
                score=0.0,
                surface=surface,
                ts=time_ms,
                reason="",
            ),
            events,
        )


# -------------------------------------------------------------------------- import


def replay_rows(engine: ImportTarget, rows: pl.DataFrame) -> IngestOutcome:
    """Log rows into ``engine`` as they happened: their impressions recorded, their
    events ingested, then learned."""
    impressions: list[Impression] = []
    events: list[dict[str, object]] = []
    for record in rows_to_records(rows, engine.pseudonym):
        impressions.append(record.impression)
        events.extend(record.events)
    engine.register_users(sorted({i.user_id for i in impressions}))
    engine.record_impressions(impressions)
    outcome = engine.ingest(events)
    engine.learn()
    return outcome


def import_kuairand(
    engine: ImportTarget,
    data: Path,
    *,
    chunk_rows: int = 5000,
    files: list[Path] | None = None,
    until_ms: int | None = None,
    logs: pl.DataFrame | None = None,
    videos: list[Video] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Load KuaiRand into ``engine``: the catalog, the users' attributes, then the logs
    in time order.

    Upserts every video first (in batches of ``chunk_rows``), sets the attributes of
    every user of ``user_features_pure.csv`` (creating them: the app knows its users
    before they act, newcomers included), then for each chunk of
    ``chunk_rows`` log rows: ``record_impressions`` (so the events can be joined to what
    was served), ``ingest`` of all the chunk's events, ``learn``; then
    ``progress(rows_done, rows_total)``. ``files`` and ``until_ms`` (exclusive) select the
    rows as in :func:`read_logs`; or ``logs`` gives them already read (the evaluation
    passes its training rows), and ``videos`` the catalog already read from them
    (:func:`read_videos` of the same logs). Refused events are counted by reason.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if logs is None:
        logs = read_logs(data, files=files, until_ms=until_ms)
    elif files is not None or until_ms is not None:
        raise ValueError("pass either logs or files/until_ms, not both")
    if videos is None:
        videos, videos_skipped = _read_videos_counted(data, logs)
    else:
        videos_skipped = 0  # counted by whoever read them
    upserted = 0
    for start in range(0, len(videos), chunk_rows):
        upserted += engine.upsert_videos(videos[start : start + chunk_rows])
    user_attributes, attributes_refused = read_user_attributes(data)
    users_with_attributes = engine.put_user_attributes(user_attributes)

    accepted = duplicates = rejected = 0
    reasons: dict[str, int] = {}
    total = logs.height
    for start in range(0, total, chunk_rows):
        outcome = replay_rows(engine, logs.slice(start, chunk_rows))
        accepted += outcome.accepted
        duplicates += outcome.duplicates
        for refused in outcome.rejected:
            rejected += 1
            kind = _reason_kind(refused.reason)
            reasons[kind] = reasons.get(kind, 0) + 1
        if progress is not None:
            progress(min(start + chunk_rows, total), total)
    if rejected:
        log.info(
            "KuaiRand import: %d events rejected (%d distinct reasons)", rejected, len(reasons)
        )
    return ImportSummary(
        videos=upserted,
        rows=total,
        events_accepted=accepted,
        events_duplicate=duplicates,
        events_rejected=rejected,
        videos_skipped=videos_skipped,
        rejected_reasons=reasons,
        users_with_attributes=users_with_attributes,
        attributes_refused=attributes_refused,
    )
