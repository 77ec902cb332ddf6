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
        ``field`` (``sample, y, x``; float32, values -1, 0, 1) and ``target``
        (``sample``; float64, J), with attrs saying how it was made.
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
        {"field": (("sample", "y", "x"), fields),
         "target": (("sample",), targets, {"units": "J"})},
        attrs={"generator": "training.screened.screened_dataset",
               "method": (f"sites +1 or -1 with probability {p} each, else 0; E = bonds + "
                          f"screened pairs, K(r) = exp(-r/{SCREENING_LENGTH:g})/r up to "
                          f"{CUTOFF:g} px (FFT, exact)"),
               "L": int(L), "seed": int(seed)},
    )
