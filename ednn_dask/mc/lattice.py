"""Metropolis Monte Carlo of spin lattices (the Ising models) with an EDNN as the energy.

A sweep visits the lattice one *colour class* at a time: the sites congruent to
one offset modulo a spacing ``S`` that is a multiple of the focus, at least
``focus + 2 * context`` and a divisor of the side. No two sites of a class share
an affected focus block or sit in each other's tiles, so their flips are
independent: the class is priced in one onnxruntime call
(:meth:`~ednn_dask.mc.local.LocalEnergy.propose_sites`) and each flip is
accepted with probability ``min(1, exp(-ΔE / T))``. Each class update leaves the
Boltzmann distribution invariant, so the sweep (classes in random order) does too.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.compute import progress_bar
from ednn_dask.errors import ConfigError
from ednn_dask.mc.local import LocalEnergy
from ednn_dask.mc.runs import CHECKPOINT_SECONDS, RunStore, restore_rng, rng_state
from ednn_dask.mc.stats import blocked_mean
from ednn_dask.model import TileModel, load_model


def colour_spacing(side: int, focus: int, context: int) -> int:
    """The smallest divisor of ``side`` that is a multiple of ``focus`` and >= focus + 2 context.

    ``side`` itself when there is none smaller (the sites are then visited one by one).
    """
    for spacing in range(focus, side + 1, focus):
        if spacing >= focus + 2 * context and side % spacing == 0:
            return spacing
    return side


@dataclass
class ChainResult:
    """Per-sweep measurements of one Markov chain at one temperature."""

    temperature: float
    sites: int
    energy: np.ndarray  # per site, one value per measured sweep
    magnetization: np.ndarray  # per site, signed
    acceptance: float
    moves: int
    seconds: float
    drift: float  # running total minus a full rescoring at the end (float rounding)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Means with blocking-analysis standard errors, specific heat, Binder cumulant."""
        e, se = blocked_mean(self.energy)
        m, sm = blocked_mean(np.abs(self.magnetization))
        m2, m4 = np.mean(self.magnetization**2), np.mean(self.magnetization**4)
        return {
            "temperature": self.temperature,
            "sites": self.sites,
            "sweeps": len(self.energy),
            "energy_per_site": e,
            "energy_per_site_sem": se,
            "abs_magnetization": m,
            "abs_magnetization_sem": sm,
            "specific_heat_per_site": self.sites * float(np.var(self.energy))
            / self.temperature**2,
            "binder_cumulant": float(1 - m4 / (3 * m2**2)) if m2 > 0 else math.nan,
            "acceptance": self.acceptance,
            "moves_per_second": self.moves / self.seconds if self.seconds else math.nan,
            "energy_drift": self.drift,
            **self.extra,
        }


def require_lattice_model(model: TileModel) -> None:
    """Refuse a model that is not a periodic one-channel lattice model (spins ±1)."""
    spec = model.spec
    if spec.channels != 1 or spec.boundary != "periodic" or spec.spacing is not None:
        raise ConfigError(f"model {model.name!r} is not a periodic one-channel lattice model "
                          f"(no pixel spacing); spin-flip Monte Carlo needs one, e.g. "
                          f"models/ising-2d-f1c1.onnx.")


