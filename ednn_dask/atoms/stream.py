"""Atoms to energy in one streaming pass: no step ever holds the whole field.

Each dask task owns a focus-aligned window of the sheet. It looks up the atoms
that reach the window plus its context halo (periodic images included),
rasterizes them, runs the tile model on the padded window and returns, per focus
block, the EDNN contribution and the number of atoms of each element whose
positions fall in that block. The planes are summed into a downsampled map,
whose sums are the totals; the per-element
counts give the reference energies, so the result is a total energy. Compared
with ``rasterize`` + ``score`` (``map_overlap``) nothing moves between tasks: the
halo is rasterized twice instead of copied.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ednn_dask.atoms.raster import channel_table, grid_shape, stamp_window, window_atoms
from ednn_dask.atoms.references import model_elements, reference_sum, require_atomistic
from ednn_dask.atoms.structure import as_source
from ednn_dask.compute import active_client, compute
from ednn_dask.defaults import CHUNK_PIXELS, MAP_PIXELS
from ednn_dask.errors import GeometryError, StructureError
from ednn_dask.inference import Method, block_contributions, resolve_method
from ednn_dask.model import TileModel, load_model
from ednn_dask.tiling import Tiling, check_chunk_count


@dataclass
class AtomsScore:
    """The outcome of :func:`score_atoms`."""

    energy: float  # eV: EDNN part + reference energies
    ednn_energy: float  # the sum of the contributions
    species_counts: dict[int, int]
    shape: tuple[int, int]  # pixels (y, x)
    n_chunks: int
    model_sha256: str
    density: xr.Dataset  # downsampled maps: "contribution" (eV) and "atoms" per map pixel
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return sum(self.species_counts.values())

    @property
    def atoms_per_second(self) -> float:
        return self.n_atoms / self.seconds["compute"] if self.seconds.get("compute") else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy": self.energy,
            "unit": "eV",
            "energy_per_atom": self.energy / self.n_atoms if self.n_atoms else math.nan,
            "ednn_energy": self.ednn_energy,
            "n_atoms": self.n_atoms,
            "species_counts": {str(z): n for z, n in self.species_counts.items()},
            "pixels": list(self.shape),
            "n_chunks": self.n_chunks,
            "model_sha256": self.model_sha256,
            "seconds": self.seconds,
            "atoms_per_second": self.atoms_per_second,
        }


def score_atoms(
    atoms: Any,
    model: TileModel | str | os.PathLike,
    *,
    client: Any = None,
    chunks: int | None = None,
    method: Method = "auto",
    threads: int = 1,
    map_pixels: int = MAP_PIXELS,
    progress: bool = False,
) -> AtomsScore:
    """Total energy (eV) of a large periodic structure, atoms to energy, chunk by chunk.

    Parameters
    ----------
    atoms : PorousSheet, Structure, AtomsTable or ase.Atoms
        A rectangular, periodic cell that is a whole number of the model's focus
        blocks (any multiple of the model's training cell is).
    model : TileModel or path
        An atomistic model (``ednn.raster`` and ``ednn.reference_energies``).
    client : distributed.Client, optional
        Where to compute; default the active client, else dask's threads.
    chunks : int, optional
        Largest window side in pixels (windows are whole focus blocks, of even size
        along each axis); default
        :func:`default_window` for the model and the cluster's cores and memory.
    map_pixels : int
        The energy-density map is summed into at most this many pixels per axis.
    """
    t0 = time.perf_counter()
    model = load_model(model)
    require_atomistic(model)
    source = as_source(atoms)
    spec = model.spec
    shape = grid_shape(source.cell, spec.spacing)
    _check_geometry(source, shape, spec.focus)
    elements = model_elements(spec)
    blocks = tuple(n // f for n, f in zip(shape, spec.focus, strict=True))
    if chunks is None:
        cores, memory_per_core = _machine(client or active_client())
        chunks = default_window(model, shape, cores=cores, memory_per_core=memory_per_core)
    if chunks < smallest_window(model):
        raise GeometryError(
            f"chunks (windows) of {chunks} px are too small for model {model.name!r} (focus "
            f"{spec.focus[0]} px, context {spec.context[0]} px): a window smaller than one tile "
            f"scores more halo than window; use chunks of at least {smallest_window(model)} px."
        )
    step = _chunk_blocks(chunks, spec.focus, blocks)
    template = da.empty((1 + len(elements), *blocks),
                        chunks=(1 + len(elements), *step), dtype=np.float64)
    planes = da.map_blocks(
        _window_planes, template, dtype=np.float64, meta=np.empty((0, 0, 0), np.float64),
        source=dask.delayed(source, pure=True), model=dask.delayed(model, pure=True),
        elements=elements, method=resolve_method(method, model), threads=threads,
        name="ednn-sheet-" + dask.base.tokenize(source, model.sha256, step, method),
    )
    # the downsampled map is the only reduction: the totals are its sums
    factor = max(1, math.ceil(max(blocks) / map_pixels))
    coarse = da.coarsen(np.sum, _pad_to(planes, factor), {1: factor, 2: factor})
    t1 = time.perf_counter()
    (coarse,) = compute((coarse,), client, progress)
    totals = coarse.sum(axis=(1, 2))
    t2 = time.perf_counter()
    counts = {z: int(round(n)) for z, n in zip(elements, totals[1:], strict=True) if n}
    ednn = float(totals[0])
    return AtomsScore(
        energy=ednn + reference_sum(counts, spec.reference_energies),
        ednn_energy=ednn,
        species_counts=counts,
        shape=shape,
        n_chunks=math.prod(len(c) for c in planes.chunks[1:]),
        model_sha256=model.sha256,
        density=_density_map(coarse, factor, spec, shape),
        seconds={"graph": t1 - t0, "compute": t2 - t1, "total": t2 - t0},
    )


def _check_geometry(source: Any, shape: tuple[int, int], focus: tuple[int, ...]) -> None:
    if not all(source.pbc[:2]):
        raise StructureError("score_atoms needs a cell periodic in x and y; use "
                             "ednn_dask.energy for other boundaries.")
    if any(n % f for n, f in zip(shape, focus, strict=True)):
        raise GeometryError(
            f"the cell is {shape[1]} × {shape[0]} px (x × y), not a whole number of the "
            f"model's focus blocks {focus[::-1]}; build it from whole training cells."
        )


def _chunk_blocks(chunks: int | None, focus: tuple[int, ...], blocks: tuple[int, ...]):
    """Focus blocks per window and axis: at most ``chunks`` px, the windows of an axis even.

    Even windows keep the cores equally busy: 5120 px cut at 4096 would leave one
    core on a 4096-px window while the other finishes a 1024-px one.
    """
    target = chunks or CHUNK_PIXELS[2]
    steps = []
    for f, n in zip(focus, blocks, strict=True):
        pieces = math.ceil(n / max(1, target // f))
        steps.append(math.ceil(n / pieces))
    windows = [[s * f] * math.ceil(n / s) for s, f, n in zip(steps, focus, blocks, strict=True)]
    check_chunk_count(windows, Tiling(focus, (0,) * len(focus)))
    return tuple(steps)


def smallest_window(model: TileModel) -> int:
    """The smallest window side (px) accepted: one tile (focus + 2 x context).

    A smaller window rasterizes and scores more halo than window, and its task
    count grows as the inverse square of its side.
    """
    return max(f + 2 * c for f, c in zip(model.spec.focus, model.spec.context, strict=True))


def default_window(
    model: TileModel, shape: tuple[int, int], *, cores: int, memory_per_core: float,
) -> int:
    """Window side (px) for a sheet of ``shape`` px, from the model and the machine.

    At least :data:`~ednn_dask.defaults.CHUNK_PIXELS` where memory allows (the measured point
    where dask's per-task overhead is a few %), 4096 where a core has memory to
    spare (less halo recomputed); halved while a window's buffers (float64 stamp,
    float32 input and its scaled copy: 16 B per pixel and channel) would take more
    than 1/16 of a core's memory, or while the sheet would not give every core two
    windows.
    """
    spec = model.spec
    smallest = 4 * max(spec.focus)

    def fits(side: int) -> bool:
        padded = (side + 2 * max(spec.context)) ** 2
        return 16 * spec.channels * padded <= memory_per_core / 16

    side = CHUNK_PIXELS[2]
    if fits(2 * side):
        side *= 2
    windows = math.prod(math.ceil(n / side) for n in shape)
    while side > smallest and (not fits(side) or windows < 2 * cores):
        side //= 2
        windows = math.prod(math.ceil(n / side) for n in shape)
    return max(side, smallest)


def _machine(client: Any) -> tuple[int, float]:
    """(cores, memory per core in bytes) of the cluster the job will run on."""
    from distributed.system import MEMORY_LIMIT  # this machine's RAM or cgroup limit

    local = os.cpu_count() or 1
    if client is None:
        return local, MEMORY_LIMIT / local
    workers = list(client.scheduler_info()["workers"].values())
    cores = sum(w["nthreads"] for w in workers) or 1
    limits = [w["memory_limit"] / w["nthreads"] for w in workers if w.get("memory_limit")]
    return cores, min(limits) if limits else MEMORY_LIMIT / local


def _pad_to(planes: da.Array, factor: int) -> da.Array:
    """Zero-pad the block axes to a multiple of the map factor (zeros add nothing)."""
    extra = [(0, 0)] + [(0, -n % factor) for n in planes.shape[1:]]
    return da.pad(planes, extra) if any(e for _, e in extra) else planes


def _window_planes(block, source, model, elements, method, threads, block_info=None):
    """Contribution and per-element atom counts of every focus block of one window."""
    (_, _), (b0, b1), (c0, c1) = block_info[None]["array-location"]
    spec = model.spec
    (fy, fx), (cy, cx) = spec.focus, spec.context
    sy, sx = spec.spacing
    rows, cols = (b0 * fy - cy, b1 * fy + cy), (c0 * fx - cx, c1 * fx + cx)
    raster = spec.raster
    xy, numbers = window_atoms(source, rows, cols, spec.spacing, raster["cutoff"])
    window = stamp_window(xy, numbers, rows, cols, spec.spacing, raster["gamma"],
                          raster["cutoff"], channel_table(raster["species"]),
                          n_channels=spec.channels)
    out = np.zeros(block.shape, np.float64)
    out[0] = block_contributions(window if spec.channels > 1 else window[0], model,
                                 method=method, threads=threads)
    # atoms whose positions fall in this window's focus blocks (not its halo)
    iy = np.floor(xy[:, 1] / (fy * sy)).astype(np.int64) - b0
    ix = np.floor(xy[:, 0] / (fx * sx)).astype(np.int64) - c0
    mine = (iy >= 0) & (iy < b1 - b0) & (ix >= 0) & (ix < c1 - c0)
    lut = channel_table(elements)
    kind = lut[numbers[mine]]
    if (kind < 0).any():
        unknown = sorted(set(numbers[mine][kind < 0].tolist()))
        raise StructureError(f"elements {unknown} are unknown to the model (it knows "
                             f"{elements}); use a model trained on them.")
    flat = (kind * (b1 - b0) + iy[mine]) * (c1 - c0) + ix[mine]
    out[1:] = np.bincount(flat, minlength=out[1:].size).reshape(out[1:].shape)
    return out


def _density_map(coarse: np.ndarray, factor: int, spec: Any, shape: tuple[int, int]):
    """The downsampled maps as a labelled Dataset (coordinates in Å at map-pixel centres)."""
    sy, sx = (f * s * factor for f, s in zip(spec.focus, spec.spacing, strict=True))
    ny, nx = coarse.shape[1:]
    coords = {"y": (np.arange(ny) + 0.5) * sy, "x": (np.arange(nx) + 0.5) * sx}
    return xr.Dataset(
        {
            "contribution": (("y", "x"), coarse[0].astype(np.float32),
                             {"units": "eV", "long_name": "EDNN contribution per map pixel"}),
            "atoms": (("y", "x"), coarse[1:].sum(axis=0).astype(np.int64),
                      {"long_name": "atoms per map pixel"}),
        },
        coords=coords,
        attrs={"pixel_area_A2": sy * sx, "blocks_per_pixel": factor,
               "field_pixels": list(shape), "model_spacing": list(spec.spacing)},
    )
