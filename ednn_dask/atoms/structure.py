"""Atoms in a cell (:class:`Structure`) and the atom-source protocol every rasterizer reads.

A :class:`Structure` is plain arrays (positions in Å, atomic numbers, cell
rows in Å, periodicity); ASE is optional and only used by ``from_ase`` /
``to_ase``.

A *source* of atoms is anything with a rectangular ``cell`` (rows, Å), a ``pbc``
and ``atoms_in_box(x0, x1, y0, y1) -> (xy, numbers)`` that returns the atoms
(periodic images included) whose position lies in the box: a :class:`Structure`,
a :class:`~ednn_dask.atoms.materials.PorousSheet` or an
:class:`~ednn_dask.atoms.table.AtomsTable` on disk. :func:`as_source` turns an
``ase.Atoms`` into a :class:`Structure` and passes sources through.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ConfigError, StructureError

ELEMENTS = {1: "H", 5: "B", 6: "C", 7: "N", 8: "O"}
SYMBOLS = {v: k for k, v in ELEMENTS.items()}

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
        i, j, d = self.closest_pair()
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

    def closest_pair(self, block: int = 1024) -> tuple[int, int, float]:
        """``(i, j, distance)`` of the closest two atoms, minimum image (blockwise O(n²))."""
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


def read_structure(path: str | os.PathLike) -> Structure:
    """Read one structure from any file ``ase.io.read`` understands (extxyz, CIF, POSCAR, ...)."""
    try:
        import ase.io
    except ImportError:
        raise ConfigError("reading structure files needs ASE: pip install 'ednn-dask[reference]'."
                          ) from None
    if not Path(path).is_file():
        raise StructureError(f"no structure file at {str(path)!r}.")
    try:
        atoms = ase.io.read(path)
    except Exception as error:  # ase raises many kinds for unreadable files
        raise StructureError(f"ase.io cannot read {str(path)!r}: {error}") from None
    return Structure.from_ase(atoms)


def as_source(obj: Any) -> Any:
    """An ``ase.Atoms`` becomes a :class:`Structure`; sources pass through."""
    if hasattr(obj, "atoms_in_box"):
        return obj
    if hasattr(obj, "get_positions") and hasattr(obj, "get_cell"):
        return Structure.from_ase(obj)
    raise StructureError(
        f"cannot rasterize a {type(obj).__name__}: pass an ase.Atoms, an ednn_dask Structure, "
        f"a PorousSheet or an AtomsTable."
    )


def is_atoms(obj: Any) -> bool:
    """Whether ``obj`` is one structure or source (not an iterable of them)."""
    return hasattr(obj, "atoms_in_box") or hasattr(obj, "get_positions")


def species_counts(source: Any) -> dict[int, int]:
    """Atoms of each atomic number in a source's cell."""
    if hasattr(source, "species_counts"):
        return source.species_counts()
    lx, ly = source.cell[0, 0], source.cell[1, 1]
    _, numbers = source.atoms_in_box(0.0, lx, 0.0, ly)
    z, n = np.unique(numbers, return_counts=True)
    return {int(a): int(b) for a, b in zip(z, n)}
