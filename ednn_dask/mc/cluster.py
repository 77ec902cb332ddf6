"""Wolff cluster moves for an EDNN lattice energy: an Ising surrogate proposes, the EDNN decides.

Near the critical point single-spin Metropolis slows down critically (the
autocorrelation time grows as ``L^2.17`` sweeps in 2-D). Wolff clusters do not,
but the Wolff rule is exact only for the nearest-neighbour Ising energy ``E_I``.
Here a Wolff cluster of the Ising model (bond probability
``p = 1 - exp(-2 J / T)``) is only a *proposal*, and a Metropolis-Hastings step
corrects it to the EDNN energy ``E``::

    accept with probability  min(1, exp(-(ΔE - ΔE_I) / T))

**Why this is exact.** Fix a configuration ``x`` and a cluster ``C`` of equal
spins; ``x'`` is ``x`` with ``C`` flipped. The probability of growing exactly
``C`` from ``x`` is ``(|C| / N) p^a (1 - p)^(b(x))``: the seed is one of the
``|C|`` sites of ``C``, ``a`` counts the bonds of the cluster's spanning
activations (the same whichever way round, since the spins inside ``C`` stay
aligned after the flip) and ``b(x)`` counts the *satisfied* bonds between ``C``
and its outside, each of which was tried and refused (probability ``1 - p``).
Flipping ``C`` turns the satisfied boundary bonds of ``x`` into the unsatisfied
ones of ``x'`` and back, so the ratio of the proposal probabilities is::

    q(x' -> x) / q(x -> x') = (1 - p)^(b(x') - b(x)) = exp(-2 J (b(x') - b(x)) / T)
                            = exp(+ΔE_I / T),      ΔE_I = E_I(x') - E_I(x) = 2 J (b(x) - b(x'))

and the Metropolis-Hastings acceptance for the target ``exp(-E / T)`` is
``min(1, exp(-ΔE / T) q(x' -> x) / q(x -> x')) = min(1, exp(-(ΔE - ΔE_I) / T))``.
The chain therefore samples the Boltzmann distribution of the EDNN energy
exactly, whatever the network's error; the network's distance from the Ising
energy only lowers the acceptance (it is exactly 1 for an exact Ising EDNN).

The EDNN change of a cluster is priced by :class:`~ednn_dask.mc.local.LocalEnergy`:
either as one :class:`~ednn_dask.mc.local.Change` on the cluster's (periodic)
bounding box (:meth:`~ednn_dask.mc.local.LocalEnergy.propose`, one dense
onnxruntime call; the box may be the whole lattice), or, when the cluster
is sparse in its box, by rescoring only the focus blocks whose tiles hold a
cluster site, one tile each in one batched call, whichever touches fewer pixels.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ednn_dask.errors import ConfigError
from ednn_dask.mc.lattice import ChainResult
from ednn_dask.mc.local import Change, LocalEnergy
from ednn_dask.mc.runs import restore_rng, rng_state
from ednn_dask.model import TileModel, load_model

DENSE_COST = 0.5
"""Cost of a pixel of a dense bounding-box window relative to a single-tile window.

