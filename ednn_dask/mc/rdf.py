"""The in-plane radial distribution function g(r) of atoms in a periodic rectangular cell.

Pairs are counted under the minimum-image convention up to ``r_max`` (at most
half the shorter cell side), all pairs at once for small cells and through a
cell list for large sheets, and normalized by the ideal 2-D gas of the same
density: ``g(r) = counts / (N (N - 1) / 2 · 2π r dr / A · frames)``.
"""

from __future__ import annotations

import math

import numpy as np

from ednn_dask.errors import ConfigError

ALL_PAIRS_ATOMS = 2000
"""Up to this many atoms, every pair is measured directly (N² distances)."""

R_MAX = 8.0
"""Default largest distance (Å), when half the shorter cell side is larger."""


class InPlaneRDF:
    """Accumulates pair-distance histograms over frames; :meth:`g` gives g(r).

    Parameters
    ----------
    cell : (2,) float
        The rectangular cell's sides in x and y (Å).
    r_max : float, optional
        At most half the shorter side; default that or :data:`R_MAX`, the smaller.
    bins : int
    """

    def __init__(self, cell, n_atoms: int, *, r_max: float | None = None, bins: int = 120):
        self.cell = np.asarray(cell, dtype=np.float64)
        limit = float(self.cell.min()) / 2
        r_max = min(limit, R_MAX) if r_max is None else float(r_max)
        if not 0 < r_max <= limit or bins < 1 or n_atoms < 2:
            raise ConfigError(f"g(r) needs 0 < r_max <= half the shorter side ({limit:.3f} Å), "
                              f"bins >= 1 and two atoms; got r_max = {r_max}, bins = {bins}, "
                              f"{n_atoms} atom(s).")
        self.n_atoms, self.r_max = n_atoms, r_max
        self.edges = np.linspace(0.0, r_max, bins + 1)
        self.counts = np.zeros(bins)
        self.frames = 0

    def add(self, xy: np.ndarray) -> None:
        """Count the pairs of one frame of in-plane positions ``(N, 2)``."""
        self.counts += np.histogram(pair_distances(xy, self.cell, self.r_max), self.edges)[0]
        self.frames += 1

    @property
    def r(self) -> np.ndarray:
        """Bin centres (Å)."""
        return (self.edges[1:] + self.edges[:-1]) / 2

    def g(self) -> np.ndarray:
        """g(r) averaged over the frames added (NaN before any)."""
        area = float(np.prod(self.cell))
        shell = math.pi * (self.edges[1:] ** 2 - self.edges[:-1] ** 2)
        ideal = self.n_atoms * (self.n_atoms - 1) / 2 * shell / area
        return self.counts / (ideal * self.frames) if self.frames else np.full_like(ideal, np.nan)

    def peaks(self, n: int = 3, *, window: float = 0.12) -> list[dict[str, float]]:
        """The first ``n`` peaks of g(r): ``{"position_A", "height"}`` each, in order of r.

        A peak is the highest bin within ``window`` Å on either side (of g smoothed
        over three bins, so one noisy bin makes none) with g > 1. Its position and
        height are those of the Gaussian through that bin and its two neighbours
        (a parabola in log g), finer than the bin width.
        """
        g = self.g()
        width = max(1, round(window / (self.edges[1] - self.edges[0])))
        smooth = np.convolve(np.nan_to_num(g), np.ones(3) / 3, mode="same")
        found = []
        for k in range(1, len(g) - 1):
            near = smooth[max(0, k - width):k + width + 1]
            if smooth[k] > 1 and smooth[k] == near.max() and g[k - 1:k + 2].min() > 0:
                found.append(self._refine(g, int(np.argmax(g[k - 1:k + 2])) + k - 1))
            if len(found) == n:
                break
        return found

    def _refine(self, g: np.ndarray, k: int) -> dict[str, float]:
        if not 0 < k < len(g) - 1 or g[k - 1:k + 2].min() <= 0:
            return {"position_A": float(self.r[k]), "height": float(g[k])}
        a, b, c = np.log(g[k - 1:k + 2])
        curvature = a - 2 * b + c
        shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
        dr = self.edges[1] - self.edges[0]
        return {"position_A": float(self.r[k] + shift * dr),
                "height": float(np.exp(b - (a - c) * shift / 4))}


def pair_distances(xy: np.ndarray, cell: np.ndarray, r_max: float) -> np.ndarray:
    """Minimum-image distances below ``r_max`` of every pair of atoms (each pair once)."""
    xy = np.asarray(xy, dtype=np.float64) % cell
    if len(xy) <= ALL_PAIRS_ATOMS:
        i, j = np.triu_indices(len(xy), 1)
        return _below(_minimum_image(xy[i] - xy[j], cell), r_max)
    return _cell_list_distances(xy, cell, r_max)


def _minimum_image(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    d = d - cell * np.round(d / cell)
    return np.sqrt((d**2).sum(axis=-1))


def _below(r: np.ndarray, r_max: float) -> np.ndarray:
    return r[r < r_max]


def _cell_list_distances(xy: np.ndarray, cell: np.ndarray, r_max: float) -> np.ndarray:
    """Pairs within ``r_max`` through a grid of bins at least ``r_max`` wide (3 or more a side)."""
    grid = np.maximum(np.floor(cell / r_max).astype(int), 1)
    if np.any(grid < 3):  # neighbouring bins would repeat: measure every pair
        i, j = np.triu_indices(len(xy), 1)
        return _below(_minimum_image(xy[i] - xy[j], cell), r_max)
    ij = np.minimum((xy / cell * grid).astype(int), grid - 1)
    key = ij[:, 0] * grid[1] + ij[:, 1]
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=grid.prod())
    width = counts.max()
    slot = np.arange(len(xy)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((grid.prod(), width, 2), np.nan)
    padded[key[order], slot] = xy[order]
    bins = np.arange(grid.prod())
    bx, by = bins // grid[1], bins % grid[1]
    out = []
    # half of the 3 x 3 neighbourhood (and the bin itself) counts every pair once
    for dx, dy in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):
        other = ((bx + dx) % grid[0]) * grid[1] + (by + dy) % grid[1]
        d = padded[:, :, None, :] - padded[other][:, None, :, :]
        r = _minimum_image(d, cell)
        if (dx, dy) == (0, 0):
            r = np.where(np.triu(np.ones((width, width), bool), 1), r, np.nan)
        out.append(r[r < r_max])
    return np.concatenate(out)
