"""One-command recipes: the shipped models, how they were trained and how they score.

Each ``train_*`` samples (or loads) its data set, trains the EDNN, exports it to
ONNX with its metrics in the metadata and returns the metrics. Each
``evaluate_*`` scores fresh configurations through the ONNX model with
onnxruntime (the scoring side, not torch) against exact references.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ConfigError
from ednn_dask.storage import refuse_existing
from training import datasets
from training.config import TrainConfig, run_dir
from training.ising import sample_ising
from training.laplacian import laplacian_dataset
from training.rock import rock_dataset
from training.screened import screened_dataset

# 2-D: binary 3x3 tiles have at most 512 distinct states, so full-batch training on the
# distinct tiles (exact) is cheap. 3-D tiles have 2^27 states: mini-batches instead.
ISING_DEFAULTS = {
    2: {"L": 8, "n": 10000, "epochs": 4000, "lbfgs_steps": 6000, "unique_tiles": True},
    3: {"L": 4, "n": 4000, "epochs": 40, "lbfgs_steps": 100, "unique_tiles": False},
}
# Laplacian: 10,000 images of 50x50, as in the preprint (with far fewer the net fits the
# training sums rather than |Laplacian| per pixel); 15 Adam epochs, where Adam's validation
# error levels off, then 450 full-batch L-BFGS steps on 2,048 images (float32), which take
# the error about an order of magnitude below Adam's plateau.
LAPLACIAN_DEFAULTS = {"L": 50, "n": 10000, "epochs": 15, "lbfgs_steps": 450,
                      "lbfgs_samples": 2048}


DATA_DEFAULTS = {"ising": {"n": 5000, "L": 8}, "laplacian": {"n": 5000, "L": 100},
                 "screened": {"n": 2000, "L": 96}, "rock": {"n": 200, "L": 32}}


def make_dataset(
    system: str, out: str, *, n: int | None = None, L: int | None = None, dim: int = 2,
    seed: int = 0, near_critical: bool = False, overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Sample an Ising, Laplacian, screened or rock data set and store it as Zarr
    (``ednn-dask data``)."""
    if system not in DATA_DEFAULTS:
        raise ConfigError(f"system must be one of {sorted(DATA_DEFAULTS)}, got {system!r}.")
    refuse_existing(out, overwrite)
    n, L = n or DATA_DEFAULTS[system]["n"], L or DATA_DEFAULTS[system]["L"]
    if system == "ising":
        ds = sample_ising(n, L, dim=dim, seed=seed, near_critical=near_critical,
                          progress=progress)
    elif system == "screened":
        ds = screened_dataset(n, L, seed=seed, progress=progress)
    elif system == "rock":
        ds = rock_dataset(n, L, seed=seed)
    else:
        ds = laplacian_dataset(n, L, seed=seed, progress=progress)
    path = datasets.save_dataset(ds, out, overwrite=overwrite)
    return {"store": str(path), "samples": n, "hash": datasets.dataset_hash(ds)}


def _dataset(data: str | None, make, path: Path):
    if data:
        return datasets.load_dataset(data)
    ds = make()
    datasets.save_dataset(ds, path, overwrite=True)
    return ds