Measured on the shipped Ising models (one onnxruntime thread): a dense convolution
costs about half as much per output block as a batch of separate 3^d tiles."""


@numba.njit(cache=False)
def _grow(spins, neighbours, p_add, rng, stamp, generation, stack):  # pragma: no cover - numba
    """Grow one Wolff cluster from a uniform seed; ``stack[:size]`` holds its sites.

    Returns ``(size, outside)``: ``outside`` is the sum of ``s_i s_j`` over the bonds
    from the cluster to the rest (``ΔE_I = 2 J outside`` when the cluster flips).
    """
    n = spins.shape[0]
    seed = rng.integers(0, n)
    value = spins[seed]
    stamp[seed] = generation
    stack[0] = seed
    size, head = 1, 0
    while head < size:
        site = stack[head]
        head += 1
        for k in range(neighbours.shape[1]):
            j = neighbours[site, k]
            if stamp[j] != generation and spins[j] == value and rng.random() < p_add:
                stamp[j] = generation
                stack[size] = j
                size += 1
    outside = 0.0
    for i in range(size):
        site = stack[i]
        for k in range(neighbours.shape[1]):
            j = neighbours[site, k]
            if stamp[j] != generation:
                outside += value * spins[j]
    return size, outside


@numba.njit(cache=False)
def _geometry(cluster, shape, focus, context, grid, marks, occupied):  # pragma: no cover
    """The focus blocks a cluster's pixels affect, and its periodic bounding box.

    ``blocks`` (sorted flat indices into the block grid) are those whose tiles hold a
    cluster pixel; ``lo``, ``box`` per axis are the start and length of the shortest
    periodic interval holding the cluster's coordinates. ``marks`` (one per block) and
    ``occupied`` (``ndim x max(shape)``) are scratch, all False on entry and on return.
    """
    ndim = shape.shape[0]
    found = np.empty(marks.shape[0], np.int64)
    count = 0
    first = np.empty(ndim, np.int64)
    reach = np.empty(ndim, np.int64)
    offset = np.empty(ndim, np.int64)
    for site in cluster:
        rest = site
        for axis in range(ndim - 1, -1, -1):
            p = rest % shape[axis]
            rest //= shape[axis]
            occupied[axis, p] = True
            first[axis] = (p - context[axis]) // focus[axis]
            reach[axis] = -((-(p + 1 + context[axis])) // focus[axis]) - first[axis]
            offset[axis] = 0
        while True:
            flat = 0
            for axis in range(ndim):
                flat = flat * grid[axis] + (first[axis] + offset[axis]) % grid[axis]
            if not marks[flat]:
                marks[flat] = True
                found[count] = flat
                count += 1
            axis = ndim - 1
            while axis >= 0:
                offset[axis] += 1
                if offset[axis] < reach[axis]:
                    break
                offset[axis] = 0
                axis -= 1
            if axis < 0:
                break
    blocks = np.sort(found[:count])
    for k in range(count):
        marks[blocks[k]] = False
    lo = np.empty(ndim, np.int64)
    box = np.empty(ndim, np.int64)
    for axis in range(ndim):
        n = shape[axis]
        start = -1
        for p in range(n):
            if occupied[axis, p]:
                start = p
                break
        # the longest run of empty coordinates, circularly; the box starts after it
        best, best_end, run = 0, start, 0
        for k in range(1, n + 1):
            p = (start + k) % n
            if occupied[axis, p]:
                if run > best:
                    best, best_end = run, p
                run = 0
            else:
                run += 1
        lo[axis] = best_end if best > 0 else 0
        box[axis] = n - best
        for p in range(n):
            occupied[axis, p] = False
    return blocks, lo, box


def neighbour_table(shape: tuple[int, ...]) -> np.ndarray:
    """``(N, 2 ndim)`` int32: the flat (C-order) indices of each site's periodic neighbours."""
    index = np.arange(math.prod(shape)).reshape(shape)
    columns = [np.roll(index, shift, axis).ravel() for axis in range(len(shape))
               for shift in (-1, 1)]
    return np.stack(columns, axis=1).astype(np.int32)


def periodic_bbox(coords: np.ndarray, size: int) -> tuple[int, int]:
    """``(lo, length)`` of the shortest periodic interval holding every coordinate."""
    occupied = np.flatnonzero(np.bincount(coords, minlength=size))
    gaps = np.diff(np.append(occupied, occupied[0] + size)) - 1
    k = int(np.argmax(gaps))
    if gaps[k] == 0:
        return 0, size
    return int(occupied[(k + 1) % len(occupied)]), size - int(gaps[k])


