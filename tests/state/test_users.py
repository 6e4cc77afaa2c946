"""Per-user state: decayed affinities, the lift they give, and the served memory."""

from __future__ import annotations

import math

import pytest

from fyp.state.users import Affinity, affinity_lift, new_user

DAY_MS = 86_400_000
HALF_LIFE_MS = 14 * DAY_MS


def test_affinity_halves_every_half_life() -> None:
    aff = Affinity()
    aff.add(True, ts=0, half_life_ms=HALF_LIFE_MS)
    aff.add(False, ts=0, half_life_ms=HALF_LIFE_MS)
    assert aff.decayed(0, HALF_LIFE_MS) == (2.0, 1.0)
    views, positives = aff.decayed(HALF_LIFE_MS, HALF_LIFE_MS)
    assert (views, positives) == pytest.approx((1.0, 0.5))
    assert aff.decayed(-5, HALF_LIFE_MS) == (2.0, 1.0)  # asking about the past: no growth


def test_affinity_decays_what_it_had_before_adding() -> None:
    aff = Affinity()
    aff.add(True, ts=0, half_life_ms=HALF_LIFE_MS)
    aff.add(True, ts=HALF_LIFE_MS, half_life_ms=HALF_LIFE_MS)
    assert (aff.views, aff.positives) == pytest.approx((1.5, 1.5))
    assert aff.ts == HALF_LIFE_MS


def test_an_out_of_order_update_adds_without_decaying_or_moving_time_back() -> None:
    aff = Affinity()
    aff.add(True, ts=HALF_LIFE_MS, half_life_ms=HALF_LIFE_MS)
    aff.add(False, ts=0, half_life_ms=HALF_LIFE_MS)
    assert (aff.views, aff.positives, aff.ts) == (2.0, 1.0, HALF_LIFE_MS)


def test_affinity_lift_is_zero_when_nothing_is_known_and_signed_by_experience() -> None:
    assert affinity_lift(None, 0.3, 0, HALF_LIFE_MS) == 0.0
    liked, disliked = Affinity(), Affinity()
    for _ in range(5):
        liked.add(True, 0, HALF_LIFE_MS)
        disliked.add(False, 0, HALF_LIFE_MS)
    up = affinity_lift(liked, 0.3, 0, HALF_LIFE_MS)
    down = affinity_lift(disliked, 0.3, 0, HALF_LIFE_MS)
    assert up > 0 > down
    # Shrunk by 3 pseudo-views: one view says less than five.
    one = Affinity()
    one.add(True, 0, HALF_LIFE_MS)
    assert 0 < affinity_lift(one, 0.3, 0, HALF_LIFE_MS) < up
    # Old experience fades towards 0 but keeps its sign.
    later = affinity_lift(liked, 0.3, 10 * HALF_LIFE_MS, HALF_LIFE_MS)
    assert 0 < later < up


def test_affinity_lift_stays_finite_at_extreme_rates() -> None:
    aff = Affinity()
    for _ in range(1_000):
        aff.add(True, 0, HALF_LIFE_MS)
    assert math.isfinite(affinity_lift(aff, 1.0, 0, HALF_LIFE_MS))
    assert math.isfinite(affinity_lift(aff, 0.0, 0, HALF_LIFE_MS))


def test_a_new_user_knows_nothing() -> None:
    user = new_user(history_size=3, n_labels=8)
    assert user.label_counts == [0.0] * 8
    assert user.views == 0
    assert not (user.viewed or user.served or user.follows or user.creators)
    for row in range(5):
        user.history.append(row)
    assert list(user.history) == [2, 3, 4]  # bounded, oldest dropped


def test_served_memory_remembers_the_last_n_servings_with_repeats_counted() -> None:
    user = new_user(history_size=10, n_labels=8)
    user.remember_served([1, 2, 3], capacity=4)
    user.remember_served([1, 4], capacity=4)  # 1 again; the oldest (1) falls out
    assert list(user.served) == [2, 3, 1, 4]
    assert user.served_set == {1: 1, 2: 1, 3: 1, 4: 1}
    user.remember_served([5, 6], capacity=4)
    assert list(user.served) == [1, 4, 5, 6]
    assert set(user.served_set) == {1, 4, 5, 6}


def test_a_video_served_twice_is_remembered_until_both_servings_fall_out() -> None:
    user = new_user(history_size=10, n_labels=8)
    user.remember_served([7, 7], capacity=3)
    assert user.served_set == {7: 2}
    user.remember_served([8], capacity=3)
    user.remember_served([9], capacity=3)  # first 7 falls out
    assert user.served_set == {7: 1, 8: 1, 9: 1}
    user.remember_served([10], capacity=3)
    assert 7 not in user.served_set


def test_zero_served_memory_remembers_nothing() -> None:
    user = new_user(history_size=10, n_labels=8)
    user.remember_served([1, 2], capacity=0)
    assert not user.served
    assert user.served_set == {}


def test_forgetting_cards_never_shown_takes_out_their_last_serving_only() -> None:
    user = new_user(history_size=10, n_labels=3)
    user.remember_served([1, 2, 3, 2], capacity=100)
    user.forget_served([2, 3])
    assert list(user.served) == [1, 2]
    assert user.served_set == {1: 1, 2: 1}
    user.forget_served([9])  # never served: nothing to take out
    assert list(user.served) == [1, 2]
