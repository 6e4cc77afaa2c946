"""The training backend of :mod:`fyp.model.networks`: the same networks in torch, so that
autograd differentiates what serving evaluates in numpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt
import torch
from torch import nn

from fyp.model.networks import Array, Ops

__all__ = ["TORCH", "TorchOps", "adam", "fuse", "parameters"]


class TorchOps:
    """Out of place throughout: autograd keeps the intermediate tensors."""

    def relu(self, a: Array) -> Array:
        return torch.relu(a)

    def softmax(self, a: Array) -> Array:
        return torch.softmax(a, dim=-1)

    def linear(self, x: Array, weight: Array, bias: Array) -> Array:
        return nn.functional.linear(x, weight, bias)

    def einsum(self, spec: str, *operands: Array) -> Array:
        return torch.einsum(spec, *operands)

    def concat(self, parts: Sequence[Array]) -> Array:
        return torch.cat([torch.as_tensor(p) for p in parts], dim=1)

    def sum_keep(self, a: Array, axis: int) -> Array:
        return a.sum(dim=axis, keepdim=True)

    def at_least(self, a: Array, floor: float) -> Array:
        return a.clamp(min=floor)

    def norm(self, a: Array) -> Array:
        return torch.linalg.vector_norm(a, dim=1, keepdim=True)

    def array(self, a: npt.NDArray[Any]) -> Array:
        return torch.from_numpy(a)


TORCH: Ops = TorchOps()


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters by name: the tensors themselves (training updates them in
    place, so the mapping stays current), for the functions of :mod:`fyp.model.networks`."""
    return dict(module.named_parameters())


def adam(params: Sequence[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over the dense parameters, as one fused kernel (:func:`fuse`)."""
    return fuse(torch.optim.Adam(params, lr=lr, fused=True))


def fuse(optimizer: torch.optim.Adam) -> torch.optim.Adam:
    """Adam's step as one fused kernel over every parameter, rather than a dozen small
    tensor operations per parameter: the same update (equal up to rounding), at a
    fraction of the per-step overhead that dominates at these parameter sizes. Also
    after ``load_state_dict``, which takes the saved groups' options (a checkpoint of the
    code before holds ``fused=None``)."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
    return optimizer
