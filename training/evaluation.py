"""How good a shipped model is: fresh exact references scored through the ONNX model.

Each ``evaluate_*`` samples new configurations, scores them with onnxruntime
(the scoring side; no torch) and compares with the exact target.
:func:`write_evaluation` keeps a result as JSON with the model's identity and the
provenance of the run (``ednn-dask evaluate --json-out``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.inference import contributions
from ednn_dask.model import TileModel
from training.ising import sample_ising
from training.laplacian import TRAIN_CORRELATION, laplacian_images, laplacian_target
from training.metrics import error_metrics, parity_plot
from training.records import write_record


def score_samples(samples: np.ndarray, model: TileModel) -> np.ndarray:
    """EDNN predictions (float64 sums) for a stack of in-memory samples, via onnxruntime."""
    return np.array([contributions(s, model).sum(dtype=np.float64) for s in samples])


def evaluate_ising(
    model: str,
    *,
    L: int = 128,
    n: int = 100,
    near_critical: bool = True,
    seed: int = 1234,
    plot: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score fresh Monte Carlo configurations (default: 128^d near Tc) against exact energies."""
    m = TileModel.load(model)
    dim = m.spec.ndim
    ds = sample_ising(n, L, dim=dim, seed=seed, near_critical=near_critical,
                               progress=progress)
    predicted = score_samples(ds["spins"].values, m)
    metrics = error_metrics(predicted, ds["energy"].values, L**dim)
    if plot:
        parity_plot(ds["energy"].values, predicted, plot, sites=L**dim, unit="J",
                    title=f"Ising {L}^{dim}, {'near Tc' if near_critical else 'T in 1..5'}")
    return {"model": str(model), "dim": dim, "L": L, "n": n, "near_critical": near_critical,
            **metrics}


def evaluate_laplacian(
    model: str, *, L: int = 100, n: int = 200, seed: int = 1234, plot: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score fresh smooth random images against the exact sum of |5-point Laplacian|."""
    m = TileModel.load(model)
    # the same local statistics as training: correlation lengths of the L=50 training images
    images = laplacian_images(n, L, seed=seed, correlation_length=TRAIN_CORRELATION,
                                       progress=progress)
    target = laplacian_target(images)
    predicted = score_samples(images, m)
    metrics = error_metrics(predicted, target, L * L)
    if plot:
        parity_plot(target, predicted, plot, title=f"Laplacian {L}x{L}")
    return {"model": str(model), "L": L, "n": n, **metrics}


def write_evaluation(result: dict[str, Any], path: str | os.PathLike, *, model: str,
                     command: str) -> Path:
    """Write an ``evaluate_*`` result as JSON, atomically (replacing ``path``).

    The record is ``result`` plus the model's file name, sha256, target and unit, and
    the date, machine, commit and ``command`` of the run
    (:func:`training.records.write_record`); ``docs/generate.py`` renders the files
    ``bench/results/evaluate-*.json`` as the accuracy table of the findings page.
    """
    m = TileModel.load(model)
    identity = {"model_file": Path(model).name, "model_sha256": m.sha256,
                "target": m.spec.target, "target_unit": m.spec.target_unit}
    return write_record({**result, **identity}, path, command)
