"""Item-to-item co-engagement, checked against a plain reference model with hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fyp.state.coengagement import CoEngagement

N_ROWS = 8
MAX_NEIGHBOURS = 3  # with 8 rows a video has at most 7 links: no pruning, exact answers


class Reference:
    """Co-counts and positive counts kept naively; cosine = co / sqrt(pos_a * pos_b)."""

    def __init__(self) -> None:
        self.co: dict[tuple[int, int], float] = {}
        self.positives: dict[int, float] = {}

    def add_positive(self, row: int, seeds: list[int], weight: float) -> None:
        self.positives[row] = self.positives.get(row, 0.0) + weight
        for other in seeds:
            if other != row:
                for pair in ((row, other), (other, row)):
                    self.co[pair] = self.co.get(pair, 0.0) + weight

    def cosine(self, a: int, b: int) -> float:
        return self.co[(a, b)] / math.sqrt(self.positives.get(a, 1.0) * self.positives.get(b, 1.0))

    def top_values(self, row: int, k: int) -> list[float]:
        values = [self.cosine(row, b) for (a, b) in self.co if a == row]
        return sorted(values, reverse=True)[:k]


def check_against(model: CoEngagement, ref: Reference) -> None:
    for row in range(N_ROWS):
        got = model.neighbours(row)
        assert len(got) <= MAX_NEIGHBOURS
        values = [v for _, v in got]
        assert values == sorted(values, reverse=True), "not strongest first"
        assert len({other for other, _ in got}) == len(got), "a neighbour listed twice"
        assert all(other != row for other, _ in got), "a video is its own neighbour"
        for other, value in got:
            assert value == pytest.approx(ref.cosine(row, other)), (row, other)
            assert ref.cosine(row, other) == pytest.approx(ref.cosine(other, row))  # symmetric
        assert values == pytest.approx(ref.top_values(row, MAX_NEIGHBOURS)), row


positives = st.lists(
    st.tuples(
        st.integers(0, N_ROWS - 1),
        st.lists(st.integers(0, N_ROWS - 1), unique=True, max_size=4),
        st.sampled_from([1.0, 2.0]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=positives)
def test_neighbours_are_the_top_cosines_symmetric_sorted_and_capped(
    ops: list[tuple[int, list[int], float]],
) -> None:
    model, ref = CoEngagement(MAX_NEIGHBOURS), Reference()
    for row, seeds, weight in ops:
        model.add_positive(row, seeds, weight)
        ref.add_positive(row, seeds, weight)
    check_against(model, ref)


@settings(max_examples=200, deadline=None)
@given(ops=positives, query_every=st.integers(1, 5))
@example(ops=[(1, [], 1.0), (2, [1], 1.0), (2, [], 1.0)], query_every=1)
def test_neighbours_stay_exact_when_queried_while_positives_arrive(
    ops: list[tuple[int, list[int], float]], query_every: int
) -> None:
    model, ref = CoEngagement(MAX_NEIGHBOURS), Reference()
    for i, (row, seeds, weight) in enumerate(ops):
        model.add_positive(row, seeds, weight)
        ref.add_positive(row, seeds, weight)
        if i % query_every == 0:  # serving reads between learning steps
            for r in range(N_ROWS):
                model.neighbours(r)
    check_against(model, ref)


def test_a_neighbour_that_becomes_popular_with_everyone_weakens_at_once() -> None:
    model = CoEngagement(max_neighbours=5)
    model.add_positive(1, [])
    model.add_positive(2, [1])  # one user enjoyed 1 then 2
    assert model.neighbours(1) == [(2, 1.0)]
    for _ in range(3):  # three users enjoy 2 alone
        model.add_positive(2, [])
    ((other, cosine),) = model.neighbours(1)
    assert other == 2
    assert cosine == pytest.approx(0.5)  # 1 / sqrt(1 * 4)


def test_a_video_popular_with_everyone_is_not_everyones_best_neighbour() -> None:
    model = CoEngagement(max_neighbours=5)
    for _ in range(2):  # two users enjoy the niche pair a=1, b=2
        model.add_positive(1, [])
        model.add_positive(2, [1])
    for _ in range(20):  # the hit, 9, is enjoyed by everyone, twice after 1
        model.add_positive(9, [])
    model.add_positive(9, [1])
    model.add_positive(9, [1])
    assert next(other for other, _ in model.neighbours(1)) == 2


def test_no_neighbours_for_a_video_without_co_engagement() -> None:
    model = CoEngagement(max_neighbours=5)
    model.add_positive(1, [])
    model.add_positive(1, [1])  # a video is not its own neighbour
    assert model.neighbours(1) == []
    assert model.neighbours(42) == []


def test_memory_stays_bounded_and_the_strongest_link_survives_pruning() -> None:
    model = CoEngagement(max_neighbours=5)
    for _ in range(10):
        model.add_positive(999, [0])  # 999 goes with 0 again and again
    for other in range(1, 200):  # then 0 meets 199 one-off videos
        model.add_positive(other, [0])
    got = model.neighbours(0)
    assert len(got) == 5
    assert 999 in [other for other, _ in got]
    assert len(model._co[0]) <= 4 * 5  # pruned, not growing with every one-off


many_links = st.lists(
    st.tuples(
        st.integers(0, 59),
        st.lists(st.integers(0, 59), unique=True, max_size=12),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    max_size=120,
)


@settings(max_examples=100, deadline=None)
@given(ops=many_links, asked=st.lists(st.integers(0, 69), max_size=30), warm=st.integers(0, 10))
def test_neighbours_of_each_are_exactly_the_one_by_one_lists(
    ops: list[tuple[int, list[int], float]], asked: list[int], warm: int
) -> None:
    """Computed together (array arithmetic) or one by one, the same lists to the bit;
    with some of them cached already, and rows with no links or never seen."""
    together, alone = CoEngagement(5), CoEngagement(5)
    for row, seeds, weight in ops:
        together.add_positive(row, seeds, weight)
        alone.add_positive(row, seeds, weight)
    for row in asked[:warm]:
        together.neighbours(row)
    got = together.neighbours_of_each(asked)
    assert got == [alone.neighbours(r) for r in asked]
    assert got == [together.neighbours(r) for r in asked]  # and what it cached


def test_neighbours_of_each_batches_a_request_of_many_links() -> None:
    model, reference = CoEngagement(4), CoEngagement(4)
    for m in (model, reference):
        for user in range(40):  # each user enjoys 3 of 30 videos in a row
            seq = [(user * 7 + k) % 30 for k in range(3)]
            for i, row in enumerate(seq):
                m.add_positive(row, seq[:i])
    rows = list(range(30))
    assert sum(len(model._co.get(r, {})) for r in rows) >= 64  # the batched path
    assert model.neighbours_of_each(rows) == [reference.neighbours(r) for r in rows]
