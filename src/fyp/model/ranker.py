"""The multi-task ranker: a multi-gate mixture of experts (MMoE, Ma et al., KDD 2018) over
the collisionless embedding tables and the engine's context features, one head per label.

Input per (user, video, request):

* embeddings: user, video, creator, sound, the mean of the video's hashtags, and the
  surface the feed runs on (KuaiRand's ``tab``: the strongest single feature there),
  and the inner products user·video and user·creator;
* dense context (:func:`dense_features`): the video's smoothed label rates, the user's
  and the surface's lifts as the first ranker computes them, the user's affinities to
  the video's creator, sound and hashtags, whether they follow the creator, freshness,
  log duration, the hour of day (sin, cos), and how much evidence there is (log views of
  the video and of the user).

Output: one logit per label (``fyp.state.feedback.LABELS``); the value score is
Σ weight × P(label) with the configured weights, as for the first ranker. The network
learns a residual: its output is added to the first ranker's logit for the same example
(``residual``), so the model starts as good as the first ranker and learns what that
cannot (an MMoE learning the whole logit from scratch stayed below the first ranker on
KuaiRand's GAUC). A wide part (a linear model on the dense features) sits beside the
experts.

Embeddings are rows of :class:`~fyp.model.embeddings.EmbeddingTable` (updated by their
own per-row Adagrad); the dense parameters by Adam. Training happens in
:meth:`MultiTaskRanker.learn` on micro-batches of :class:`RankExample`.
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
    EmbeddingTable,
    TableConfig,
    gather,
    scatter_gradients,
)
from fyp.model.networks import mmoe, rank_input
from fyp.model.rank_queue import RankColumns, RankExample
from fyp.model.serving import RankBatch, rank_predict, rank_rows
from fyp.model.torch_ops import TORCH, adam, fuse, parameters
from fyp.rank.first_ranker import FEATURES, FirstRanker
from fyp.state.feedback import LABELS
from fyp.state.users import UserState
from fyp.types import DAY_MS

__all__ = [
    "DENSE_DIM",
    "ModelConfig",
    "MultiTaskRanker",
    "RankExample",  # (defined in rank_queue; the queues of older checkpoints name it here)
    "dense_features",
    "dense_from_examples",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

N_LABELS = len(LABELS)
# video rate logits (L), user lifts (L), surface lifts (L), creator's and hashtags' rate
# lifts (L each), creator / sound / hashtags affinity, follows, fresh, log duration, hour
# sin, hour cos, log video views, log user views
DENSE_DIM = 5 * N_LABELS + 5 + 5
_HOUR_MS = 3_600_000
_F = {name: i for i, name in enumerate(FEATURES)}  # the first ranker's feature columns
_CLIP = 8.0


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = 16
    small_embedding_dim: int = 8  # sound, hashtag, surface
    experts: int = 4
    expert_hidden: int = 64
    expert_dim: int = 32
    tower_hidden: int = 16
    learning_rate: float = 2e-3
    embedding_learning_rate: float = (
        0.3  # Adagrad on rows: chosen on the validation split (see docs)
    )
    min_count: int = 2  # occurrences before an id gets its own embedding row
    expire_after_days: float = 30.0
    warmup_examples: int = 20_000  # the first ranker serves until the model has seen this many
    residual: bool = True  # learn on top of the first ranker's logits (see the module doc)
    seed: int = 0


def dense_from_examples(
    x: F64, duration_ms: F64, now: npt.NDArray[np.int64], video_views: F64, user_views: F64
) -> F32:
    """The dense context of n (user, video) pairs from the first ranker's (n, L, F)
    features and the rest, one per row: a training batch's examples, each as it was
    when it opened (before its outcome changed anything), or a request's candidates
    (:func:`dense_features`: one ``now`` and user)."""
    angle = 2 * math.pi * ((now % DAY_MS) / _HOUR_MS) / 24
    out = np.concatenate(
        [
            x[:, :, _F["video_rate"]],  # per label
            x[:, :, _F["user_lift"]],  # per label
            x[:, :, _F["surface"]],  # per label
            x[:, :, _F["creator_rate"]],  # per label
            x[:, :, _F["hashtag_rate"]],  # per label
            x[:, 0, _F["creator"] : _F["fresh"] + 1],  # creator, sound, hashtags, follows, fresh
            np.column_stack(
                [
                    np.log1p(duration_ms / 1000.0),
                    np.sin(angle),
                    np.cos(angle),
                    np.log1p(video_views),
                    np.log1p(user_views),
                ]
            ),
        ],
        axis=1,
    )
    clipped: F32 = np.clip(out, -_CLIP, _CLIP).astype(np.float32)
    return clipped


def dense_features(
    first: FirstRanker,
    user: UserState,
    rows: Sequence[int],
    now: int,
    surface: str,
    first_features: F64 | None = None,
) -> F32:
    """(n, DENSE_DIM) context for ``user`` and catalog ``rows`` at ``now`` on ``surface``;
    ``first_features``: the first ranker's (n, L, F) features of these rows when the
    caller has them already (the cascade does)."""
    x = first.features(user, rows, now, surface) if first_features is None else first_features
    idx = np.asarray(rows, dtype=np.intp)
    n = len(idx)
    return dense_from_examples(
        x,
        first.catalog.duration_ms[idx].astype(np.float64),
        np.full(n, now, dtype=np.int64),
        first.stats.views[idx],
        np.full(n, float(user.views)),
    )


class MMoE(nn.Module):
    """The parameters of :func:`fyp.model.networks.mmoe` (its shapes and names) as a
    module, for training; serving evaluates the same function on a copy of them."""

    def __init__(self, in_dim: int, dense_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        e, h, d, t = cfg.experts, cfg.expert_hidden, cfg.expert_dim, cfg.tower_hidden

        def param(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))

        self.w1 = param(in_dim, e * h, fan_in=in_dim)  # every expert's first layer at once
        self.b1 = nn.Parameter(torch.zeros(e * h))
        self.w2 = param(e, h, d, fan_in=h)
        self.b2 = nn.Parameter(torch.zeros(e, d))
        self.gates = nn.Linear(in_dim, N_LABELS * e)
        self.t1 = param(N_LABELS, d, t, fan_in=d)
        self.tb1 = nn.Parameter(torch.zeros(N_LABELS, t))
        self.t2 = param(N_LABELS, t, fan_in=t)
        self.tb2 = nn.Parameter(torch.zeros(N_LABELS))
        self.wide = nn.Linear(dense_dim, N_LABELS)
        # The tensors themselves: loading a state or an optimiser step updates them in place.
        self._params = parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_dim) with the dense features first → (n, N_LABELS) logits."""
        out: torch.Tensor = mmoe(TORCH, self._params, x)
        return out

    def numpy_weights(self) -> dict[str, F32]:
        """A copy of the parameters as arrays, for serving
        (:func:`fyp.model.serving.mmoe_forward`)."""
        with torch.no_grad():
            return {name: p.detach().numpy().copy() for name, p in self.named_parameters()}


