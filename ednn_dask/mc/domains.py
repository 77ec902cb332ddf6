"""Domain-decomposed Monte Carlo of lattices too large for one process, on a Dask cluster.

The lattice is a dask array cut into regions, one task each. A *phase* shifts
the region boundaries by a random whole number of focus blocks (``da.roll``,
so the halos of the last phase move between workers through dask), and every
region then runs Metropolis sweeps over its *interior*: the sites at least
``focus + 2 context`` pixels from its edges, whose windows (every tile that
sees the site) lie inside the region. Interior sites of two regions are
further apart than any tile, so the regions' updates are independent and
exact: each region prices its flips with its own
:class:`~ednn_dask.mc.local.LocalEnergy` on the same focus blocks as the whole
lattice. The sites near the edges are held fixed during the phase and are
interior in later ones. Each phase leaves the Boltzmann distribution
invariant (Metropolis on a subset of sites, the rest fixed, the subset drawn
independently of the state), so the chain of phases samples it.

Random numbers come from ``(seed, phase, region)``, so a run does not depend on
which worker ran which region.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import time
from typing import Any

import numpy as np

from ednn_dask.compute import dask_client, progress_bar
from ednn_dask.errors import ConfigError
from ednn_dask.inference import contributions
from ednn_dask.mc.lattice import ChainResult, require_lattice_model
from ednn_dask.mc.local import LocalEnergy
from ednn_dask.model import TileModel, load_model

IN_FLIGHT = 4
"""Phases queued on the cluster ahead of the one whose measurements are read."""


def decomposed_ising_chain(
    model: TileModel | str | os.PathLike,
    side: int,
    temperature: float,
    phases: int,
    *,
    regions: int = 2,
    sweeps_per_phase: int = 1,
    thermalize: int | None = None,
    seed: int = 0,
    start: str = "random",
    client: Any = None,
    progress: bool = False,
) -> ChainResult:
    """Metropolis spin flips on a periodic ``side``^d lattice split into ``regions``^d tasks.

    Parameters
    ----------
    model : TileModel or path
        A periodic one-channel lattice model (spins ±1).
    phases : int
        Measured phases; one measurement (energy and magnetization per site) each.
    regions : int
        Regions per axis; each is ``side / regions`` sites, a multiple of the focus
        and more than twice ``focus + 2 context``.
    sweeps_per_phase : int
        Sweeps of each region's interior between shifts.
    thermalize : int, optional
        Phases before measuring; default ``phases // 5``.
    start : "random" or "up"
        The first lattice: random spins, or all +1 (ordered phases equilibrate fast).
    client : distributed.Client, scheduler address or None
        None starts a LocalCluster of one worker process per core.
    """
    import dask.array as da
    from dask import delayed

    model = load_model(model)
    spec = model.spec
    require_lattice_model(model)
    size, margin = region_size(side, regions, spec.focus, spec.context)
    if not (temperature > 0 and phases >= 1 and sweeps_per_phase >= 1):
        raise ConfigError(f"a chain needs temperature > 0, phases >= 1 and sweeps_per_phase >= 1;"
                          f" got {temperature}, {phases}, {sweeps_per_phase}.")
    if start not in ("random", "up"):
        raise ConfigError(f"start must be 'random' or 'up', not {start!r}.")
    ndim, focus = spec.ndim, np.array(spec.focus)
    rng = np.random.default_rng(seed)
    shape = (side,) * ndim
    spins = (rng.choice(np.float32([-1, 1]), size=shape) if start == "random"
             else np.ones(shape, np.float32))
    energy = float(contributions(spins, model).sum(dtype=np.float64))
    thermalize = phases // 5 if thermalize is None else thermalize
    e_series, m_series = np.empty(phases), np.empty(phases)
    accepted = attempted = 0
    with dask_client(client, processes=True, threads_per_worker=1) as client_:
        lattice = client_.persist(da.from_array(spins, chunks=size))
        bar = progress_bar(thermalize + phases, progress, "Monte Carlo", "phase")
        in_flight: list[list] = []  # stats futures of phases submitted, not yet read
        t0 = time.perf_counter()
        for phase in range(thermalize + phases):
            shift = tuple(int(rng.integers(0, size // f)) * f for f in focus)
            rolled = da.roll(lattice, [-s for s in shift], axis=tuple(range(ndim)))
            blocks = rolled.rechunk(size, method="tasks").to_delayed()
            updated = client_.compute([
                delayed(_sweep_interior, pure=True)(block, model, temperature, sweeps_per_phase,
                                                    margin, (seed, phase, *index))
                for index, block in np.ndenumerate(blocks)])
            new = _assemble(updated, blocks.shape, (size,) * ndim)
            back = da.roll(new, shift, axis=tuple(range(ndim)))
            lattice = client_.persist(back.rechunk(size, method="tasks"))
            in_flight.append(client_.map(operator.itemgetter(1), updated, pure=False))
            # phases queue up on the cluster; read the oldest once enough are ahead of it
            while in_flight and (len(in_flight) > IN_FLIGHT or phase == thermalize + phases - 1):
                stats = np.array(client_.gather(in_flight.pop(0)))
                done = phase - len(in_flight)
                energy += float(stats[:, 0].sum())
                accepted += int(stats[:, 2].sum())
                attempted += int(stats[:, 3].sum())
                if done >= thermalize:
                    e_series[done - thermalize] = energy / spins.size
                    m_series[done - thermalize] = float(stats[:, 1].sum()) / spins.size
                bar.update(1)
        final = lattice.compute()
        seconds = time.perf_counter() - t0
        bar.close()
    full = float(contributions(final, model).sum(dtype=np.float64))
    return ChainResult(temperature, spins.size, e_series, m_series, accepted / max(attempted, 1),
                       attempted, seconds, energy - full,
                       {"regions": regions ** ndim, "region_side": size, "interior_margin": margin,
                        "sweeps_per_phase": sweeps_per_phase})


def region_size(side: int, regions: int, focus, context) -> tuple[int, int]:
    """The side of a region and the width of its fixed edge (``focus + 2 context``), checked."""
    margin = max(f + 2 * c for f, c in zip(focus, context, strict=True))
    size = side // regions if regions >= 1 else 0
    if (regions < 1 or side % regions or any(size % f for f in focus)
            or size <= 2 * margin):
        least = 2 * margin + 1
        raise ConfigError(
            f"a side of {side} does not split into {regions} regions per axis of a whole number "
            f"of focus blocks {tuple(focus)}, each more than {2 * margin} sites (twice "
            f"focus + 2 context) wide; choose regions dividing the side with side / regions "
            f">= {least}."
        )
    return size, margin


def _sweep_interior(block: np.ndarray, model: TileModel, temperature: float, sweeps: int,
                    margin: int, key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Metropolis sweeps of the interior sites of one region; its edges stay fixed."""
    rng = np.random.default_rng(list(key))
    spec = model.spec
    # periodic over the region: interior windows never reach the wrap
    local = LocalEnergy(block, model, boundary="periodic")
    spacing = [math.ceil((f + 2 * c) / f) * f for f, c in zip(spec.focus, spec.context,
                                                             strict=True)]
    interior = [np.arange(margin, n - margin) for n in block.shape]
    classes = []
    for offset in itertools.product(*[range(s) for s in spacing]):
        axes = [a[(a - margin) % s == o] for a, s, o in zip(interior, spacing, offset,
                                                            strict=True)]
        grid = np.meshgrid(*axes, indexing="ij")
        sites = np.stack([g.ravel() for g in grid], axis=1)
        if len(sites):
            classes.append(sites)
    start = local.energy
    accepted = attempted = 0
    for _ in range(sweeps):
        for k in rng.permutation(len(classes)):
            sites = classes[k]
            delta = local.propose_sites(sites, -local.field[(0, *sites.T)][:, None])
            accept = rng.random(len(sites)) < np.exp(-np.maximum(delta, 0) / temperature)
            local.accept_sites(accept)
            accepted += int(accept.sum())
            attempted += len(sites)
    stats = np.array([local.energy - start, local.field.sum(dtype=np.float64), accepted,
                      attempted])
    return local.field[0], stats


def _assemble(updated, grid_shape, block_shape):
    """The regions' new blocks (first items of the futures ``updated``) as one dask array."""
    import dask.array as da
    from dask import delayed

    arrays = np.empty(grid_shape, dtype=object)
    for index, future in zip(np.ndindex(*grid_shape), updated, strict=True):
        block = delayed(operator.itemgetter(0), pure=True)(future)
        arrays[index] = da.from_delayed(block, block_shape, dtype=np.float32)
    return da.block(arrays.tolist())
