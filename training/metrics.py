"""Splits and error metrics of a trained model, and its parity plot (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ednn_dask.errors import ConfigError


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int):
    """Shuffled train/validation/test index arrays (deterministic for a seed)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ConfigError(f"{n} samples leave nothing to train on after the splits.")
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def error_metrics(predicted: np.ndarray, true: np.ndarray, sites: int) -> dict[str, float]:
    """MAE, median AE, RMSE and relative MAE, in total and per site."""
    err = np.asarray(predicted, float) - np.asarray(true, float)
    return {
        "mae": float(np.abs(err).mean()),
        "median_ae": float(np.median(np.abs(err))),
        "rmse": float(np.sqrt((err**2).mean())),
        "mae_per_site": float(np.abs(err).mean() / sites),
        "median_ae_per_site": float(np.median(np.abs(err)) / sites),
        "relative_mae": float(np.abs(err).mean() / np.abs(true).mean()),
        "max_ae": float(np.abs(err).max()),
        "n": int(err.size),
    }


def parity_plot(true, predicted, path, *, sites: int = 1, unit: str = "", title: str = "") -> Path:
    """Predicted vs true (per site) and the error, as a PNG."""
    import matplotlib.pyplot as plt

    true, predicted = np.asarray(true) / sites, np.asarray(predicted) / sites
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    ax1.plot([lo, hi], [lo, hi], color="0.6", lw=1)
    ax1.scatter(true, predicted, s=4, alpha=0.6)
    per = " per site" if sites > 1 else ""
    ax1.set(xlabel=f"true{per} {unit}", ylabel=f"EDNN{per} {unit}", title=title or "parity")
    ax2.scatter(true, predicted - true, s=4, alpha=0.6)
    ax2.axhline(0, color="0.6", lw=1)
    ax2.set(xlabel=f"true{per} {unit}", ylabel=f"error{per} {unit}",
            title=f"MAE{per} = {np.abs(predicted - true).mean():.3g}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