class IsingChain:
    """Metropolis single spin flips on a periodic ``side``^d lattice, a colour class at a time.

    Parameters
    ----------
    model : TileModel or path
        A lattice model (one channel, periodic) whose input is the spins ±1.
    side, temperature
        Lattice side; temperature in the model's energy unit over k_B.
    seed : int
        Seeds the start (a random lattice unless ``spins`` is given) and the chain.
    """

    def __init__(self, model: TileModel | str | os.PathLike, side: int, temperature: float, *,
                 seed: int = 0, spins: np.ndarray | None = None, threads: int = 1):
        model = load_model(model)
        spec = model.spec
        require_lattice_model(model)
        if not (temperature > 0 and side >= 2):
            raise ConfigError(f"a chain needs temperature > 0 and side >= 2; got "
                              f"T = {temperature}, side = {side}.")
        self.model, self.temperature = model, temperature
        self.rng = np.random.default_rng(seed)
        shape = (side,) * spec.ndim
        if spins is None:
            spins = self.rng.choice(np.float32([-1, 1]), size=shape)
        self.local = LocalEnergy(spins, model, threads=threads)
        self.classes = _colour_classes(shape, spec.focus, spec.context)
        self.accepted = self.attempted = 0

    def sweep(self) -> None:
        """One flip attempt per site: the colour classes in random order."""
        local = self.local
        for k in self.rng.permutation(len(self.classes)):
            sites = self.classes[k]
            flipped = -local.field[(0, *sites.T)][:, None]
            delta = local.propose_sites(sites, flipped)
            accept = self.rng.random(len(sites)) < np.exp(-np.maximum(delta, 0) / self.temperature)
            local.accept_sites(accept)
            self.accepted += int(accept.sum())
            self.attempted += len(sites)

    @property
    def energy_per_site(self) -> float:
        return self.local.energy / self.local.field.size

    @property
    def magnetization(self) -> float:
        return float(self.local.field.mean(dtype=np.float64))

    def state(self) -> dict[str, Any]:
        """Everything the chain needs to continue bit for bit."""
        return {"field": self.local.field, "contributions": self.local.contributions,
                "local_energy": self.local.energy, "accepted": self.accepted,
                "attempted": self.attempted, "rng": rng_state(self.rng)}

    def restore(self, state: dict[str, Any]) -> None:
        self.local.field[...] = state["field"]
        self.local.contributions[...] = state["contributions"]
        self.local.energy = float(state["local_energy"])
        self.accepted, self.attempted = int(state["accepted"]), int(state["attempted"])
        self.rng = restore_rng(state["rng"])


def ising_chain(
    model: TileModel | str | os.PathLike,
    side: int,
    temperature: float,
    sweeps: int,
    *,
    thermalize: int | None = None,
    seed: int = 0,
    spins: np.ndarray | None = None,
    threads: int = 1,
) -> ChainResult:
    """Run a Metropolis chain of single spin flips (:class:`IsingChain`) in memory.

    ``sweeps`` measured sweeps (one flip attempt per site each) follow ``thermalize``
    sweeps (default ``sweeps // 5``).
    """
    if sweeps < 1:
        raise ConfigError(f"a chain needs sweeps >= 1; got {sweeps}.")
    chain = IsingChain(model, side, temperature, seed=seed, spins=spins, threads=threads)
    thermalize = sweeps // 5 if thermalize is None else thermalize
    return _Scan([chain], sweeps, thermalize).go()[0]


def _colour_classes(shape, focus, context) -> list[np.ndarray]:
    """The sites ``(K, ndim)`` of every colour class (offset modulo the spacing)."""
    spacing = [colour_spacing(n, f, c) for n, f, c in zip(shape, focus, context, strict=True)]
    classes = []
    for offset in itertools.product(*[range(s) for s in spacing]):
        axes = [np.arange(o, n, s) for o, n, s in zip(offset, shape, spacing, strict=True)]
        grid = np.meshgrid(*axes, indexing="ij")
        classes.append(np.stack([g.ravel() for g in grid], axis=1))
    return classes


