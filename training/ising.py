"""The Ising model: exact energies and Monte Carlo samples across temperatures.

Every sampler is deterministic for a given seed and returns an
:class:`xarray.Dataset` whose attrs say how it was made. The energy is exact:
the sum over nearest-neighbour bonds of a periodic lattice, J = 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from ednn_dask.compute import progress_bar
from ednn_dask.defaults import SPATIAL_DIMS
from ednn_dask.errors import ConfigError, FieldError

#: Critical temperature of the 2-D square-lattice Ising model (Onsager), in J/k_B.
TC_2D = 2.0 / math.log(1.0 + math.sqrt(2.0))
#: Critical temperature of the 3-D simple-cubic Ising model (Monte Carlo), in J/k_B.
TC_3D = 4.5115

_TC = {2: TC_2D, 3: TC_3D}
# Chains within this distance above Tc (and all chains below it) get Wolff
# cluster updates: near Tc single-spin Metropolis suffers critical slowing down,
# and below Tc hot starts freeze into long-lived domain-wall (stripe) states.
_WOLFF_WINDOW = 0.3
# Spins handled per kernel call; bounds the progress-bar granularity only.
_SPINS_PER_CALL = 1 << 18


def ising_energy(spins: np.ndarray, J: float = 1.0, dim: int | None = None) -> np.ndarray:
    """Exact nearest-neighbour Ising energy on a periodic lattice.

    ``E = -J * sum_<ij> s_i s_j``, each bond counted once per axis as
    ``s * roll(s, -1, axis)``; for a lattice side of 2 this counts the two
    periodic bonds between the same pair of sites.

    Parameters
    ----------
    spins : numpy.ndarray
        Spins of value +1 or -1 (any integer or float dtype), shape
        ``(*batch, *lattice)``.
    J : float, optional
        Coupling; positive is ferromagnetic.
    dim : int, optional
        Number of trailing lattice axes.  Defaults to ``spins.ndim`` (one
        configuration); pass it explicitly for a batch.

    Returns
    -------
    numpy.ndarray
        Energies in units of J, float64, shape ``batch`` (0-d for one configuration).

    Raises
    ------
    FieldError
        (a ``ValueError``) if a value is not +1 or -1, or ``dim`` does not fit.
    """
    s = np.asarray(spins)
    dim = s.ndim if dim is None else int(dim)
    if not 1 <= dim <= s.ndim:
        raise FieldError(f"dim must be between 1 and spins.ndim={s.ndim}, got {dim}")
    if not np.all(np.abs(s) == 1):
        bad = s[np.abs(s) != 1].ravel()[:5]
        raise FieldError(f"spins must be +1 or -1, found values such as {bad.tolist()}")
    # int64/float64 so that sums over large lattices cannot overflow int8.
    s = s.astype(np.float64 if s.dtype.kind == "f" else np.int64)
    axes = tuple(range(s.ndim - dim, s.ndim))
    bonds = sum(np.sum(s * np.roll(s, -1, axis=a), axis=axes) for a in axes)
    return np.asarray(-float(J) * bonds, dtype=np.float64)


def _resolve_temperatures(
    n: int,
    temperatures: float | tuple[float, float] | Sequence[float] | np.ndarray,
    near_critical: bool,
    dim: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-chain temperatures from the forms accepted by :func:`sample_ising`."""
    if near_critical:
        tc = _TC[dim]
        temps = rng.uniform(tc - 0.1, tc + 0.1, size=n)
    elif np.ndim(temperatures) == 0:
        temps = np.full(n, float(temperatures))  # type: ignore[arg-type]
    elif isinstance(temperatures, tuple) and len(temperatures) == 2:
        lo, hi = (float(t) for t in temperatures)
        if not lo <= hi:
            raise ConfigError(
                f"temperature range must be (lo, hi) with lo <= hi, got {temperatures}"
            )
        temps = rng.uniform(lo, hi, size=n)
    else:
        temps = np.asarray(temperatures, dtype=np.float64).ravel()
        if temps.shape != (n,):
            raise ConfigError(
                f"temperatures must be a float, a (lo, hi) tuple or a sequence of length "
                f"n={n}; got a sequence of length {temps.size}"
            )
    if not np.all(np.isfinite(temps) & (temps > 0)):
        raise ConfigError("temperatures must be finite and positive")
    return temps


