"""The EDNN module in PyTorch: pad -> tiles -> one shared tile net -> sum per sample.

The loss is taken on the per-sample sum, so the tile net itself learns how not to
double count the context halos (Mills et al., Chem. Sci. 2019, eq. 3-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ednn_dask.errors import ConfigError
from ednn_dask.tiling import Tiling


class EDNN(nn.Module):
    """Extensive deep neural network around a tile net.

    Parameters
    ----------
    tile_net : nn.Module
        Maps ``(N, C, *tile)`` to ``(N, 1, *ones)`` (or ``(N, 1)``). Nets with a
        ``dense_forward(padded, focus)`` can also run on whole padded grids.
    focus, context : int or sequence of int
    boundary : "periodic" or float
    ndim : int
        Number of spatial axes (2 or 3).
    output_scale, output_offset : float
        ``contribution = raw * output_scale + output_offset``: targets are
        normalized per tile for training and the scaling is exported as metadata.
    dense : bool
        Run the tile net's dense form over the padded grid instead of cutting
        tiles (identical numbers for valid-convolution nets, much faster).
    """

    def __init__(
        self,
        tile_net: nn.Module,
        focus: int | Sequence[int],
        context: int | Sequence[int],
        boundary: str | float = "periodic",
        ndim: int = 2,
        *,
        output_scale: float = 1.0,
        output_offset: float = 0.0,
        input_offset: float = 0.0,
        input_scale: float = 1.0,
        dense: bool = False,
    ):
        super().__init__()
        self.tiling = Tiling.create(focus, context, boundary, ndim=ndim)
        _check_net_geometry(tile_net, self.tiling)
        self.tile_net = tile_net
        self.dense = dense
        self.register_buffer("output_scale", torch.tensor(float(output_scale)))
        self.register_buffer("output_offset", torch.tensor(float(output_offset)))
        self.register_buffer("input_offset", torch.tensor(float(input_offset)))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the spatial axes of ``(B, C, *spatial)`` by the context."""
        pads = [p for c in reversed(self.tiling.context) for p in (c, c)]
        if self.tiling.boundary == "periodic":
            if any(c > n for c, n in zip(self.tiling.context, x.shape[2:], strict=True)):
                self.tiling.check(x.shape[2:])  # raises with the reason
            return F.pad(x, pads, mode="circular")
        return F.pad(x, pads, mode="constant", value=float(self.tiling.boundary))

    def tiles(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, *grid, C, *tile)``, a strided view of the padded input."""
        return self._cut(self.pad(x))

    def _cut(self, padded: torch.Tensor) -> torch.Tensor:
        nd = self.tiling.ndim
        for axis, (t, f) in enumerate(zip(self.tiling.tile, self.tiling.focus, strict=True)):
            padded = padded.unfold(2 + axis, t, f)  # axis -> grid, window appended last
        # now (B, C, *grid, *tile): bring C next to the tile axes
        order = (0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))
        return padded.permute(order)

    def contributions(self, x: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
        """Per-focus-block contributions ``(B, *grid)`` in target units."""
        if x.dim() != self.tiling.ndim + 2:
            raise ConfigError(
                f"EDNN expects (batch, channels, *spatial) with {self.tiling.ndim} spatial axes, "
                f"got shape {tuple(x.shape)}."
            )
        grid = self.tiling.grid(x.shape[2:])
        # pad first: a constant boundary is in field units, like the scoring pipeline's
        padded = (self.pad(x) - self.input_offset) * self.input_scale
        if self.dense if dense is None else dense:
            raw = self.tile_net.dense_forward(padded, self.tiling.focus)
        else:
            tiles = self._cut(padded)
            raw = self.tile_net(tiles.reshape(-1, *tiles.shape[1 + self.tiling.ndim :]))
        raw = raw.reshape(x.shape[0], *grid)
        return raw * self.output_scale + self.output_offset

    def tile_contributions(self, tiles: torch.Tensor) -> torch.Tensor:
        """Contributions ``(K,)`` of tiles ``(K, C, *tile)`` cut from the padded field."""
        raw = self.tile_net((tiles - self.input_offset) * self.input_scale)
        return raw.reshape(-1) * self.output_scale + self.output_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The extensive prediction: sum of contributions per sample, ``(B,)``."""
        return self.contributions(x).flatten(1).sum(dim=1)

    @property
    def n_parameters(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())


def _check_net_geometry(tile_net: nn.Module, tiling: Tiling) -> None:
    """Refuse a tile net built for another focus, context or tile than the EDNN's.

    Such a net still runs (a valid CNN on a wider tile returns more than one value
    per tile), but its torch and ONNX sums then disagree; the net's own ``focus``,
    ``context`` and ``tile`` attributes, where it has them, must equal the tiling's.
    """
    for name in ("focus", "context", "tile"):
        have = getattr(tile_net, name, None)
        want = getattr(tiling, name)
        if have is not None and tuple(have) != tuple(want):
            raise ConfigError(
                f"the tile net {type(tile_net).__name__} was built for {name} {tuple(have)}, "
                f"but the EDNN's {name} is {tuple(want)}; build the net with the EDNN's focus "
                f"{tiling.focus} and context {tiling.context} (tile {tiling.tile}).")
