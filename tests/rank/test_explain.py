"""Why this video: the first ranker's shares, named as signals people understand."""

from __future__ import annotations

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.rank.explain import Explainer
from fyp.rank.first_ranker import FEATURES
from fyp.rerank.adjustments import ValueAdjustments
from fyp.retrieve.base import FeedContext
from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.updater import LogState
from fyp.state.users import new_user
from fyp.types import Candidate, Video

NOW = 1_750_000_000_000
F = {name: i for i, name in enumerate(FEATURES)}


def test_the_length_is_one_signal_and_the_creators_rate_is_named() -> None:
    catalog = CatalogIndex()
    catalog.upsert(
        [
            Video("ten-minutes", "c-new", 600_000, None, ()),
            Video("good-creator", "c-good", 60_000, None, ()),
        ]
    )
    state = LogState(load_settings(environ={}), catalog)
    state.stats.ensure(len(catalog))
    ranker = state.ranker
    ranker.weights[:] = 0.0
    ranker.weights[:, F["duration_sq"]] = -1.0
    ranker.weights[:, F["duration"]] = -0.5
    long_view = LABEL_INDEX["long_view"]
    ranker.weights[long_view, F["creator_rate"]] = 1.0
    for _ in range(200):  # c-good's videos are long-viewed by everyone
        state.groups.add(catalog.row_of["good-creator"], [long_view], view=True)
    ctx = FeedContext("r1", "u1", new_user(10, len(LABELS)), 2, "feed", "global", NOW)
    page = [
        Candidate(0, "ten-minutes", "trending", "Popular"),
        Candidate(1, "good-creator", "trending", "Popular"),
    ]
    Explainer(ranker, catalog, ValueAdjustments(catalog)).explain(ctx, page, personal=True)
    long_one, good = (dict(c.signals) for c in page)
    shares = ranker.contributions(ranker.features(ctx.user, [0, 1], NOW))
    assert "duration" not in long_one and "duration_sq" not in long_one
    expected = shares[0, F["duration"]] + shares[0, F["duration_sq"]]
    assert long_one["video_length"] == round(float(expected), 4) < 0
    assert good["creator_engagement"] == round(float(shares[1, F["creator_rate"]]), 4) > 0
    assert "video_length" not in good  # a minute long: the length's features are 0
    assert np.isclose(shares[1, F["duration"]], 0.0)
