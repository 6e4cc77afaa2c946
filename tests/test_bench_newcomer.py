"""bench/newcomer.py's reading of several tastes: where a taste missing from cards 21-40
was lost, and the sharing of the newcomers whose every taste was found by card 20 (issue
20: "say how close")."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from bench_modules import import_bench


@pytest.fixture(scope="module")
def newcomer() -> ModuleType:
    return import_bench("newcomer")


def person(tastes: dict[str, float], topics: list[int], finished: list[int]) -> dict[str, Any]:
    late = [t for t in topics[20:40] if str(t) in tastes]
    return {
        "tastes": tastes,
        "card_topics": topics,
        "finished": finished,
        "sources": ["discover"] * 12 + ["ranked"] * 28,
        "card_share": {t: late.count(int(t)) / len(late) if late else 0.0 for t in tastes},
    }


def test_missing_tastes_are_told_apart_by_what_the_first_twenty_cards_did(
    newcomer: ModuleType,
) -> None:
    # Taste 1 finished at card 3 and given 12 of cards 21-40, taste 2 finished at card 5
    # and given 8: both found by card 20, shares 0.6 / 0.4 against attention 0.6 / 0.4.
    a = person(
        {"1": 0.6, "2": 0.4},
        [9, 9, 1, 9, 2] + [9] * 15 + [1] * 12 + [2] * 8,
        [0, 0, 1, 0, 1] + [0] * 15 + [1] * 20,
    )
    # Three tastes: 3 finished (and all of 21-40), 4 shown at card 2 and skipped, 5 never
    # shown; 6 of (0.6, 0.4) finished at card 10 but absent from 21-40.
    b = person(
        {"3": 0.5, "4": 0.3, "5": 0.2}, [9, 4, 3] + [9] * 17 + [3] * 20, [0, 0, 1] + [0] * 37
    )
    c = person({"7": 0.6, "6": 0.4}, [7] * 9 + [6] + [9] * 10 + [7] * 20, [1] * 10 + [0] * 30)
    got = newcomer.taste_search([a, b, c])
    assert got["missing_21_40"] == {
        "never_shown_1_20": 1,
        "shown_not_finished_1_20": 1,
        "finished_1_20": 1,
    }
    # a and c had every taste finished by card 20; c's 6 has no card in 21-40 (gap 0.4,
    # and 7 has all of them against 0.6: gap 0.4); a is exact.
    assert got["all_found_by_20"] == 2
    assert got["mean_gap_all_found_by_20"] == pytest.approx(0.2)
    assert got["max_gap_all_found_by_20"] == pytest.approx(0.4)
    assert got["discover_cards_11_40"] == pytest.approx(2.0)
