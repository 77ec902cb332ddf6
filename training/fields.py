"""Train and evaluate an EDNN on your own fields: ``ednn-dask train|evaluate fields``.

:func:`train_fields` reads a data set in the documented format
(:mod:`training.field_data`), streams it from its store into
:func:`training.train.fit`, exports the model to ONNX with the data set's spacing,
unit, dims and target in its metadata, and returns the metrics.
:func:`evaluate_fields` scores a data set (or one split of the model's own) through
the ONNX model with onnxruntime. Torch is imported only inside the functions that train.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ConfigError, DataSetError
from ednn_dask.inference import contributions
from ednn_dask.model import TileModel
from ednn_dask.storage import refuse_existing
from ednn_dask.tiling import block_mean
from training.config import TrainConfig, run_dir
from training.field_data import SampleStream, open_field_data, stream_hash
from training.metrics import error_metrics, parity_plot, split_indices

SPLITS = ("all", "train", "val", "test")
NETS = ("density", "window", "mlp", "quadratic", "pair")
# the defaults of `train fields`: Adam with an exponentially decaying learning rate,
# early stopping on the validation split, then a full-batch L-BFGS polish. Measured on
# the φ⁴ energy of bench/train_fields_accuracy.py (3,000 32x32 fields, 2 cores): from
# 2e-3 Adam sat on its initial plateau for ~10 epochs and ended at 3 % (val), 150
# L-BFGS steps took it to 1.0 %; from 5e-3 it leaves the plateau sooner, and 600
# steps reach 0.3 % (the polish is where the precision comes from).
FIELD_DEFAULTS = {"epochs": 150, "batch_size": 32, "lr": 5e-3, "lr_final": 1e-5,
                  "patience": 25, "lbfgs_steps": 600, "lbfgs_float64": False}
LBFGS_PIXELS = 2**20  # the L-BFGS batch: this many pixels' worth of samples (1,024 of 32x32)


def lbfgs_samples(spatial: tuple[int, ...]) -> int:
    """The default L-BFGS batch: :data:`LBFGS_PIXELS` pixels' worth, 64 to 1,024 samples.

    >>> lbfgs_samples((32, 32)), lbfgs_samples((16, 16, 16)), lbfgs_samples((64, 64, 64))
    (1024, 256, 64)
    """
    return int(min(1024, max(64, LBFGS_PIXELS // math.prod(spatial))))


def trunk_for(context: int, width: int = 16) -> tuple[tuple[int, int, int], ...]:
    """Valid convolutions that together see exactly ``context`` pixels on each side.

    3x3 layers (one pixel each) up to a context of 3; beyond, 5x5 layers (two pixels)
    first, so a deep halo does not need a deep net.

    >>> trunk_for(2), trunk_for(5)
    (((16, 3, 1), (16, 3, 1)), ((16, 5, 1), (16, 5, 1), (16, 3, 1)))
    """
    layers, left = [], int(context)
    while left > 0:
        eat = 2 if left > 3 or (layers and layers[-1][1] == 5 and left > 1) else 1
        layers.append((width, 2 * eat + 1, 1))
        left -= eat
    return tuple(layers)


def parse_scales(text: str) -> list[tuple[int, int, int]]:
    """``"1:4:8,4:1:8"`` -> ``[(1, 4, 8), (4, 1, 8)]``: factor, focus and context per branch.

    >>> parse_scales("1:4:8, 4:1:8")
    [(1, 4, 8), (4, 1, 8)]
    """
    scales = []
    for part in str(text).split(","):
        values = part.strip().split(":")
        try:
            factor, focus, context = (int(v) for v in values)
        except ValueError:
            raise ConfigError(
                f"scales are FACTOR:FOCUS:CONTEXT per branch, comma-separated (e.g. "
                f"1:4:8,4:1:8); {part.strip()!r} is not.") from None
        if factor < 1 or focus < 1 or context < 0:
            raise ConfigError(f"scale {part.strip()!r} needs factor >= 1, focus >= 1 and "
                              f"context >= 0.")
        scales.append((factor, focus, context))
    return scales


def build_field_ednn(net: str, ndim: int, channels: int, focus: int, context: int,
                     boundary: str | float, scales: list[tuple[int, int, int]] | None = None):
    """An untrained EDNN for ``train fields``: ``net`` is one of :data:`NETS`.

    With ``scales`` (factor, focus, context per branch, focus and context in coarse
    pixels) a :class:`~training.multiscale.MultiScaleEDNN` of such nets instead;
    ``focus`` and ``context`` are then unused.

    ``"density"`` (default): valid convolutions whose receptive field is exactly the
    tile, a per-pixel SiLU head averaged over the focus block: a translation-invariant
    local density, right for targets that are sums of a smooth local quantity.
    ``"window"``: the same trunk, the head weighs each pixel of the block on its own.
    ``"mlp"``: the paper's fully connected tile net (small tiles, discrete fields).
    ``"quadratic"``: one linear convolution over the whole window (kernel ``2 context
    + 1``, 4 channels), then a squaring head (8 units) averaged over the block: exactly the
    quadratic forms of the field within the context (pair energies, bonds) and
    nothing else. One layer, not a stack: the loss is then a polynomial of low
    degree in the weights, which L-BFGS converges quickly.
    ``"pair"``: the energy density ``b + mu x_p + x_p (k * x)_p``, ``k`` a symmetric
    kernel over the window, fitted by least squares instead of trained
    (:mod:`training.pair_fit`); one channel, periodic samples.
    """
    from training.ednn import EDNN
    from training.multiscale import MultiScaleEDNN
    from training.nets import IsingMLP, ValidCNN
    from training.pair_fit import pair_tile_net

    if net not in NETS:
        raise ConfigError(f"net must be one of {NETS}, not {net!r}.")
    if scales:
        branches = [build_field_ednn(net, ndim, channels, f, c, boundary) for _, f, c in scales]
        return MultiScaleEDNN(branches, [factor for factor, _, _ in scales])
    f, c = (focus,) * ndim, (context,) * ndim
    if net == "pair":
        tile_net = pair_tile_net(ndim, f, c)
    elif net == "mlp":
        tile_net = IsingMLP(tuple(fi + 2 * ci for fi, ci in zip(f, c, strict=True)), channels)
    else:
        trunk = ((4, 2 * context + 1, 1),) if net == "quadratic" else trunk_for(context)
        tile_net = ValidCNN(ndim, channels, f, c, trunk=trunk,
                            hidden=8 if net == "quadratic" else 32,
                            readout="window" if net == "window" else "mean",
                            activation="quadratic" if net == "quadratic" else "silu")
    return EDNN(tile_net, focus, context, boundary, ndim=ndim, dense=True)


def parse_boundary(text: str | float) -> str | float:
    """``"periodic"`` or a constant (the value outside the field, in field units)."""
    if isinstance(text, (int, float)) or text == "periodic":
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"boundary must be 'periodic' or a number, not {text!r}.") from None


def train_fields(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    field: str,
    target: str,
    focus: int | None = None,
    context: int | None = None,
    scales: str | list[tuple[int, int, int]] | None = None,
    boundary: str | float = "periodic",
    net: str = "density",
    epochs: int | None = None,
    device: str = "cpu",
    workdir: str | os.PathLike | None = None,
    seed: int = 0,
    threads: int | None = None,
    whiten: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Train an EDNN on a data set of fields and extensive targets; export it to ONNX.

    Parameters
    ----------
    data : path
        A data set in the documented format (``docs/guide/your-own-data.md``).
    out : path
        The ONNX model to write (refused if it exists, unless ``overwrite``).
    field, target : str
        The names of the field and the target variables.
    focus, context : int
        Focus block and context halo in pixels (every spatial size must be a
        multiple of the focus).
    scales : str or list of (factor, focus, context), optional
        A multi-scale model instead (``"1:4:8,4:1:8"``): one branch per scale, each
        on the field coarsened by ``factor`` with its focus and context in coarse
        pixels; ``focus`` and ``context`` are then not given.
    boundary : "periodic" or float
        What lies outside each sample: its periodic image, or a constant in field units.
    net : {"density", "window", "mlp", "quadratic"}
        The tile net (:func:`build_field_ednn`).
    epochs, device, seed, threads : optional
        As :class:`training.config.TrainConfig`; ``epochs`` default 150 (early
        stopping on the validation split usually ends it sooner).
    workdir : path, optional
        Checkpoints, ``metrics.json`` and ``parity.png``; default ``runs/<out stem>``.
        An existing checkpoint is resumed if it was made from the same data, net and
        settings, and refused otherwise.
    whiten : bool
        Train the first convolution on whitened patches (:mod:`training.precondition`).
    **settings
        Any other :class:`~training.config.TrainConfig` field (``batch_size``, ``lr``, ...).

    Returns
    -------
    dict
        The metrics of :func:`training.train.fit` (``test``, ``val``, ``best_epoch``, ...)
        with ``model`` (the ONNX path) and ``data_hash``.
    """
    import torch  # fails early without the train extra

    from training.export import export_onnx
    from training.pair_fit import fit_pair
    from training.train import fit

    out_path = Path(out)
    refuse_existing(out_path, overwrite)
    boundary = parse_boundary(boundary)
    if isinstance(scales, str):
        scales = parse_scales(scales)
    if (focus is None or context is None) == (not scales):
        raise ConfigError("give --focus and --context (one scale), or --scales (several), "
                          "not both.")
    ds, spec = open_field_data(data, field, target)
    work = run_dir(out_path, str(workdir) if workdir else None)
    unknown = sorted(set(settings) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown training settings {unknown!r}; see TrainConfig.")
    config = TrainConfig(**{**FIELD_DEFAULTS, "lbfgs_samples": lbfgs_samples(spec.spatial),
                            "epochs": epochs or FIELD_DEFAULTS["epochs"],
                            "seed": seed, "threads": threads, "device": device, **settings})
    stream = SampleStream(ds, spec)
    data_hash = stream_hash(ds, [field, target])
    splits = split_indices(spec.n, config.val_fraction, config.test_fraction, seed)
    torch.manual_seed(seed)  # the initial weights: the same command trains the same model
    ednn = build_field_ednn(net, len(spec.dims), spec.channels, focus, context, boundary, scales)
    try:
        ednn.tiling.grid(spec.spatial)
    except ValueError as err:
        raise DataSetError(f"field {field!r} of {spec.path!r}: {err}") from None
    targets = np.asarray(ds[target].values, dtype=np.float64)
    if net == "pair":
        metrics = {**fit_pair(ednn, stream, targets, splits, work, progress=progress),
                   "data_hash": data_hash}
    else:
        prepare_inputs(ednn, stream, splits[0], whiten=whiten and net != "mlp")
        metrics = fit(ednn, stream, targets, config, work, progress=progress,
                      data_hash=data_hash)
    export_onnx(
        ednn, out_path, channels=spec.channels, target=target, target_unit=spec.target_unit,
        spacing=spec.spacing, spacing_unit=spec.spacing_unit, dims=spec.dims, overwrite=True,
        provenance={"system": "fields", "data": str(data), "field": field, "target": target,
                    "data_hash": data_hash, "n_samples": spec.n, "net": net, "seed": seed,
                    "scales": [list(v) for v in scales] if scales else None,
                    "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                    "metrics": metrics["test"], "command": " ".join(sys.argv)},
    )
    if (work / "parity.png").exists():
        shutil.copy(work / "parity.png", out_path.with_suffix(".parity.png"))
    return {"model": str(out_path), **metrics}


def prepare_inputs(ednn, stream: SampleStream, train: np.ndarray, *, whiten: bool) -> None:
    """Scale the inputs to zero mean and unit spread; whiten each branch's first layer."""
    from training.precondition import whiten_first_layer

    mean, std = stream.statistics(train)
    scale = 1.0 / std if std > 0 else 1.0
    branches = list(zip(ednn.branches, ednn.factors, strict=True)) if hasattr(
        ednn, "branches") else [(ednn, None)]
    for branch, _ in branches:
        branch.input_offset.fill_(mean)
        branch.input_scale.fill_(scale)
    if whiten:
        samples = stream.take(np.sort(train[:256]))
        for branch, factor in branches:
            whiten_first_layer(branch, samples if factor is None or max(factor) == 1
                               else block_mean(samples, factor))


def fields_split(model: TileModel, ds, spec, split: str) -> np.ndarray:
    """Indices of ``split`` of the run that trained ``model``, on that run's own data only."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}.")
    if split == "all":
        return np.arange(spec.n)
    provenance = model.spec.provenance
    if provenance.get("system") != "fields":
        raise ConfigError(f"model {model.name!r} was not trained by `train fields`, so it has no "
                          f"{split} split; evaluate with --split all.")
    data_hash = stream_hash(ds, [spec.field, spec.target])
    if provenance.get("data_hash") != data_hash:
        raise DataSetError(
            f"the {split} split is only defined on the data set {model.name!r} was trained on "
            f"(data hash {provenance.get('data_hash')}), not on this one ({data_hash}); "
            f"evaluate the whole store (--split all).")
    splits = split_indices(spec.n, provenance["val_fraction"], provenance["test_fraction"],
                           provenance["seed"])
    return splits[SPLITS.index(split) - 1]


def evaluate_fields(
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str = "all",
    field: str | None = None,
    target: str | None = None,
    plot: str | None = None,
) -> dict[str, Any]:
    """Score a data set's fields with an ONNX model (onnxruntime, no torch) against its targets.

    ``field`` and ``target`` default to the names the model was trained with;
    ``split`` ``"train"``, ``"val"`` or ``"test"`` takes that split of the model's
    training run, for the data set it was trained on (checked by its hash).
    """
    m = TileModel.load(model)
    provenance = m.spec.provenance
    field = field or provenance.get("field")
    target = target or provenance.get("target") or m.spec.target
    if not field:
        raise ConfigError(f"model {m.name!r} does not name its field variable; give --field.")
    ds, spec = open_field_data(data, field, target)
    if spec.channels != m.spec.channels:
        raise DataSetError(f"field {field!r} has {spec.channels} channel(s), the model "
                           f"{m.name!r} {m.spec.channels}; evaluate on data of the model's kind.")
    if (m.spec.spacing is None) != (spec.spacing is None) or (
            m.spec.spacing is not None and not np.allclose(spec.spacing, m.spec.spacing,
                                                           rtol=1e-6)):
        raise DataSetError(
            f"field {field!r} has a pixel spacing of {spec.spacing} {spec.spacing_unit}, the "
            f"model {m.name!r} {m.spec.spacing} {m.spec.spacing_unit}; evaluate on fields at "
            f"the model's spacing.")
    indices = fields_split(m, ds, spec, split)
    stream = SampleStream(ds, spec)
    predicted, order = [], []
    for idx, x in stream.ordered(indices, batch_size=64):
        order.append(idx)
        predicted += [contributions(s, m).sum(dtype=np.float64) for s in x]
    idx = np.concatenate(order) if order else np.zeros(0, int)
    pred = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(ds[target].values, dtype=np.float64)[idx]
    sites = math.prod(spec.spatial)
    metrics = error_metrics(pred, true, sites) if len(idx) else {}
    if plot and len(idx):
        parity_plot(true, pred, plot, sites=sites, unit=spec.target_unit,
                    title=f"{target}, {split} ({len(idx)} samples)")
    return {"model": str(model), "data": str(data), "split": split, "target": target,
            "unit": spec.target_unit, **metrics}
