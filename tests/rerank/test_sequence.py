"""Sequence rules: label caps per page, sensitive topics dispersed across pages."""

from __future__ import annotations

from fyp.catalog.index import CatalogIndex
from fyp.rerank.diversity import CreatorSoundSpacing
from fyp.rerank.sequence import SequenceRules
from fyp.retrieve.base import FeedContext
from fyp.state.users import UserState, new_user
from fyp.types import Candidate, Video

NOW = 1_750_000_000_000


def catalog_of(labels: list[tuple[str, ...]]) -> CatalogIndex:
    c = CatalogIndex()
    # distinct creators and sounds: spacing never interferes
    c.upsert([Video(f"v{i}", f"c{i}", 10_000, f"s{i}", labels=lb) for i, lb in enumerate(labels)])
    return c


def ctx(user: UserState) -> FeedContext:
    return FeedContext("r", "u", user, 10, "for_you", "local", NOW)


def ranked(catalog: CatalogIndex) -> list[Candidate]:
    return [Candidate(r, v.video_id, "test", "") for r, v in enumerate(catalog.videos)]


def test_at_most_one_sensitive_item_per_window_across_pages() -> None:
    sad = ("sensitive:sadness",)
    catalog = catalog_of([sad, sad, (), sad, (), (), (), (), sad, ()])
    rules, spacing = SequenceRules(catalog), CreatorSoundSpacing(catalog)
    user = new_user(10, 8)
    served: list[int] = []
    for _ in range(2):
        c = ctx(user)
        page = spacing.arrange(
            [x for x in ranked(catalog) if x.row not in served], 5, rules.guard(c)
        )
        rows = [x.row for x in page]
        assert rules.violations(c, rows) == []
        user.remember_served(rows, 100)
        served += rows
    window = catalog.policy.sensitive_window
    for start in range(len(served) - window + 1):
        assert sum(bool(catalog.sensitive_sets[r]) for r in served[start : start + window]) <= 1


def test_a_capped_label_appears_once_per_page_even_if_the_page_is_short() -> None:
    catalog = catalog_of([("unverified_claim",)] * 4)
    rules, spacing = SequenceRules(catalog), CreatorSoundSpacing(catalog)
    c = ctx(new_user(10, 8))
    page = spacing.arrange(ranked(catalog), 4, rules.guard(c))
    assert len(page) == 1


def test_violations_names_the_offending_positions() -> None:
    sad = ("sensitive:sadness",)
    catalog = catalog_of([sad, (), sad, sad])
    rules = SequenceRules(catalog)
    assert rules.violations(ctx(new_user(10, 8)), [0, 1, 2, 3]) == [2, 3]


def test_no_rule_costs_nothing_when_nothing_is_labelled() -> None:
    catalog = catalog_of([(), ()])
    assert SequenceRules(catalog).guard(ctx(new_user(10, 8))) is None
