"""Tile models with known answers, built from hand-set weights or random ones."""

from __future__ import annotations

import numpy as np
import torch

from training.ednn import EDNN
from training.multiscale import MultiScaleEDNN
from training.nets import IsingMLP, ValidCNN


def exact_ising_ednn(dim: int, boundary="periodic") -> EDNN:
    """An EDNN whose tile net computes the Ising bond energy exactly, by hand-set weights.

    For a centre spin s in {-1, 1} and a neighbour n in {-1, 0, 1} (0 = outside an
    open boundary), ``s * n = relu(s+n-1) + relu(-s-n-1) - relu(s-n-1) - relu(n-s-1)``;
    the tile contribution is ``-sum`` over the bonds to the +1 neighbour on each
    axis. All values are small integers, so float32 arithmetic is exact.
    """
    tile = (3,) * dim
    centre = np.ravel_multi_index((1,) * dim, tile)
    forward = [np.ravel_multi_index(tuple(2 if a == b else 1 for b in range(dim)), tile)
               for a in range(dim)]
    net = IsingMLP(tile, widths=(4 * dim,))
    w = torch.zeros(4 * dim, 3**dim)
    for axis, n in enumerate(forward):
        for row, (ws, wn) in enumerate([(1, 1), (-1, -1), (1, -1), (-1, 1)]):
            w[4 * axis + row, centre] = ws
            w[4 * axis + row, n] = wn
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0] * dim)
    with torch.no_grad():
        net.layers[0].weight.copy_(w)
        net.layers[0].bias.fill_(-1.0)
        net.layers[1].weight.copy_(-signs[None])
        net.layers[1].bias.zero_()
    return EDNN(net, 1, 1, boundary, ndim=dim)


def random_cnn_ednn(dim: int, channels: int, focus, context, boundary, seed: int = 0,
                    readout: str = "window", activation: str = "relu", trunk=None,
                    antialias: str | None = None) -> EDNN:
    """A randomly initialised valid-convolution EDNN (outputs of order one)."""
    torch.manual_seed(seed)
    kernel = 3 if min(context) >= 1 else 1
    net = ValidCNN(dim, channels, focus, context, trunk=trunk or ((6, kernel, 1),), hidden=8,
                   readout=readout, activation=activation, antialias=antialias)
    return EDNN(net, focus, context, boundary, ndim=dim, output_scale=0.5, output_offset=0.1,
                input_offset=0.2, input_scale=2.0).eval()


def random_multiscale(dim, boundary, seed=0, channels=1):
    """A fine branch (factor 1, context 1) and a coarse one (factor 2, context 2 coarse px)."""
    fine = random_cnn_ednn(dim, channels, (2,) * dim, (1,) * dim, boundary, seed=seed,
                           activation="silu")
    coarse = random_cnn_ednn(dim, channels, (2,) * dim, (2,) * dim, boundary, seed=seed + 1,
                             readout="mean")
    for b in (fine, coarse):
        b.dense = True
    model = MultiScaleEDNN([fine, coarse], [1, 2]).eval()
    with torch.no_grad():
        model.weights.copy_(torch.tensor([0.75, -1.5]))
    return model


def random_mlp_ednn(dim: int, boundary="periodic", seed: int = 0) -> EDNN:
    torch.manual_seed(seed)
    return EDNN(IsingMLP((3,) * dim), 1, 1, boundary, ndim=dim, output_scale=0.7).eval()


def ising_energy_np(spins: np.ndarray, open_boundary: bool = False) -> float:
    """Reference energy by explicit bonds (periodic unless ``open_boundary``)."""
    energy = 0.0
    for axis in range(spins.ndim):
        rolled = np.roll(spins, -1, axis)
        bonds = spins * rolled
        if open_boundary:
            index = [slice(None)] * spins.ndim
            index[axis] = slice(0, -1)
            bonds = bonds[tuple(index)]
        energy -= float(bonds.sum())
    return energy
