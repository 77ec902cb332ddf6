"""Tile networks: each maps ``(N, C, *tile)`` to one raw contribution per tile.

Both families also have a *dense* form, ``dense_forward(padded, focus)``, that
runs on a whole padded grid and returns one value per focus block, sharing the
parameters of the tile form exactly (no copies, so gradients flow through both):

- :class:`IsingMLP`, the paper's fully connected net. Its first layer is a
  convolution with kernel = tile and stride = focus; the later ones are 1x1
  convolutions. Exact, but the overlap is recomputed for every tile.
- :class:`ValidCNN`, unpadded ("valid") convolutions whose strides divide the
  focus, then a head convolution with kernel = the trunk's output window and
  stride = focus / trunk stride (or, with ``readout="mean"``, a per-pixel head
  averaged over that window). Exact, and the trunk is shared between tiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ednn_dask.errors import ConfigError
from training.cubical import cells

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}


class Square(nn.Module):
    """``x * x``: the head of a quadratic net (one ``Mul`` in ONNX)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Blur(nn.Module):
    """A fixed binomial low-pass ([1, 2, 1] / 4 per axis), then every ``stride``-th pixel:
    anti-aliased subsampling (Zhang, ICML 2019). A strided convolution samples its
    responses at one phase of the grid, so a net of them answers each registry of its
    input differently; blurred first, less of the response depends on the phase.
    Depthwise and valid (a plain grouped convolution in ONNX); nothing to learn."""

    def __init__(self, ndim: int, channels: int, stride: int):
        super().__init__()
        axis = torch.tensor([1.0, 2.0, 1.0]) / 4
        kernel = axis
        for _ in range(ndim - 1):
            kernel = kernel[..., None] * axis
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).clone(),
                             persistent=False)
        self.stride, self.channels = stride, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return CONV_FN[x.dim() - 2](x, self.kernel, stride=self.stride, groups=self.channels)


class DenseView(nn.Module):
    """A tile net's dense form as a module of its own (for ONNX export)."""

    def __init__(self, net: nn.Module, focus: Sequence[int]):
        super().__init__()
        self.net = net
        self.focus = tuple(focus)

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        return self.net.dense_forward(padded, self.focus)


