"""The ranker's training examples, column by column: what the joiner hook
(:meth:`fyp.model.online.OnlineModels.on_examples`) queues and a training step takes.

A micro-batch of the joiner arrives with its dense inputs, labels and priors computed as
arrays for all of its examples at once; kept as those arrays (and lists of ids), a batch
costs a few slices and one concatenation, where an object per example cost a Python
object, three array views, and three stacks back into arrays at the step (their cost on
the learner's path: docs/performance.md). :class:`RankExample` stays the one example's
view (tests, and the queues of old checkpoints, which name it
``fyp.model.ranker.RankExample``: that module imports it so that they still load).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["RankColumns", "RankExample", "RankQueue"]

F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class RankExample:
    """One joined impression: who, what, where, the context then, and what followed."""

    user_id: str
    video_id: str
    creator_id: str
    sound_id: str | None
    hashtags: tuple[str, ...]
    surface: str
    ts: int
    dense: F32  # (DENSE_DIM,)
    labels: F32  # (N_LABELS,)
    prior: F32  # (N_LABELS,): the first ranker's logits for it, when it was learned from
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class RankColumns:
    """n joined impressions (as :class:`RankExample`'s fields), one column each."""

    user_ids: list[str]
    video_ids: list[str]
    creator_ids: list[str]
    sound_ids: list[str | None]
    hashtags: list[tuple[str, ...]]
    surfaces: list[str]
    ts: npt.NDArray[np.int64]  # (n,)
    dense: F32  # (n, DENSE_DIM)
    labels: F32  # (n, N_LABELS)
    prior: F32  # (n, N_LABELS)
    weight: F32  # (n,)

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def of(cls, examples: Sequence[RankExample]) -> RankColumns:
        return cls(
            [e.user_id for e in examples],
            [e.video_id for e in examples],
            [e.creator_id for e in examples],
            [e.sound_id for e in examples],
            [e.hashtags for e in examples],
            [e.surface for e in examples],
            np.array([e.ts for e in examples], dtype=np.int64),
            np.stack([e.dense for e in examples]),
            np.stack([e.labels for e in examples]),
            np.stack([e.prior for e in examples]),
            np.array([e.weight for e in examples], dtype=np.float32),
        )

    def examples(self) -> Iterator[RankExample]:
        for i in range(len(self)):
            yield RankExample(
                self.user_ids[i],
                self.video_ids[i],
                self.creator_ids[i],
                self.sound_ids[i],
                self.hashtags[i],
                self.surfaces[i],
                int(self.ts[i]),
                self.dense[i],
                self.labels[i],
                self.prior[i],
                float(self.weight[i]),
            )

    def select(self, keep: slice | npt.NDArray[np.intp]) -> RankColumns:
        """The examples at ``keep`` (a slice, or positions in order)."""
        if isinstance(keep, slice):

            def pick(column: list[str]) -> list[str]:
                return column[keep]

        else:
            at = keep.tolist()

            def pick(column: list[str]) -> list[str]:
                return [column[i] for i in at]

        return RankColumns(
            pick(self.user_ids),
            pick(self.video_ids),
            pick(self.creator_ids),
            pick(self.sound_ids),  # type: ignore[arg-type]
            pick(self.hashtags),  # type: ignore[arg-type]
            pick(self.surfaces),
            self.ts[keep],
            self.dense[keep],
            self.labels[keep],
            self.prior[keep],
            self.weight[keep],
        )

    @classmethod
    def concat(cls, parts: Sequence[RankColumns]) -> RankColumns:
        if len(parts) == 1:
            return parts[0]
        return cls(
            [x for p in parts for x in p.user_ids],
            [x for p in parts for x in p.video_ids],
            [x for p in parts for x in p.creator_ids],
            [x for p in parts for x in p.sound_ids],
            [x for p in parts for x in p.hashtags],
            [x for p in parts for x in p.surfaces],
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.dense for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.prior for p in parts]),
            np.concatenate([p.weight for p in parts]),
        )


class RankQueue:
    """Examples waiting for the ranker's step, oldest first, as the blocks they came in."""

    def __init__(self) -> None:
        self._blocks: list[RankColumns] = []
        self._n = 0

    @classmethod
    def of(cls, examples: Sequence[RankExample]) -> RankQueue:
        """A queue of these (a checkpoint of the code before queued objects)."""
        queue = cls()
        if examples:
            queue.append(RankColumns.of(examples))
        return queue

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[RankExample]:
        for block in self._blocks:
            yield from block.examples()

    def append(self, block: RankColumns) -> None:
        if len(block):
            self._blocks.append(block)
            self._n += len(block)

    def take(self, n: int) -> RankColumns:
        """The oldest ``n`` examples (all there are, if fewer), out of the queue."""
        parts: list[RankColumns] = []
        want = min(n, self._n)
        while want:
            block = self._blocks[0]
            if len(block) <= want:
                parts.append(self._blocks.pop(0))
                want -= len(block)
            else:
                parts.append(block.select(slice(0, want)))
                self._blocks[0] = block.select(slice(want, None))
                want = 0
        if not parts:
            raise ValueError("no example is queued")
        taken = RankColumns.concat(parts)
        self._n -= len(taken)
        return taken

    def drop_user(self, user_id: str) -> None:
        """Every queued example of ``user_id`` (refresh, erasure)."""
        blocks: list[RankColumns] = []
        for block in self._blocks:
            if user_id in block.user_ids:
                at = np.array([i for i, u in enumerate(block.user_ids) if u != user_id])
                block = block.select(at.astype(np.intp).reshape(-1))
            if len(block):
                blocks.append(block)
        self._blocks = blocks
        self._n = sum(len(b) for b in blocks)
