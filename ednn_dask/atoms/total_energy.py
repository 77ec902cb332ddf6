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

import math
import os
from typing import Any

import numpy as np

from ednn_dask.atoms.raster import cell_field, grid_shape, rasterize
from ednn_dask.atoms.references import model_elements, reference_sum, require_atomistic
from ednn_dask.atoms.stream import score_atoms
from ednn_dask.atoms.structure import Structure, as_source, is_atoms, species_counts
from ednn_dask.defaults import IN_PROCESS_PIXELS
from ednn_dask.errors import ConfigError
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
    registries: int = 1,
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
    registries : int
        Average over this many registries of the cell on the model's grid
        (:func:`registry_offsets`; 1, 4, 16, ...), at that many times the cost. Moving
        a cell rigidly by whole pixels leaves its energy as it is, but an EDNN is
        invariant only to moves by whole focus blocks, and a net with strided layers
        answers the registries within one stride differently, by several meV/atom on
        cells of ~100 atoms (the registry-noise benchmark); the average takes most of
        that out, 4 (2 x 2 rolls of half a stride) much of it. For cells scored
        in this process (up to :data:`~ednn_dask.defaults.IN_PROCESS_PIXELS` pixels):
        a larger cell averages the noise over its many tiles already.
    """
    model = load_model(model)
    require_atomistic(model)
    offsets = registry_offsets(model, registries)
    if is_atoms(structures):
        return _energy_one(structures, model, client, chunks, check, offsets)
    return np.array([_energy_one(s, model, client, chunks, check, offsets) for s in structures])


def registry_offsets(model: TileModel, registries: int) -> list[tuple[int, int]]:
    """Rolls (y, x) in pixels of the ``g`` x ``g`` lattice of registries in one period,
    ``g`` = √``registries``: steps of period / ``g`` pixels, ``g`` dividing the period.

    The period is the net's trunk stride (:attr:`TileModel.trunk_stride`), where the
    registry noise repeats (2 x 2 rolls of half a stride take most of it out), or the
    focus, to which every EDNN is exactly invariant, for nets without a strided trunk.
    """
    g, period = math.isqrt(max(registries, 0)), registry_period(model)
    if registries < 1 or g * g != registries or any(p % g for p in period):
        whole = [n * n for n in range(1, min(period) + 1) if not any(p % n for p in period)]
        raise ConfigError(f"registries must be a square whose root divides the model's "
                          f"registry period {period} px: one of {whole}; got {registries}.")
    return [(i * period[0] // g, j * period[1] // g) for i in range(g) for j in range(g)]


def registry_period(model: TileModel) -> tuple[int, ...]:
    """Pixels per axis over which a net's registry noise repeats: its trunk stride, or
    the focus for a net without a strided trunk."""
    stride = model.trunk_stride
    return stride if stride and min(stride) > 1 else tuple(model.spec.focus)


def _energy_one(obj: Any, model: TileModel, client: Any, chunks: int | None, check: bool,
                offsets: list[tuple[int, int]]) -> float:
    spec = model.spec
    source = as_source(obj)
    if check and isinstance(source, Structure):
        named = spec.raster["species"] or spec.reference_energies
        source.check(elements=model_elements(spec) if named else None)
    shape = grid_shape(source.cell, spec.spacing)
    if len(offsets) > 1 and not all(source.pbc[:2]):
        raise ConfigError("registries rolls the field of a cell periodic in x and y; this one "
                          "is open: score it with registries=1.")
    if shape[0] * shape[1] <= IN_PROCESS_PIXELS:
        field = cell_field(source, spec.spacing, **spec.raster)
        predicted = float(np.mean([  # a roll of a periodic cell's field moves its atoms
            contributions(np.roll(field, shift, axis=(1, 2)), model).sum(dtype=np.float64)
            for shift in offsets]))
    elif len(offsets) > 1:
        raise ConfigError(f"registries averages cells of up to {IN_PROCESS_PIXELS:,} pixels; "
                          f"this one has {shape[0] * shape[1]:,}, whose many tiles average "
                          f"the registry noise already: score it with registries=1.")
    elif all(source.pbc[:2]):
        return score_atoms(source, model, client=client, chunks=chunks).energy
    else:
        raster = spec.raster
        field = rasterize(source, spec.spacing, gamma=raster["gamma"], cutoff=raster["cutoff"],
                          species=raster["species"], chunks=chunks)
        predicted = score(field, model, client=client, chunks=chunks).energy
    return predicted + reference_sum(species_counts(source), spec.reference_energies)