def ising_scan(
    model: TileModel | str | os.PathLike,
    side: int,
    temperatures: list[float],
    sweeps: int,
    *,
    thermalize: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    threads: int = 1,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> list[dict[str, Any]]:
    """The summaries of one chain per temperature (seed ``seed + k`` for the k-th), in turn.

    With ``out``, a Zarr store of ``energy`` and ``magnetization`` per site
    (temperature, sweep) is written as the chains go, with their state: the same
    call again continues the scan bit for bit (:mod:`ednn_dask.mc.runs`).
    """
    if sweeps < 1 or not temperatures:
        raise ConfigError(f"a scan needs sweeps >= 1 and a temperature; got sweeps = {sweeps}, "
                          f"temperatures {temperatures}.")
    model = load_model(model)
    thermalize = sweeps // 5 if thermalize is None else thermalize
    chains = [IsingChain(model, side, t, seed=seed + k, threads=threads)
              for k, t in enumerate(temperatures)]
    scan = _Scan(chains, sweeps, thermalize, progress=progress,
                 checkpoint_seconds=checkpoint_seconds)
    if out is not None:
        config = {"kind": "ising", "model_sha256": model.sha256, "side": side,
                  "temperatures": [float(t) for t in temperatures], "sweeps": sweeps,
                  "thermalize": thermalize, "seed": seed}
        scan.attach(RunStore.open(out, scan_template(temperatures, sweeps), config,
                                  overwrite=overwrite))
    return [result.summary() for result in scan.go()]


class _Scan:
    """Chains run in turn, sweep by sweep, measured after thermalizing, checkpointed."""

    def __init__(self, chains: list[IsingChain], sweeps: int, thermalize: int, *,
                 progress: bool = False, checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.chains, self.sweeps, self.thermalize = chains, sweeps, thermalize
        self.progress, self.checkpoint_seconds = progress, checkpoint_seconds
        self.energy = np.full((len(chains), sweeps), np.nan)
        self.magnetization = np.full((len(chains), sweeps), np.nan)
        self.current = self.done = 0  # chain in progress, its sweeps so far
        self.seconds = [0.0] * len(chains)
        self.drift = [math.nan] * len(chains)
        self.store: RunStore | None = None

    def attach(self, store: RunStore) -> None:
        self.store = store
        state = store.load_state()
        if state is None:
            return
        self.current, self.done = int(state["current"]), int(state["done"])
        self.seconds, self.drift = list(state["seconds"]), list(state["drift"])
        for k, chain in enumerate(self.chains[:self.current]):
            chain.accepted, chain.attempted = state["counts"][k]
        if self.current < len(self.chains):
            self.chains[self.current].restore(state)
        self.energy[...] = store.group["energy"][...]
        self.magnetization[...] = store.group["magnetization"][...]

    def go(self) -> list[ChainResult]:
        per_chain = self.thermalize + self.sweeps
        bar = progress_bar(per_chain * len(self.chains), self.progress, "Monte Carlo", "sweep")
        bar.update(self.current * per_chain + self.done)
        last_save, written = time.perf_counter(), self._measured()
        while self.current < len(self.chains):
            chain = self.chains[self.current]
            t0 = time.perf_counter()
            chain.sweep()
            self.seconds[self.current] += time.perf_counter() - t0
            if self.done >= self.thermalize:
                self.energy[self.current, self.done - self.thermalize] = chain.energy_per_site
                self.magnetization[self.current, self.done - self.thermalize] = \
                    chain.magnetization
            self.done += 1
            bar.update(1)
            if self.done == per_chain:
                self.drift[self.current] = chain.local.drift()
                self.current, self.done = self.current + 1, 0
            if self.store is not None and (self.current == len(self.chains) or
                                           time.perf_counter() - last_save
                                           > self.checkpoint_seconds):
                written = self._save(written)
                last_save = time.perf_counter()
        bar.close()
        if self.store is not None:
            self.store.finish()
        return [ChainResult(chain.temperature, chain.local.field.size, self.energy[k],
                            self.magnetization[k], chain.accepted / max(chain.attempted, 1),
                            chain.attempted, self.seconds[k], self.drift[k])
                for k, chain in enumerate(self.chains)]

    def _measured(self) -> tuple[int, int]:
        """(chain, sweep) up to which measurements exist: everything before it."""
        return self.current, max(self.done - self.thermalize, 0)

    def _save(self, written: tuple[int, int]) -> tuple[int, int]:
        """Write the sweeps measured since ``written``, then commit the scan's state."""
        now = self._measured()
        for k in range(written[0], min(now[0], len(self.chains) - 1) + 1):
            start = written[1] if k == written[0] else 0
            stop = now[1] if k == now[0] else self.sweeps
            if stop > start:
                self.store.write_frames(start, {"energy": self.energy[k, start:stop],
                                                "magnetization": self.magnetization[k, start:stop]},
                                        index=(k,))
        active = self.chains[min(self.current, len(self.chains) - 1)]
        self.store.save_state(active.state() | {
            "current": self.current, "done": self.done, "seconds": self.seconds,
            "drift": self.drift, "counts": [[c.accepted, c.attempted] for c in self.chains],
            "frames_done": self.current * self.sweeps + now[1]})
        return now


def scan_template(temperatures: list[float], sweeps: int) -> xr.Dataset:
    """The lazy, all-NaN store of a scan: per-site energy and magnetization per sweep."""
    import dask.array as da

    shape, chunks = (len(temperatures), sweeps), (1, min(sweeps, 1 << 16))
    return xr.Dataset(
        {"energy": (("temperature", "sweep"), da.full(shape, np.nan, chunks=chunks),
                    {"long_name": "energy per site (model's unit)"}),
         "magnetization": (("temperature", "sweep"), da.full(shape, np.nan, chunks=chunks),
                           {"long_name": "magnetization per site"})},
        coords={"temperature": np.asarray(temperatures, dtype=np.float64),
                "sweep": np.arange(sweeps)},
    )
