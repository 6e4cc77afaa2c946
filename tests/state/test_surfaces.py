"""Label rates per surface, read by the rankers as a lift."""

from __future__ import annotations

import numpy as np

from fyp.state.feedback import LABEL_INDEX, LABELS
from fyp.state.surfaces import MAX_SURFACES, SurfaceStats

LONG = LABEL_INDEX["long_view"]
G = np.full(len(LABELS), 0.3)
G_LOGIT = np.log(G / (1 - G))


def _watched(stats: SurfaceStats, surface: str, views: int, long_views: int) -> None:
    for i in range(views):
        stats.add_view(surface)
        if i < long_views:
            stats.add_label(surface, LONG)


def test_a_surface_with_more_long_views_than_average_lifts_them_and_an_unknown_one_is_zero() -> (
    None
):
    stats = SurfaceStats()
    _watched(stats, "tab1", 100, 60)
    _watched(stats, "tab0", 100, 3)
    stats.refresh(G, G_LOGIT, prior_strength=20.0)
    assert stats.lift("tab1")[LONG] > 0.5
    assert stats.lift("tab0")[LONG] < -1.0
    assert stats.lift("never-seen").tolist() == [0.0] * len(LABELS)


def test_lifts_shrink_to_zero_with_few_views() -> None:
    stats = SurfaceStats()
    _watched(stats, "few", 2, 2)
    _watched(stats, "many", 200, 200)
    stats.refresh(G, G_LOGIT, prior_strength=20.0)
    assert 0 < stats.lift("few")[LONG] < stats.lift("many")[LONG]


def test_lifts_move_only_at_a_refresh() -> None:
    """A request between two refreshes must read what the learning step reads (a replay
    has no requests): counts that came since the last refresh do not count yet."""
    stats = SurfaceStats()
    _watched(stats, "tab1", 50, 40)
    stats.refresh(G, G_LOGIT, prior_strength=20.0)
    before = stats.lift("tab1").copy()
    _watched(stats, "tab1", 50, 0)
    assert np.array_equal(stats.lift("tab1"), before)
    stats.refresh(G, G_LOGIT, prior_strength=20.0)
    assert stats.lift("tab1")[LONG] < before[LONG]


def test_surfaces_past_the_cap_are_not_counted() -> None:
    stats = SurfaceStats()
    for i in range(MAX_SURFACES + 10):
        _watched(stats, f"s{i}", 5, 5)
    stats.refresh(G, G_LOGIT, prior_strength=20.0)
    assert len(stats.label_counts) == MAX_SURFACES
    assert stats.lift(f"s{MAX_SURFACES + 5}").tolist() == [0.0] * len(LABELS)
