"""Where the evaluation tests find KuaiRand: ``../shared/data/kuairand-pure`` beside the
checkout; tests that need it skip with a message where it is absent (fail under CI, which
has it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import polars as pl
import pytest

KUAIRAND = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kuairand-pure"
SMOKE = "smoke_2000.parquet"
VIDEO_FEATURES = "video_features_basic_pure.csv"
# The outcome columns a changed world flips (who was shown what, and when, stays).
OUTCOMES = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "long_view", "finish")


def with_changed_outcomes(smoke_dir: Path, target: Path, where: pl.Expr) -> Path:
    """A copy of the sample in ``target`` in which every outcome of the rows ``where``
    selects is different: the flags flipped, play time and watch ratio mirrored."""
    target.mkdir()
    logs = pl.read_parquet(smoke_dir / SMOKE)
    changed = logs.with_columns(
        *(pl.when(where).then(1 - pl.col(c)).otherwise(pl.col(c)).alias(c) for c in OUTCOMES),
        pl.when(where)
        .then(pl.col("duration_ms") - pl.col("play_time_ms").clip(0, None))
        .otherwise(pl.col("play_time_ms"))
        .alias("play_time_ms"),
        pl.when(where).then(4.0 - pl.col("watch_ratio")).otherwise(pl.col("watch_ratio")),
    )
    changed.write_parquet(target / SMOKE)
    (target / VIDEO_FEATURES).symlink_to(smoke_dir / VIDEO_FEATURES)
    return target


@pytest.fixture(scope="session")
def kuairand_dir(unavailable: Callable[[str], NoReturn]) -> Path:
    if not KUAIRAND.is_dir():
        unavailable(
            f"KuaiRand data not found at {KUAIRAND}; these tests run where ../shared/data "
            "is present"
        )
    return KUAIRAND


@pytest.fixture(scope="session")
def smoke_dir(kuairand_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the 2,000-row sample and the video features."""
    target = tmp_path_factory.mktemp("kuairand-smoke")
    (target / SMOKE).symlink_to(kuairand_dir / SMOKE)
    (target / VIDEO_FEATURES).symlink_to(kuairand_dir / VIDEO_FEATURES)
    return target
