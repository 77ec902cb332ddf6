"""Large atom sets on disk: a Zarr table binned in space, read region by region.

Layout (a Zarr v3 group): ``xy`` (n, 2) float64 positions in Å and ``numbers``
(n,) uint8, sorted by spatial bin (row-major over y then x bins of ``bin`` Å), and
``offsets`` (n_bins + 1,) so the atoms of bin ``k`` are rows
``offsets[k]:offsets[k + 1]``. A region reads only the rows of the bins it
touches: one contiguous slice per row of bins. The cell, periodicity and species
counts are attrs. Tables are written strip by strip into a hidden sibling and
renamed into place when complete, so an existing table is a finished one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ednn_dask.errors import StoreNotFoundError, StructureError
from ednn_dask.storage import atomic_output

FORMAT = "ednn-atoms-table/1"


class AtomsTable:
    """A binned atoms table opened lazily; a rasterization source (``atoms_in_box``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise StoreNotFoundError(f"no atoms table at {str(self.path)!r}.")
        group = zarr.open_group(self.path, mode="r", zarr_format=3)
        if group.attrs.get("format") != FORMAT:
            raise StoreNotFoundError(
                f"{str(self.path)!r} is a Zarr store but not an atoms table ({FORMAT})."
            )
        self.cell = np.asarray(group.attrs["cell"], dtype=float)
        self.pbc = tuple(group.attrs["pbc"])
        self.bin = float(group.attrs["bin"])
        self.shape = tuple(group.attrs["bins"])  # (nby, nbx)
        self.offsets = group["offsets"][:]
        self._xy, self._numbers = group["xy"], group["numbers"]
        self._counts = {int(k): v for k, v in group.attrs["species_counts"].items()}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"<AtomsTable {self.path} atoms={len(self)} cell={np.diag(self.cell)[:2].tolist()}>"

    def __reduce__(self):  # workers reopen the store instead of receiving arrays
        return AtomsTable, (self.path,)

    def species_counts(self) -> dict[int, int]:
        return dict(self._counts)

    def atoms_in_box(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Atoms (periodic images included) whose position lies in the box."""
        lx, ly = self.cell[0, 0], self.cell[1, 1]
        kx = range(math.floor(x0 / lx), math.ceil(x1 / lx)) if self.pbc[0] else [0]
        ky = range(math.floor(y0 / ly), math.ceil(y1 / ly)) if self.pbc[1] else [0]
        parts = [self._read(x0 - i * lx, x1 - i * lx, y0 - j * ly, y1 - j * ly, (i * lx, j * ly))
                 for i in kx for j in ky]
        if not parts:
            return np.zeros((0, 2)), np.zeros(0, np.int64)
        return (np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]).astype(np.int64))

    def _read(self, x0, x1, y0, y1, shift) -> tuple[np.ndarray, np.ndarray]:
        nby, nbx = self.shape
        bx0, bx1 = max(0, math.floor(x0 / self.bin)), min(nbx, math.floor(x1 / self.bin) + 1)
        by0, by1 = max(0, math.floor(y0 / self.bin)), min(nby, math.floor(y1 / self.bin) + 1)
        xy, numbers = [np.zeros((0, 2))], [np.zeros(0, np.uint8)]
        for by in range(by0, by1):
            start, stop = self.offsets[by * nbx + bx0], self.offsets[by * nbx + bx1]
            if stop > start:
                xy.append(self._xy[start:stop])
                numbers.append(self._numbers[start:stop])
        xy, numbers = np.concatenate(xy), np.concatenate(numbers)
        inside = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        return xy[inside] + shift, numbers[inside]


def write_atoms_table(
    path: str | os.PathLike, source: Any, *, bin: float = 50.0, overwrite: bool = False,
) -> AtomsTable:
    """Write the atoms of a source (Structure, PorousSheet, ...) strip by strip.

    Only one strip of ``bin`` Å (all x) is in memory at a time, so sheets far
    larger than memory can be written.
    """
    cell = np.asarray(source.cell, dtype=float)
    lx, ly = cell[0, 0], cell[1, 1]
    if bin <= 0:
        raise StructureError(f"bin must be a positive length in Å, got {bin}.")
    nbx, nby = math.ceil(lx / bin), math.ceil(ly / bin)
    with atomic_output(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        rows = 2**20  # 16 MiB chunks of positions
        xy_arr = group.create_array("xy", shape=(0, 2), chunks=(rows, 2), dtype="float64")
        z_arr = group.create_array("numbers", shape=(0,), chunks=(rows,), dtype="uint8")
        offsets, counts, n = [0], {}, 0
        for by in range(nby):
            xy, numbers = source.atoms_in_box(0.0, lx, by * bin, min((by + 1) * bin, ly))
            bx = np.minimum((xy[:, 0] // bin).astype(np.int64), nbx - 1)
            order = np.argsort(bx, kind="stable")
            xy, numbers, bx = xy[order], numbers[order], bx[order]
            xy_arr.append(xy)
            z_arr.append(numbers.astype(np.uint8))
            offsets += (n + np.searchsorted(bx, np.arange(1, nbx + 1))).tolist()
            n += len(numbers)
            for z, c in zip(*np.unique(numbers, return_counts=True)):
                counts[int(z)] = counts.get(int(z), 0) + int(c)
        group.create_array("offsets", data=np.asarray(offsets, np.int64))
        group.attrs.update({
            "format": FORMAT, "cell": cell.tolist(), "pbc": [bool(p) for p in source.pbc],
            "bin": bin, "bins": [nby, nbx], "n_atoms": n,
            "species_counts": {str(z): c for z, c in sorted(counts.items())},
        })
    return AtomsTable(path)
