"""The ranker's queue of examples as columns: taken in batches of any size across the
blocks it was given in, and purged of a user, it holds what a list of examples would."""

from __future__ import annotations

import numpy as np

from fyp.model.rank_queue import RankColumns, RankExample, RankQueue


def examples(n: int, seed: int) -> list[RankExample]:
    rng = np.random.default_rng(seed)
    return [
        RankExample(
            f"u{int(rng.integers(0, 5))}",
            f"v{i}",
            f"c{i % 3}",
            None if i % 4 == 0 else f"s{i % 2}",
            tuple(f"t{j}" for j in range(i % 3)),
            "foryou",
            1_000 + i,
            rng.standard_normal(6).astype(np.float32),
            (rng.random(4) < 0.5).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
        )
        for i in range(n)
    ]


def as_tuples(xs: list[RankExample]) -> list[tuple[object, ...]]:
    return [
        (
            x.user_id,
            x.video_id,
            x.creator_id,
            x.sound_id,
            x.hashtags,
            x.surface,
            x.ts,
            x.dense.tolist(),
            x.labels.tolist(),
            x.prior.tolist(),
            x.weight,
        )
        for x in xs
    ]


def test_batches_taken_across_blocks_are_the_examples_in_order() -> None:
    given = examples(50, seed=1)
    queue = RankQueue()
    for start, stop in ((0, 7), (7, 8), (8, 30), (30, 50)):
        queue.append(RankColumns.of(given[start:stop]))
    assert len(queue) == 50
    taken: list[RankExample] = []
    for size in (3, 11, 1, 20, 100):
        batch = queue.take(size)
        assert len(batch) == min(size, 50 - len(taken))
        taken += list(batch.examples())
    assert len(queue) == 0
    assert as_tuples(taken) == as_tuples(given)


def test_a_users_examples_go_and_the_rest_keep_their_order() -> None:
    given = examples(40, seed=2)
    queue = RankQueue.of(given[:25])
    queue.append(RankColumns.of(given[25:]))
    queue.take(5)
    queue.drop_user("u3")
    kept = [x for x in given[5:] if x.user_id != "u3"]
    assert len(queue) == len(kept) and as_tuples(list(queue)) == as_tuples(kept)
    assert as_tuples(list(queue.take(len(kept)).examples())) == as_tuples(kept)
