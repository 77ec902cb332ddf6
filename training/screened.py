"""A lattice system where scales matter: nearest-neighbour bonds plus a screened pair term.

Each site of an ``L x L`` periodic lattice holds +1 or -1 with probability
:data:`OCCUPATION` each, else 0. The energy, in J, is::

    E = -Σ_p x_p (x_{p+x̂} + x_{p+ŷ})  +  ½ Σ_{p≠q} x_p x_q K(r_pq)
    K(r) = exp(-r / λ) / r  for 0 < r <= R,   0 beyond

with ``λ =`` :data:`SCREENING_LENGTH` = 8 px, ``R =`` :data:`CUTOFF` = 32 px and
``r_pq`` the minimum-image Euclidean distance in pixels. The first term is
local (an EDNN of context 1 represents it exactly); the second reaches 32
pixels, beyond the context of any affordable full-resolution tile.

The pair sum is ``½ Σ_p x_p (K ⊛ x)_p`` with ``⊛`` the periodic convolution on
the torus, computed with an FFT in float64. ``L >= 2 R + 1`` keeps every pair
within the cutoff at one minimum image, so the sum is exact to float64 rounding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ednn_dask.errors import ConfigError, FieldError

OCCUPATION = 0.1
"""Probability of +1, and of -1, at each site (0 otherwise)."""
SCREENING_LENGTH = 8.0
"""λ of K(r) = exp(-r/λ)/r, in pixels."""
CUTOFF = 32.0
"""K(r) is 0 beyond this distance, in pixels."""
MIN_SIDE = int(2 * CUTOFF) + 1
"""The smallest lattice side on which every pair within the cutoff has one minimum image."""


def screened_kernel(L: int) -> np.ndarray:
    """K at every displacement of an ``L x L`` torus, ``(L, L)`` float64 (K(0) = 0)."""
    d = np.minimum(np.arange(L), L - np.arange(L)).astype(np.float64)  # minimum image per axis
    r = np.hypot(d[:, None], d[None, :])
    inside = (r > 0) & (r <= CUTOFF)
    return np.where(inside, np.exp(-r / SCREENING_LENGTH) / np.where(inside, r, 1.0), 0.0)


def screened_energy(x: np.ndarray) -> np.ndarray:
    """The exact energy (J) of lattices ``(L, L)`` or ``(n, L, L)``: float64, one per lattice."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[-1] != x.shape[-2]:
        raise FieldError(f"lattices must be square, (L, L) or (n, L, L); got shape {x.shape}.")
    L = x.shape[-1]
    if L < MIN_SIDE:
        raise ConfigError(f"a screened lattice needs L >= {MIN_SIDE} (twice the cutoff "
                          f"{CUTOFF:g} px, plus one); got L = {L}.")
    bonds = -(x * (np.roll(x, -1, axis=-1) + np.roll(x, -1, axis=-2))).sum(axis=(-2, -1))
    spectrum = np.fft.rfft2(screened_kernel(L))
    potential = np.fft.irfft2(np.fft.rfft2(x) * spectrum, s=(L, L))  # (K ⊛ x) at every site
    return bonds + 0.5 * (x * potential).sum(axis=(-2, -1))


