"""Generators of the paper's 2-D materials, on the rectangular 4-atom honeycomb cell.

The cell has lattice constant ``a`` and size ``a × √3 a``:

- :func:`hexagonal_sheet`: graphene, h-BN or C/BN heterostructures with
  vacancies and in-plane thermal displacements;
- :class:`PorousSheet`: graphene with random round pores, from a training cell
  to a 1 µm² sheet; its atoms are generated block by block from seeds that
  depend only on the block, so any region (a raster chunk with its halo) is
  generated alone and agrees with every other region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ednn_dask.atoms.structure import Structure
from ednn_dask.errors import StructureError

LATTICE_CONSTANT = 2.5
"""Honeycomb lattice constant in Å (C–C bond ``a / √3`` = 1.443 Å)."""

TRAINING_CELLS = (5, 3)
"""The training cell in rectangular 4-atom cells: 60 atoms, 12.5 × 12.99 Å."""

VACUUM = 20.0
"""Height of the (non-periodic) z axis of sheet cells, in Å."""


# Fractional (x in units of a, y in units of √3 a) positions of the 4 atoms of
# the rectangular cell; sublattice A = {0, 2}, B = {1, 3}.
_BASIS = np.array([[0.0, 0.0], [0.0, 1 / 3], [0.5, 1 / 2], [0.5, 5 / 6]])
_SUBLATTICE = np.array([0, 1, 0, 1])
# nearest neighbours of each basis atom as (di, dj, basis) in cell indices
_NEIGHBOURS = (
    ((0, 0, 1), (0, -1, 3), (-1, -1, 3)),
    ((0, 0, 0), (0, 0, 2), (-1, 0, 2)),
    ((0, 0, 1), (1, 0, 1), (0, 0, 3)),
    ((0, 0, 2), (0, 1, 0), (1, 1, 0)),
)


def sheet_cell(cells: tuple[int, int], a: float = LATTICE_CONSTANT) -> np.ndarray:
    """Cell rows (Å) of a sheet of ``cells`` rectangular honeycomb cells."""
    nx, ny = cells
    return np.diag([nx * a, ny * math.sqrt(3) * a, VACUUM])


def honeycomb_sites(i: np.ndarray, j: np.ndarray, a: float = LATTICE_CONSTANT) -> np.ndarray:
    """Ideal (x, y) of the 4 atoms of each cell ``(i, j)``: shape ``i.shape + (4, 2)``."""
    origin = np.stack([i * a, j * math.sqrt(3) * a], axis=-1)[..., None, :]
    return origin + _BASIS * np.array([a, math.sqrt(3) * a])


def hexagonal_sheet(
    rng: np.random.Generator,
    kind: str = "graphene",
    *,
    cells: tuple[int, int] = TRAINING_CELLS,
    vacancies: int = 0,
    displacement: float = 0.0,
    sigma: float = 0.0,
    a: float = LATTICE_CONSTANT,
) -> Structure:
    """A periodic hexagonal sheet: ``kind`` is ``graphene``, ``hbn`` or ``hetero``.

    ``hbn`` puts B on sublattice A and N on B; ``hetero`` makes a random h-BN
    domain (a stripe or a disc) in graphene. ``vacancies`` random atoms are
    removed and every atom is displaced in-plane uniformly within a disc of
    radius ``displacement`` Å, or, with ``sigma``, by a Gaussian of ``sigma`` Å per
    coordinate (independent atoms: a crude thermal rattle).
    """
    nx, ny = cells
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    xy = honeycomb_sites(ii, jj, a).reshape(-1, 2)
    sub = np.tile(_SUBLATTICE, nx * ny)
    bn_mask = _bn_region(rng, kind, xy, np.diag(sheet_cell(cells, a))[:2])
    numbers = np.where(bn_mask, np.where(sub == 0, 5, 7), 6)
    n = len(numbers)
    if not 0 <= vacancies < n:
        raise StructureError(f"vacancies must be between 0 and {n - 1}, got {vacancies}.")
    keep = np.ones(n, bool)
    keep[rng.choice(n, vacancies, replace=False)] = False
    if displacement and sigma:
        raise StructureError("give a disc displacement or a Gaussian sigma, not both.")
    xy = xy + (rng.normal(0.0, sigma, (n, 2)) if sigma else _disc(rng, n, displacement))
    positions = np.column_stack([xy, np.full(n, VACUUM / 2)])[keep]
    info = {
        "kind": kind,
        "cells": list(cells),
        "vacancies": vacancies,
        "displacement": displacement,
        **({"sigma": sigma} if sigma else {}),
    }
    return Structure(positions, numbers[keep], sheet_cell(cells, a), info=info).wrapped()


def _bn_region(rng: np.random.Generator, kind: str, xy: np.ndarray, size: np.ndarray) -> np.ndarray:
    if kind == "graphene":
        return np.zeros(len(xy), bool)
    if kind == "hbn":
        return np.ones(len(xy), bool)
    if kind != "hetero":
        raise StructureError(f"kind must be 'graphene', 'hbn' or 'hetero', got {kind!r}.")
    if rng.random() < 0.5:  # a stripe across x or y, 30-70 % of the cell wide
        axis = int(rng.integers(2))
        width = rng.uniform(0.3, 0.7) * size[axis]
        offset = rng.uniform(0, size[axis])
        return (xy[:, axis] - offset) % size[axis] < width
    centre = rng.uniform(0, 1, 2) * size
    radius = rng.uniform(0.25, 0.45) * size.min()
    delta = xy - centre
    delta -= np.round(delta / size) * size
    return np.hypot(*delta.T) < radius


def _disc(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    """``n`` points uniform in a disc of ``radius`` (in-plane thermal displacements)."""
    r = radius * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi)])


@dataclass(frozen=True)
class PorousSheet:
    """Graphene with random round pores, periodic in x and y, generated region by region.

    The sheet has ``cells`` rectangular honeycomb cells. Pores are a Poisson
    process whose density gives the target ``porosity`` (the removed fraction of
    atoms, on average), radii uniform in ``pore_radius`` Å. Atoms left with fewer
    than two neighbours are removed too. Pores and displacements are drawn per
    block of ``block`` × ``block`` cells from ``(seed, block index)``, so a region
    is generated without the rest of the sheet and agrees with it.
    """

    cells: tuple[int, int]
    porosity: float = 0.1
    seed: int = 0
    pore_radius: tuple[float, float] = (2.0, 4.0)
    displacement: float = 0.1
    a: float = LATTICE_CONSTANT
    block: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.porosity < 0.9:
            raise StructureError(f"porosity must be in [0, 0.9), got {self.porosity}.")
        lo, hi = self.pore_radius
        if not 0 < lo <= hi or hi > self.block * self.a / 2:
            raise StructureError(
                f"pore_radius must be 0 < min <= max <= {self.block * self.a / 2} Å, "
                f"got {self.pore_radius}."
            )
        if min(self.cells) < 1:
            raise StructureError(f"cells must be positive, got {self.cells}.")

    @classmethod
    def square(cls, side: float, **kwargs: Any) -> PorousSheet:
        """The smallest sheet of whole training cells that is at least ``side`` Å each way.

        Whole training cells keep the sheet a whole number of pixels of any
        model trained on them.
        """
        a = kwargs.get("a", LATTICE_CONSTANT)
        tx, ty = TRAINING_CELLS
        nx = tx * max(1, math.ceil(side / (tx * a)))
        ny = ty * max(1, math.ceil(side / (ty * math.sqrt(3) * a)))
        return cls((nx, ny), **kwargs)

    @property
    def size(self) -> np.ndarray:
        """Sheet size (x, y) in Å."""
        return np.diag(sheet_cell(self.cells, self.a))[:2].copy()

    @property
    def cell(self) -> np.ndarray:
        return sheet_cell(self.cells, self.a)

    @property
    def n_sites(self) -> int:
        return 4 * self.cells[0] * self.cells[1]

    def structure(self) -> Structure:
        """The whole sheet as one :class:`Structure` (small sheets: training cells)."""
        xy, _ = self.atoms(0, self.cells[0], 0, self.cells[1])
        positions = np.column_stack([xy, np.full(len(xy), VACUUM / 2)])
        info = {
            "kind": "porous",
            "cells": list(self.cells),
            "porosity": self.porosity,
            "displacement": self.displacement,
            "seed": self.seed,
        }
        numbers = np.full(len(xy), 6)
        return Structure(positions, numbers, self.cell, info=info).wrapped()

    def atoms(self, i0: int, i1: int, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in Å of the atoms of cells ``i0 <= i < i1``, ``j0 <= j < j1``, and their site ids.

        Indices may run past the sheet on either side: those cells are periodic
        images, returned at their image positions (what a raster halo needs).
        Site ids are ``4 * (i * ny + j) + basis`` of the wrapped cell.
        """
        keep = self._keep(i0 - 2, i1 + 2, j0 - 2, j1 + 2)[2:-2, 2:-2]
        ii, jj = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij")
        xy = honeycomb_sites(ii, jj, self.a) + self._displacements(ii, jj)
        nx, ny = self.cells
        ids = 4 * ((ii % nx) * ny + jj % ny)[..., None] + np.arange(4)
        return xy[keep], ids[keep]

    @property
    def pbc(self) -> tuple[bool, bool, bool]:
        return (True, True, False)

    def atoms_in_box(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) and numbers of the atoms (with periodic images) whose position lies in the box."""
        sy = math.sqrt(3) * self.a
        i0, i1 = math.floor(x0 / self.a) - 1, math.ceil(x1 / self.a) + 1
        j0, j1 = math.floor(y0 / sy) - 1, math.ceil(y1 / sy) + 1
        xy, _ = self.atoms(i0, i1, j0, j1)
        inside = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        return xy[inside], np.full(int(inside.sum()), 6)

    # -- the pieces, each a pure function of (seed, block) --------------------

    def _n_blocks(self, axis: int) -> int:
        return -(-self.cells[axis] // self.block)

    def _block_rng(self, bi: int, bj: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, bi, bj])

    def _block_range(self, lo: int, hi: int, axis: int) -> list[tuple[int, int]]:
        """(image, block) pairs covering unwrapped cell indices ``[lo, hi)`` along ``axis``."""
        n = self.cells[axis]
        out = []
        for m in range(math.floor(lo / n), math.floor((hi - 1) / n) + 1):
            first, last = max(lo - m * n, 0), min(hi - m * n, n) - 1
            out += [(m, b) for b in range(first // self.block, last // self.block + 1)]
        return out

    def _displacements(self, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        out = np.zeros(ii.shape + (4, 2))
        if self.displacement == 0:
            return out
        wi, wj = ii % self.cells[0], jj % self.cells[1]
        shape = (self.block, self.block, 4, 2)
        for bi in np.unique(wi // self.block):
            for bj in np.unique(wj // self.block):
                rng = self._block_rng(int(bi), int(bj), 1)
                table = _disc(rng, math.prod(shape[:3]), self.displacement).reshape(shape)
                sel = (wi // self.block == bi) & (wj // self.block == bj)
                out[sel] = table[wi[sel] % self.block, wj[sel] % self.block]
        return out

    def _pores(self, bi: int, bj: int) -> tuple[np.ndarray, np.ndarray]:
        """Centres (k, 2) in Å (in the sheet) and radii (k,) of the pores of block (bi, bj)."""
        if self.porosity == 0:
            return np.zeros((0, 2)), np.zeros(0)
        rng = self._block_rng(bi, bj, 2)
        lo, hi = self.pore_radius
        mean_r2 = (hi**3 - lo**3) / (3 * (hi - lo)) if hi > lo else lo**2
        sizes = [min(self.block, n - b * self.block) for n, b in zip(self.cells, (bi, bj))]
        cell = np.array([self.a, math.sqrt(3) * self.a])
        extent = np.array(sizes) * cell
        # Poisson discs cover 1 - exp(-λ π <r²>) of the area: solve for the density λ
        density = -math.log1p(-self.porosity) / (math.pi * mean_r2)
        k = rng.poisson(density * extent.prod())
        origin = np.array([bi, bj]) * self.block * cell
        return origin + rng.random((k, 2)) * extent, rng.uniform(lo, hi, k)

    def _in_sheet(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        """Mask (ni, nj, 4): ideal site of unwrapped cells not inside any pore (or its image)."""
        mask = np.ones((i1 - i0, j1 - j0, 4), bool)
        cell = np.array([self.a, math.sqrt(3) * self.a])
        reach = np.ceil(self.pore_radius[1] / cell).astype(int) + 1
        centres, radii = [], []
        for mi, bi in self._block_range(i0 - reach[0], i1 + reach[0], 0):
            for mj, bj in self._block_range(j0 - reach[1], j1 + reach[1], 1):
                c, r = self._pores(bi, bj)
                centres.append(c + np.array([mi, mj]) * self.size)
                radii.append(r)
        centres, radii = np.concatenate(centres), np.concatenate(radii)
        if not len(radii):
            return mask
        # every pore tests the sites of a small window of cells around its centre
        di, dj = np.meshgrid(np.arange(-reach[0], reach[0] + 1),
                             np.arange(-reach[1], reach[1] + 1), indexing="ij")
        home = np.floor(centres / cell).astype(int)
        ii = home[:, 0, None, None] + di
        jj = home[:, 1, None, None] + dj
        delta = honeycomb_sites(ii, jj, self.a) - centres[:, None, None, None, :]
        inside = (delta**2).sum(-1) < radii[:, None, None, None] ** 2
        inside &= ((ii >= i0) & (ii < i1) & (jj >= j0) & (jj < j1))[..., None]
        p, a, b, k = np.nonzero(inside)
        mask[ii[p, a, b] - i0, jj[p, a, b] - j0, k] = False
        return mask

    def _keep(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        """Sites kept after pores and two passes of removing atoms with < 2 neighbours."""
        keep = self._in_sheet(i0, i1, j0, j1)
        for _ in range(2):
            count = np.zeros(keep.shape, np.int8)
            for b, neighbours in enumerate(_NEIGHBOURS):
                for di, dj, nb in neighbours:
                    shifted = np.zeros(keep.shape[:2], bool)
                    src = keep[
                        max(di, 0) : keep.shape[0] + min(di, 0),
                        max(dj, 0) : keep.shape[1] + min(dj, 0),
                        nb,
                    ]
                    shifted[
                        max(-di, 0) : keep.shape[0] + min(-di, 0),
                        max(-dj, 0) : keep.shape[1] + min(-dj, 0),
                    ] = src
                    count[..., b] += shifted
            keep = keep & (count >= 2)
        return keep
