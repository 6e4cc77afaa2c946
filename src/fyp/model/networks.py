"""The learned models' networks, each written once over a small array backend: numpy
evaluates them for serving (:mod:`fyp.model.serving`), torch for training, where autograd
differentiates the same expressions (``fyp.model.ranker``, ``fyp.model.two_tower``).

Serving scores a few dozen candidates per request, where torch's per-operation overhead
would cost more than the arithmetic, so serving must not go through torch; training
needs gradients, so it must. What differs between the two is only the handful of
primitives of :class:`Ops` (a ReLU, a softmax, a sum that keeps its axis...); the
networks' structure — the layers, their order, the parameter names, the input's parts —
is the functions below. Everything else they use (``@``, ``+``, ``*``, ``.reshape``,
``.swapaxes``, ``.T``, indexing) means the same on a ``numpy.ndarray`` and a
``torch.Tensor``.

The parameters are a mapping from the ``nn.Module``'s parameter names to arrays (or to
the module's own tensors, when training): the names are the published model's format
(:mod:`fyp.model.publisher`), unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fyp.state.feedback import LABELS

__all__ = [
    "NUMPY",
    "Array",
    "Fetch",
    "NumpyOps",
    "Ops",
    "mmoe",
    "rank_input",
    "tower",
    "tower_item_input",
    "tower_user_input",
]

# An np.ndarray or a torch.Tensor: the functions here use only what means the same on both.
Array = Any
# The embedding vectors of rows of a table (by kind): numpy arrays for serving, leaf
# tensors that collect gradients for training.
Fetch = Callable[[str, npt.NDArray[np.int64]], Array]

N_LABELS = len(LABELS)


class Ops(Protocol):
    """The primitives whose spelling differs between numpy and torch."""

    def relu(self, a: Array) -> Array:
        """max(a, 0); ``a`` is a temporary the caller does not read again (numpy
        overwrites it)."""

    def softmax(self, a: Array) -> Array:
        """Softmax over the last axis."""

    def linear(self, x: Array, weight: Array, bias: Array) -> Array:
        """x @ weight.T + bias: a layer whose weight is stored (out, in), as
        ``nn.Linear``'s."""

    def einsum(self, spec: str, *operands: Array) -> Array: ...

    def concat(self, parts: Sequence[Array]) -> Array:
        """Concatenated along axis 1."""

    def sum_keep(self, a: Array, axis: int) -> Array:
        """Summed over ``axis``, kept as an axis of length 1."""

    def at_least(self, a: Array, floor: float) -> Array: ...

    def norm(self, a: Array) -> Array:
        """The L2 norm of each row of a 2-d ``a``, as an (n, 1) column."""

    def array(self, a: npt.NDArray[Any]) -> Array:
        """A numpy array (an index mask) as this backend's array."""


class NumpyOps:
    """The serving backend: float32 numpy, in place where a temporary allows."""

    def relu(self, a: Array) -> Array:
        return np.maximum(a, 0.0, out=a)

    def softmax(self, a: Array) -> Array:
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def linear(self, x: Array, weight: Array, bias: Array) -> Array:
        return x @ weight.T + bias

    def einsum(self, spec: str, *operands: Array) -> Array:
        return np.einsum(spec, *operands)

    def concat(self, parts: Sequence[Array]) -> Array:
        return np.concatenate(parts, axis=1, dtype=np.float32)

    def sum_keep(self, a: Array, axis: int) -> Array:
        return a.sum(axis=axis, keepdims=True)

    def at_least(self, a: Array, floor: float) -> Array:
        return np.maximum(a, floor)

    def norm(self, a: Array) -> Array:
        return np.linalg.norm(a, axis=1, keepdims=True)

    def array(self, a: npt.NDArray[Any]) -> Array:
        return a


NUMPY: Ops = NumpyOps()


