"""Figures of Monte Carlo runs: energy traces, and g(r) for atoms."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr


def plot_scan(scan: xr.Dataset, path: str | os.PathLike) -> None:
    """Energy and magnetization per site against the sweep, one line per temperature."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for temperature in scan["temperature"].values:
        row = scan.sel(temperature=temperature)
        label = f"T = {temperature:g}"
        axes[0].plot(row["sweep"], row["energy"], lw=0.6, label=label)
        axes[1].plot(row["sweep"], row["magnetization"], lw=0.6, label=label)
    axes[0].set(xlabel="measured sweep", ylabel="energy per site")
    axes[1].set(xlabel="measured sweep", ylabel="magnetization per site")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_atoms_run(run: Any, path: str | os.PathLike, *,
                   reference: tuple[np.ndarray, np.ndarray, str] | None = None) -> None:
    """The energy per atom against the move, and the in-plane g(r) of an ``AtomsRun``.

    ``reference`` adds a second g(r), ``(r, g, label)``, for comparison.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    moves = (np.arange(len(run.energy)) + 1) * max(run.moves // max(len(run.energy), 1), 1)
    axes[0].plot(moves, run.energy / run.n_atoms, lw=0.7)
    axes[0].set(xlabel="measured move", ylabel="energy per atom (eV)",
                title=f"{run.n_atoms} atoms, {run.temperature:g} K")
    axes[1].plot(run.rdf.r, run.rdf.g(), label="EDNN Monte Carlo")
    if reference is not None:
        axes[1].plot(reference[0], reference[1], "--", label=reference[2])
        axes[1].legend(fontsize=8)
    axes[1].set(xlabel="r (Å)", ylabel="in-plane g(r)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
