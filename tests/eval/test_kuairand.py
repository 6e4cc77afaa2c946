"""KuaiRand reading and import: videos, logs (parquet and original CSV), records, import."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import polars as pl
import pytest

from fyp.eval.kuairand import (
    ImportSummary,
    KuaiRandRow,
    find_log_files,
    import_kuairand,
    read_logs,
    read_user_attributes,
    read_videos,
    rows_to_records,
)
from fyp.types import DEFAULT_SURFACE, Attributes, Impression, Video

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kuairand-pure"
SMOKE = "smoke_2000.parquet"
VIDEO_FEATURES = "video_features_basic_pure.csv"
USER_FEATURES = "user_features_pure.csv"

# The columns of the original KuaiRand-Pure log_standard_*.csv files.
ORIGINAL_LOG_COLUMNS = [
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
]


@pytest.fixture(scope="module")
def data(unavailable: Callable[[str], NoReturn]) -> Path:
    if not DATA.is_dir():
        unavailable(
            f"KuaiRand data not found at {DATA}; these tests run where ../shared/data is present"
        )
    return DATA


@pytest.fixture(scope="module")
def smoke_logs(data: Path) -> pl.DataFrame:
    return read_logs(data, files=[data / SMOKE])


@pytest.fixture(scope="module")
def smoke_records(smoke_logs: pl.DataFrame) -> list[KuaiRandRow]:
    return list(rows_to_records(smoke_logs))


def _smoke_only_dir(data: Path, target: Path, users: bool = False) -> Path:
    """The smoke log and the video features; ``users``: the user features too (27,285
    users to create: an engine takes seconds)."""
    target.mkdir()
    (target / SMOKE).symlink_to(data / SMOKE)
    (target / VIDEO_FEATURES).symlink_to(data / VIDEO_FEATURES)
    if users:
        (target / USER_FEATURES).symlink_to(data / USER_FEATURES)
    return target


# ---------------------------------------------------------------------------- files


@pytest.mark.kuairand
def test_find_log_files_skips_smoke_unless_asked_or_alone(data: Path, tmp_path: Path) -> None:
    names = [p.name for p in find_log_files(data)]
    assert names == ["log_2022-04-25_to_04-30.parquet"]
    assert SMOKE in [p.name for p in find_log_files(data, include_smoke=True)]
    only_smoke = _smoke_only_dir(data, tmp_path / "smoke")
    assert [p.name for p in find_log_files(only_smoke)] == [SMOKE]


def test_find_log_files_raises_when_none(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    pl.DataFrame({"video_id": [1]}).write_parquet(tmp_path / "videos.parquet")
    with pytest.raises(FileNotFoundError, match="no KuaiRand log files"):
        find_log_files(tmp_path)


# --------------------------------------------------------------------------- videos


@pytest.mark.kuairand
def test_read_videos_maps_the_feature_file(data: Path) -> None:
    features = pl.read_csv(data / VIDEO_FEATURES, schema_overrides={"tag": pl.String})
    assert features.height == 7583
    no_duration = features["video_duration"].null_count()
    assert no_duration > 0  # picture posts: no duration, so not playable as videos

    videos = read_videos(data)
    assert len(videos) == 7583 - no_duration
    assert [int(v.video_id) for v in videos] == sorted(int(v.video_id) for v in videos)
    by_id = {v.video_id: v for v in videos}
    assert by_id["0"] == Video(
        video_id="0",
        creator_id="7349781",
        duration_ms=87433,
        sound_id="9155697141",
        hashtags=("39",),
        caption="",
        created_at=1_649_548_800_000,  # 2022-04-10T00:00:00Z
        labels=(),
        attributes=(
            ("music_type", "9"),
            ("orientation", "portrait"),  # 720 x 1280
            ("upload_type", "LongImport"),
            ("video_type", "NORMAL"),
        ),
    )
    multi = features.filter(pl.col("tag").str.contains(",")).row(0, named=True)
    assert by_id[str(multi["video_id"])].hashtags == tuple(multi["tag"].split(","))
    untagged = features.filter(
        pl.col("tag").is_null() & pl.col("video_duration").is_not_null()
    ).row(0, named=True)
    assert by_id[str(untagged["video_id"])].hashtags == ()


def test_read_videos_fills_gaps_from_logs(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "video_id": [1, 2, 3],
            "author_id": [10, 20, 30],
            "upload_dt": ["2022-04-10", None, "2022-04-11"],
            "video_duration": [1000.0, None, None],
            "music_id": [5, None, 7],
            "tag": ["1,unknown,,2", None, "3"],
        }
    ).write_csv(tmp_path / VIDEO_FEATURES)
    logs = pl.DataFrame(
        {
            "video_id": [2, 2, 3, 4, 5],
            "author_id": [20, 20, 30, 40, None],
            "duration_ms": [0, 2000, 0, 4000, 5000],
            "tag": ["9", "9", "3", "4,5", None],
            "upload_dt": ["2022-04-09", "2022-04-09", "2022-04-11", None, None],
        }
    )
    videos = {v.video_id: v for v in read_videos(tmp_path, logs)}
    # 3: no duration anywhere; 5: no creator anywhere.
    assert sorted(videos) == ["1", "2", "4"]
    assert videos["1"].hashtags == ("1", "2")
    assert videos["2"] == Video("2", "20", 2000, None, ("9",), created_at=1_649_462_400_000)
    assert videos["4"] == Video("4", "40", 4000, None, ("4", "5"), created_at=None)


# ----------------------------------------------------------------------------- logs


@pytest.mark.kuairand
def test_read_logs_smoke(smoke_logs: pl.DataFrame) -> None:
    assert smoke_logs.height == 2000
    keys = smoke_logs.select("time_ms", "user_id").rows()
    assert keys == sorted(keys)
    assert {"user_id", "video_id", "time_ms", "play_time_ms", "tab", "is_like"} <= set(
        smoke_logs.columns
    )


@pytest.mark.kuairand
def test_read_logs_time_window(data: Path, smoke_logs: pl.DataFrame) -> None:
    times = smoke_logs["time_ms"]
    since, until = int(times[500]), int(times[1500])
    window = read_logs(data, files=[Path(SMOKE)], since_ms=since, until_ms=until)
    expected = smoke_logs.filter((pl.col("time_ms") >= since) & (pl.col("time_ms") < until))
    assert window.height == expected.height > 0
    assert window["time_ms"].min() == since
    assert int(window["time_ms"].max()) < until  # type: ignore[arg-type]


# -------------------------------------------------------------------------- records


@pytest.mark.kuairand
def test_records_map_rows(smoke_logs: pl.DataFrame, smoke_records: list[KuaiRandRow]) -> None:
    assert len(smoke_records) == smoke_logs.height
    for rec, row in zip(smoke_records, smoke_logs.iter_rows(named=True), strict=True):
        user, video, time_ms = str(row["user_id"]), str(row["video_id"]), row["time_ms"]
        request_id = f"kr-{user}-{time_ms}-{video}"
        surface = f"tab{row['tab']}"
        assert rec.impression == Impression(
            request_id, user, video, 0, "logged", 0.0, surface, time_ms, ""
        )
        views = [e for e in rec.events if e["type"] == "view"]
        assert len(views) == 1
        watch = max(row["play_time_ms"], 0)
        assert views[0] == {
            "event_id": f"kr-{user}-{video}-{time_ms}-view",
            "user_id": user,
            "video_id": video,
            "type": "view",
            "ts": time_ms + watch,
            "request_id": request_id,
            "surface": surface,
            "watch_ms": watch,
        }
        likes = [e for e in rec.events if e["type"] == "like"]
        assert len(likes) == (1 if row["is_like"] else 0)
        for event in rec.events:
            assert event["event_id"] == f"kr-{user}-{video}-{time_ms}-{event['type']}"
            assert event["surface"] == surface and event["request_id"] == request_id
    assert sum(1 for r in smoke_records for e in r.events if e["type"] == "like") == int(
        smoke_logs["is_like"].sum()
    )


@pytest.mark.kuairand
def test_record_ids_carry_the_pseudonym_not_the_user_id(smoke_logs: pl.DataFrame) -> None:
    records = list(rows_to_records(smoke_logs, lambda u: "p" + u))
    for rec, row in zip(records, smoke_logs.iter_rows(named=True), strict=True):
        prefix = f"kr-p{row['user_id']}-"
        assert rec.impression.request_id.startswith(prefix)
        assert all(str(e["event_id"]).startswith(prefix) for e in rec.events)
        assert all(e["request_id"] == rec.impression.request_id for e in rec.events)
        assert all(e["user_id"] == str(row["user_id"]) for e in rec.events)


def test_records_are_deterministic(
    smoke_logs: pl.DataFrame, smoke_records: list[KuaiRandRow]
) -> None:
    assert list(rows_to_records(smoke_logs)) == smoke_records


def test_records_every_action_and_edge_values() -> None:
    logs = pl.DataFrame(
        {
            "user_id": [7, 8],
            "video_id": [3, 4],
            "time_ms": [1_000, 2_000],
            "tab": [2, None],
            "play_time_ms": [500, -5],
            "is_like": [1, 0],
            "is_follow": [1, 0],
            "is_comment": [1, 0],
            "is_forward": [1, 0],
            "is_hate": [1, None],
        }
    )
    first, second = rows_to_records(logs)
    assert [e["type"] for e in first.events] == [
        "view",
        "like",
        "follow",
        "comment",
        "share",
        "not_interested",
    ]
    assert all(e["ts"] == 1_500 for e in first.events)
    assert all("watch_ms" not in e for e in first.events[1:])
    assert second.impression.surface == DEFAULT_SURFACE
    assert second.events == [
        {
            "event_id": "kr-8-4-2000-view",
            "user_id": "8",
            "video_id": "4",
            "type": "view",
            "ts": 2_000,
            "request_id": "kr-8-2000-4",
            "surface": DEFAULT_SURFACE,
            "watch_ms": 0,
        }
    ]


@pytest.mark.kuairand
def test_original_csv_layout_reads_like_parquet(data: Path, tmp_path: Path) -> None:
    sample = pl.read_parquet(data / SMOKE).head(50)
    parquet_dir = tmp_path / "parquet"
    csv_dir = tmp_path / "csv"
    for folder in (parquet_dir, csv_dir):
        folder.mkdir()
        (folder / VIDEO_FEATURES).symlink_to(data / VIDEO_FEATURES)
    sample.write_parquet(parquet_dir / "log_sample.parquet")
    sample.select(ORIGINAL_LOG_COLUMNS).write_csv(csv_dir / "log_standard_test.csv")

    assert [p.name for p in find_log_files(csv_dir)] == ["log_standard_test.csv"]
    from_csv = read_logs(csv_dir)
    from_parquet = read_logs(parquet_dir)
    assert from_csv.height == 50
    assert from_csv["author_id"].null_count() == 50  # not in the original log layout
    assert list(rows_to_records(from_csv)) == list(rows_to_records(from_parquet))
    assert read_videos(csv_dir, from_csv) == read_videos(parquet_dir, from_parquet)


# --------------------------------------------------------------------------- import


@dataclass
class FakeOutcome:
    accepted: int
    duplicates: int
    rejected: list[FakeRejected]


@dataclass(frozen=True)
class FakeRejected:
    index: int
    reason: str


@dataclass
class FakeEngine:
    """Records calls; rejects events on unknown videos, dedupes by event_id."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    videos: dict[str, Video] = field(default_factory=dict)
    impressions: list[Impression] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    attributes: dict[str, Attributes] = field(default_factory=dict)
    pending: int = 0

    def upsert_videos(self, videos: Sequence[Video]) -> int:
        self.calls.append(("upsert_videos", len(videos)))
        self.videos.update((v.video_id, v) for v in videos)
        return len(videos)

    @staticmethod
    def pseudonym(user_id: str) -> str:
        return user_id

    def register_users(self, user_ids: Sequence[str]) -> int:
        self.calls.append(("register_users", len(user_ids)))
        return len(user_ids)

    def put_user_attributes(self, attributes: Mapping[str, Attributes]) -> int:
        self.calls.append(("put_user_attributes", len(attributes)))
        self.attributes.update(attributes)
        return len(attributes)

    def record_impressions(self, impressions: Sequence[Impression]) -> None:
        self.calls.append(("record_impressions", len(impressions)))
        self.impressions.extend(impressions)

    def ingest(self, raw_events: Sequence[object]) -> FakeOutcome:
        self.calls.append(("ingest", len(raw_events)))
        outcome = FakeOutcome(0, 0, [])
        for index, raw in enumerate(raw_events):
            assert isinstance(raw, dict)
            if raw["video_id"] not in self.videos:
                outcome.rejected.append(FakeRejected(index, "unknown_video"))
            elif raw["event_id"] in self.event_ids:
                outcome.duplicates += 1
            else:
                self.event_ids.add(raw["event_id"])
                outcome.accepted += 1
        self.pending += outcome.accepted
        return outcome

    def learn(self) -> int:
        self.calls.append(("learn", self.pending))
        applied, self.pending = self.pending, 0
        return applied


