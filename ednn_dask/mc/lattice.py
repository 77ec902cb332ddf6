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

from ednn_dask.errors import ConfigError
from ednn_dask.mc.local import LocalEnergy
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
    """Run a Metropolis chain of single spin flips on a periodic ``side``^d lattice.

    Parameters
    ----------
    model : TileModel or path
        A lattice model (one channel, periodic) whose input is the spins ±1.
    side, temperature, sweeps
        Lattice side, temperature (in the model's energy unit over k_B) and the
        number of measured sweeps (one flip attempt per site each).
    thermalize : int, optional
        Sweeps before measuring; default ``sweeps // 5``.
    seed : int
        Seeds the start (a random lattice unless ``spins`` is given) and the chain.
    """
    model = load_model(model)
    spec = model.spec
    if spec.channels != 1 or spec.boundary != "periodic" or spec.spacing is not None:
        raise ConfigError(f"model {model.name!r} is not a periodic one-channel lattice model "
                          f"(no pixel spacing); spin-flip Monte Carlo needs one, e.g. "
                          f"models/ising-2d-f1c1.onnx.")
    if not (temperature > 0 and sweeps >= 1 and side >= 2):
        raise ConfigError(f"a chain needs temperature > 0, sweeps >= 1 and side >= 2; got "
                          f"T = {temperature}, sweeps = {sweeps}, side = {side}.")
    rng = np.random.default_rng(seed)
    shape = (side,) * spec.ndim
    if spins is None:
        spins = rng.choice(np.float32([-1, 1]), size=shape)
    local = LocalEnergy(spins, model, threads=threads)
    classes = _colour_classes(shape, spec.focus, spec.context)
    thermalize = sweeps // 5 if thermalize is None else thermalize
    energy, magnetization = np.empty(sweeps), np.empty(sweeps)
    accepted = attempted = 0
    t0 = time.perf_counter()
    for sweep in range(thermalize + sweeps):
        for k in rng.permutation(len(classes)):
            sites = classes[k]
            flipped = -local.field[(0, *sites.T)][:, None]
            delta = local.propose_sites(sites, flipped)
            accept = rng.random(len(sites)) < np.exp(-np.maximum(delta, 0) / temperature)
            local.accept_sites(accept)
            accepted += int(accept.sum())
            attempted += len(sites)
        if sweep >= thermalize:
            energy[sweep - thermalize] = local.energy / local.field.size
            magnetization[sweep - thermalize] = float(local.field.mean(dtype=np.float64))
    seconds = time.perf_counter() - t0
    return ChainResult(temperature, local.field.size, energy, magnetization,
                       accepted / attempted, attempted, seconds, local.drift())


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
) -> list[dict[str, Any]]:
    """The summaries of :func:`ising_chain` at each temperature (seed ``seed + k`` for the k-th)."""
    model = load_model(model)
    return [ising_chain(model, side, t, sweeps, thermalize=thermalize, seed=seed + k).summary()
            for k, t in enumerate(temperatures)]
