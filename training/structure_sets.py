"""The atomistic data sets: reproducible iterators of training structures.

Structure ``k`` of a set depends only on ``(seed, k)``, so a set is extended,
resumed or split without generating the structures before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ednn_dask.atoms import PorousSheet, Structure
from ednn_dask.atoms.materials import TRAINING_CELLS, hexagonal_sheet


def hexagonal_structures(
    n: int,
    *,
    seed: int = 0,
    cells: tuple[int, int] = TRAINING_CELLS,
    start: int = 0,
    max_vacancies: int = 4,
    max_displacement: float = 0.1,
    max_sigma: float | None = None,
) -> Iterator[Structure]:
    """The hexagonal data set: structure ``k`` depends only on ``(seed, k)``.

    Kinds are drawn evenly among graphene, h-BN and hetero; 0..``max_vacancies``
    vacancies per training cell's worth of atoms; displacement radius uniform in
    [0, ``max_displacement``] Å, or with ``max_sigma`` Gaussian displacements of a
    per-coordinate sigma uniform in [0, ``max_sigma``] Å.
    """
    scale = cells[0] * cells[1] // (TRAINING_CELLS[0] * TRAINING_CELLS[1]) or 1
    for k in range(start, start + n):
        rng = np.random.default_rng([seed, k])
        kind = ("graphene", "hbn", "hetero")[int(rng.integers(3))]
        vacancies = int(rng.integers(0, max_vacancies * scale + 1))
        spread = float(rng.uniform(0, max_sigma or max_displacement))
        yield hexagonal_sheet(rng, kind, cells=cells, vacancies=vacancies,
                              **{"sigma" if max_sigma else "displacement": spread})


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
