"""Binder-cumulant crossings of EDNN lattice models: resumable cluster runs, reweighting, jackknife.

:func:`run_chain` runs (or continues) a :class:`~ednn_dask.mc.cluster.WolffChain`
at one lattice side and temperature, saving its samples and its whole state to
a folder every so often; running it again with more steps continues the same
chain bit for bit (the spins, the running EDNN energy, its block contributions
and the random generator's state are saved, so a continued chain equals one
that never stopped).

The analysis reweights the samples (the EDNN energy total ``E`` and the
magnetization per site ``m``) of the chains of one side, at one or several
temperatures ``T_k``, to any nearby ``T`` (Ferrenberg-Swendsen multiple
histograms; one chain is single-histogram reweighting with weights
``exp(-(1/T - 1/T_0) E)``), all in log space. The Binder cumulant
``U_L(T) = 1 - <m^4> / (3 <m^2>^2)`` of two sides crosses near ``T_c``: the
crossing is bracketed on a fine grid and refined by root finding, and its
error bar is a jackknife over blocks of every chain (block ``j`` of each chain
left out together).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.errors import ConfigError
from ednn_dask.mc.cluster import WolffChain, ising_wolff
from ednn_dask.mc.stats import blocked_mean
from ednn_dask.model import TileModel, load_model

TC_2D = 2.0 / math.log(1.0 + math.sqrt(2.0))
"""Onsager's critical temperature of the square-lattice Ising model, J/k_B (2.26919...)."""
TC_3D = 4.5115
"""The simple-cubic Ising model's critical temperature (Monte Carlo), J/k_B."""

CHAIN_FILE = "chain.npz"