@pytest.mark.kuairand
def test_import_kuairand(data: Path, tmp_path: Path, smoke_records: list[KuaiRandRow]) -> None:
    folder = _smoke_only_dir(data, tmp_path / "smoke", users=True)
    engine = FakeEngine()
    progress: list[tuple[int, int]] = []
    summary = import_kuairand(
        engine, folder, chunk_rows=600, progress=lambda done, total: progress.append((done, total))
    )

    names = [name for name, _ in engine.calls]
    upserts = names.count("upsert_videos")
    assert upserts >= 1 and names[:upserts] == ["upsert_videos"] * upserts
    assert names[upserts] == "put_user_attributes"
    assert names[upserts + 1 :] == ["register_users", "record_impressions", "ingest", "learn"] * 4
    assert [n for name, n in engine.calls if name == "record_impressions"] == [600, 600, 600, 200]
    assert progress == [(600, 2000), (1200, 2000), (1800, 2000), (2000, 2000)]

    events = [e for r in smoke_records for e in r.events]
    unknown = [e for e in events if e["video_id"] not in engine.videos]
    assert unknown  # rows on picture posts, which have no duration
    # KuaiRand logs some (user, video, time) rows twice; the repeat's ids are duplicates.
    known_ids = [e["event_id"] for e in events if e["video_id"] in engine.videos]
    repeats = len(known_ids) - len(set(known_ids))
    assert repeats > 0
    assert summary == ImportSummary(
        videos=len(engine.videos),
        rows=2000,
        events_accepted=len(set(known_ids)),
        events_duplicate=repeats,
        events_rejected=len(unknown),
        videos_skipped=7583 - len(engine.videos),
        rejected_reasons={"unknown_video": len(unknown)},
        users_with_attributes=27_285,  # every user of the features file
        attributes_refused=0,
    )
    assert engine.impressions == [r.impression for r in smoke_records]
    assert {r.impression.user_id for r in smoke_records} <= set(engine.attributes)

    again = import_kuairand(engine, folder, chunk_rows=5000)
    assert again.events_accepted == 0
    assert again.events_duplicate == summary.events_accepted + summary.events_duplicate
    assert again.rejected_reasons == summary.rejected_reasons


