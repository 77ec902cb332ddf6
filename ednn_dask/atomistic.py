"""Total energies of atomic structures: rasterize as the model says, score, add references.

``energy(structures, model)`` is the atomistic front door: the model's metadata
(``ednn.spacing`` and ``ednn.raster``) says how atoms become its input field, and
``ednn.reference_energies`` the per-element energies that were subtracted before
training, which are added back so the result is a total energy in the
reference method's convention (eV).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import ModelFormatError
from .inference import contributions
from .model import TileModel
from .rasterize import as_source, channel_table, grid_shape, raster_window, rasterize
from .score import load_model, score
from .structures import SYMBOLS, Structure

IN_PROCESS_PIXELS = 2**24
"""Fields up to this many pixels are scored in this process; larger ones with dask."""


def energy(
    structures: Any,
    model: TileModel | str | os.PathLike,
    *,
    client: Any = None,
    chunks: int | None = None,
    check: bool = True,
) -> float | np.ndarray:
    """Total energy (eV) of one structure, or an array of energies of many.

    Parameters
    ----------
    structures : ase.Atoms, Structure, PorousSheet or an iterable of them
        Cells must be rectangular in x and y and a whole number of the model's pixels.
    model : TileModel or path
        An atomistic model (its metadata has ``ednn.raster``).
    client : distributed.Client or scheduler address, optional
        Used for fields larger than :data:`IN_PROCESS_PIXELS`.
    check : bool
        Check each :class:`Structure` first (atoms inside the cell, no overlaps,
        known elements).
    """
    model = load_model(model)
    _require_atomistic(model)
    if _is_single(structures):
        return _energy_one(structures, model, client, chunks, check)
    return np.array([_energy_one(s, model, client, chunks, check) for s in structures])


def _is_single(obj: Any) -> bool:
    return hasattr(obj, "atoms_in_box") or hasattr(obj, "get_positions")


def _require_atomistic(model: TileModel) -> None:
    spec = model.spec
    if spec.raster is None or spec.spacing is None:
        raise ModelFormatError(
            f"model {model.name!r} has no ednn.raster metadata: it scores fields, not atoms; "
            f"rasterize the atoms yourself and call ednn_dask.score."
        )


def _energy_one(obj: Any, model: TileModel, client: Any, chunks: int | None, check: bool) -> float:
    spec = model.spec
    raster = spec.raster
    source = as_source(obj)
    known = _known_elements(spec)
    if check and isinstance(source, Structure):
        source.check(elements=known)
    shape = grid_shape(source.cell, spec.spacing)
    if shape[0] * shape[1] <= IN_PROCESS_PIXELS:
        lut = channel_table(raster["species"])
        field = raster_window(source, (0, shape[0]), (0, shape[1]), spec.spacing,
                              raster["gamma"], raster["cutoff"], lut,
                              n_channels=spec.channels)
        predicted = float(contributions(field, model).sum(dtype=np.float64))
    elif all(source.pbc[:2]):
        from .sheet import score_atoms  # streams: the field is never held

        return score_atoms(source, model, client=client, chunks=chunks).energy
    else:
        field = rasterize(source, spec.spacing, gamma=raster["gamma"], cutoff=raster["cutoff"],
                          species=raster["species"], chunks=chunks)
        predicted = score(field, model, client=client, chunks=chunks, progress=False).energy
    return predicted + reference_sum(_species_counts(source), spec.reference_energies)


def _known_elements(spec: Any) -> list[int] | None:
    if spec.raster["species"] is not None:
        return list(spec.raster["species"])
    if spec.reference_energies:
        return [SYMBOLS[s] for s in spec.reference_energies]
    return None


def _species_counts(source: Any) -> dict[int, int]:
    if hasattr(source, "species_counts"):
        return source.species_counts()
    lx, ly = source.cell[0, 0], source.cell[1, 1]
    _, numbers = source.atoms_in_box(0.0, lx, 0.0, ly)
    z, n = np.unique(numbers, return_counts=True)
    return {int(a): int(b) for a, b in zip(z, n)}


def reference_sum(counts: dict[int, int], reference: dict[str, float] | None) -> float:
    """Σ_s n_s μ_s over the elements present; an element without a reference is an error."""
    if not reference:
        return 0.0
    total = 0.0
    for z, n in counts.items():
        symbol = next((s for s, zz in SYMBOLS.items() if zz == z), str(z))
        if symbol not in reference:
            raise ModelFormatError(
                f"the model has no reference energy for {symbol}; it knows "
                f"{sorted(reference)}. Use a model trained on {symbol}."
            )
        total += n * reference[symbol]
    return total
