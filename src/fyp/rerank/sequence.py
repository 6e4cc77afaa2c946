"""Rules over the order of a feed, not single videos: at most ``cap`` items carrying a
capped label per page (per surface, e.g. one ``unverified_claim``), and sensitive topics
dispersed — at most ``sensitive_max`` of any ``sensitive_window`` consecutive items
carry one ``sensitive:<topic>`` label, counting the items served just before this page.

The spacing re-ranker builds pages that keep them (:meth:`SequenceRules.guard`), and the
last gate checks the finished page again (:meth:`SequenceRules.violations`): a hard
guarantee, at the cost of a shorter page when nothing else is left."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fyp.catalog.index import CatalogIndex
from fyp.retrieve.base import FeedContext

# (rows on the page so far, candidate row) -> may it come next
Guard = Callable[[Sequence[int], int], bool]


class SequenceRules:
    name = "sequence"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def guard(self, ctx: FeedContext, before: Sequence[int] = ()) -> Guard | None:
        """The rules for this request as a predicate; ``before``: rows already placed
        ahead of the page being built (earlier items of this response). None when no
        rule can bite (nothing sensitive or capped in the catalog)."""
        cat = self.catalog
        caps = cat.policy.surfaces[ctx.policy_surface].cap_labels
        capped = cat.capped[ctx.policy_surface]
        if not cat.capped_count[ctx.policy_surface] and not cat.sensitive_count:
            return None
        window = cat.policy.sensitive_window
        k = cat.policy.sensitive_max
        # The person's own recent sequence, whichever mode served it.
        served = ctx.owner.served
        tail = [served[i] for i in range(max(len(served) - window + 1, 0), len(served))]
        head = list(before)
        topic_sets = cat.sensitive_sets
        labels = cat.labels

        def admits(page: Sequence[int], row: int) -> bool:
            if not topic_sets[row] and not capped[row]:
                return True  # the common case
            on_page = head + list(page)
            if topic_sets[row]:
                recent = (tail + on_page)[-(window - 1) :] if window > 1 else []
                for topic in topic_sets[row]:
                    if sum(1 for r in recent if topic in topic_sets[r]) + 1 > k:
                        return False
            if capped[row]:
                for label in labels[row]:
                    cap = caps.get(label)
                    if cap is not None and sum(label in labels[r] for r in on_page) >= cap:
                        return False
            return True

        return admits

    def violations(self, ctx: FeedContext, page: Sequence[int]) -> list[int]:
        """Positions in ``page`` that break a rule given the items before them."""
        admits = self.guard(ctx)
        if admits is None:
            return []
        bad: list[int] = []
        kept: list[int] = []
        for i, row in enumerate(page):
            if admits(kept, row):
                kept.append(row)
            else:
                bad.append(i)
        return bad