def _neighbour_table(L: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Periodic neighbour indices ``(L**dim, 2*dim)`` and checkerboard visiting order."""
    index = np.arange(L**dim, dtype=np.int32).reshape((L,) * dim)
    columns = [np.roll(index, shift, axis=a).ravel() for a in range(dim) for shift in (-1, 1)]
    neighbours = np.ascontiguousarray(np.stack(columns, axis=1))
    parity = np.indices((L,) * dim).sum(axis=0).ravel() % 2
    order = np.argsort(parity, kind="stable").astype(np.int32)
    return neighbours, order


@functools.cache
def _ising_kernel() -> Callable[..., None]:
    """Compile (once per process) the numba kernel that runs the Markov chains."""
    import numba  # deferred: only sampling needs it, and importing it costs time

    gamma = np.uint64(0x9E3779B97F4A7C15)
    mix1 = np.uint64(0xBF58476D1CE4E5B9)
    mix2 = np.uint64(0x94D049BB133111EB)
    s30, s27, s31, s11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
    to_unit = 1.0 / 9007199254740992.0  # 2**-53

    # splitmix64: a counter-based generator with one uint64 of state per chain, so
    # every chain has its own stream and results do not depend on how chains are
    # batched, nor on numba's internal random state.
    @numba.njit(cache=False)
    def uniform(state: np.uint64) -> tuple[np.uint64, float]:
        state = state + gamma
        z = state
        z = (z ^ (z >> s30)) * mix1
        z = (z ^ (z >> s27)) * mix2
        z = z ^ (z >> s31)
        return state, (z >> s11) * to_unit

    @numba.njit(cache=False)
    def metropolis_sweep(s, neighbours, order, accept, state):
        # Sites in checkerboard order; accept is indexed by s_i * h_i > 0 (dE = 2 s_i h_i).
        for idx in range(order.size):
            i = order[idx]
            h = 0
            for m in range(neighbours.shape[1]):
                h += s[neighbours[i, m]]
            sh = s[i] * h
            if sh <= 0:
                s[i] = -s[i]
            else:
                state, u = uniform(state)
                if u < accept[sh]:
                    s[i] = -s[i]
        return state

    @numba.njit(cache=False)
    def wolff_cluster(s, neighbours, p_add, stack, state):
        # Grow one cluster from a random seed site and flip it; returns its size.
        state, u = uniform(state)
        seed_site = min(int(u * s.size), s.size - 1)
        old = s[seed_site]
        s[seed_site] = -old  # flipping on adding doubles as the "visited" mark
        stack[0] = seed_site
        top = 1
        size = 1
        while top > 0:
            top -= 1
            i = stack[top]
            for m in range(neighbours.shape[1]):
                j = neighbours[i, m]
                if s[j] == old:
                    state, u = uniform(state)
                    if u < p_add:
                        s[j] = -old
                        stack[top] = j
                        top += 1
                        size += 1
        return state, size

    @numba.njit(cache=False)
    def run_chains(spins, neighbours, order, betas, wolff, states, sweeps):
        n_chains, n_sites = spins.shape
        stack = np.empty(n_sites, dtype=np.int32)
        accept = np.empty(neighbours.shape[1] + 1, dtype=np.float64)
        burn_in = sweeps // 2
        for b in range(n_chains):
            state = states[b]
            s = spins[b]
            for i in range(n_sites):  # hot start
                state, u = uniform(state)
                s[i] = 1 if u < 0.5 else -1
            for k in range(accept.size):
                accept[k] = math.exp(-2.0 * betas[b] * k)
            p_add = 1.0 - math.exp(-2.0 * betas[b])
            clusters, flipped, per_sweep = 0, 0, 1
            for sweep in range(sweeps):
                state = metropolis_sweep(s, neighbours, order, accept, state)
                if not wolff[b]:
                    continue
                if sweep < burn_in:
                    # Burn-in: flip clusters until ~n_sites spins have flipped, and
                    # learn the mean cluster size.  Stopping on the flipped count
                    # favours ending on a big cluster, which biases the state, so
                    # this rule is used only while equilibrating.
                    target = flipped + n_sites
                    while flipped < target:
                        state, size = wolff_cluster(s, neighbours, p_add, stack, state)
                        flipped += size
                        clusters += 1
                    continue
                if sweep == burn_in and clusters > 0:
                    per_sweep = max(1, int(n_sites * clusters / flipped + 0.5))
                # Sampling: a fixed number of clusters per sweep keeps the kernel exact.
                for _ in range(per_sweep):
                    state, size = wolff_cluster(s, neighbours, p_add, stack, state)
            states[b] = state

    return run_chains


def sample_ising(
    n: int,
    L: int,
    *,
    dim: int = 2,
    temperatures: float | tuple[float, float] | Sequence[float] | np.ndarray = (1.0, 5.0),
    seed: int = 0,
    sweeps: int = 200,
    near_critical: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """Monte Carlo samples of the ferromagnetic Ising model (J = 1, periodic).

    Every sample is the end of its own Markov chain, started hot (random spins)
    at its own temperature, so samples are independent.  Each sweep is one
    Metropolis pass over the lattice in checkerboard order.  Chains with
    ``T < Tc + 0.3`` also get Wolff cluster flips after every sweep, which beat
    critical slowing down near Tc and dissolve the domain-wall states that hot
    starts freeze into below Tc: during the first half of the sweeps (burn-in)
    clusters are flipped until about ``L**dim`` spins have flipped, which also
    measures the mean cluster size; the second half flips a fixed number of
    clusters per sweep (``L**dim`` over that mean), because stopping on the
    flipped count would bias the final state towards the end of a big cluster.

    Parameters
    ----------
    n : int
        Number of samples (chains).
    L : int
        Lattice side; the lattice has ``L**dim`` sites.
    dim : {2, 3}, optional
        Lattice dimension.
    temperatures : float, (float, float) or sequence of float, optional
        A float: every chain at that temperature.  A 2-tuple ``(lo, hi)``: each
        chain's temperature drawn uniformly in ``[lo, hi]`` (pass a list or an
        array for per-sample values when ``n == 2``).  Any other sequence or
        array of length ``n``: one temperature per sample.  In units of J/k_B.
    seed : int, optional
        Seed; the same seed gives the same data set.
    sweeps : int, optional
        Sweeps per chain.
    near_critical : bool, optional
        Draw temperatures uniformly in ``[Tc - 0.1, Tc + 0.1]`` (overrides
        ``temperatures``); Tc = 2.269 in 2-D and 4.5115 in 3-D.
    progress : bool, optional
        Show a tqdm progress bar over chains.

    Returns
    -------
    xarray.Dataset
        ``spins`` (``sample, y, x`` or ``sample, z, y, x``; int8),
        ``energy`` (``sample``; float64, exact, in J) and ``temperature``
        (``sample``; float64), with attrs saying how it was made.
    """
    if dim not in (2, 3):
        raise ConfigError(f"dim must be 2 or 3, got {dim}")
    if n < 1 or L < 2 or sweeps < 0:
        raise ConfigError(
            f"an Ising sample needs n >= 1 samples, a side L >= 2 and sweeps >= 0; got n={n}, "
            f"L={L}, sweeps={sweeps}: choose a larger lattice or more samples."
        )
    temp_seq, chain_seq = np.random.SeedSequence(seed).spawn(2)
    temps = _resolve_temperatures(
        n, temperatures, near_critical, dim, np.random.default_rng(temp_seq)
    )
    states = chain_seq.generate_state(n, dtype=np.uint64)
    wolff = temps < _TC[dim] + _WOLFF_WINDOW
    neighbours, order = _neighbour_table(L, dim)
    n_sites = L**dim
    spins = np.empty((n, n_sites), dtype=np.int8)
    kernel = _ising_kernel()
    per_call = max(1, _SPINS_PER_CALL // n_sites)
    with progress_bar(n, progress, "ising chains") as bar:
        for start in range(0, n, per_call):
            stop = min(n, start + per_call)
            kernel(
                spins[start:stop], neighbours, order, 1.0 / temps[start:stop],
                wolff[start:stop], states[start:stop].copy(), int(sweeps),
            )  # fmt: skip
            bar.update(stop - start)
    spins = spins.reshape((n,) + (L,) * dim)
    lattice_dims = SPATIAL_DIMS[dim]
    return xr.Dataset(
        {
            "spins": (("sample", *lattice_dims), spins),
            "energy": (("sample",), ising_energy(spins, dim=dim)),
            "temperature": (("sample",), temps),
        },
        attrs={
            "generator": "training.ising.sample_ising",
            "method": "hot starts; checkerboard Metropolis + Wolff clusters for T < Tc + 0.3",
            "L": int(L),
            "dim": int(dim),
            "seed": int(seed),
            "sweeps": int(sweeps),
            "near_critical": bool(near_critical),
            "J": 1.0,
            "target": "energy",
            "target_unit": "J",
            "boundary": "periodic",
        },
    )
