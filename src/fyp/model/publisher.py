"""The learner's side of the model channel: what the learned models changed since the last
publish, as a :class:`~fyp.model.channel.ModelUpdate`.

The embedding tables and the index keep their own change sets (rows set or moved, ids
removed); the dense weights go whole whenever an optimisation step moved them (a few
hundred kilobytes). The first publish of a learner is a snapshot: it restarted from its
checkpoint, so what it changed since says nothing about what a reader holds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fyp.model.channel import ModelChannel, ModelUpdate
from fyp.model.embeddings import TableChanges
from fyp.model.online import OnlineModels
from fyp.types import now_ms

__all__ = ["USER_TABLES", "Publisher"]

F32 = npt.NDArray[np.float32]
#: The published tables keyed by user id (an erasure removes the user's rows from them).
USER_TABLES = ("ranker.user", "retrieval.user")


class Publisher:
    def __init__(
        self,
        models: OnlineModels,
        channel: ModelChannel,
        wall_clock: Callable[[], int] = now_ms,
    ) -> None:
        self.models = models
        self.channel = channel
        self.wall_clock = wall_clock
        self.version = channel.latest()
        self.published_ms = 0
        self._full_due = True  # the first publish is a snapshot
        self._moved: tuple[int, int] | None = None  # the steps the last dense weights had
        for table in [*models.ranker.tables.values(), *models.retrieval.tables.values()]:
            table.track_changes = True

    def snapshot_due(self) -> None:
        """Make the next publish a snapshot (after a restore, or to bound the deltas a
        new reader has to read)."""
        self._full_due = True

    def publish(self, offset: int) -> ModelUpdate | None:
        """Publish what changed (everything, when a snapshot is due) as of log ``offset``;
        the update, or None when nothing changed since the last."""
        m = self.models
        full = self._full_due
        tables: dict[str, TableChanges] = {}
        for prefix, owned in (("ranker", m.ranker.tables), ("retrieval", m.retrieval.tables)):
            for kind, table in owned.items():
                tables[f"{prefix}.{kind}"] = table.snapshot() if full else table.take_changes()
        index = m.take_index_changes(everything=full)
        moved = (m.ranker.examples_seen, m.retrieval.positives_seen)
        dense: dict[str, F32] | None = None
        if full or moved != self._moved:
            dense = {f"ranker.{k}": w for k, w in m.ranker.serving_weights().items()}
            dense.update({f"retrieval.{k}": w for k, w in m.retrieval.serving_weights().items()})
        quiet = all(not t.ids and not t.removed for t in tables.values())
        if not full and dense is None and not index.ids and not index.recluster and quiet:
            return None
        update = ModelUpdate(
            self.version + 1,
            full,
            self.wall_clock(),
            offset,
            m.ranker.examples_seen,
            m.retrieval.positives_seen,
            tables,
            index,
            dense,
        )
        self.channel.publish(update)
        self.version = update.version
        self.published_ms = update.published_ms
        self._full_due = False
        self._moved = moved
        return update
