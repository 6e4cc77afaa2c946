"""The learned models' serving math, in numpy, written once for every holder of the
parameters: the learner's own models (in process) and a serving process's read-only
replica of what the learner published (:mod:`fyp.model.replica`).

Serving scores a few dozen candidates per request, where torch's per-operation overhead
would cost more than the arithmetic, so the networks (written once in
:mod:`fyp.model.networks`) run here on numpy: embedding rows read through
:class:`~fyp.model.embeddings.TableReader` and the dense weights as a dict of arrays
named as the ``nn.Module``'s parameters. The torch modules (``fyp.model.ranker``,
``fyp.model.two_tower``) train the same functions on torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.model.embeddings import MAX_TAGS, TableReader, lookup_optional, lookup_padded
from fyp.model.networks import NUMPY, Fetch, mmoe, rank_input, tower, tower_user_input
from fyp.rank.first_ranker import FirstRanker
from fyp.state.feedback import LABELS
from fyp.state.users import UserState

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Weights = Mapping[str, F32]

N_LABELS = len(LABELS)


@dataclass
class RankBatch:
    """The embedding rows of a batch of (user, video, surface) triples."""

    rows: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    tag_rows: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    tag_mask: F32 = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def rank_rows(
    tables: Mapping[str, TableReader],
    users: Sequence[str],
    videos: Sequence[str],
    creators: Sequence[str],
    sounds: Sequence[str | None],
    hashtags: Sequence[tuple[str, ...]],
    surfaces: Sequence[str],
    now: int,
    train: bool,
) -> RankBatch:
    """The ranker's rows for each triple (``train``: admitting and touching ids, as a
    training step does; serving only reads)."""
    t = tables
    rows = {
        "user": t["user"].lookup(users, now, admit=train, touch=train),
        "video": t["video"].lookup(videos, now, admit=train, touch=train),
        "creator": t["creator"].lookup(creators, now, admit=train, touch=train),
        "surface": t["surface"].lookup(surfaces, now, admit=train, touch=train),
    }
    rows["sound"] = lookup_optional(t["sound"], sounds, now, admit=train, touch=train)
    first_tags = [t_[:MAX_TAGS] for t_ in hashtags]
    tag_rows, counts = lookup_padded(
        t["hashtag"], first_tags, MAX_TAGS, now, admit=train, touch=train
    )
    # Every tag slot a video fills counts in its mean (an unknown tag as the fallback).
    tag_mask = (np.arange(MAX_TAGS) < counts[:, None]).astype(np.float32)
    return RankBatch(rows, tag_rows, tag_mask)


def rank_inputs(tables: Mapping[str, TableReader], batch: RankBatch, dense: F32) -> F32:
    """The ranker network's input (:func:`fyp.model.networks.rank_input`) from the
    tables' rows as arrays."""
    x: F32 = rank_input(NUMPY, _reader(tables), batch.rows, batch.tag_rows, batch.tag_mask, dense)
    return x


def _reader(tables: Mapping[str, TableReader]) -> Fetch:
    def fetch(kind: str, rows: npt.NDArray[np.int64]) -> F32:
        return tables[kind].vectors(rows)

    return fetch


def mmoe_forward(w: Weights, x: F32) -> F32:
    """The ranker network (:func:`fyp.model.networks.mmoe`) in numpy: (n, in_dim) ->
    (n, N_LABELS) logits."""
    out: F32 = np.asarray(mmoe(NUMPY, w, x), dtype=np.float32)
    return out


def rank_predict(
    tables: Mapping[str, TableReader],
    weights: Weights,
    first: FirstRanker,
    value_weights: F32,
    residual: bool,
    user_id: str,
    user: UserState,
    rows: Sequence[int],
    now: int,
    surface: str,
    first_features: F64 | None = None,
    batch: RankBatch | None = None,
) -> tuple[F32, F32]:
    """(probabilities (n, N_LABELS), value scores (n,)) of catalog ``rows`` for the
    user: the learned ranker's scores, from whichever holder's tables and weights.
    ``batch``: the rows' :func:`rank_rows` when the caller keeps them (a replica does:
    :mod:`fyp.model.catalog_rows`)."""
    from fyp.model.ranker import dense_features  # (ranker imports this module)

    if len(rows) == 0:
        return np.zeros((0, N_LABELS), np.float32), np.zeros(0, np.float32)
    if batch is None:
        catalog: CatalogIndex = first.catalog
        videos = [catalog.videos[r] for r in rows]
        batch = rank_rows(
            tables,
            [user_id] * len(rows),
            [v.video_id for v in videos],
            [v.creator_id for v in videos],
            [v.sound_id for v in videos],
            [v.hashtags for v in videos],
            [surface] * len(rows),
            now,
            train=False,
        )
    x = first.features(user, rows, now, surface) if first_features is None else first_features
    dense = dense_features(first, user, rows, now, surface, x)
    logits = mmoe_forward(weights, rank_inputs(tables, batch, dense))
    if residual:
        logits += first.logits(x).astype(np.float32)
    p: F32 = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return p, p @ value_weights


def user_vector(
    tables: Mapping[str, TableReader],
    weights: Weights,
    catalog: CatalogIndex,
    user_id: str,
    pooled: Sequence[int],
    now: int,
) -> F32:
    """The user tower's vector for ``user_id`` with the pooled history (catalog rows,
    oldest first, at most the tower's ``history``): their row (or the fallback) beside
    the mean of the history's video rows, as the two-tower model's training reads them."""
    videos = catalog.videos
    user = tables["user"].lookup([user_id], now)
    hist = tables["video"].lookup([videos[r].video_id for r in pooled], now)
    if not len(hist):  # (one slot, masked: the mean of nothing is zeros)
        hist = np.full(1, -1, dtype=np.int64)
    counts = np.array([len(pooled)], dtype=np.int64)
    x = tower_user_input(NUMPY, _reader(tables), user, hist[None, :], counts)
    out: F32 = np.asarray(tower(NUMPY, weights, "user_tower.net", x)[0], dtype=np.float32)
    return out