def test_import_rejects_bad_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        import_kuairand(FakeEngine(), tmp_path, chunk_rows=0)


@pytest.mark.kuairand
def test_importing_twice_into_an_engine_adds_nothing_the_second_time(
    data: Path, tmp_path: Path
) -> None:
    """Regression: events were deduplicated on a second import but impressions were not,
    doubling every video's exposure count (which spends new uploads' budgets)."""
    from fyp.config import load_settings
    from fyp.engine import Engine

    source = _smoke_only_dir(data, tmp_path / "src")
    engine = Engine.open(load_settings(overrides={"data_dir": tmp_path / "d"}, environ={}))
    try:
        first = import_kuairand(engine, source)
        impressions = engine.impressions.count()
        exposures = int(engine.state.stats.exposures.sum())
        second = import_kuairand(engine, source)
        assert second.events_accepted == 0
        assert second.events_duplicate == first.events_accepted + first.events_duplicate
        assert engine.impressions.count() == impressions
        assert int(engine.state.stats.exposures.sum()) == exposures
    finally:
        engine.close()


def test_find_log_files_leaves_out_the_random_exposure_log(tmp_path: Path) -> None:
    """KuaiRand's log_random_* is for unbiased evaluation, not training history."""
    for name in ("log_standard_4_08_to_4_21_pure.csv", "log_random_4_22_to_5_08_pure.csv"):
        (tmp_path / name).write_text("user_id,video_id,time_ms,play_time_ms\n")
    assert [p.name for p in find_log_files(tmp_path)] == ["log_standard_4_08_to_4_21_pure.csv"]


