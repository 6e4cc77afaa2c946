"""Mute matching: case- and accent-insensitive, whole words, phrases in a row."""

from __future__ import annotations

import pytest

from fyp.safety.text import VideoText, fold, normal_phrase, normal_tag


def test_fold_removes_case_and_accents() -> None:
    assert fold("Café CRÈME") == "cafe creme"
    assert fold("ＦＵＬＬ") == "full"  # compatibility forms (full-width letters)


@pytest.mark.parametrize(
    ("caption", "tags", "keyword", "hit"),
    [
        ("My CAT sleeps", (), "cat", True),
        ("category theory", (), "cat", False),
        ("fast food review", (), "Fast  Food", True),
        ("fast, then food", (), "fast food", False),
        ("", ("#Café",), "cafe", True),
        ("", ("#fastfood",), "fast food", True),
        ("crème brûlée!", (), "creme brulee", True),
    ],
)
def test_keywords_match_whole_words_and_hashtags(
    caption: str, tags: tuple[str, ...], keyword: str, hit: bool
) -> None:
    assert VideoText(caption, tags).matches_keyword(normal_phrase(keyword)) is hit


def test_tags_and_phrases_normalise() -> None:
    assert normal_tag("#Café") == "cafe"
    assert normal_phrase("  Hello,   WORLD ") == "hello world"
    assert normal_phrase("!!!") == ""