def ising_wolff(spins: np.ndarray, temperature: float, sweeps: float, *,
                rng: np.random.Generator | int = 0, coupling: float = 1.0) -> np.ndarray:
    """Plain Wolff updates of the nearest-neighbour Ising model (no EDNN), for a start.

    Flips clusters until ``sweeps * N`` spins have flipped; returns the new spins
    (float32). A cheap way to bring a random start near equilibrium before the
    corrected chain (:class:`WolffChain`) takes over; the start does not bias that chain.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    flat = np.array(spins, dtype=np.float32).reshape(-1)
    neighbours = neighbour_table(np.shape(spins))
    stamp, stack = np.zeros(flat.size, np.int64), np.empty(flat.size, np.int64)
    p_add = -math.expm1(-2.0 * coupling / temperature)
    flipped, generation = 0, 0
    while flipped < sweeps * flat.size:
        generation += 1
        size, _ = _grow(flat, neighbours, p_add, rng, stamp, generation, stack)
        flat[stack[:size]] *= -1
        flipped += size
    return flat.reshape(np.shape(spins))


@dataclass
class ClusterStep:
    """One proposal: the cluster's size, the Ising and EDNN energy changes, the decision."""

    size: int
    delta_ising: float
    delta: float
    accepted: bool
    dense: bool  # priced as one Change on the bounding box (else tile by tile)


