"""Pair nets, fitted in closed form: energies that are pair sums within a window.

A *pair net* gives each pixel ``p`` of a one-channel field the energy density
``b + mu x_p + x_p (k * x)_p``, with ``(k * x)_p = sum_d k(d) x_{p+d}`` over the
window ``|d_i| <= context`` and ``k`` symmetric under the pixel grid's flips and
axis permutations (an isotropic lattice). Summed over a periodic sample this is
``b N + mu sum_p x_p + sum_d k(d) A(d)``, with ``A`` the sample's autocorrelation:
linear in ``(b, mu, k)``. The least-squares fit of the summed energies (the loss
after the sum, as for trained nets) is therefore one linear solve, exact for any
pair energy within reach and reached without gradient descent.

A multi-scale model (:class:`~training.multiscale.MultiScaleEDNN`) gets one kernel
per branch, on the autocorrelation of the field coarsened by that branch's factor,
all solved together; ``b`` and ``mu`` sit in the first branch.

In the net (:func:`pair_tile_net`, a quadratic :class:`~training.nets.ValidCNN`)
the trunk convolution has two channels, ``x`` itself and ``k * x``; the head forms
``u = x + k*x``, ``v = x - k*x`` and ``w = x + mu/2``, and the squaring readout
``(u^2 - v^2)/4 + w^2 + b - mu^2/4`` is the density once ``k(0)`` is lowered by one
(``w^2`` brings its own ``x_p^2``).

>>> import numpy as np
>>> x = np.zeros((1, 8, 8)); x[0, 2, 2] = x[0, 2, 3] = 1.0
>>> labels, n = orbit_labels((1, 1))
>>> n, pair_features(x, (1, 1), (1, 1), labels, n)   # orbits: (0,0), (0,1), (1,1)
(3, array([[2., 2., 0.]]))
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ConfigError, DataSetError
from ednn_dask.tiling import block_sum

PAIR_CHANNELS = 2
"""Trunk channels of a pair net: the field itself and the kernel's convolution of it."""
PAIR_HIDDEN = 3
"""Head units of a pair net: u, v and w of the module docstring."""


