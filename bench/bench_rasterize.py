"""Rasterization speed: numba kernel vs the per-atom numpy stamp, same atoms, same run.

    python bench/bench_rasterize.py [--cells 400 240] [--spacing 0.1] [--repeats 3]
                                    [--json-out bench/results/rasterize.json]

A porous-graphene sheet (``--cells`` rectangular cells, 10 % porosity) is
generated once; then, in this process, on one core:

- the numba kernel (``ednn_dask.atoms.raster.stamp``) over all its atoms, into a
  float32 field as the pipeline does;
- the per-atom numpy stamp (``stamp_numpy``) over the first ``--numpy-atoms``
  atoms (it is ~50x slower), checked equal (float64, rtol 1e-12) to the numba
  kernel on those atoms;
- the whole dask pipeline (``rasterize(...).sum()``, threaded, 2048² chunks,
  each chunk fetching its atoms plus the cutoff), atoms/s over all cores.

Prints a table (median of ``--repeats``) and one JSON line with the ratio, and writes
that JSON with the machine and the date to ``--json-out`` (the docs' benchmarks page
is generated from it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from record import RESULTS, write_result


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from ednn_dask.atoms.materials import PorousSheet
    from ednn_dask.atoms.raster import rasterize, stamp, stamp_numpy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs=2, default=(400, 240))
    parser.add_argument("--spacing", type=float, default=0.1)
    parser.add_argument("--numpy-atoms", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", default=str(RESULTS / "rasterize.json"),
                        help="where the JSON summary is written (default %(default)s)")
    args = parser.parse_args()

    sheet = PorousSheet(tuple(args.cells), porosity=0.1, seed=0)
    lx, ly = sheet.size
    xy, numbers = sheet.atoms_in_box(0, lx, 0, ly)
    weight, channel = numbers.astype(float), np.zeros(len(numbers), np.int64)
    s = args.spacing
    shape = (1, int(round(ly / s)), int(round(lx / s)))
    spacing = (ly / shape[1], lx / shape[2])
    stamp(np.zeros((1, 8, 8)), xy[:1], weight[:1], channel[:1], spacing, 0.2, 1.0)  # compile

    out = np.zeros(shape, np.float32)  # the pipeline's precision
    t_numba = timed(lambda: stamp(out, xy, weight, channel, spacing, 0.2, 1.0), args.repeats)
    k = min(args.numpy_atoms, len(xy))
    a, b = np.zeros(shape), np.zeros(shape)
    t_numpy = timed(lambda: stamp_numpy(a, xy[:k], weight[:k], channel[:k], spacing, 0.2, 1.0),
                    1)
    stamp(b, xy[:k], weight[:k], channel[:k], spacing, 0.2, 1.0)
    equal = bool(np.allclose(a, b, rtol=1e-12, atol=1e-12))
    field = rasterize(sheet, spacing)
    t_dask = timed(lambda: float(field.sum().compute(scheduler="threads")), args.repeats)

    result = {
        "atoms": len(xy),
        "pixels": shape[1] * shape[2],
        "numba_atoms_per_s_core": len(xy) / t_numba,
        "numpy_atoms_per_s_core": k / t_numpy,
        "ratio_numba_over_numpy": (len(xy) / t_numba) / (k / t_numpy),
        "numba_equals_numpy": equal,
        "dask_pipeline_atoms_per_s": len(xy) / t_dask,
        "cores": os.cpu_count(),
        "cells": list(args.cells),
        "spacing": args.spacing,
        "numpy_atoms": k,
        "repeats": args.repeats,
    }
    print(f"{'method':<34}{'atoms/s':>14}")
    print(f"{'numba kernel, 1 core':<34}{result['numba_atoms_per_s_core']:>14,.0f}")
    print(f"{'per-atom numpy stamp, 1 core':<34}{result['numpy_atoms_per_s_core']:>14,.0f}")
    print(f"{'dask rasterize, all cores':<34}{result['dask_pipeline_atoms_per_s']:>14,.0f}")
    print(f"numba / numpy = {result['ratio_numba_over_numpy']:.1f}x, equal: {equal}; "
          f"{len(xy):,} atoms on {shape[1]}x{shape[2]} px")
    print(json.dumps(result))
    write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