def screened_dataset(n: int, L: int = 96, *, seed: int = 0, batch: int = 256,
                     progress: bool = False) -> xr.Dataset:
    """``n`` random lattices of side ``L`` with their exact energies.

    Returns
    -------
    xarray.Dataset
        ``field`` (``sample, y, x``; float32, values -1, 0, 1; a lattice, no
        spacing) and ``target`` (``sample``; float64, J), with attrs saying how it
        was made: the format of ``ednn-dask train fields``.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}.")
    rng = np.random.default_rng(seed)
    p = OCCUPATION
    fields = rng.choice(np.float32([-1, 0, 1]), size=(n, L, L), p=[p, 1 - 2 * p, p])
    targets = np.concatenate([
        screened_energy(fields[start:start + batch])
        for start in tqdm(range(0, n, batch), desc="energies", disable=not progress)])
    return xr.Dataset(
        {"field": (("sample", "y", "x"), fields, {"lattice": True}),
         "target": (("sample",), targets, {"units": "J"})},
        attrs={"generator": "training.screened.screened_dataset",
               "method": (f"sites +1 or -1 with probability {p} each, else 0; E = bonds + "
                          f"screened pairs, K(r) = exp(-r/{SCREENING_LENGTH:g})/r up to "
                          f"{CUTOFF:g} px (FFT, exact)"),
               "L": int(L), "seed": int(seed)},
    )


#: The three kinds of model ``ednn-dask train screened`` compares: a short single-scale
#: context (misses the pair term beyond 4 px), a full-resolution context of the whole
#: cutoff (sees everything, costs the most), and two scales: full resolution to 12 px,
#: then 2x2 block means to 24 px. Chosen on the error-cost sweep of
#: ``bench/screened_scales.py``.
SCREENED_MODELS = {
    "short": {"focus": 4, "context": 4},
    "wide": {"focus": 4, "context": 32},
    "multiscale": {"scales": "1:4:12,2:2:12"},
}
#: The recipe's data set. All three are ``pair`` nets (:mod:`training.pair_fit`): the
#: energy is a pair sum, so the least-squares fit after the sum is one linear solve and
#: each model reaches the best its reach allows, at the same (negligible) budget.
SCREENED_TRAINING = {"n": 2000, "L": 128, "net": "pair"}


def train_screened(
    out: str,
    *,
    kind: str = "multiscale",
    data: str | None = None,
    seed: int = 0,
    workdir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit one kind of screened model (:data:`SCREENED_MODELS`) with ``train fields``.

    The data set (:data:`SCREENED_TRAINING` samples, seed ``seed``) is generated into
    the run's folder the first time and reused after.
    """
    from training.config import run_dir
    from training.datasets import save_dataset
    from training.fields import train_fields

    if kind not in SCREENED_MODELS:
        raise ConfigError(f"kind must be one of {sorted(SCREENED_MODELS)}, got {kind!r}.")
    work = run_dir(Path(out), workdir)
    store = Path(data) if data else work / "screened.zarr"
    if not data and not store.exists():
        save_dataset(screened_dataset(SCREENED_TRAINING["n"], SCREENED_TRAINING["L"], seed=seed,
                                      progress=progress), store)
    return train_fields(store, out, field="field", target="target", **SCREENED_MODELS[kind],
                        net=SCREENED_TRAINING["net"], workdir=work / "fit", seed=seed,
                        overwrite=overwrite, progress=progress)


def evaluate_screened(model: str, *, L: int = 512, n: int = 32, seed: int = 1234,
                      plot: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Fresh ``L x L`` lattices (seed ``seed``, never trained on) scored with onnxruntime.

    Returns the error metrics with ``mae_over_std``, the mean absolute error of E
    divided by the standard deviation of E across the lattices (the issue's
    yardstick), and ``seconds_per_pixel``, onnxruntime's time per pixel on one
    thread (numpy dense path, no dask).
    """
    from ednn_dask.model import TileModel
    from training.evaluation import score_samples
    from training.metrics import error_metrics, parity_plot

    m = TileModel.load(model)
    ds = screened_dataset(n, L, seed=seed, progress=progress)
    fields, target = ds["field"].values, ds["target"].values
    score_samples(fields[:1], m)  # the session is built once, outside the timing
    t0 = time.perf_counter()
    predicted = score_samples(fields, m)
    seconds = time.perf_counter() - t0
    metrics = error_metrics(predicted, target, L * L)
    if plot:
        parity_plot(target, predicted, plot, sites=L * L, unit="J", title=f"screened {L}x{L}")
    return {"model": str(model), "L": L, "n": n, "seed": seed,
            "mae_over_std": float(np.abs(predicted - target).mean() / target.std()),
            "target_std": float(target.std()), "seconds_per_pixel": seconds / (n * L * L),
            **metrics}
