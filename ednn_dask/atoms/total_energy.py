"""Total energies of atomic structures: rasterize as the model says, score, add references.

``energy(structures, model)`` is the atomistic front door. The model's metadata
(``ednn.spacing`` and ``ednn.raster``) says how atoms become its input field, and
``ednn.reference_energies`` the per-element energies that were subtracted before
training, which are added back so the result is a total energy in the
reference method's convention (eV). By size and periodicity a cell takes one of
three routes, which give the same numbers:

- up to :data:`~ednn_dask.defaults.IN_PROCESS_PIXELS` pixels: the whole cell in
  memory, scored in this process (thousands of small cells a second);
- larger and periodic in x and y: streamed window by window on dask
  (:func:`~ednn_dask.atoms.stream.score_atoms`), the field never held;
- larger and open: rasterized lazily and scored with :func:`~ednn_dask.score.score`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ednn_dask.atoms.raster import cell_field, grid_shape, rasterize
from ednn_dask.atoms.references import model_elements, reference_sum, require_atomistic
from ednn_dask.atoms.stream import score_atoms
from ednn_dask.atoms.structure import Structure, as_source, is_atoms, species_counts
from ednn_dask.defaults import IN_PROCESS_PIXELS
from ednn_dask.inference import contributions
from ednn_dask.model import TileModel, load_model
from ednn_dask.score import score


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
        Used for fields larger than :data:`~ednn_dask.defaults.IN_PROCESS_PIXELS`.
    chunks : int, optional
        Chunk (window) side in pixels for the large-cell routes.
    check : bool
        Check each :class:`Structure` first (atoms inside the cell, no overlaps,
        known elements).
    """
    model = load_model(model)
    require_atomistic(model)
    if is_atoms(structures):
        return _energy_one(structures, model, client, chunks, check)
    return np.array([_energy_one(s, model, client, chunks, check) for s in structures])


def _energy_one(obj: Any, model: TileModel, client: Any, chunks: int | None, check: bool) -> float:
    spec = model.spec
    source = as_source(obj)
    if check and isinstance(source, Structure):
        named = spec.raster["species"] or spec.reference_energies
        source.check(elements=model_elements(spec) if named else None)
    shape = grid_shape(source.cell, spec.spacing)
    if shape[0] * shape[1] <= IN_PROCESS_PIXELS:
        field = cell_field(source, spec.spacing, **spec.raster)
        predicted = float(contributions(field, model).sum(dtype=np.float64))
    elif all(source.pbc[:2]):
        return score_atoms(source, model, client=client, chunks=chunks).energy
    else:
        raster = spec.raster
        field = rasterize(source, spec.spacing, gamma=raster["gamma"], cutoff=raster["cutoff"],
                          species=raster["species"], chunks=chunks)
        predicted = score(field, model, client=client, chunks=chunks).energy
    return predicted + reference_sum(species_counts(source), spec.reference_energies)
