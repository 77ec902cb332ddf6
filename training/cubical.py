"""The cubical complex of a binary image: its cells, counted voxel by voxel.

The pore space (pixels of 1) of a 2-D or 3-D image is read as a cubical complex:
the pore voxels are its vertices, two face neighbours an edge, a 2x2 block of pore
voxels a square, a 2x2x2 block a cube. Every cell is anchored at its corner of lowest
index, so counting the ``2^d`` kinds of cells anchored at each voxel counts the
complex once; volume, interface area and Euler characteristic are integer
combinations of those counts (:func:`functionals`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def cells(ndim: int) -> list[tuple[int, ...]]:
    """The cells of the unit cube that contain its first corner, as the axes they span.

    ``()`` is the voxel itself, ``(a,)`` the edge to its neighbour along axis ``a``,
    two axes a square, three a cube; ordered by dimension.

    >>> cells(2)
    [(), (0,), (1,), (0, 1)]
    """
    return [c for k in range(ndim + 1) for c in itertools.combinations(range(ndim), k)]


def cell_counts(pore: np.ndarray, periodic: bool = True) -> np.ndarray:
    """How many cells of each kind (:func:`cells`) the pore space of a volume holds.

    A cell counts when all its corner voxels are pore. ``periodic``: the volume wraps
    around; otherwise it is taken as surrounded by solid.

    >>> cell_counts(np.ones((3, 3), np.uint8)).tolist()  # a periodic 3x3 all-pore square
    [9, 9, 9, 9]
    """
    p = np.asarray(pore).astype(bool, copy=False)
    padded = np.pad(p, [(0, 1)] * p.ndim, mode="wrap" if periodic else "constant")
    if not periodic:
        padded = np.pad(padded, [(1, 0)] * p.ndim)
    return anchored_counts(padded)


def anchored_counts(padded: np.ndarray) -> np.ndarray:
    """:func:`cell_counts` of the cells anchored at every voxel of ``padded[:-1, ...]``.

    ``padded`` holds one voxel more than the anchors at the high end of every axis,
    so a chunk with that halo counts its own cells and no other chunk's.
    """
    p = padded.astype(bool, copy=False)
    nd = p.ndim
    shape = tuple(n - 1 for n in p.shape)
    counts = []
    for axes in cells(nd):
        product = np.ones(shape, bool)
        for offset in itertools.product(*((0, 1) if a in axes else (0,) for a in range(nd))):
            product &= p[tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))]
        counts.append(np.count_nonzero(product))
    return np.array(counts, np.int64)


def functionals(counts: np.ndarray, spacing: float = 1.0) -> dict[str, float]:
    """Pore volume, interface area and Euler characteristic from the cell counts.

    With periodic boundaries every pore voxel has ``2 d`` faces, and each pore-pore edge
    hides two of them, so the interface counts ``sum_a 2 (voxels - edges_a)`` faces.

    >>> functionals(cell_counts(np.pad(np.ones((2, 2, 2)), 1)), spacing=1.0)
    {'volume': 8.0, 'area': 24.0, 'euler': 1}
    """
    counts = np.asarray(counts, np.int64)
    nd = int(round(math.log2(len(counts))))
    kinds = cells(nd)
    voxels = int(counts[0])
    edges = [int(counts[kinds.index((a,))]) for a in range(nd)]
    euler = sum((-1) ** len(axes) * int(n) for axes, n in zip(kinds, counts, strict=True))
    return {"volume": voxels * spacing**nd,
            "area": 2 * sum(voxels - e for e in edges) * spacing ** (nd - 1),
            "euler": int(euler)}