class IsingMLP(nn.Module):
    """Fully connected tile net of the paper: ``C*prod(tile) -> 32*prod(tile) -> 64 -> 64 -> 1``."""

    def __init__(self, tile: Sequence[int], channels: int = 1, widths: Sequence[int] | None = None):
        super().__init__()
        self.tile = tuple(tile)
        self.channels = channels
        widths = tuple(widths or (32 * math.prod(self.tile), 64, 64))
        sizes = (channels * math.prod(self.tile), *widths, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        h = tiles.flatten(1)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        return self.layers[-1](h)

    def dense_forward(self, padded: torch.Tensor, focus: Sequence[int]) -> torch.Tensor:
        nd = len(self.tile)
        conv = CONV_FN[nd]
        first, *rest = self.layers
        h = conv(padded, first.weight.view(-1, self.channels, *self.tile), first.bias,
                 stride=tuple(focus))
        for layer in rest:
            h = conv(F.relu(h), layer.weight.view(*layer.weight.shape, *(1,) * nd), layer.bias)
        return h

    def to_dense(self, focus: Sequence[int]) -> DenseView:
        return DenseView(self, focus)


class FullyConvolutional(nn.Module):
    """A tile net whose tile form already runs on a whole padded grid: its dense form
    is itself (one value per focus block, for the focus it was built for)."""

    focus: tuple[int, ...]

    def dense_forward(self, padded: torch.Tensor, focus: Sequence[int]) -> torch.Tensor:
        if tuple(focus) != self.focus:
            raise ConfigError(f"net was built for focus {self.focus}, not {tuple(focus)}.")
        return self.forward(padded)

    def to_dense(self, focus: Sequence[int]) -> nn.Module:
        return self


class ValidCNN(FullyConvolutional):
    """Compact fully convolutional tile net built from unpadded convolutions.

    Parameters
    ----------
    ndim, channels : int
    focus, context : sequence of int
    trunk : sequence of (out_channels, kernel, stride)
        Valid convolutions, each followed by ReLU; every cumulative stride must
        divide the focus so tile and dense forms see the same pixels.
    hidden : int
        Width of the head convolution (kernel = trunk output window of a tile).
    activation : {"relu", "silu", "quadratic"}
        Non-linearity after every trunk layer and the head. SiLU is smooth, so a
        few units represent an energy that is quadratic in sub-pixel atom shifts
        (harmonic strain), which ReLU can only approximate piece by piece.
        ``"quadratic"``: a linear trunk and a squaring head, so the net is a sum of
        squares of linear maps of the tile: quadratic forms of the field within the
        context (pair energies), exactly, and nothing else.
    antialias : {None, "blurpool", "prefilter"}
        Strided trunk layers that depend less on where their input sits on the grid
        (its registry). ``"blurpool"``: a convolution at stride 1, its non-linearity,
        then :class:`Blur` at the stride (Zhang 2019), at up to stride**ndim times
        the compute of the layer. ``"prefilter"``: :class:`Blur` at stride 1 before the
        strided convolution, which then sees a band-limited input, so its own
        subsampling aliases less (the non-linearity's harmonics still alias), for
        one depthwise 3 px filter more.
    readout : {"window", "mean"}
        ``"window"``: the head convolution weighs every pixel of the window on
        its own. ``"mean"``: the head is 1x1 (a per-pixel density) and the tile's
        contribution is its mean over the window, so translation invariance
        inside the focus is built in rather than learned; right for targets that
        are sums of a local quantity (the Laplacian). A mean, not a sum, keeps
        the output's sensitivity to each weight that of the window head.
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        focus: Sequence[int],
        context: Sequence[int],
        trunk: Sequence[tuple[int, int, int]] = ((16, 3, 1), (16, 3, 1)),
        hidden: int = 32,
        readout: str = "window",
        activation: str = "relu",
        antialias: str | None = None,
    ):
        super().__init__()
        if antialias not in (None, "blurpool", "prefilter"):
            raise ConfigError(f"antialias must be None, 'blurpool' or 'prefilter', "
                              f"not {antialias!r}.")
        if readout not in ("window", "mean"):
            raise ConfigError(f"readout must be 'window' or 'mean', not {readout!r}.")
        if activation not in (*ACTIVATIONS, "quadratic"):
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)} or quadratic, "
                             f"not {activation!r}.")
        act = nn.Identity if activation == "quadratic" else ACTIVATIONS[activation]
        self.head_activation = Square() if activation == "quadratic" else act()
        self.focus, self.context, self.readout = tuple(focus), tuple(context), readout
        tile = [f + 2 * c for f, c in zip(focus, context, strict=True)]
        layers: list[nn.Module] = []
        size, stride, c_in = list(tile), 1, channels
        for c_out, kernel, step in trunk:
            stride *= step
            if any(f % stride for f in focus):
                raise ConfigError(f"cumulative stride {stride} does not divide the focus {focus}.")
            if antialias == "blurpool" and step > 1:  # the blur's 3 px are a valid layer
                size = [(n - kernel + 1 - 3) // step + 1 for n in size]
                layers += [CONV[ndim](c_in, c_out, kernel, 1), act(), Blur(ndim, c_out, step)]
            elif antialias == "prefilter" and step > 1:
                size = [(n - 2 - kernel) // step + 1 for n in size]
                layers += [Blur(ndim, c_in, 1), CONV[ndim](c_in, c_out, kernel, step), act()]
            else:
                size = [(n - kernel) // step + 1 for n in size]
                layers += [CONV[ndim](c_in, c_out, kernel, step), act()]
            if min(size) < 1:
                raise ConfigError(f"trunk {trunk!r} is deeper than the tile {tile} allows.")
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.window = tuple(size)
        step = tuple(f // stride for f in focus)
        if readout == "window":
            self.head = CONV[ndim](c_in, hidden, self.window, step)
        else:
            self.head = CONV[ndim](c_in, hidden, 1)
            # a fixed averaging kernel: a plain conv in the ONNX graph, nothing to learn
            mean = torch.full((1, 1, *self.window), 1.0 / math.prod(self.window))
            self.register_buffer("window_mean", mean, persistent=False)
            self.mean_stride = step
        self.out = CONV[ndim](hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(self.head_activation(self.head(self.trunk(x))))
        if self.readout == "mean":
            y = CONV_FN[y.dim() - 2](y, self.window_mean, stride=self.mean_stride)
        return y


class PaperCNN(nn.Module):
    """The paper's 13-layer tile CNN (Chem. Sci. 2019, section 2): tile path only.

    Two reducing 3x3/2 convolutions with 64 filters, six 4x4/1 with 16, one 3x3/2
    with 64, four 3x3/1 with 32, then fully connected ``-> width -> 1`` (the paper
    uses 1024). Convolutions zero-pad inside the tile as the paper's did, so the
    trunk cannot be shared between overlapping tiles: export it with
    ``kind="tile"``. ``scale`` divides every filter count (1 = the paper's net).
    """

    def __init__(self, channels: int, tile: Sequence[int], width: int = 1024, scale: int = 1):
        super().__init__()
        self.tile = tuple(tile)
        plan = ([(64, 3, 2)] * 2 + [(16, 4, 1)] * 6 + [(64, 3, 2)] + [(32, 3, 1)] * 4)
        layers: list[nn.Module] = []
        c_in, size = channels, list(tile)
        for c_out, kernel, stride in plan:
            c_out = max(1, c_out // scale)
            # "same" padding as TensorFlow: output = ceil(input / stride)
            layers += [nn.ZeroPad2d(_same_padding(kernel, stride)),
                       nn.Conv2d(c_in, c_out, kernel, stride), nn.ReLU()]
            c_in, size = c_out, [-(-n // stride) for n in size]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * math.prod(size), width),
                                  nn.ReLU(), nn.Linear(width, 1))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(tiles))


def _same_padding(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of TensorFlow's "SAME" for even inputs."""
    total = max(kernel - stride, 0)
    return (total // 2, total - total // 2, total // 2, total - total // 2)


class CubicalNet(FullyConvolutional):
    """Additive functionals of a binary image, exactly: a linear head on its cell counts.

    For every voxel of the focus block the net counts the cells of the pore space's
    cubical complex anchored there (:func:`training.cubical.cells`: the voxel, its edges,
    squares and cube towards higher indices; ``2^ndim`` of them) and weighs them with a
    linear head; a tile's contribution is the sum over its focus block. For pixels of 0
    and 1, a cell's indicator is ``relu(sum of its corners - (corners - 1))`` exactly,
    so the net is exact in float32 wherever the head's weights are.

    Only the head (``2^ndim`` weights and a per-voxel constant) is learned:
    :meth:`fit_head` solves it by least squares. Context 1 (the upper neighbours).
    """

    def __init__(self, ndim: int, focus: Sequence[int]):
        super().__init__()
        self.focus, self.context = tuple(focus), (1,) * ndim
        self.tile = tuple(f + 2 for f in self.focus)
        kinds = cells(ndim)
        corners = torch.zeros(len(kinds), 1, *(2,) * ndim)
        for k, axes in enumerate(kinds):
            for offset in itertools.product(*((0, 1) if a in axes else (0,)
                                               for a in range(ndim))):
                corners[(k, 0, *offset)] = 1.0
        self.register_buffer("corners", corners)
        self.register_buffer("corners_bias", 1.0 - corners.flatten(1).sum(1))
        self.register_buffer("block", torch.ones(1, 1, *self.focus))
        self.head = CONV[ndim](len(kinds), 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def cell_indicators(self, padded: torch.Tensor) -> torch.Tensor:
        """``(N, 1, *n + 2)`` padded by one voxel -> ``(N, 2^ndim, *n)``, one per anchor."""
        anchors = padded[(..., *(slice(1, None),) * len(self.focus))]
        conv = CONV_FN[len(self.focus)]
        return F.relu(conv(anchors, self.corners, self.corners_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_voxel = self.head(self.cell_indicators(x))
        return CONV_FN[len(self.focus)](per_voxel, self.block, stride=self.focus)


    @torch.no_grad()
    def fit_head(self, ednn: nn.Module, x: torch.Tensor, y) -> dict:
        """Least squares of the head on samples ``x`` ``(B, 1, *spatial)`` and targets ``y``.

        The design matrix holds each sample's cell counts and its voxel count, so the
        fit is exact (to float64 rounding) for any target that is a combination of
        them; the residual says how far another target is from one.
        """
        import numpy as np

        padded = ednn.pad(x)  # the EDNN's input and output scalings are the identity
        counts = torch.stack([self.cell_indicators(padded[i : i + 1]).sum(
            dim=tuple(range(2, x.dim()))).double()[0] for i in range(len(x))])
        voxels = torch.full((len(x), 1), float(math.prod(x.shape[2:])), dtype=torch.float64)
        design = torch.cat([counts, voxels], dim=1).numpy()
        target = np.asarray(y, np.float64)
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        residual = design @ solution - target
        self.head.weight.copy_(torch.from_numpy(solution[:-1]).reshape(self.head.weight.shape))
        self.head.bias.fill_(float(solution[-1]))
        return {"weights": [float(w) for w in self.head.weight.flatten()],
                "bias": float(self.head.bias), "max_residual": float(np.abs(residual).max())}