def train_ising(
    out: str,
    *,
    dim: int = 2,
    L: int | None = None,
    n: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    lr: float = 3e-3,
    lbfgs_steps: int | None = None,
    data: str | None = None,
    workdir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the paper's Ising EDNN (f = c = 1, fully connected tile net) and export it."""
    import torch  # fails early without the train extra

    from training.ednn import EDNN
    from training.export import export_onnx
    from training.nets import IsingMLP
    from training.train import fit

    out_path = Path(out)
    refuse_existing(out_path, overwrite)
    defaults = ISING_DEFAULTS[dim]
    L, n, epochs = L or defaults["L"], n or defaults["n"], epochs or defaults["epochs"]
    lbfgs_steps = defaults["lbfgs_steps"] if lbfgs_steps is None else lbfgs_steps
    work = run_dir(out_path, workdir)
    ds = _dataset(
        data,
        lambda: sample_ising(n, L, dim=dim, temperatures=(0.5, 6.0), seed=seed,
                                      progress=progress),
        work / "data.zarr",
    )
    x = ds["spins"].values.astype(np.float32)[:, None]
    torch.manual_seed(seed)  # the initial weights: the same command trains the same model
    ednn = EDNN(IsingMLP((3,) * dim), 1, 1, "periodic", ndim=dim, dense=True)
    unique = defaults["unique_tiles"]
    config = TrainConfig(epochs=epochs, batch_size=64, lr=lr if unique else 1e-3,
                         lr_final=1e-5, seed=seed, patience=epochs, unique_tiles=unique,
                         lbfgs_steps=lbfgs_steps, checkpoint_every=100 if unique else 1,
                         device=device)
    metrics = fit(ednn, x, ds["energy"].values, config, work, progress=progress)
    export_onnx(
        ednn, out_path, target="energy", target_unit="J", dims=tuple(ds["spins"].dims[1:]),
        overwrite=True,
        provenance={"system": f"ising-{dim}d", "data_hash": datasets.dataset_hash(ds),
                    "data": {"L": L, "n": int(len(x)), "temperatures": [0.5, 6.0]},
                    "seed": seed, "metrics": metrics["test"], "command": " ".join(sys.argv)},
    )
    shutil.copy(work / "parity.png", out_path.with_suffix(".parity.png"))
    return metrics


def laplacian_ednn(readout: str = "mean"):
    """The shipped Laplacian EDNN, untrained (f = 10, c = 2, dense valid CNN)."""
    from training.ednn import EDNN
    from training.nets import ValidCNN

    # 8 channels are plenty: 2 represent the target exactly (tests/test_train.py)
    net = ValidCNN(2, 1, (10, 10), (2, 2), trunk=((8, 3, 1), (8, 3, 1)), hidden=16,
                   readout=readout)
    return EDNN(net, 10, 2, "periodic", ndim=2, dense=True)


def train_laplacian(
    out: str,
    *,
    L: int | None = None,
    n: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    lbfgs_steps: int | None = None,
    lbfgs_samples: int | None = None,
    data: str | None = None,
    workdir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
    whiten: bool = True,
    readout: str = "mean",
) -> dict[str, Any]:
    """Train the preprint's Laplacian EDNN (f = 10, c = 2, valid-convolution net)."""
    import torch

    from training.export import export_onnx
    from training.precondition import whiten_first_layer
    from training.train import fit

    out_path = Path(out)
    refuse_existing(out_path, overwrite)
    L = L or LAPLACIAN_DEFAULTS["L"]
    n, epochs = n or LAPLACIAN_DEFAULTS["n"], epochs or LAPLACIAN_DEFAULTS["epochs"]
    lbfgs_steps = LAPLACIAN_DEFAULTS["lbfgs_steps"] if lbfgs_steps is None else lbfgs_steps
    lbfgs_samples = lbfgs_samples or LAPLACIAN_DEFAULTS["lbfgs_samples"]
    work = run_dir(out_path, workdir)
    ds = _dataset(data, lambda: laplacian_dataset(n, L, seed=seed, progress=progress),
                  work / "data.zarr")
    x = ds["image"].values.astype(np.float32)[:, None]
    torch.manual_seed(seed)  # the initial weights: the same command trains the same model
    ednn = laplacian_ednn(readout)
    if whiten:  # the Laplacian lies along the smooth images' faint directions
        whiten_first_layer(ednn, x)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, lr_final=1e-5, seed=seed,
                         patience=epochs, lbfgs_steps=lbfgs_steps, lbfgs_samples=lbfgs_samples,
                         lbfgs_float64=False, device=device)
    metrics = fit(ednn, x, ds["target"].values, config, work, progress=progress)
    export_onnx(
        ednn, out_path, target="sum_abs_laplacian", target_unit="1", dims=("y", "x"),
        overwrite=True,
        provenance={"system": "laplacian", "data_hash": datasets.dataset_hash(ds),
                    "data": {"L": L, "n": int(len(x))}, "seed": seed, "whiten": whiten,
                    "readout": readout, "metrics": metrics["test"], "command": " ".join(sys.argv)},
    )
    shutil.copy(work / "parity.png", out_path.with_suffix(".parity.png"))
    return metrics