def test_user_features_become_attributes_categories_only(tmp_path: Path) -> None:
    (tmp_path / USER_FEATURES).write_text(
        "user_id,user_active_degree,follow_user_num,follow_user_num_range,onehot_feat4,"
        "onehot_feat12,is_live_streamer\n"
        "7,full_active,514,500+,4.0,,-124\n"
        '8,high_active,3,"(0,10]",,1.0,1\n'
        "9,i was told to write a sentence here,0,0,0.0,0.0,1\n"
    )
    users, refused = read_user_attributes(tmp_path)
    assert users["7"] == (
        ("follow_user_num_range", "500+"),  # the band, not the exact count
        ("is_live_streamer", "-124"),
        ("onehot_feat4", "4"),  # a whole number, not "4.0"
        ("user_active_degree", "full_active"),
    )
    assert dict(users["8"]) == {
        "follow_user_num_range": "(0,10]",
        "is_live_streamer": "1",
        "onehot_feat12": "1",
        "user_active_degree": "high_active",
    }
    assert "user_active_degree" not in dict(users["9"]) and refused == 1  # free text
    assert read_user_attributes(tmp_path / "absent") == ({}, 0)


@pytest.mark.kuairand
def test_the_import_gives_users_and_videos_their_attributes(data: Path, tmp_path: Path) -> None:
    from fyp.config import load_settings
    from fyp.engine import Engine

    source = _smoke_only_dir(data, tmp_path / "src")
    # The features of the smoke log's users and of user 0, who is not in it (a user the
    # app knows before they act): the whole file would take an engine seconds.
    wanted = {*read_logs(source)["user_id"].cast(pl.String).to_list(), "0"}
    features = pl.read_csv(data / USER_FEATURES, infer_schema=False)
    features.filter(pl.col("user_id").is_in(wanted)).write_csv(source / USER_FEATURES)
    settings = load_settings(overrides={"data_dir": tmp_path / "d"}, environ={})
    engine = Engine.open(settings)
    try:
        summary = import_kuairand(engine, source)
        assert summary.users_with_attributes == len(wanted) and summary.attributes_refused == 0
        again = read_user_attributes(source)[0]
        assert engine.put_user_attributes(again) == 0  # nothing changed: nothing written
    finally:
        engine.close()
    engine = Engine.open(settings)  # from the stores
    try:
        profile = engine.profile_of("0")
        assert profile is not None and profile.region == settings.region
        attributes = dict(profile.attributes)
        assert len(attributes) == 26
        assert attributes["user_active_degree"] == "full_active"
        assert attributes["fans_user_num_range"] == "[100,1k)"
        assert attributes["register_days_range"] == "730+"
        user = engine.state.users[engine.pseudonym("0")]
        code = engine.state.user_attribute(user, "user_active_degree")
        assert engine.state.user_attributes.value_of("user_active_degree", code) == "full_active"
        assert dict(engine.catalog.videos[engine.catalog.row_of["1"]].attributes) == {
            "music_type": "9",
            "orientation": "portrait",
            "upload_type": "Kmovie",
            "video_type": "NORMAL",
        }
    finally:
        engine.close()
