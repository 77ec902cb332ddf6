"""Error bars of correlated Monte Carlo series: blocking analysis (Flyvbjerg & Petersen 1989)."""

from __future__ import annotations

import math

import numpy as np

MIN_BLOCKS = 16
"""Blocking stops when fewer blocks than this would remain (their variance is too noisy)."""


def blocked_mean(series: np.ndarray) -> tuple[float, float]:
    """Mean of a correlated series and its standard error by blocking analysis.

    The series is halved repeatedly by averaging neighbouring pairs; the naive
    standard error grows with the block length until blocks are longer than the
    correlation time, then stays flat. The largest value over the levels with at
    least :data:`MIN_BLOCKS` blocks is returned (a slight overestimate on the plateau).
    """
    x = np.asarray(series, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()) if x.size else math.nan, math.nan
    mean, sem = float(x.mean()), 0.0
    while x.size >= MIN_BLOCKS:
        sem = max(sem, float(x.std(ddof=1) / math.sqrt(x.size)))
        x = 0.5 * (x[: x.size // 2 * 2 : 2] + x[1 : x.size // 2 * 2 : 2])
    return mean, sem if sem else float(np.std(series, ddof=1) / math.sqrt(len(series)))
