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
from ednn_dask.mc.lattice import ChainResult, require_lattice_model, scan_template
from ednn_dask.mc.local import LocalEnergy
from ednn_dask.mc.runs import CHECKPOINT_SECONDS, RunStore, restore_rng, rng_state
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
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
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
    out : path, optional
        A Zarr store of the per-phase ``energy`` and ``magnetization`` (one
        temperature row), with the chain's state every ``checkpoint_seconds``: the
        lattice (written by the workers), the counters and the random generator. The
        same call again continues the chain bit for bit; another run's store is
        refused unless ``overwrite``.
    """
    model = load_model(model)
    spec = model.spec
    require_lattice_model(model)
    size, margin = region_size(side, regions, spec.focus, spec.context)
    if not (temperature > 0 and phases >= 1 and sweeps_per_phase >= 1):
        raise ConfigError(f"a chain needs temperature > 0, phases >= 1 and sweeps_per_phase >= 1;"
                          f" got {temperature}, {phases}, {sweeps_per_phase}.")
    if start not in ("random", "up"):
        raise ConfigError(f"start must be 'random' or 'up', not {start!r}.")
    thermalize = phases // 5 if thermalize is None else thermalize
    chain = _LatticeChain(model, side, temperature, phases, thermalize, size, margin,
                          sweeps_per_phase, seed, start)
    if out is not None:
        config = {"kind": "ising-decomposed", "model_sha256": model.sha256, "side": side,
                  "temperatures": [float(temperature)], "sweeps": phases,
                  "thermalize": thermalize, "regions": regions,
                  "sweeps_per_phase": sweeps_per_phase, "seed": seed, "start": start}
        chain.store = RunStore.open(out, scan_template([temperature], phases), config,
                                    overwrite=overwrite)
    with dask_client(client, processes=True, threads_per_worker=1) as client_:
        return chain.go(client_, progress, checkpoint_seconds)


class _LatticeChain:
    """The phase loop of one decomposed chain: the lattice on the cluster, counters here.

    Phases are queued ``IN_FLIGHT`` ahead of the one whose measurements are read; a
    checkpoint first reads them all, so the saved state is that after a whole phase.
    """

    def __init__(self, model, side, temperature, phases, thermalize, size, margin, sweeps,
                 seed, start):
        self.model, self.side, self.temperature = model, side, temperature
        self.phases, self.thermalize, self.size, self.margin = phases, thermalize, size, margin
        self.sweeps, self.seed, self.start = sweeps, seed, start
        self.sites = side ** model.spec.ndim
        self.rng = np.random.default_rng(seed)
        self.energy_series, self.m_series = np.full(phases, np.nan), np.full(phases, np.nan)
        self.counts = {"read": 0, "energy": 0.0, "accepted": 0, "attempted": 0, "seconds": 0.0}
        self.store: RunStore | None = None
        self.in_flight: list[list] = []  # stats futures of phases submitted, not yet read

    def go(self, client, progress: bool, checkpoint_seconds: float) -> ChainResult:
        import dask.array as da
        from dask import delayed

        lattice = self._start(client)
        total, counts = self.thermalize + self.phases, self.counts
        bar = progress_bar(total, progress, "Monte Carlo", "phase")
        bar.update(counts["read"])
        submitted, written = counts["read"], self._measured()
        last_save = t0 = time.perf_counter()
        focus, ndim = self.model.spec.focus, self.model.spec.ndim
        while counts["read"] < total:
            if submitted < total:
                shift = tuple(int(self.rng.integers(0, self.size // f)) * f for f in focus)
                rolled = da.roll(lattice, [-s for s in shift], axis=tuple(range(ndim)))
                blocks = rolled.rechunk(self.size, method="tasks").to_delayed()
                updated = client.compute([
                    delayed(_sweep_interior, pure=True)(block, self.model, self.temperature,
                                                        self.sweeps, self.margin,
                                                        (self.seed, submitted, *index))
                    for index, block in np.ndenumerate(blocks)])
                new = assemble_regions(updated, blocks.shape, (self.size,) * ndim)
                back = da.roll(new, shift, axis=tuple(range(ndim)))
                lattice = client.persist(back.rechunk(self.size, method="tasks"))
                self.in_flight.append(client.map(operator.itemgetter(1), updated, pure=False))
                submitted += 1
            save = self.store is not None and (submitted == total or time.perf_counter()
                                               - last_save > checkpoint_seconds)
            # phases queue up on the cluster; read the oldest once enough are ahead of it
            while self.in_flight and (len(self.in_flight) > IN_FLIGHT or save
                                      or submitted == total):
                self._read(client.gather(self.in_flight.pop(0)))
                bar.update(1)
            if save:
                counts["seconds"] += time.perf_counter() - t0
                written = self._save(lattice, written)
                last_save = t0 = time.perf_counter()
        counts["seconds"] += time.perf_counter() - t0
        bar.close()
        final = lattice.compute()
        if self.store is not None:
            self.store.finish()
        full = float(contributions(final, self.model).sum(dtype=np.float64))
        return ChainResult(self.temperature, self.sites, self.energy_series, self.m_series,
                           counts["accepted"] / max(counts["attempted"], 1), counts["attempted"],
                           counts["seconds"], counts["energy"] - full,
                           {"regions": (self.side // self.size) ** self.model.spec.ndim,
                            "region_side": self.size, "interior_margin": self.margin,
                            "sweeps_per_phase": self.sweeps})

    def _start(self, client):
        """The lattice on the cluster: the first one, or the store's last committed state."""
        import dask.array as da

        state = None if self.store is None else self.store.load_state(lazy=("lattice",))
        if state is None:
            shape = (self.side,) * self.model.spec.ndim
            spins = (self.rng.choice(np.float32([-1, 1]), size=shape) if self.start == "random"
                     else np.ones(shape, np.float32))
            self.counts["energy"] = float(contributions(spins, self.model).sum(dtype=np.float64))
            return client.persist(da.from_array(spins, chunks=self.size))
        self.rng = restore_rng(state["rng"])
        self.counts = {k: state[k] for k in self.counts}
        measured = self._measured()
        self.energy_series[:measured] = self.store.group["energy"][0, :measured]
        self.m_series[:measured] = self.store.group["magnetization"][0, :measured]
        return client.persist(state["lattice"])

    def _read(self, stats: list) -> None:
        """Take in the regions' statistics of the oldest phase still queued."""
        stats, counts = np.array(stats), self.counts
        counts["energy"] += float(stats[:, 0].sum())
        counts["accepted"] += int(stats[:, 2].sum())
        counts["attempted"] += int(stats[:, 3].sum())
        frame = counts["read"] - self.thermalize
        if frame >= 0:
            self.energy_series[frame] = counts["energy"] / self.sites
            self.m_series[frame] = float(stats[:, 1].sum()) / self.sites
        counts["read"] += 1

    def _measured(self) -> int:
        return max(self.counts["read"] - self.thermalize, 0)

    def _save(self, lattice, written: int) -> int:
        """Write the phases measured since ``written``, then commit the chain's state."""
        now = self._measured()
        if now > written:
            self.store.write_frames(written, {"energy": self.energy_series[written:now],
                                              "magnetization": self.m_series[written:now]},
                                    index=(0,))
        self.store.save_state({"lattice": lattice, "rng": rng_state(self.rng),
                               "frames_done": now, **self.counts})
        return now


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


def assemble_regions(updated, grid_shape, block_shape):
    """The regions' new blocks (first items of the futures ``updated``, in row-major order
    over ``grid_shape``) as one dask array; blocks may carry leading axes (channels)."""
    import dask.array as da
    from dask import delayed

    arrays = np.empty(grid_shape, dtype=object)
    for index, future in zip(np.ndindex(*grid_shape), updated, strict=True):
        block = delayed(operator.itemgetter(0), pure=True)(future)
        arrays[index] = da.from_delayed(block, block_shape, dtype=np.float32)
    return da.block(arrays.tolist())
