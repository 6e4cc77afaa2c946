"""Where the evaluation tests find KuaiRand: ``../shared/data/kuairand-pure`` beside the
checkout; tests that need it skip with a message where it is absent (fail under CI, which
has it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

KUAIRAND = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kuairand-pure"
SMOKE = "smoke_2000.parquet"
VIDEO_FEATURES = "video_features_basic_pure.csv"


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