class MultiTaskRanker:
    """The MMoE with its embedding tables, trained online, scoring for the pipeline."""

    def __init__(
        self,
        cfg: ModelConfig,
        value_weights: dict[str, float],
        first: FirstRanker,
    ) -> None:
        self.cfg = cfg
        self.first = first
        self.catalog: CatalogIndex = first.catalog
        torch.manual_seed(cfg.seed)
        big = TableConfig(
            dim=cfg.embedding_dim,
            min_count=cfg.min_count,
            expire_after_ms=int(cfg.expire_after_days * DAY_MS),
            learning_rate=cfg.embedding_learning_rate,
        )
        small = TableConfig(
            dim=cfg.small_embedding_dim,
            min_count=cfg.min_count,
            expire_after_ms=int(cfg.expire_after_days * DAY_MS),
            learning_rate=cfg.embedding_learning_rate,
        )
        self.tables: dict[str, EmbeddingTable] = {
            "user": EmbeddingTable("user", big, seed=cfg.seed),
            "video": EmbeddingTable("video", big, seed=cfg.seed + 1),
            "creator": EmbeddingTable("creator", big, seed=cfg.seed + 2),
            "sound": EmbeddingTable("sound", small, seed=cfg.seed + 3),
            "hashtag": EmbeddingTable("hashtag", small, seed=cfg.seed + 4),
            # A handful of pages: every one gets its own row at once.
            "surface": EmbeddingTable(
                "surface",
                TableConfig(
                    dim=cfg.small_embedding_dim,
                    min_count=1,
                    expire_after_ms=None,
                    learning_rate=cfg.embedding_learning_rate,
                ),
                seed=cfg.seed + 5,
            ),
        }
        in_dim = DENSE_DIM + 3 * cfg.embedding_dim + 3 * cfg.small_embedding_dim + 2
        self.net = MMoE(in_dim, DENSE_DIM, cfg)
        self.optimizer = adam(list(self.net.parameters()), cfg.learning_rate)
        self.value_weights = np.zeros(N_LABELS, dtype=np.float32)
        for name, w in value_weights.items():
            self.value_weights[LABELS.index(name)] = w
        self.examples_seen = 0
        self._steps = 0  # optimisation steps taken; the serving copy of the weights is
        self._weights_at = -1  # refreshed when it is behind
        self._weights: dict[str, F32] = {}

    @property
    def warm(self) -> bool:
        return self.examples_seen >= self.cfg.warmup_examples

    # -- inputs ------------------------------------------------------------------------

    def _inputs(
        self, batch: RankBatch, dense: F32
    ) -> tuple[torch.Tensor, list[tuple[str, npt.NDArray[np.int64], torch.Tensor]]]:
        """The network's input in torch, and each table's rows with the leaf tensor their
        vectors are in (whose gradients go back to the rows)."""
        leaves: list[tuple[str, npt.NDArray[np.int64], torch.Tensor]] = []

        def fetch(kind: str, rows: npt.NDArray[np.int64]) -> torch.Tensor:
            leaf = gather(self.tables[kind], rows)
            leaves.append((kind, rows, leaf))
            return leaf

        x: torch.Tensor = rank_input(
            TORCH, fetch, batch.rows, batch.tag_rows, batch.tag_mask, torch.from_numpy(dense)
        )
        return x, leaves

    # -- learning ----------------------------------------------------------------------

    def learn(self, examples: Sequence[RankExample] | RankColumns) -> float:
        """One optimisation step on a micro-batch; returns its mean log loss."""
        if not len(examples):
            return math.nan
        batch = examples if isinstance(examples, RankColumns) else RankColumns.of(examples)
        rows = rank_rows(
            self.tables,
            batch.user_ids,
            batch.video_ids,
            batch.creator_ids,
            batch.sound_ids,
            batch.hashtags,
            batch.surfaces,
            int(batch.ts.max()),
            train=True,
        )
        x, leaves = self._inputs(rows, batch.dense)
        labels = torch.from_numpy(batch.labels)
        weights = torch.from_numpy(batch.weight)
        logits = self.net(x)
        if self.cfg.residual:
            logits = logits + torch.from_numpy(batch.prior)
        loss_per = nn.functional.binary_cross_entropy_with_logits(
            logits, labels, reduction="none"
        ).sum(dim=1)
        loss = (loss_per * weights).sum() / weights.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        n = float(len(batch))
        for kind, at, leaf in leaves:
            scatter_gradients(self.tables[kind], at, leaf, n)
        self.examples_seen += len(batch)
        self._steps += 1
        return float(loss.item()) / N_LABELS

    # -- serving -----------------------------------------------------------------------

    def predict(
        self,
        user_id: str,
        user: UserState,
        rows: Sequence[int],
        now: int,
        surface: str,
        first_features: F64 | None = None,
    ) -> tuple[F32, F32]:
        """(probabilities (n, N_LABELS), value scores (n,)) for catalog ``rows``."""
        return rank_predict(
            self.tables,
            self.serving_weights(),
            self.first,
            self.value_weights,
            self.cfg.residual,
            user_id,
            user,
            rows,
            now,
            surface,
            first_features,
        )

    def serving_weights(self) -> dict[str, F32]:
        """The dense weights as arrays (a copy, refreshed after each optimisation step)."""
        if self._weights_at != self._steps:
            self._weights = self.net.numpy_weights()
            self._weights_at = self._steps
        return self._weights

    def memory_bytes(self) -> dict[str, int]:
        out = {kind: t.memory_bytes() for kind, t in self.tables.items()}
        out["dense"] = sum(p.numel() * p.element_size() for p in self.net.parameters())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "tables": {kind: t.state_dict() for kind, t in self.tables.items()},
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "examples_seen": self.examples_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables = {
            kind: EmbeddingTable.from_state_dict(s) for kind, s in state["tables"].items()
        }
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        fuse(self.optimizer)
        self.examples_seen = int(state["examples_seen"])
        self._weights_at = -1