def orbit_labels(context: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Each window displacement's orbit under axis flips (and permutations, for a square window).

    Returns ``labels`` of shape ``(2 c_i + 1, ...)`` (displacement ``d`` at index
    ``d + c``) and the number of orbits.
    """
    square = len(set(context)) == 1
    offset = np.reshape(context, (-1,) + (1,) * len(context))
    grid = np.indices([2 * c + 1 for c in context]) - offset  # displacements, axis first
    keys = np.abs(grid).reshape(len(context), -1).T
    keys = np.sort(keys, axis=1) if square else keys
    unique, labels = np.unique(keys, axis=0, return_inverse=True)  # orbits in sorted order
    return labels.reshape(grid.shape[1:]), len(unique)


def pair_features(x: np.ndarray, factor: tuple[int, ...], context: tuple[int, ...],
                  labels: np.ndarray, n_orbits: int) -> np.ndarray:
    """``(B, n_orbits)``: the periodic autocorrelation of the coarsened samples, summed per orbit.

    ``x`` is ``(B, *spatial)``; displacements wrap around the (coarse) sample, as
    the periodic tiles of a model do, so samples smaller than the window are exact too.
    """
    coarse = np.asarray(x, dtype=np.float64)
    if max(factor) > 1:  # the branch's block mean, in float64
        coarse = block_sum(coarse, factor) / math.prod(factor)
    spectrum = np.fft.rfftn(coarse, axes=tuple(range(1, coarse.ndim)))
    return _orbit_sums(spectrum, spectrum, coarse.shape[1:], context, labels, n_orbits)


def cross_pair_features(x: np.ndarray, context: tuple[int, ...]) -> np.ndarray:
    """``(B, C + P n_orbits)``: each channel's sum, then per channel pair ``c <= d`` the
    periodic cross-correlation ``sum_p x_c(p) x_d(p + d)`` summed per displacement orbit.

    ``x`` is ``(B, C, *spatial)``. These are the columns of a pair energy between
    channels, ``sum_c mu_c sum_p x_c + sum_{c<=d} sum_d k_cd(d) F_cd(d)``, with each
    ``k_cd`` symmetric under the grid's flips (:func:`orbit_labels`).

    >>> x = np.zeros((1, 2, 8, 8)); x[0, 0, 2, 2] = x[0, 1, 2, 3] = 1.0
    >>> cross_pair_features(x, (1, 1))   # sums; pairs 00, 01, 11 over orbits (0,0), (0,1), (1,1)
    array([[1., 1., 1., 0., 0., 0., 1., 0., 1., 0., 0.]])
    """
    x = np.asarray(x, dtype=np.float64)
    spatial = x.shape[2:]
    labels, n = orbit_labels(context)
    spectra = np.fft.rfftn(x, axes=tuple(range(2, x.ndim)))
    parts = [x.sum(axis=tuple(range(2, x.ndim)))]
    for c, d in itertools.combinations_with_replacement(range(x.shape[1]), 2):
        parts.append(_orbit_sums(spectra[:, c], spectra[:, d], spatial, context, labels, n))
    return np.concatenate(parts, axis=1)


def _orbit_sums(a: np.ndarray, b: np.ndarray, spatial: tuple[int, ...], context: tuple[int, ...],
                labels: np.ndarray, n_orbits: int) -> np.ndarray:
    """Orbit sums over the window of the periodic correlation of two fields given as spectra."""
    axes = tuple(range(1, a.ndim))
    corr = np.fft.irfftn(a.conj() * b, s=spatial, axes=axes)
    index = np.ix_(*[np.arange(-c, c + 1) % n for c, n in zip(context, spatial, strict=True)])
    window = corr[(slice(None), *index)].reshape(len(a), -1)
    out = np.zeros((len(a), n_orbits))
    np.add.at(out.T, labels.reshape(-1), window.T)
    return out


class PairDesign:
    """The columns of the linear problem for a model's scales: ``1, sum x``, then orbits."""

    def __init__(self, scales: list[tuple[tuple[int, ...], tuple[int, ...]]]):
        self.scales = scales  # (factor, context) per branch, context in coarse pixels
        self.orbits = [orbit_labels(context) for _, context in scales]

    @property
    def n_columns(self) -> int:
        return 2 + sum(n for _, n in self.orbits)

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``(B, n_columns)`` for samples ``(B, *spatial)``."""
        x = np.asarray(x, dtype=np.float64)
        axes = tuple(range(1, x.ndim))
        parts = [np.full((len(x), 1), math.prod(x.shape[1:]), dtype=np.float64),
                 x.sum(axis=axes)[:, None]]
        for (factor, context), (labels, n) in zip(self.scales, self.orbits, strict=True):
            parts.append(pair_features(x, factor, context, labels, n))
        return np.concatenate(parts, axis=1)

    def kernels(self, coef: np.ndarray) -> tuple[float, float, list[np.ndarray]]:
        """``(b, mu, [k per branch])`` from the solution of the linear problem."""
        out, start = [], 2
        for labels, n in self.orbits:
            out.append(coef[start:start + n][labels])
            start += n
        return float(coef[0]), float(coef[1]), out


def pair_tile_net(ndim: int, focus: tuple[int, ...], context: tuple[int, ...]):
    """An unfitted pair net: a quadratic ValidCNN, :data:`PAIR_CHANNELS` trunk channels."""
    from training.nets import ValidCNN

    if len(set(context)) != 1:
        raise ConfigError(f"a pair net needs the same context on every axis, got {context}.")
    return ValidCNN(ndim, 1, focus, context, trunk=((PAIR_CHANNELS, 2 * context[0] + 1, 1),),
                    hidden=PAIR_HIDDEN, readout="mean", activation="quadratic")


def set_pair_weights(ednn, kernel: np.ndarray, b: float = 0.0, mu: float = 0.0) -> None:
    """Make ``ednn`` (an EDNN with a pair net) sum ``b + mu x_p + x_p (kernel * x)_p`` per pixel."""
    import torch

    net = ednn.tile_net
    conv, head, out = net.trunk[0], net.head, net.out
    center = tuple(s // 2 for s in kernel.shape)
    k = np.array(kernel, dtype=np.float64)
    k[center] -= 1.0  # w^2 adds x_p^2 itself
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[(0, 0, *center)] = 1.0
        conv.weight[1, 0] = torch.as_tensor(k)
        conv.bias.zero_()
        head.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 0.0]]).reshape(
            head.weight.shape))
        head.bias.copy_(torch.tensor([0.0, 0.0, mu / 2]))
        out.weight.copy_(torch.tensor([0.25, -0.25, 1.0]).reshape(out.weight.shape))
        out.bias.fill_(b - mu * mu / 4)
        ednn.input_offset.fill_(0.0)
        ednn.input_scale.fill_(1.0)
        ednn.output_offset.fill_(0.0)
        ednn.output_scale.fill_(float(math.prod(ednn.tiling.focus)))  # the readout is a mean


def fit_pair(ednn, stream, targets: np.ndarray, splits: tuple[np.ndarray, ...],
             out_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Solve for the weights of a pair-net EDNN (or multi-scale EDNN) by least squares.

    ``stream`` is a :class:`~training.field_data.SampleStream` of one-channel
    periodic samples, read once in store order; ``splits`` are the (train, val,
    test) indices, and only ``train`` enters the solve. Writes ``metrics.json``
    and ``parity.png`` to ``out_dir`` and returns the metrics, each split scored by
    the net itself (float32, as the exported model will).
    """
    from tqdm.auto import tqdm

    from training.metrics import error_metrics, parity_plot

    branches = list(getattr(ednn, "branches", [ednn]))
    factors = list(getattr(ednn, "factors", [(1,) * ednn.tiling.ndim]))
    if ednn.tiling.boundary != "periodic":
        raise ConfigError("a pair net is fitted on periodic samples; use --boundary periodic "
                          "(or another net for a constant boundary).")
    if stream.spec.channels != 1:
        raise DataSetError(f"a pair net takes a one-channel field; {stream.spec.field!r} has "
                           f"{stream.spec.channels} channels.")
    design = PairDesign([(f, b.tiling.context) for f, b in zip(factors, branches, strict=True)])
    n = len(targets)
    train = np.sort(splits[0])
    if len(train) < design.n_columns:
        raise DataSetError(
            f"the pair fit has {design.n_columns} unknowns but only {len(train)} training "
            f"samples; give more samples or a smaller context.")
    rows = np.zeros((n, design.n_columns))
    for idx, x in tqdm(stream.ordered(np.arange(n), batch_size=64), disable=not progress,
                       total=-(-n // 64), desc="pair features"):
        rows[idx] = design.rows(x[:, 0])
    coef, _, rank, _ = np.linalg.lstsq(rows[train], targets[train], rcond=None)
    b, mu, kernels = design.kernels(coef)
    for k, (branch, kernel) in enumerate(zip(branches, kernels, strict=True)):
        set_pair_weights(branch, kernel, *((b, mu) if k == 0 else (0.0, 0.0)))
    if hasattr(ednn, "weights"):
        ednn.weights.data.fill_(1.0)
    predicted = model_predictions(ednn, stream, np.concatenate(splits))
    sites = math.prod(stream.spec.spatial)
    metrics = {"method": "closed-form least squares (pair net)", "unknowns": design.n_columns,
               "rank": int(rank), "best_epoch": None,
               "fit_rmse": float(np.sqrt(np.mean((rows[train] @ coef - targets[train]) ** 2)))}
    for name, idx in zip(("train", "val", "test"), splits, strict=True):
        if len(idx):
            metrics[name] = error_metrics(predicted[idx], targets[idx], sites)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    test = splits[2] if len(splits[2]) else splits[0]
    parity_plot(targets[test], predicted[test], out_dir / "parity.png", sites=sites,
                title="pair net, test split")
    return metrics


def model_predictions(ednn, stream, indices: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The EDNN's sums (float32 forward, as exported) for ``indices``; NaN elsewhere."""
    import torch

    predicted = np.full(len(stream), np.nan)
    with torch.no_grad():
        for idx, x in stream.ordered(indices, batch_size=batch_size):
            predicted[idx] = ednn(torch.as_tensor(x)).double().numpy()
    return predicted