def mmoe(ops: Ops, w: Mapping[str, Array], x: Array) -> Array:
    """The ranker's multi-gate mixture of experts: (n, in_dim) with the dense features
    first -> (n, N_LABELS) logits. Experts and towers are batched arrays (one matmul for
    all), not one layer each: at these sizes per-layer overhead would cost more than the
    arithmetic."""
    e = int(w["w2"].shape[0])
    dense_dim = int(w["wide.weight"].shape[1])
    n, t = len(x), N_LABELS
    # every expert's first layer at once, then experts first: (e, n, h)
    hidden = ops.relu(x @ w["w1"] + w["b1"]).reshape(n, e, -1).swapaxes(0, 1)
    experts = ops.relu(hidden @ w["w2"] + w["b2"][:, None, :])  # (e, n, d)
    gates = ops.softmax(ops.linear(x, w["gates.weight"], w["gates.bias"]).reshape(n, t, e))
    mixed = gates @ experts.swapaxes(0, 1)  # (n, t, d): each label's mixture
    tower = ops.relu(mixed.swapaxes(0, 1) @ w["t1"] + w["tb1"][:, None, :])  # (t, n, h)
    deep = ops.einsum("tnh,th->nt", tower, w["t2"]) + w["tb2"]
    wide = ops.linear(x[:, :dense_dim], w["wide.weight"], w["wide.bias"])
    return deep + wide


def _masked_mean(ops: Ops, vectors: Array, mask: Array) -> Array:
    """The mean over axis 1 of (n, k, d) ``vectors`` where the (n, k) ``mask`` is 1
    (zeros where it is 0 throughout)."""
    total = (vectors * mask[:, :, None]).sum(1)
    return total / ops.at_least(ops.sum_keep(mask, 1), 1.0)


def rank_input(
    ops: Ops,
    fetch: Fetch,
    rows: Mapping[str, npt.NDArray[np.int64]],
    tag_rows: npt.NDArray[np.int64],
    tag_mask: npt.NDArray[np.float32],
    dense: Array,
) -> Array:
    """The ranker network's input: the (n, DENSE_DIM) ``dense`` context, the user's,
    video's, creator's, sound's and surface's vectors (``rows`` of each table), the mean
    of the (n, MAX_TAGS) ``tag_rows``' vectors where ``tag_mask`` is 1, and the inner
    products user·video and user·creator."""
    n, width = tag_rows.shape
    tags = fetch("hashtag", tag_rows.reshape(-1)).reshape(n, width, -1)
    tag_mean = _masked_mean(ops, tags, ops.array(tag_mask))
    user, video, creator = (fetch(kind, rows[kind]) for kind in ("user", "video", "creator"))
    sound, surface = fetch("sound", rows["sound"]), fetch("surface", rows["surface"])
    return ops.concat(
        [
            dense,
            user,
            video,
            creator,
            sound,
            tag_mean,
            surface,
            # Explicit user × item interactions (as in a factorisation machine): an MLP
            # over concatenated embeddings learns products only slowly.
            ops.sum_keep(user * video, 1),
            ops.sum_keep(user * creator, 1),
        ]
    )


def tower(ops: Ops, w: Mapping[str, Array], prefix: str, x: Array) -> Array:
    """A two-tower tower (Linear, ReLU, Linear; its parameters under ``prefix``, as an
    ``nn.Sequential`` names them), its output L2-normalised."""
    h = ops.relu(ops.linear(x, w[f"{prefix}.0.weight"], w[f"{prefix}.0.bias"]))
    out = ops.linear(h, w[f"{prefix}.2.weight"], w[f"{prefix}.2.bias"])
    return out / ops.at_least(ops.norm(out), 1e-12)


def tower_user_input(
    ops: Ops,
    fetch: Fetch,
    user_rows: npt.NDArray[np.int64],
    history_rows: npt.NDArray[np.int64],
    history_counts: npt.NDArray[np.int64],
) -> Array:
    """The user tower's input: each user's vector beside the mean of their history's
    video vectors ((n, h) ``history_rows``, the first ``history_counts`` of each row
    filled; zeros for an empty history)."""
    n, h = history_rows.shape
    user = fetch("user", user_rows)
    history = fetch("video", history_rows.reshape(-1)).reshape(n, h, -1)
    mask = ops.array((np.arange(h) < history_counts[:, None]).astype(np.float32))
    return ops.concat([user, _masked_mean(ops, history, mask)])


def tower_item_input(ops: Ops, fetch: Fetch, rows: Mapping[str, npt.NDArray[np.int64]]) -> Array:
    """The item tower's input: the video's, creator's and sound's vectors and the mean of
    its hashtags' (``rows["hashtag"]``: (n, MAX_TAGS), -1 where a video has fewer)."""
    tag_rows = rows["hashtag"]
    n, width = tag_rows.shape
    tags = fetch("hashtag", tag_rows.reshape(-1)).reshape(n, width, -1)
    mask = ops.array((tag_rows >= 0).astype(np.float32))
    parts = [fetch(kind, rows[kind]) for kind in ("video", "creator", "sound")]
    return ops.concat([*parts, _masked_mean(ops, tags, mask)])
