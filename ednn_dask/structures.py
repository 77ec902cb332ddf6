"""Atomic structures and the generators of the paper's 2-D materials.

A :class:`Structure` is plain arrays (positions in Å, atomic numbers, cell
rows in Å, periodicity); ASE is optional and only used by ``from_ase`` /
``to_ase``. The generators build sheets on the rectangular 4-atom honeycomb
cell (lattice constant ``a``, cell ``a × √3 a``):

- :func:`hexagonal_sheet`: graphene, h-BN or C/BN heterostructures with
  vacancies and in-plane thermal displacements;
- :class:`PorousSheet`: graphene with random round pores, from a training cell
  to a 1 µm² sheet; its atoms are generated block by block from seeds that
  depend only on the block, so any region (a raster chunk with its halo) is
  generated alone and agrees with every other region.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import StructureError

LATTICE_CONSTANT = 2.5
"""Honeycomb lattice constant in Å (C–C bond ``a / √3`` = 1.443 Å)."""

TRAINING_CELLS = (5, 3)
"""The training cell in rectangular 4-atom cells: 60 atoms, 12.5 × 12.99 Å."""

VACUUM = 20.0
"""Height of the (non-periodic) z axis of sheet cells, in Å."""

ELEMENTS = {1: "H", 5: "B", 6: "C", 7: "N", 8: "O"}
SYMBOLS = {v: k for k, v in ELEMENTS.items()}

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


@dataclass(frozen=True, eq=False)
class Structure:
    """Atoms in a cell: ``positions`` (n, 3) Å, ``numbers`` (n,), ``cell`` rows (3, 3) Å.

    ``info`` carries how the structure was made (kind, vacancies, ...).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: tuple[bool, bool, bool] = (True, True, False)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positions = np.asarray(self.positions, dtype=np.float64)
        numbers = np.asarray(self.numbers)
        cell = np.asarray(self.cell, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise StructureError(f"positions must have shape (n, 3), got {positions.shape}.")
        if numbers.shape != positions.shape[:1] or not np.issubdtype(numbers.dtype, np.integer):
            raise StructureError(
                f"numbers must be {len(positions)} integers (one per atom), got "
                f"{numbers.dtype} of shape {numbers.shape}."
            )
        if cell.shape != (3, 3):
            raise StructureError(f"cell must be 3 row vectors (3, 3) in Å, got {cell.shape}.")
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "numbers", numbers.astype(np.int64))
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "pbc", tuple(bool(p) for p in self.pbc))

    def __len__(self) -> int:
        return len(self.numbers)

    def __repr__(self) -> str:
        return (
            f"<Structure {self.formula} cell={np.diag(self.cell).round(3).tolist()} pbc={self.pbc}>"
        )

    @property
    def formula(self) -> str:
        return "".join(f"{ELEMENTS.get(z, z)}{n}" for z, n in sorted(self.species_counts().items()))

    def species_counts(self) -> dict[int, int]:
        """Number of atoms of each atomic number."""
        z, n = np.unique(self.numbers, return_counts=True)
        return {int(a): int(b) for a, b in zip(z, n)}

    @classmethod
    def from_ase(cls, atoms: Any) -> Structure:
        """Convert an ``ase.Atoms`` (keeps its ``info``)."""
        return cls(
            atoms.get_positions(),
            atoms.get_atomic_numbers(),
            atoms.get_cell()[:],
            tuple(atoms.get_pbc()),
            dict(atoms.info),
        )

    def to_ase(self) -> Any:
        """Convert to an ``ase.Atoms`` (needs ASE: ``pip install 'ednn-dask[reference]'``)."""
        from ase import Atoms

        return Atoms(
            numbers=self.numbers,
            positions=self.positions,
            cell=self.cell,
            pbc=self.pbc,
            info=dict(self.info),
        )

    def check(
        self, *, min_distance: float = 0.5, elements: Sequence[int] | None = None
    ) -> Structure:
        """Raise :class:`StructureError` unless the atoms can be rasterized and trusted.

        Checks finite positions, atoms inside the cell along periodic axes, no two
        atoms closer than ``min_distance`` Å (minimum image), and, when given, that
        every element is one of ``elements``. Returns ``self``.
        """
        if not np.isfinite(self.positions).all():
            raise StructureError("some atom positions are NaN or infinite.")
        if elements is not None:
            unknown = sorted(set(self.numbers.tolist()) - {int(z) for z in elements})
            if unknown:
                names = [ELEMENTS.get(z, str(z)) for z in unknown]
                known = [ELEMENTS.get(int(z), str(z)) for z in elements]
                raise StructureError(
                    f"elements {names} are unknown to the model, which knows {known}; "
                    f"use a model trained on these elements."
                )
        frac = self.positions @ np.linalg.inv(self.cell)
        for axis in np.flatnonzero(self.pbc):
            bad = np.flatnonzero((frac[:, axis] < -1e-9) | (frac[:, axis] >= 1 + 1e-9))
            if len(bad):
                raise StructureError(
                    f"{len(bad)} atoms lie outside the periodic cell along axis {'xyz'[axis]} "
                    f"(first: atom {bad[0]} at {self.positions[bad[0]].round(3).tolist()} Å); "
                    f"wrap them into the cell first (Structure.wrapped())."
                )
        i, j, d = self._closest_pair()
        if d < min_distance:
            raise StructureError(
                f"atoms {i} and {j} overlap: {d:.3f} Å apart, closer than {min_distance} Å; "
                f"remove the duplicate atom or fix the positions."
            )
        return self

    def atoms_in_box(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) and numbers of the atoms and periodic images whose position lies in the box.

        Needs a cell whose first two rows lie along x and y (a rectangular sheet).
        """
        xy, numbers = self.positions[:, :2], self.numbers
        lx, ly = self.cell[0, 0], self.cell[1, 1]
        shifts_x = (
            range(math.floor((x0 - xy[:, 0].max()) / lx), math.ceil((x1 - xy[:, 0].min()) / lx) + 1)
            if self.pbc[0]
            else [0]
        )
        shifts_y = (
            range(math.floor((y0 - xy[:, 1].max()) / ly), math.ceil((y1 - xy[:, 1].min()) / ly) + 1)
            if self.pbc[1]
            else [0]
        )
        parts_xy, parts_z = [], []
        for kx in shifts_x:
            for ky in shifts_y:
                p = xy + [kx * lx, ky * ly]
                inside = (p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)
                parts_xy.append(p[inside])
                parts_z.append(numbers[inside])
        if not parts_xy:
            return np.zeros((0, 2)), np.zeros(0, np.int64)
        return np.concatenate(parts_xy), np.concatenate(parts_z)

    def repeat(self, nx: int, ny: int) -> Structure:
        """The cell repeated ``nx`` x ``ny`` times along its first two vectors.

        Like ``ase.Atoms.repeat``: copies are ordered cell by cell, and a count in
        ``info["vacancies"]`` is multiplied with the cell.
        """
        if min(nx, ny) < 1 or int(nx) != nx or int(ny) != ny:
            raise StructureError(f"repeat needs positive integers, got {nx} x {ny}.")
        shifts = [i * self.cell[0] + j * self.cell[1] for i in range(nx) for j in range(ny)]
        positions = np.concatenate([self.positions + shift for shift in shifts])
        info = dict(self.info)
        if "vacancies" in info:
            info["vacancies"] = info["vacancies"] * nx * ny
        cell = self.cell * np.array([[nx], [ny], [1]])
        return Structure(positions, np.tile(self.numbers, nx * ny), cell, self.pbc, info)

    def wrapped(self) -> Structure:
        """The same structure with every atom moved into the cell along periodic axes.

        Atoms are moved by whole cell vectors, so those already inside keep their
        positions bit for bit.
        """
        frac = self.positions @ np.linalg.inv(self.cell)
        shift = np.floor(frac) * np.array(self.pbc)
        positions = self.positions - shift @ self.cell
        return Structure(positions, self.numbers, self.cell, self.pbc, dict(self.info))

    def _closest_pair(self, block: int = 1024) -> tuple[int, int, float]:
        """Closest pair of atoms under the minimum-image convention (blockwise O(n²))."""
        n = len(self)
        best = (0, 0, math.inf)
        if n < 2:
            return best
        inv = np.linalg.inv(self.cell)
        pbc = np.array(self.pbc)
        for start in range(0, n, block):
            rows = self.positions[start : start + block]
            delta = rows[:, None, :] - self.positions[None, :, :]
            frac = delta @ inv
            frac[..., pbc] -= np.round(frac[..., pbc])
            dist = np.linalg.norm(frac @ self.cell, axis=-1)
            idx = np.arange(len(rows))
            dist[idx, start + idx] = np.inf
            k = int(np.argmin(dist))
            r, c = divmod(k, n)
            if dist[r, c] < best[2]:
                best = (start + r, c, float(dist[r, c]))
        return best


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
    a: float = LATTICE_CONSTANT,
) -> Structure:
    """A periodic hexagonal sheet: ``kind`` is ``graphene``, ``hbn`` or ``hetero``.

    ``hbn`` puts B on sublattice A and N on B; ``hetero`` makes a random h-BN
    domain (a stripe or a disc) in graphene. ``vacancies`` random atoms are
    removed and every atom is displaced in-plane uniformly within a disc of
    radius ``displacement`` Å.
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
    xy = xy + _disc(rng, n, displacement)
    positions = np.column_stack([xy, np.full(n, VACUUM / 2)])[keep]
    info = {
        "kind": kind,
        "cells": list(cells),
        "vacancies": vacancies,
        "displacement": displacement,
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


def hexagonal_structures(
    n: int,
    *,
    seed: int = 0,
    cells: tuple[int, int] = TRAINING_CELLS,
    start: int = 0,
    max_vacancies: int = 4,
    max_displacement: float = 0.1,
) -> Iterator[Structure]:
    """The hexagonal data set: structure ``k`` depends only on ``(seed, k)``.

    Kinds are drawn evenly among graphene, h-BN and hetero; 0..``max_vacancies``
    vacancies per training cell's worth of atoms; displacement radius uniform in
    [0, ``max_displacement``] Å.
    """
    scale = cells[0] * cells[1] // (TRAINING_CELLS[0] * TRAINING_CELLS[1]) or 1
    for k in range(start, start + n):
        rng = np.random.default_rng([seed, k])
        kind = ("graphene", "hbn", "hetero")[int(rng.integers(3))]
        vacancies = int(rng.integers(0, max_vacancies * scale + 1))
        displacement = float(rng.uniform(0, max_displacement))
        yield hexagonal_sheet(
            rng, kind, cells=cells, vacancies=vacancies, displacement=displacement
        )


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


def porous_structures(
    n: int,
    *,
    seed: int = 0,
    cells: tuple[int, int] = (10, 3),
    start: int = 0,
    porosity: tuple[float, float] = (0.05, 0.25),
    pore_radius: tuple[float, float] = (2.0, 4.0),
    max_displacement: float = 0.1,
) -> Iterator[Structure]:
    """Porous-graphene training cells: structure ``k`` depends only on ``(seed, k)``.

    Small cells often draw no pore from the Poisson process; those draws are
    skipped (deterministically) so every cell has at least one pore.
    """
    for k in range(start, start + n):
        rng = np.random.default_rng([seed, k])
        p, shift = float(rng.uniform(*porosity)), float(rng.uniform(0, max_displacement))
        while True:
            sheet = PorousSheet(cells, porosity=p, seed=int(rng.integers(2**31)),
                                pore_radius=pore_radius, displacement=shift)
            structure = sheet.structure()
            if len(structure) < sheet.n_sites:
                yield structure
                break
