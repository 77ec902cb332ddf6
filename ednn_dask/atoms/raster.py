"""Atoms to fields: eq. (2) of the paper, rasterized chunk by chunk.

``V(x, y) = Σ_i Z_i exp(-r_i² / 2γ²)`` sampled at pixel centres ``(k + ½)·spacing``,
each Gaussian truncated where ``|x - x_i|`` or ``|y - y_i|`` exceeds ``cutoff``
(default 5γ, where it has fallen to 4e-6): a square window, which lets the
kernel run its rows without a test per pixel (2x faster than a disc).
With ``species`` the field has one channel per element instead of the sum
(channel ``s`` holds ``Z_s exp(...)`` of the atoms of that element, so the
channels add up to the summed field).

Atoms come from a *source* (:mod:`ednn_dask.atoms.structure`); each chunk asks
its source only for the atoms within its extent plus the cutoff.
:func:`cell_field` rasterizes a whole cell in memory as a model expects it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ednn_dask.atoms.structure import as_source
from ednn_dask.defaults import CHANNEL_DIM, CHUNK_PIXELS, CUTOFF_GAMMAS, GAMMA
from ednn_dask.errors import StructureError
from ednn_dask.field import make_field


def _stamp_kernel():
    """Compile the numba kernel on first use (keeps ``import ednn_dask`` fast)."""
    import numba

    # fastmath lets the row loop vectorize; every pixel still receives its atoms in order
    @numba.njit(cache=True, nogil=True, fastmath=True)
    def stamp(out, x, y, weight, channel, sx, sy, gamma, cutoff):  # pragma: no cover - numba
        _, ny, nx = out.shape
        inv = 1.0 / (2.0 * gamma * gamma)
        gx = np.empty(int(2 * cutoff / sx) + 3, dtype=out.dtype)
        gy = np.empty(int(2 * cutoff / sy) + 3, dtype=out.dtype)
        for a in range(x.shape[0]):
            xa, ya, c = x[a], y[a], channel[a]
            ix0 = max(0, math.ceil((xa - cutoff) / sx - 0.5))
            ix1 = min(nx - 1, math.floor((xa + cutoff) / sx - 0.5))
            iy0 = max(0, math.ceil((ya - cutoff) / sy - 0.5))
            iy1 = min(ny - 1, math.floor((ya + cutoff) / sy - 0.5))
            for ix in range(ix0, ix1 + 1):
                dx = (ix + 0.5) * sx - xa
                gx[ix - ix0] = math.exp(-dx * dx * inv)
            for iy in range(iy0, iy1 + 1):
                dy = (iy + 0.5) * sy - ya
                gy[iy - iy0] = weight[a] * math.exp(-dy * dy * inv)
            n = ix1 - ix0 + 1
            for iy in range(iy0, iy1 + 1):
                g = gy[iy - iy0]
                row = out[c, iy, ix0 : ix0 + n]
                for k in range(n):  # fixed trip count, no test per pixel: vectorizes
                    row[k] += g * gx[k]

    return stamp


_KERNEL = None


def stamp(
    out: np.ndarray,
    xy: np.ndarray,
    weight: np.ndarray,
    channel: np.ndarray,
    spacing: tuple[float, float],
    gamma: float,
    cutoff: float,
) -> np.ndarray:
    """Add the Gaussians of atoms at ``xy`` (Å, relative to ``out``'s corner) into ``out``.

    ``out`` is (channels, ny, nx), float32 or float64 (sums are taken in its
    precision); ``spacing`` is (sy, sx). The numba kernel.
    """
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _stamp_kernel()
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    _KERNEL(
        out,
        xy[:, 0].copy(),
        xy[:, 1].copy(),
        np.asarray(weight, np.float64),
        np.asarray(channel, np.int64),
        float(spacing[1]),
        float(spacing[0]),
        float(gamma),
        float(cutoff),
    )
    return out


def stamp_numpy(
    out: np.ndarray,
    xy: np.ndarray,
    weight: np.ndarray,
    channel: np.ndarray,
    spacing: tuple[float, float],
    gamma: float,
    cutoff: float,
) -> np.ndarray:
    """The same as :func:`stamp`, one atom at a time in numpy (the slow reference)."""
    _, ny, nx = out.shape
    sy, sx = spacing
    for (xa, ya), w, c in zip(xy, weight, channel):
        ix = np.arange(
            max(0, math.floor((xa - cutoff) / sx)), min(nx, math.ceil((xa + cutoff) / sx) + 1)
        )
        iy = np.arange(
            max(0, math.floor((ya - cutoff) / sy)), min(ny, math.ceil((ya + cutoff) / sy) + 1)
        )
        if not (len(ix) and len(iy)):
            continue
        dx2 = ((ix + 0.5) * sx - xa) ** 2
        dy2 = ((iy + 0.5) * sy - ya) ** 2
        r2 = dy2[:, None] + dx2[None, :]
        inside = (dy2[:, None] <= cutoff**2) & (dx2[None, :] <= cutoff**2)
        g = np.where(inside, w * np.exp(-r2 / (2 * gamma**2)), 0.0)
        out[c, iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] += g
    return out


def grid_shape(cell: np.ndarray, spacing: Sequence[float]) -> tuple[int, int]:
    """Pixels (ny, nx) of a rectangular cell; the cell must hold a whole number of pixels."""
    cell = np.asarray(cell, dtype=float)
    off_diagonal = cell[:2, :2] - np.diag(np.diag(cell[:2, :2]))
    if np.abs(off_diagonal).max() > 1e-9:
        raise StructureError(
            f"rasterizing needs a rectangular cell (x along a, y along b); got cell rows "
            f"{cell[:2, :2].round(4).tolist()}. Build an orthogonal supercell first."
        )
    lengths = np.array([cell[1, 1], cell[0, 0]])
    pixels = lengths / np.asarray(spacing, dtype=float)
    whole = np.round(pixels)
    if np.any(np.abs(pixels - whole) > 1e-6 * np.maximum(whole, 1)) or np.any(whole < 1):
        raise StructureError(
            f"the cell ({lengths[1]:.6g} × {lengths[0]:.6g} Å, x × y) is not a whole number of "
            f"pixels of spacing (y, x) = {tuple(spacing)} Å: it is {pixels[1]:.4f} × "
            f"{pixels[0]:.4f} px. Use cells that are multiples of the model's training cell "
            f"or a spacing that divides the cell."
        )
    return int(whole[0]), int(whole[1])


def rasterize(
    atoms: Any,
    spacing: float | Sequence[float],
    *,
    gamma: float = GAMMA,
    cutoff: float | None = None,
    species: Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    dtype: Any = np.float32,
    name: str = "potential",
) -> xr.DataArray:
    """Rasterize atoms into a lazy, dask-backed field (eq. 2), chunk by chunk.

    Parameters
    ----------
    atoms : ase.Atoms, Structure, PorousSheet or AtomsTable
        The atoms and their rectangular cell; the field covers the cell.
    spacing : float or (sy, sx)
        Pixel size in Å; the cell must be a whole number of pixels.
    gamma, cutoff : float
        Gaussian width and truncation radius in Å (cutoff default ``5 * gamma``).
    species : sequence of int, optional
        Atomic numbers: one channel per element (in this order) instead of the sum.
    chunks : int or (cy, cx), optional
        Chunk shape in pixels (default :data:`~ednn_dask.defaults.CHUNK_PIXELS`).

    Returns
    -------
    xarray.DataArray
        dims ``("y", "x")`` (``("channel", "y", "x")`` with species), coords in Å at
        pixel centres, attrs with spacing, gamma, cutoff, periodicity and units.
    """
    source = as_source(atoms)
    spacing_t = tuple(float(s) for s in np.broadcast_to(spacing, (2,)))
    cutoff = CUTOFF_GAMMAS * gamma if cutoff is None else float(cutoff)
    if gamma <= 0 or cutoff < 0:
        raise StructureError(f"gamma must be > 0 and cutoff >= 0, got {gamma} and {cutoff}.")
    shape = grid_shape(source.cell, spacing_t)
    chunks_t = tuple(int(c) for c in np.broadcast_to(chunks or CHUNK_PIXELS[2], (2,)))
    n_channels = len(species) if species else 1
    lut = channel_table(species)
    src = dask.delayed(source, pure=True)
    template = da.empty((n_channels, *shape), chunks=(n_channels, *chunks_t), dtype=dtype)
    data = da.map_blocks(
        _raster_block,
        template,
        dtype=dtype,
        source=src,
        spacing=spacing_t,
        gamma=gamma,
        cutoff=cutoff,
        lut=lut,
        meta=np.empty((0, 0, 0), dtype),
    )
    if not species:
        data = data[0]
    attrs = {
        "long_name": "Gaussian potential (eq. 2)",
        "gamma": gamma,
        "cutoff": cutoff,
        "periodic": [bool(p) for p in source.pbc[1::-1]],
        "species": [int(z) for z in species] if species else None,
        "cell": np.asarray(source.cell).round(10).tolist(),
    }
    if hasattr(source, "species_counts"):
        attrs["species_counts"] = {str(z): n for z, n in source.species_counts().items()}
    field = make_field(data, spacing=spacing_t, dims=("y", "x"), attrs=attrs, name=name)
    if species:
        field = field.assign_coords({CHANNEL_DIM: list(species)})
    return field


def channel_table(species: Sequence[int] | None) -> np.ndarray | None:
    """Atomic number -> channel (-1: not a channel); None when channels are not split."""
    if not species:
        return None
    lut = np.full(119, -1, np.int64)
    lut[np.asarray(species)] = np.arange(len(species))
    return lut


def _raster_block(
    block: np.ndarray,
    source: Any,
    spacing: tuple[float, float],
    gamma: float,
    cutoff: float,
    lut: np.ndarray | None,
    block_info: dict | None = None,
) -> np.ndarray:
    (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    return raster_window(
        source,
        (y0, y1),
        (x0, x1),
        spacing,
        gamma,
        cutoff,
        lut,
        n_channels=block.shape[0],
        dtype=block.dtype,
    )


def raster_window(
    source: Any,
    rows: tuple[int, int],
    cols: tuple[int, int],
    spacing: tuple[float, float],
    gamma: float,
    cutoff: float,
    lut: np.ndarray | None = None,
    *,
    n_channels: int = 1,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Rasterize pixel rows ``[r0, r1)`` × cols ``[c0, c1)`` (may run past the cell: images)."""
    xy, numbers = window_atoms(source, rows, cols, spacing, cutoff)
    return stamp_window(xy, numbers, rows, cols, spacing, gamma, cutoff, lut,
                        n_channels=n_channels, dtype=dtype)


def window_atoms(
    source: Any, rows: tuple[int, int], cols: tuple[int, int], spacing: tuple[float, float],
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) and numbers of the atoms (periodic images too) that reach a pixel window."""
    sy, sx = spacing
    (r0, r1), (c0, c1) = rows, cols
    return source.atoms_in_box(c0 * sx - cutoff, c1 * sx + cutoff, r0 * sy - cutoff,
                               r1 * sy + cutoff)


def stamp_window(
    xy: np.ndarray,
    numbers: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    spacing: tuple[float, float],
    gamma: float,
    cutoff: float,
    lut: np.ndarray | None = None,
    *,
    n_channels: int = 1,
    dtype: Any = np.float32,
) -> np.ndarray:
    """The field ``(n_channels, r1 - r0, c1 - c0)`` of given atoms on a pixel window."""
    sy, sx = spacing
    (r0, r1), (c0, c1) = rows, cols
    if lut is None:
        channel = np.zeros(len(numbers), np.int64)
    else:
        channel = lut[numbers]
        unknown = channel < 0
        if unknown.any():
            raise StructureError(
                f"elements {sorted(set(numbers[unknown].tolist()))} have no channel among "
                f"species {np.flatnonzero(lut >= 0).tolist()}; add them to species."
            )
    # summed in the output's precision: a float64 buffer and its float32 copy would
    # triple the memory a window touches (page faults dominate a cold window here)
    out = np.zeros((n_channels, r1 - r0, c1 - c0), dtype)
    stamp(out, xy - [c0 * sx, r0 * sy], numbers.astype(np.float64), channel, spacing, gamma, cutoff)
    return out


def cell_field(
    source: Any,
    spacing: Sequence[float],
    *,
    gamma: float = GAMMA,
    cutoff: float | None = None,
    species: Sequence[int] | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """The whole cell of ``source`` in memory, ``(C, ny, nx)``; :func:`rasterize` is the lazy one.

    An atomistic model's input is ``cell_field(atoms, spec.spacing, **spec.raster)``.
    """
    shape = grid_shape(source.cell, spacing)
    cutoff = CUTOFF_GAMMAS * gamma if cutoff is None else float(cutoff)
    return raster_window(source, (0, shape[0]), (0, shape[1]), tuple(spacing), gamma, cutoff,
                         channel_table(species), n_channels=len(species or [0]), dtype=dtype)