class WolffChain:
    """A Markov chain of Wolff cluster proposals corrected to an EDNN energy (see the module).

    Parameters
    ----------
    model : TileModel or path
        A periodic one-channel lattice model whose input is the spins ±1.
    spins : ndarray
        The start, ``(*lattice)`` of ±1.
    temperature : float
        In the model's energy unit over k_B.
    rng : numpy.random.Generator or int
        The chain's random numbers (a seed makes a PCG64 generator).
    coupling : float
        ``J`` of the Ising surrogate (proposal only; the target is the EDNN).
    threads : int
        onnxruntime intra-op threads.
    """

    def __init__(self, model: TileModel | str | os.PathLike, spins: np.ndarray,
                 temperature: float, *, rng: np.random.Generator | int = 0,
                 coupling: float = 1.0, threads: int = 1):
        model = load_model(model)
        spec = model.spec
        if spec.channels != 1 or spec.boundary != "periodic" or spec.spacing is not None:
            raise ConfigError(f"model {model.name!r} is not a periodic one-channel lattice "
                              f"model (no pixel spacing); cluster Monte Carlo needs one, e.g. "
                              f"models/ising-2d-f1c1.onnx.")
        spins = np.asarray(spins, dtype=np.float32)
        if spins.ndim != spec.ndim or not np.all(np.abs(spins) == 1):
            raise ConfigError(f"the spins must be a {spec.ndim}-d array of ±1; got shape "
                              f"{spins.shape}.")
        if not (temperature > 0 and coupling > 0):
            raise ConfigError(f"a cluster chain needs temperature > 0 and coupling > 0; got "
                              f"T = {temperature}, J = {coupling}.")
        self.model, self.temperature, self.coupling = model, float(temperature), float(coupling)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.local = LocalEnergy(spins, model, threads=threads)
        self.p_add = -math.expm1(-2.0 * coupling / temperature)
        shape = self.shape
        self._flat = self.local.field.reshape(-1)  # a view: the kernel reads the live spins
        self._neighbours = neighbour_table(shape)
        self._stamp = np.zeros(self._flat.size, np.int64)
        self._stack = np.empty(self._flat.size, np.int64)
        self._generation = 0
        tiling = self.local.tiling
        self._grid = tuple(n // f for n, f in zip(shape, tiling.focus, strict=True))
        self._shape, self._grid_array = np.array(shape, np.int64), np.array(self._grid, np.int64)
        self._focus = np.array(tiling.focus, np.int64)
        self._context = np.array(tiling.context, np.int64)
        self._tiling_axes = (tiling.focus, tiling.context, self._grid)
        self._marks = np.zeros(self.local.contributions.size, bool)
        self._occupied = np.zeros((len(shape), max(shape)), bool)
        self._offsets = [np.arange(-c, f + c) for f, c in zip(tiling.focus, tiling.context,
                                                                strict=True)]
        self.magnetization_total = int(np.rint(spins.sum(dtype=np.float64)))
        self.steps = self.accepted = self.flipped = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.local.shape

    @property
    def sites(self) -> int:
        return self._flat.size

    @property
    def energy(self) -> float:
        """The EDNN energy (running float64 total of the block contributions)."""
        return self.local.energy

    def grow(self) -> tuple[np.ndarray, float]:
        """A Wolff cluster of the Ising surrogate: its flat site indices and ΔE_I of flipping it."""
        self._generation += 1
        size, outside = _grow(self._flat, self._neighbours, self.p_add, self.rng, self._stamp,
                              self._generation, self._stack)
        return self._stack[:size].copy(), 2.0 * self.coupling * outside

    def step(self) -> ClusterStep:
        """Propose one cluster flip and accept it with ``min(1, exp(-(ΔE - ΔE_I) / T))``."""
        cluster, delta_ising = self.grow()
        blocks, lo, box = _geometry(cluster, self._shape, self._focus, self._context,
                                    self._grid_array, self._marks, self._occupied)
        lo, box = tuple(lo.tolist()), tuple(box.tolist())
        window = 1
        for a, b, f, c, g in zip(lo, box, *self._tiling_axes, strict=True):
            window *= min(math.ceil((a + b + c) / f) - math.floor((a - c) / f), g) * f + 2 * c
        dense = DENSE_COST * window <= len(blocks)
        if dense:
            coords = np.unravel_index(cluster, self.shape)
            values = self.local.field[(0, *np.ix_(*[np.arange(a, a + b) % n for a, b, n in
                                                    zip(lo, box, self.shape, strict=True)]))]
            inside = tuple((c - a) % n for c, a, n in zip(coords, lo, self.shape, strict=True))
            values[inside] *= -1
            (proposal,) = self.local.propose([Change(lo, values)])
            delta = proposal.delta
        else:
            new, delta = self._price_tiles(cluster, blocks)
        excess = delta - delta_ising
        accepted = bool(self.rng.random() < math.exp(-max(excess, 0.0) / self.temperature))
        if accepted:
            if dense:
                self.local.accept(proposal)
            else:
                self._flat[cluster] *= -1
                self.local.contributions[np.unravel_index(blocks, self._grid)] = new
                self.local.energy += delta
            self.magnetization_total += 2 * int(self._flat[cluster[0]]) * len(cluster)  # flipped
            self.accepted += 1
            self.flipped += len(cluster)
        self.steps += 1
        return ClusterStep(len(cluster), delta_ising, delta, accepted, dense)

    def _price_tiles(self, cluster: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, float]:
        """New contributions of ``blocks`` (one tile each) with the cluster flipped, and ΔE."""
        tiling = self.local.tiling
        block_coords = np.unravel_index(blocks, self._grid)
        ndim = len(self.shape)
        index = []
        for axis, (b, f, n, offsets) in enumerate(zip(block_coords, tiling.focus, self.shape,
                                                      self._offsets, strict=True)):
            shape = [1] * (ndim + 1)
            shape[0], shape[axis + 1] = -1, len(offsets)
            index.append(((b[:, None] * f + offsets) % n).reshape(shape))
        field = self.local.field[0]
        self._flat[cluster] *= -1  # flipped while the tiles are copied, then restored exactly
        try:
            windows = field[tuple(index)][:, np.newaxis]
        finally:
            self._flat[cluster] *= -1
        model = self.model
        new = model.run(model.scale_input(windows), self.local.threads).reshape(len(blocks))
        old = self.local.contributions[np.unravel_index(blocks, self._grid)]
        return new, float(new.sum(dtype=np.float64) - old.sum(dtype=np.float64))

    def run(self, steps: int) -> dict[str, np.ndarray]:
        """``steps`` proposals; after each, ``energy`` (the EDNN energy per site),
        ``energy_total``, ``magnetization`` (per site), ``magnetization_total`` (the sum of
        the spins), ``size`` (the proposed cluster's sites) and ``accepted``."""
        total, magnetization = np.empty(steps), np.empty(steps, np.int64)
        size, accepted = np.empty(steps, np.int64), np.empty(steps, bool)
        for k in range(steps):
            s = self.step()
            size[k], accepted[k] = s.size, s.accepted
            total[k], magnetization[k] = self.local.energy, self.magnetization_total
        n = self.sites
        return {"energy": total / n, "energy_total": total, "magnetization": magnetization / n,
                "magnetization_total": magnetization, "size": size, "accepted": accepted}

    def state(self) -> dict[str, Any]:
        """Everything that determines the chain's future, for :meth:`restore` (bit for bit)."""
        return {"spins": self.local.field[0].astype(np.int8),
                "contributions": self.local.contributions.copy(),
                "energy": self.local.energy,
                "rng": rng_state(self.rng),
                "temperature": self.temperature, "coupling": self.coupling,
                "steps": self.steps, "accepted": self.accepted, "flipped": self.flipped}

    @classmethod
    def restore(cls, model: TileModel | str | os.PathLike, state: dict[str, Any], *,
                threads: int = 1) -> WolffChain:
        """The chain that :meth:`state` described: same spins, running energy and random stream."""
        chain = cls(model, state["spins"], state["temperature"], rng=restore_rng(state["rng"]),
                    coupling=state["coupling"], threads=threads)
        contributions = np.asarray(state["contributions"], np.float32)
        if contributions.shape != chain.local.contributions.shape:
            raise ConfigError(f"a saved chain's contributions {contributions.shape} do not fit "
                              f"its spins {chain.shape} under model {chain.model.name!r}.")
        chain.local.contributions[...] = contributions  # the running total, not a rescoring
        chain.local.energy = float(state["energy"])
        chain.steps, chain.accepted = int(state["steps"]), int(state["accepted"])
        chain.flipped = int(state["flipped"])
        return chain


def wolff_chain(
    model: TileModel | str | os.PathLike,
    side: int,
    temperature: float,
    steps: int,
    *,
    thermalize: int | None = None,
    seed: int = 0,
    spins: np.ndarray | None = None,
    coupling: float = 1.0,
    threads: int = 1,
) -> ChainResult:
    """Run a chain of Wolff proposals corrected to the EDNN on a periodic ``side``^d lattice.

    Like :func:`~ednn_dask.mc.lattice.ising_chain` with one cluster step in place of a
    sweep: ``energy`` and ``magnetization`` are per site after each measured step,
    ``acceptance`` that of the correction step, ``moves`` the measured steps.
    ``thermalize`` (default ``steps // 5``) steps come first, unmeasured.
    """
    model = load_model(model)
    if not (steps >= 1 and side >= 2):
        raise ConfigError(f"a chain needs steps >= 1 and side >= 2; got steps = {steps}, "
                          f"side = {side}.")
    rng = np.random.default_rng(seed)
    if spins is None:
        spins = rng.choice(np.float32([-1, 1]), size=(side,) * model.spec.ndim)
    chain = WolffChain(model, spins, temperature, rng=rng, coupling=coupling, threads=threads)
    chain.run(steps // 5 if thermalize is None else thermalize)
    accepted, flipped = chain.accepted, chain.flipped
    t0 = time.perf_counter()
    out = chain.run(steps)
    seconds = time.perf_counter() - t0
    sizes = out["size"]
    extra = {"cluster_steps": steps, "mean_cluster_size": float(sizes.mean()),
             "mean_cluster_fraction": float(sizes.mean() / chain.sites),
             "sweeps_equivalent": (chain.flipped - flipped) / chain.sites,
             "proposals_accepted": chain.accepted - accepted}
    return ChainResult(temperature, chain.sites, out["energy"], out["magnetization"],
                       float(out["accepted"].mean()), steps, seconds, chain.local.drift(), extra)
