"""Two-tower retrieval: a user tower and an item tower whose inner product predicts which
videos a user will engage with, trained online with in-batch sampled softmax and log-Q
correction (Yi et al., RecSys 2019), served through an ANN index.

* User tower: the user's embedding and the mean of their recent history's video
  embeddings (so a user without a row of their own yet — or after a *refresh* — is still
  described by what they just watched), through a small MLP.
* Item tower: the video's, creator's and sound's embeddings and the mean of its
  hashtags', through a small MLP. A video without a row yet is described by its creator,
  sound and hashtags.
* Loss: for a batch of positive (user, video) pairs, every other video of the batch is a
  negative; each logit is corrected by −log Q(video), Q the video's estimated share of
  positives (streaming counts), so popular videos are not punished for being sampled as
  negatives more often.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fyp.catalog.index import CatalogIndex
from fyp.model.embeddings import (
    MAX_TAGS,
    EmbeddingTable,
    TableConfig,
    gather,
    lookup_optional,
    lookup_padded,
    scatter_gradients,
)
from fyp.model.networks import Fetch, tower, tower_item_input, tower_user_input
from fyp.model.serving import user_vector
from fyp.model.torch_ops import TORCH, adam, fuse, parameters
from fyp.types import DAY_MS

__all__ = ["RetrievalExample", "TwoTower", "TwoTowerConfig"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Leaf = tuple[str, I64, torch.Tensor]  # a table's rows and the leaf tensor of their vectors


@dataclass(frozen=True)
class TwoTowerConfig:
    embedding_dim: int = 32
    output_dim: int = 32
    hidden: int = 64
    history: int = 20  # recent videos pooled into the user tower
    learning_rate: float = 2e-3
    embedding_learning_rate: float = (
        0.3  # Adagrad on rows: chosen on the validation split (see docs)
    )
    temperature: float = 0.1
    min_count: int = 2
    expire_after_days: float = 30.0
    warmup_examples: int = 5_000  # retrieval joins the sources after this many positives
    seed: int = 0


@dataclass(slots=True)
class RetrievalExample:
    """A positive: ``user_id`` engaged with catalog ``row``; ``history`` = their recent
    views before it (catalog rows, oldest first)."""

    user_id: str
    row: int
    history: tuple[int, ...]
    ts: int


class _Tower(nn.Module):
    """The parameters of :func:`fyp.model.networks.tower` as a module, for training."""

    def __init__(self, in_dim: int, hidden: int, out: int) -> None:
        super().__init__()
        # A Sequential for its parameters' names (the published model's format); the
        # function evaluates it, its own output normalised.
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self._params = parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = tower(TORCH, self._params, "net", x)
        return out


class TwoTower:
    def __init__(self, cfg: TwoTowerConfig, catalog: CatalogIndex) -> None:
        self.cfg = cfg
        self.catalog = catalog
        torch.manual_seed(cfg.seed)
        table = TableConfig(
            dim=cfg.embedding_dim,
            min_count=cfg.min_count,
            expire_after_ms=int(cfg.expire_after_days * DAY_MS),
            learning_rate=cfg.embedding_learning_rate,
        )
        self.tables = {
            kind: EmbeddingTable(f"retrieval_{kind}", table, seed=cfg.seed + i)
            for i, kind in enumerate(("user", "video", "creator", "sound", "hashtag"))
        }
        d = cfg.embedding_dim
        self.user_tower = _Tower(2 * d, cfg.hidden, cfg.output_dim)
        self.item_tower = _Tower(4 * d, cfg.hidden, cfg.output_dim)
        params = [*self.user_tower.parameters(), *self.item_tower.parameters()]
        self.optimizer = adam(params, cfg.learning_rate)
        self.positives_seen = 0
        # Streaming estimate of each row's share of positives, for the log-Q correction.
        self.positive_counts = np.zeros(0, dtype=np.float64)
        self._steps = 0  # optimisation steps taken; the serving copy of the user tower's
        self._weights_at = -1  # weights is refreshed when it is behind
        self._weights: dict[str, F32] = {}

    @property
    def warm(self) -> bool:
        return self.positives_seen >= self.cfg.warmup_examples

    # -- towers ------------------------------------------------------------------------

    def _item_rows(self, rows: Sequence[int], now: int, train: bool) -> dict[str, I64]:
        videos = [self.catalog.videos[r] for r in rows]
        kw: dict[str, Any] = {"admit": train, "touch": train}
        t = self.tables
        sound = lookup_optional(t["sound"], [v.sound_id for v in videos], now, **kw)
        tags, _ = lookup_padded(
            t["hashtag"], [v.hashtags[:MAX_TAGS] for v in videos], MAX_TAGS, now, **kw
        )
        return {
            "video": t["video"].lookup([v.video_id for v in videos], now, **kw),
            "creator": t["creator"].lookup([v.creator_id for v in videos], now, **kw),
            "sound": sound,
            "hashtag": tags,
        }

    def _item_input(self, rows: dict[str, I64]) -> tuple[torch.Tensor, list[Leaf]]:
        leaves: list[Leaf] = []
        x: torch.Tensor = tower_item_input(TORCH, self._fetch(leaves), rows)
        return x, leaves

    def _user_input(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[int]],
        now: int,
        train: bool,
    ) -> tuple[torch.Tensor, list[Leaf]]:
        kw: dict[str, Any] = {"admit": train, "touch": train}
        user_rows = self.tables["user"].lookup(user_ids, now, **kw)
        videos = self.catalog.videos
        # History videos read the video table without admitting: only positives train it.
        hist, counts = lookup_padded(
            self.tables["video"],
            [[videos[r].video_id for r in self.pooled(rows)] for rows in histories],
            self.cfg.history,
            now,
        )
        leaves: list[Leaf] = []
        x: torch.Tensor = tower_user_input(TORCH, self._fetch(leaves), user_rows, hist, counts)
        return x, leaves

    def _fetch(self, leaves: list[Leaf]) -> Fetch:
        """Rows' vectors as leaf tensors, each noted in ``leaves`` (for their gradients)."""

        def fetch(kind: str, rows: I64) -> torch.Tensor:
            leaf = gather(self.tables[kind], rows)
            leaves.append((kind, rows, leaf))
            return leaf

        return fetch

    # -- learning ----------------------------------------------------------------------

    def learn(self, examples: Sequence[RetrievalExample]) -> float:
        """One step of in-batch sampled softmax with log-Q correction."""
        if len(examples) < 2:
            return math.nan
        now = max(e.ts for e in examples)
        rows = [e.row for e in examples]
        self._count_positives(rows)
        user_x, user_leaves = self._user_input(
            [e.user_id for e in examples], [e.history for e in examples], now, train=True
        )
        item_x, item_leaves = self._item_input(self._item_rows(rows, now, train=True))
        u, v = self.user_tower(user_x), self.item_tower(item_x)
        logits = u @ v.T / self.cfg.temperature
        q = self.positive_counts[rows] / self.positive_counts.sum()
        logits = logits - torch.from_numpy(np.log(q).astype(np.float32))[None, :]
        # The same video twice in a batch is not its own negative.
        same = torch.from_numpy(np.equal.outer(rows, rows) & ~np.eye(len(rows), dtype=bool))
        logits = logits.masked_fill(same, float("-inf"))
        loss = nn.functional.cross_entropy(logits, torch.arange(len(rows)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        for kind, r, leaf in (*user_leaves, *item_leaves):
            scatter_gradients(self.tables[kind], r, leaf, float(len(examples)))
        self.positives_seen += len(examples)
        self._steps += 1
        return float(loss.item())

    def _count_positives(self, rows: Sequence[int]) -> None:
        n = len(self.catalog)
        if len(self.positive_counts) < n:
            grown = np.zeros(max(n, 2 * len(self.positive_counts)), dtype=np.float64)
            grown[: len(self.positive_counts)] = self.positive_counts
            self.positive_counts = grown
        # Decay old counts slowly so Q follows what is popular now.
        self.positive_counts *= 0.9999 ** len(rows)
        np.add.at(self.positive_counts, np.asarray(rows), 1.0)

    # -- serving -----------------------------------------------------------------------

    def pooled(self, history: Sequence[int]) -> list[int]:
        """The videos of ``history`` (oldest first) that the user tower pools: the last
        ``cfg.history``."""
        return list(history)[-self.cfg.history :]

    def serving_weights(self) -> dict[str, F32]:
        """The user tower's parameters as arrays (a copy, refreshed after each
        optimisation step), named as a serving replica holds them."""
        if self._weights_at != self._steps:
            with torch.no_grad():
                self._weights = {
                    f"user_tower.{k}": p.detach().numpy().copy()
                    for k, p in self.user_tower.named_parameters()
                }
            self._weights_at = self._steps
        return self._weights

    def user_vector(self, user_id: str, history: Sequence[int], now: int) -> F32:
        return user_vector(
            self.tables, self.serving_weights(), self.catalog, user_id, self.pooled(history), now
        )

    def item_vectors(self, rows: Sequence[int], now: int) -> F32:
        with torch.no_grad():
            x, _ = self._item_input(self._item_rows(rows, now, train=False))
            out: F32 = self.item_tower(x).numpy()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "tables": {kind: t.state_dict() for kind, t in self.tables.items()},
            "user_tower": self.user_tower.state_dict(),
            "item_tower": self.item_tower.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "positives_seen": self.positives_seen,
            "positive_counts": self.positive_counts.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables = {k: EmbeddingTable.from_state_dict(s) for k, s in state["tables"].items()}
        self.user_tower.load_state_dict(state["user_tower"])
        self.item_tower.load_state_dict(state["item_tower"])
        self.optimizer.load_state_dict(state["optimizer"])
        fuse(self.optimizer)
        self.positives_seen = int(state["positives_seen"])
        self.positive_counts = np.asarray(state["positive_counts"], dtype=np.float64)
        self._weights_at = -1
