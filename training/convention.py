"""Move a model's energies from the Gamma-point cell convention to the n x n-replica one.

tblite samples the Gamma point only, so a 60-atom cell's energy differs from that
of its own n x n replica (n x n k-points of the cell) by a few meV/atom, mostly
by element: graphene's carbon moves most, insulating h-BN least. The cheapest
Δ-learning is a correction linear in the composition, Σ_s n_s δ_s, fitted by
least squares to cells computed both ways (a replica store of
``bench/reference_finite_size.py --store``). It is the same form as the
reference energies μ_s, so a model moves to the replica convention by μ_s + δ_s
alone: its net, and its cost, are unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.atoms.structure import ELEMENTS
from ednn_dask.errors import ConfigError
from ednn_dask.model import load_model
from ednn_dask.model.spec import write_metadata
from ednn_dask.storage import refuse_existing
from training import reference


def replica_pairs(replicas: str | Path) -> tuple[xr.Dataset, np.ndarray, int]:
    """The source cells of a replica store, each one's replica-minus-cell energy (eV), and n."""
    rep = reference.load_reference(replicas, done_only=False)
    if int(rep.attrs.get("replicas", 1)) < 2 or "source" not in rep.attrs:
        raise ConfigError(f"{replicas} is not a replica store of another store's cells; make "
                          "one with `python bench/reference_finite_size.py --store STORE "
                          "--out REPLICAS.zarr`.")
    done = rep["status"].values == reference.DONE
    if not done.any():
        raise ConfigError(f"{replicas} has no computed energy yet; run its command again.")
    cells = reference.load_reference(rep.attrs["source"], done_only=False).isel(
        structure=np.asarray(rep.attrs["source_index"])[done])
    return cells, rep["energy"].values[done] - cells["energy"].values, int(rep.attrs["replicas"])


def fit_convention_shift(replicas: str | Path, species: list[str]) -> dict[str, Any]:
    """Per-species δ_s (eV/atom) of the replica convention, with the fit's residuals.

    ``rms_meV_per_atom``: what a linear shift leaves of the difference (it varies with
    the cell beyond its composition); ``loo_mae_meV_per_atom``: leave-one-out error.
    """
    cells, diff, n = replica_pairs(replicas)
    elements = [next(z for z, s in ELEMENTS.items() if s == sym) for sym in species]
    counts = reference.species_counts(cells, elements)
    delta, *_ = np.linalg.lstsq(counts, diff, rcond=None)
    n_atoms = cells["n_atoms"].values
    left_out = [diff[k] - counts[k] @ np.linalg.lstsq(np.delete(counts, k, 0),
                                                      np.delete(diff, k), rcond=None)[0]
                for k in range(len(diff))]
    return {"shift_eV": dict(zip(species, delta.tolist(), strict=True)), "n": len(diff),
            "replicas": n,
            "mean_difference_meV_per_atom": float(np.mean(diff / n_atoms) * 1e3),
            "rms_meV_per_atom": float(np.sqrt(np.mean(((diff - counts @ delta) / n_atoms) ** 2))
                                      * 1e3),
            "loo_mae_meV_per_atom": float(np.mean(np.abs(left_out) / n_atoms) * 1e3)}


def to_replica_convention(model: str | Path, replicas: str | Path, out: str | Path, *,
                          overwrite: bool = False, command: str | None = None) -> dict[str, Any]:
    """Write ``model`` with its reference energies shifted to the replica convention.

    Returns the fit (:func:`fit_convention_shift`); the model card states the new
    convention and where the shift came from (with ``command``, the line that made it).
    """
    refuse_existing(Path(out), overwrite)
    spec = load_model(model).spec
    if not spec.reference_energies:
        raise ConfigError(f"{model} has no reference energies: it is not an atomistic model.")
    fit = fit_convention_shift(replicas, list(spec.reference_energies))
    shifted = {s: mu + fit["shift_eV"][s] for s, mu in spec.reference_energies.items()}
    n = fit["replicas"]
    provenance = {**spec.provenance, "energy_convention":
                  f"GFN1-xTB total energy per cell of its {n} x {n} replica (tblite defaults): "
                  f"the Gamma-point model's reference energies shifted per element by a fit to "
                  f"{fit['n']} cells computed both ways",
                  "convention_shift": {"from": Path(model).name, "replicas": Path(replicas).name,
                                       **fit, **({"command": command} if command else {})}}
    write_metadata(model, dataclasses.replace(spec, reference_energies=shifted,
                                              provenance=provenance), out=out)
    return fit
