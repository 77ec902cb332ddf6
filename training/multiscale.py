"""Multi-scale EDNNs (preprint Fig. 7): branches on block-mean coarsened copies of the field.

Branch ``k`` is an ordinary :class:`~training.ednn.EDNN` that runs on the field
coarsened by ``factors[k]`` pixels per axis (the block mean, blocks aligned to the
field's origin); its focus and context are in coarse pixels, so a coarse branch
sees ``factor * context`` pixels far at ``1 / factor**d`` of the cost. The
prediction is a learned linear combination of the branch sums,
``E = sum_k w_k * sum(contributions_k)``, with no constant term: the model stays
extensive. The loss is taken after the sum, as for one scale.

>>> from training.nets import ValidCNN
>>> fine = EDNN(ValidCNN(2, 1, (4, 4), (2, 2)), 4, 2)
>>> coarse = EDNN(ValidCNN(2, 1, (2, 2), (8, 8), trunk=((4, 9, 1), (4, 9, 1))), 2, 8)
>>> model = MultiScaleEDNN([fine, coarse], factors=[1, 4])
>>> model.tiling.focus, model.tiling.context   # lcm(4, 4 * 2), max(2, 4 * 8)
((8, 8), (32, 32))
>>> model(torch.zeros(3, 1, 64, 64)).shape
torch.Size([3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ednn_dask.errors import ConfigError
from ednn_dask.tiling import Tiling, coerce_axes
from training.ednn import EDNN

POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class MultiScaleEDNN(nn.Module):
    """K EDNN branches, each on the field coarsened by its factor, summed with learned weights.

    Parameters
    ----------
    branches : sequence of EDNN
        One per scale, with focus and context in coarse pixels; all with the same
        number of spatial axes and the same boundary.
    factors : sequence of int or tuple of int
        The coarsening of each branch, per axis (1: the field itself).
    """

    def __init__(self, branches: Sequence[EDNN], factors: Sequence[int | Sequence[int]]):
        super().__init__()
        if not branches or len(branches) != len(factors):
            raise ConfigError(f"give one factor per branch: {len(branches)} branches, "
                              f"{len(factors)} factors.")
        ndim = branches[0].tiling.ndim
        boundary = branches[0].tiling.boundary
        if any(b.tiling.ndim != ndim or b.tiling.boundary != boundary for b in branches):
            raise ConfigError("all branches need the same number of spatial axes and the same "
                              "boundary.")
        self.factors = tuple(coerce_axes(f, ndim, "factor") for f in factors)
        if any(min(f) < 1 for f in self.factors):
            raise ConfigError(f"factors must be >= 1, got {self.factors}.")
        self.branches = nn.ModuleList(branches)
        self.weights = nn.Parameter(torch.ones(len(branches)))
        blocks = [tuple(s * f for s, f in zip(factor, b.tiling.focus, strict=True))
                  for factor, b in zip(self.factors, branches, strict=True)]
        reach = [tuple(s * c for s, c in zip(factor, b.tiling.context, strict=True))
                 for factor, b in zip(self.factors, branches, strict=True)]
        self.tiling = Tiling(tuple(math.lcm(*axis) for axis in zip(*blocks, strict=True)),
                             tuple(max(axis) for axis in zip(*reach, strict=True)), boundary)
        # per branch: how many of its focus blocks make one of the model's, per axis
        self.per_block = tuple(tuple(f // b for f, b in zip(self.tiling.focus, block,
                                                            strict=True)) for block in blocks)

    @property
    def dense(self) -> bool:
        return all(b.dense for b in self.branches)

    @property
    def n_parameters(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())

    def set_input_scaling(self, offset: float, scale: float) -> None:
        """The same ``x' = (x - offset) * scale`` in every branch (block means commute with it)."""
        for b in self.branches:
            b.input_offset.fill_(offset)
            b.input_scale.fill_(scale)

    def set_output_scaling(self, mean: float, std: float, n_tiles: int) -> None:
        """Targets of order one: the mean in the first branch, the spread in every one.

        ``mean`` and ``std`` are those of the per-sample targets, ``n_tiles`` the
        model's focus blocks per sample.
        """
        for k, (b, per) in enumerate(zip(self.branches, self.per_block, strict=True)):
            tiles = n_tiles * math.prod(per)
            b.output_offset.fill_(mean / tiles if k == 0 else 0.0)
            b.output_scale.fill_(std / math.sqrt(tiles * len(self.branches)))

    def coarsened(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The field ``(B, C, *spatial)`` as each branch sees it."""
        self.tiling.grid(x.shape[2:])  # whole focus blocks: every factor divides the shape
        return [x if max(f) == 1 else POOL[self.tiling.ndim](x, f, f) for f in self.factors]

    def branch_sums(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)``: each branch's sum of contributions, before the weights."""
        return torch.stack([b(c) for b, c in zip(self.branches, self.coarsened(x),
                                                  strict=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The extensive prediction per sample, ``(B,)``."""
        return self.branch_sums(x) @ self.weights.to(x.dtype)

    def contributions(self, x: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
        """Contributions ``(B, *grid)`` on the model's focus blocks, weights included."""
        grid = self.tiling.grid(x.shape[2:])
        total = torch.zeros(x.shape[0], *grid, dtype=x.dtype, device=x.device)
        for k, (b, c) in enumerate(zip(self.branches, self.coarsened(x), strict=True)):
            part = b.contributions(c, dense=dense)
            split = [v for g, p in zip(grid, self.per_block[k], strict=True) for v in (g, p)]
            axes = tuple(2 + 2 * i for i in range(len(grid)))
            total = total + self.weights[k] * part.reshape(x.shape[0], *split).sum(dim=axes)
        return total