@dataclass
class Samples:
    """The measurements of one chain: after every cluster step the EDNN energy (total)
    and the magnetization per site, with the chain's bookkeeping."""

    side: int
    ndim: int
    temperature: float
    energy: np.ndarray  # float64, the EDNN energy of the lattice
    magnetization: np.ndarray  # float64, per site
    size: np.ndarray  # the proposed cluster's sites
    accepted: np.ndarray  # bool, the correction step's decision
    seconds: float  # spent running the chain, summed over every call

    @property
    def sites(self) -> int:
        return self.side**self.ndim

    def summary(self) -> dict[str, Any]:
        """Steps, speed, acceptance, cluster size, and integrated autocorrelation times
        (in steps, from blocking) of ``E`` and ``|m|`` over the second half."""
        half = slice(len(self.energy) // 2, None)
        row = {"side": self.side, "temperature": self.temperature, "steps": len(self.energy),
               "seconds": self.seconds,
               "steps_per_second": len(self.energy) / self.seconds if self.seconds else math.nan,
               "acceptance": float(self.accepted.mean()),
               "mean_cluster_fraction": float(self.size.mean() / self.sites),
               "sweeps_equivalent": float(self.size[self.accepted].sum() / self.sites)}
        for name, x in (("energy", self.energy[half] / self.sites),
                        ("abs_magnetization", np.abs(self.magnetization[half]))):
            mean, sem = blocked_mean(x)
            naive = float(np.std(x, ddof=1) / math.sqrt(len(x)))
            row[f"{name}_per_site" if name == "energy" else name] = mean
            row[f"tau_{name}_steps"] = 0.5 * (sem / naive) ** 2 if naive > 0 else math.nan
        return row


def _chain_seed(seed: int, ndim: int, side: int, temperature: float) -> list[int]:
    return [int(seed), int(ndim), int(side), int(round(temperature * 1e6))]


def run_chain(
    model: TileModel | str | os.PathLike,
    side: int,
    temperature: float,
    steps: int,
    folder: str | os.PathLike,
    *,
    seed: int = 0,
    save_seconds: float = 60.0,
    start_sweeps: float = 100.0,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> Samples:
    """Run the chain in ``folder`` until it holds ``steps`` cluster steps, saving as it goes.

    A new chain starts from random spins drawn, like its random stream, from
    ``(seed, ndim, side, temperature)``, brought near equilibrium by ``start_sweeps``
    sweeps' worth of plain Ising Wolff clusters (:func:`~ednn_dask.mc.cluster.ising_wolff`,
    no EDNN: cheap). An existing one (same model, side,
    temperature and seed, else :class:`~ednn_dask.errors.ConfigError`) continues
    where it was saved; one that already holds ``steps`` or more only loads.
    The folder holds one file, :data:`CHAIN_FILE`, replaced atomically every
    ``save_seconds`` and at the end.
    """
    model = load_model(model)
    folder = Path(folder)
    path = folder / CHAIN_FILE
    meta = {"model": model.sha256, "side": int(side), "ndim": model.spec.ndim,
            "temperature": float(temperature), "seed": int(seed),
            "start_sweeps": float(start_sweeps)}
    if path.exists():
        saved = _load(path)
        if saved["meta"] != meta:
            raise ConfigError(f"{path} holds the chain {saved['meta']}, not {meta}; use "
                              f"another folder (or delete it) for a new chain.")
        chain = WolffChain.restore(model, saved["state"], threads=threads)
        series, seconds = saved["series"], saved["seconds"]
    else:
        rng = np.random.default_rng(_chain_seed(seed, model.spec.ndim, side, temperature))
        spins = rng.choice(np.float32([-1, 1]), size=(side,) * model.spec.ndim)
        spins = ising_wolff(spins, temperature, start_sweeps, rng=rng)
        chain = WolffChain(model, spins, temperature, rng=rng, threads=threads)
        series = {k: np.empty(0, d) for k, d in
                  (("energy", np.float64), ("magnetization", np.int64), ("size", np.int32),
                   ("accepted", bool))}
        seconds = 0.0
    names = {"energy": "energy_total", "magnetization": "magnetization_total", "size": "size",
             "accepted": "accepted"}
    parts = {k: [v] for k, v in series.items()}
    done = len(series["energy"])
    last = time.perf_counter()
    while done < steps:
        t0 = time.perf_counter()
        out = chain.run(min(steps - done, 64))
        for k, name in names.items():
            parts[k].append(out[name].astype(series[k].dtype))
        done += len(out["size"])
        now = time.perf_counter()
        seconds += now - t0
        if now - last >= save_seconds or done >= steps:
            series = {k: np.concatenate(v) for k, v in parts.items()}
            parts = {k: [v] for k, v in series.items()}
            _save(path, meta, chain, series, seconds)
            last = now
            if log is not None:
                log(f"L={side} T={temperature:g}: {done}/{steps} steps, "
                    f"{done / seconds if seconds else 0:.0f}/s, acceptance "
                    f"{series['accepted'].mean():.3f}")
    series = {k: np.concatenate(v) for k, v in parts.items()}
    n = chain.sites
    return Samples(int(side), model.spec.ndim, float(temperature), series["energy"][:steps],
                   series["magnetization"][:steps] / n, series["size"][:steps],
                   series["accepted"][:steps], seconds)


def _save(path: Path, meta: dict, chain: WolffChain, series: dict, seconds: float) -> None:
    state = chain.state()
    arrays = {f"series_{k}": v for k, v in series.items()}
    arrays.update(spins=state.pop("spins"), contributions=state.pop("contributions"))
    state["rng"] = json.dumps(state["rng"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=json.dumps(meta), state=json.dumps(state), seconds=seconds, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        state = json.loads(str(z["state"]))
        state["rng"] = json.loads(state["rng"])
        state.update(spins=z["spins"], contributions=z["contributions"])
        return {"meta": json.loads(str(z["meta"])), "state": state,
                "seconds": float(z["seconds"]),
                "series": {k[len("series_"):]: z[k] for k in z.files if k.startswith("series_")}}


def load_samples(folder: str | os.PathLike) -> Samples:
    """The samples a :func:`run_chain` folder holds (without continuing it)."""
    saved = _load(Path(folder) / CHAIN_FILE)
    meta, series = saved["meta"], saved["series"]
    n = meta["side"] ** meta["ndim"]
    return Samples(meta["side"], meta["ndim"], meta["temperature"], series["energy"],
                   series["magnetization"] / n, series["size"], series["accepted"],
                   saved["seconds"])


# ---- reweighting --------------------------------------------------------------------------


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """``log(sum(exp(a), axis))`` without overflow."""
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def bisect(f: Callable[[float], float], lo: float, hi: float, *, xtol: float = 1e-10) -> float:
    """A root of ``f`` in ``[lo, hi]``, where ``f`` changes sign, by bisection."""
    f_lo = f(lo)
    while hi - lo > xtol:
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if f_mid == 0:
            return mid
        if (f_mid < 0) == (f_lo < 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Reweighting:
    """Multiple-histogram reweighting of the chains of one lattice side.

    Parameters
    ----------
    chains : list of Samples
        Same side; any temperatures (one chain: single-histogram reweighting).
    discard : float
        Fraction of each chain dropped from its start (thermalization).
    blocks : int
        Jackknife blocks per chain.
    """

    def __init__(self, chains: Sequence[Samples], *, discard: float = 0.1, blocks: int = 20):
        if not chains or len({(c.side, c.ndim) for c in chains}) != 1:
            raise ConfigError("reweighting needs chains of one lattice side.")
        self.side, self.sites = chains[0].side, chains[0].sites
        self.temperatures = np.array([c.temperature for c in chains])
        self.blocks = blocks
        energy, m, chain, block = [], [], [], []
        for k, c in enumerate(chains):
            start = int(len(c.energy) * discard)
            n = len(c.energy) - start
            if n < blocks:
                raise ConfigError(f"the chain L={c.side} T={c.temperature} has {n} samples "
                                  f"after the discard; the jackknife needs {blocks} or more.")
            energy.append(c.energy[start:])
            m.append(c.magnetization[start:])
            chain.append(np.full(n, k))
            block.append(np.arange(n) * blocks // n)
        self.energy = np.concatenate(energy)
        self.m = np.concatenate(m)
        self.chain = np.concatenate(chain)
        self.block = np.concatenate(block)
        # the EDNN energy relative to its mean keeps the exponents small
        self._shift = float(self.energy.mean())
        self._e = self.energy - self._shift
        self._std = np.array([self.energy[self.chain == k].std() for k in range(len(chains))])
        self._cache: dict[int | None, np.ndarray] = {}

    def reliable_range(self, width: float = 2.0) -> tuple[float, float]:
        """Temperatures reweighting reaches: each ``T_k`` +- ``width T_k^2 / std(E_k)``
        (the mean energy moves by about ``width`` standard deviations), joined."""
        reach = width * self.temperatures**2 / np.maximum(self._std, 1e-12)
        return float((self.temperatures - reach).min()), float((self.temperatures + reach).max())

    def _denominator(self, leave_out: int | None) -> np.ndarray:
        """``log sum_k N_k exp(f_k - beta_k E_i)`` per sample (the free energies solved
        self-consistently, without block ``leave_out``)."""
        if leave_out in self._cache:
            return self._cache[leave_out]
        keep = self._keep(leave_out)
        e, chain = self._e[keep], self.chain[keep]
        betas = 1.0 / self.temperatures
        counts = np.bincount(chain, minlength=len(betas)).astype(float)
        minus_beta_e = -np.outer(betas, e)  # (K, n)
        f = np.zeros(len(betas))
        for _ in range(10_000):
            log_den = logsumexp(minus_beta_e + (f + np.log(counts))[:, None], axis=0)
            new = -logsumexp(minus_beta_e - log_den, axis=1)
            new -= new[0]
            if np.max(np.abs(new - f)) < 1e-11 or len(betas) == 1:
                f = new
                break
            f = new
        log_den = logsumexp(minus_beta_e + (f + np.log(counts))[:, None], axis=0)
        self._cache[leave_out] = log_den
        return log_den

    def _keep(self, leave_out: int | None) -> np.ndarray | slice:
        return slice(None) if leave_out is None else self.block != leave_out

    def moments(self, temperatures, leave_out: int | None = None) -> dict[str, np.ndarray]:
        """``<|m|>``, ``<m^2>``, ``<m^4>``, the Binder cumulant and ``<E>/N`` at each ``T``."""
        t = np.atleast_1d(np.asarray(temperatures, dtype=np.float64))
        keep = self._keep(leave_out)
        e, m = self._e[keep], self.m[keep]
        log_den = self._denominator(leave_out)
        columns = np.stack([np.abs(m), m * m, m**4, e], axis=1)
        sums = np.empty((len(t), 4))
        chunk = max(1, 2_000_000 // len(e))  # temperatures per pass, bounding the memory
        for start in range(0, len(t), chunk):
            log_w = -np.outer(1.0 / t[start:start + chunk], e) - log_den  # (T, n)
            log_w -= log_w.max(axis=1, keepdims=True)
            w = np.exp(log_w)
            sums[start:start + chunk] = (w @ columns) / w.sum(axis=1, keepdims=True)
        out = {"abs_magnetization": sums[:, 0], "m2": sums[:, 1], "m4": sums[:, 2],
               "energy_per_site": (sums[:, 3] + self._shift) / self.sites}
        out["binder"] = 1.0 - out["m4"] / (3.0 * out["m2"] ** 2)
        return out

    def binder(self, temperature: float, leave_out: int | None = None) -> float:
        return float(self.moments([temperature], leave_out)["binder"][0])


def crossing(a: Reweighting, b: Reweighting, lo: float, hi: float, *, points: int = 201,
             leave_out: int | None = None, near: float | None = None) -> float:
    """The temperature where ``U_a - U_b`` changes sign, the smaller side's cumulant going
    from below the larger's to above it, nearest ``near`` (default mid-range); NaN if none.

    Bracketed on ``points`` temperatures in ``[lo, hi]``, refined by bisection.
    """
    small, large = (a, b) if a.side < b.side else (b, a)
    grid = np.linspace(lo, hi, points)
    diff = (small.moments(grid, leave_out)["binder"] - large.moments(grid, leave_out)["binder"])
    signs = np.flatnonzero((diff[:-1] < 0) & (diff[1:] >= 0))
    if not len(signs):
        return math.nan
    near = 0.5 * (lo + hi) if near is None else near
    k = signs[np.argmin(np.abs(grid[signs] - near))]
    if diff[k + 1] == 0:
        return float(grid[k + 1])
    return bisect(lambda t: small.binder(t, leave_out) - large.binder(t, leave_out),
                  float(grid[k]), float(grid[k + 1]))


def jackknife(values: np.ndarray, full: float) -> tuple[float, float]:
    """The jackknife bias-corrected estimate and standard error from leave-one-block-out values."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if not np.all(np.isfinite(values)):
        return full, math.nan
    mean = values.mean()
    return float(n * full - (n - 1) * mean), float(math.sqrt((n - 1) / n
                                                             * ((values - mean) ** 2).sum()))


def crossing_with_error(a: Reweighting, b: Reweighting, lo: float | None = None,
                        hi: float | None = None, *, width: float = 2.0,
                        points: int = 201) -> dict[str, Any]:
    """The crossing of ``U_a`` and ``U_b`` with its jackknife error.

    The search range defaults to the overlap of the two sides' reliable ranges
    (:meth:`Reweighting.reliable_range`). The jackknife leaves block ``j`` out of every
    chain of both sides at once (``a.blocks == b.blocks``).
    """
    if a.blocks != b.blocks:
        raise ConfigError("both sides need the same number of jackknife blocks.")
    ra, rb = a.reliable_range(width), b.reliable_range(width)
    lo = max(ra[0], rb[0]) if lo is None else lo
    hi = min(ra[1], rb[1]) if hi is None else hi
    near = float(np.mean(np.concatenate([a.temperatures, b.temperatures])))
    t = crossing(a, b, lo, hi, points=points, near=near)
    if not math.isfinite(t):
        return {"sides": sorted([a.side, b.side]), "tc": math.nan, "tc_error": math.nan,
                "range": [lo, hi]}
    leave = np.array([crossing(a, b, lo, hi, points=points, leave_out=j, near=t)
                      for j in range(a.blocks)])
    estimate, error = jackknife(leave, t)
    return {"sides": sorted([a.side, b.side]), "tc": t, "tc_jackknife": estimate,
            "tc_error": error, "binder_at_crossing": a.binder(t), "range": [lo, hi],
            "jackknife_without_crossing": int(np.count_nonzero(~np.isfinite(leave)))}
