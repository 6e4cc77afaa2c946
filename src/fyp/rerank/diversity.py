"""Spacing: no two consecutive videos from one creator or with one sound.

Greedy, best score first: each position takes the highest-scoring remaining candidate
that shares neither creator nor sound with the previous item; only when no remaining
candidate can avoid a clash does it take the best one anyway. So the guarantee is
local: an adjacent pair shares a creator or sound only if, at that position, every
remaining candidate shared one with the previous item.

Within that rule, a creator already on the page ``max_per_creator`` times is passed
over while another non-clashing candidate remains, so one favourite creator does not
fill the page.

Both rules reach back over the items served just before the page (``before``): a client
that asks for small pages, so that each swipe shapes the next cards, gets the same
spacing as one that asks for ten at a time (a page of one would otherwise never be
spaced at all)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fyp.catalog.index import CatalogIndex
from fyp.types import Candidate

# (indices on the page so far, candidate index) -> may it come next (a hard rule)
Admits = Callable[[list[int], int], bool]


def clashes(a: tuple[str, str | None], b: tuple[str, str | None]) -> bool:
    """Whether two (creator, sound) pairs share a creator or a (non-empty) sound."""
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def space_out(
    ranked: Sequence[Candidate],
    keys: Sequence[tuple[str, str | None]],
    count: int,
    max_per_creator: int = 2,
    admits: Admits | None = None,
    before: Sequence[tuple[str, str | None]] = (),
) -> list[int]:
    """Indices into ``ranked`` (sorted best first) for a page of ``count`` items.
    ``admits``: a hard rule (label caps, sensitive-topic dispersal) no pick may break,
    even when that leaves the page short. ``before``: the (creator, sound) of the items
    served just before this page, oldest first: the first pick is spaced from the last
    of them, and each counts towards its creator's cap."""
    remaining = list(range(len(ranked)))
    page: list[int] = []
    on_page: dict[str, int] = {}
    for creator, _ in before:
        on_page[creator] = on_page.get(creator, 0) + 1
    while remaining and len(page) < count:
        # Only the candidates the hard rule lets come next (one barred now may fit later).
        allowed = remaining if admits is None else [i for i in remaining if admits(page, i)]
        if not allowed:
            break
        pick = 0
        if page or before:
            prev = keys[page[-1]] if page else before[-1]
            first_fit = -1
            for j, i in enumerate(allowed):
                if clashes(keys[i], prev):
                    continue
                if first_fit < 0:
                    first_fit = j
                if on_page.get(keys[i][0], 0) < max_per_creator:
                    first_fit = j
                    break
            pick = max(first_fit, 0)
        i = allowed[pick]
        remaining.remove(i)
        page.append(i)
        on_page[keys[i][0]] = on_page.get(keys[i][0], 0) + 1
    return page


class CreatorSoundSpacing:
    name = "creator_sound_spacing"

    def __init__(self, catalog: CatalogIndex, max_per_creator: int = 2) -> None:
        self.catalog = catalog
        self.max_per_creator = max_per_creator

    def arrange(
        self,
        ranked: list[Candidate],
        count: int,
        guard: Callable[[Sequence[int], int], bool] | None = None,
        before: Sequence[int] = (),
    ) -> list[Candidate]:
        """The page; ``guard(rows on the page so far, row)``: a hard rule over rows;
        ``before``: the rows served just before the page, oldest first."""
        videos = self.catalog.videos
        keys = [(videos[c.row].creator_id, videos[c.row].sound_id) for c in ranked]
        earlier = [(videos[r].creator_id, videos[r].sound_id) for r in before]
        admits: Admits | None = None
        if guard is not None:
            g = guard

            def admits(page: list[int], i: int) -> bool:
                return g([ranked[j].row for j in page], ranked[i].row)

        picks = space_out(ranked, keys, count, self.max_per_creator, admits, earlier)
        return [ranked[i] for i in picks]
