"""The examples the fold keeps after they close (each user's last, for late actions) hold
their own arrays, not views of the slice they were computed with: otherwise each kept
example keeps its whole slice's counts and features alive, in every process that folds
the log."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.state.updater import Example, LogState
from fyp.types import Event, EventType, LoggedEvent, Video

T0 = 1_750_000_000_000


def _arrays(example: Example) -> list[npt.NDArray[np.float64]]:
    x = example.inputs
    assert example.features is not None
    return [example.features, x.video_counts, x.creator_counts, x.tag_counts]


def _held_bytes(examples: list[Example]) -> int:
    """The bytes of the buffers these examples keep alive (a view keeps its base's)."""
    buffers: dict[int, int] = {}
    for example in examples:
        for a in _arrays(example):
            base = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes
    return sum(buffers.values())


def test_a_kept_example_does_not_keep_its_slice_alive() -> None:
    catalog = CatalogIndex()
    catalog.upsert(
        [Video(f"v{i}", f"c{i % 5}", 20_000, hashtags=(f"#{i % 7}",)) for i in range(50)]
    )
    state = LogState(load_settings(environ={}), catalog)
    # 400 users, 3 views each, in one slice; each user's last example is kept.
    events, offset = [], 0
    for k in range(3):
        for u in range(400):
            offset += 1
            ts = T0 + k * 60_000 + u
            video = f"v{(u * 3 + k) % 50}"
            events.append(
                LoggedEvent(offset, Event(f"e{offset}", f"u{u}", video, EventType.VIEW, ts, 9_000))
            )
    state.apply(events)
    # A later slice closes the last views (past their label window) and keeps them.
    state.apply(
        [
            LoggedEvent(
                offset + 1,
                Event("late", "u0", "v1", EventType.VIEW, T0 + 86_400_000, 9_000),
            )
        ]
    )
    kept = list(state._closed.values())
    assert len(kept) == 400
    one = _held_bytes(kept[:1])
    # Each holds its own few hundred bytes: not a slice of 1,200 examples' arrays.
    assert one < 4_096, one
    assert _held_bytes(kept) == sum(sum(a.nbytes for a in _arrays(e)) for e in kept)
    for example in kept:  # the values are the slice's, copied
        assert example.features is not None and example.features.shape[0] > 0
