"""Screened lattices: accuracy against inference cost for short, wide and multi-scale EDNNs.

    python bench/screened_scales.py [--models models/screened-short.onnx,...] [--L 512]
                                    [--n 32] [--repeats 3] [--json-out bench/results/screened.json]

Each model scores the same ``--n`` fresh ``L x L`` screened lattices (seed 1234, never
trained on) through onnxruntime (numpy dense path, one thread, no dask); the table
gives the mean absolute error of E divided by the standard deviation of E across the
lattices, and onnxruntime's time per pixel (median of ``--repeats`` passes over one
lattice) with its ratio to the slowest model's.

A second table is the *ceiling* of block-mean coarsening, no training involved: on
1,200 lattices of 128 x 128, the energy is fitted by least squares from the exact
pair terms within ``R`` pixels (what a fine branch whose pairs reach ``R`` can know;
a quadratic net of context ``c`` reaches pairs up to ``2c`` apart along each axis,
both ends inside one pixel's window) plus, per distance shell, the products of the 2-
or 4-pixel block sums (what a coarse branch can know); the held-out error of that
fit bounds what any two-scale model of that reach and factor can do. Factor 1 (no
coarse features) bounds a single-scale model of that reach. Writes the JSON and
``docs/screened-cost.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

from ednn_dask.inference import contributions  # noqa: E402
from ednn_dask.model import load_model  # noqa: E402
from training.screened import screened_dataset, screened_energy, screened_kernel  # noqa: E402

MODELS = "models/screened-short.onnx,models/screened-wide.onnx,models/screened-multiscale.onnx"
CEILING = {"L": 128, "n": 1200, "train": 900,
           "fine_reach": [4, 8, 12, 16, 20, 24], "factors": [2, 4]}


def model_rows(paths: list[str], L: int, n: int, repeats: int) -> list[dict]:
    ds = screened_dataset(n, L, seed=1234)
    fields, target = ds["field"].values, ds["target"].values
    rows = []
    for path in paths:
        model = load_model(ROOT / path)
        predicted = np.array([contributions(x, model).sum(dtype=np.float64) for x in fields])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            contributions(fields[0], model)
            times.append(time.perf_counter() - t0)
        spec = model.spec
        rows.append({
            "model": path, "focus": list(spec.focus), "context": list(spec.context),
            "scales": [[s.factor[0], s.focus[0], s.context[0]] for s in spec.scales],
            "n_parameters": spec.provenance.get("n_parameters"),
            "mae_over_std": float(np.abs(predicted - target).mean() / target.std()),
            "mae": float(np.abs(predicted - target).mean()),
            "seconds_per_pixel": statistics.median(times) / L**2,
        })
    slowest = max(r["seconds_per_pixel"] for r in rows)
    for r in rows:
        r["cost_vs_slowest"] = r["seconds_per_pixel"] / slowest
    return rows


def _pair(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """½ Σ_p x_p (kernel ⊛ x)_p per lattice (periodic)."""
    potential = np.fft.irfft2(np.fft.rfft2(x) * np.fft.rfft2(kernel), s=x.shape[-2:])
    return 0.5 * (x * potential).sum(axis=(-2, -1))


def ceiling_rows() -> list[dict]:
    """Held-out error of the best fit from fine pairs within R plus coarse block products."""
    L, n, train = CEILING["L"], CEILING["n"], CEILING["train"]
    x = screened_dataset(n, L, seed=99)["field"].values.astype(np.float64)
    energy = screened_energy(x)
    d = np.minimum(np.arange(L), L - np.arange(L))
    r = np.hypot(d[:, None], d[None, :])
    kernel = screened_kernel(L)
    bonds = -(x * (np.roll(x, -1, -1) + np.roll(x, -1, -2))).sum(axis=(1, 2))
    rows = []
    for reach in CEILING["fine_reach"]:
        fine = bonds + _pair(x, np.where(r <= reach, kernel, 0.0))
        for factor in [1, *CEILING["factors"]]:
            features = [fine, np.ones(n)]
            if factor > 1:
                m = L // factor
                sums = x.reshape(n, m, factor, m, factor).sum(axis=(2, 4))
                dc = np.minimum(np.arange(m), m - np.arange(m))
                rc = np.hypot(dc[:, None], dc[None, :])
                shells = np.unique(np.round(rc[rc <= 36 / factor + 1.5], 6))
                features += [_pair(sums, (np.abs(rc - v) < 1e-6).astype(float))
                             for v in shells]
            f = np.stack(features, axis=1)
            coef, *_ = np.linalg.lstsq(f[:train], energy[:train], rcond=None)
            error = energy[train:] - f[train:] @ coef
            rows.append({"fine_reach": reach, "factor": factor,
                         "mae_over_std": float(np.abs(error).mean() / energy[train:].std())})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r in rows:
        ax.scatter(r["seconds_per_pixel"] * 1e6, r["mae_over_std"], s=40)
        ax.annotate(Path(r["model"]).stem.removeprefix("screened-"),
                    (r["seconds_per_pixel"] * 1e6, r["mae_over_std"]),
                    textcoords="offset points", xytext=(6, 4))
    ax.axhline(0.02, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("onnxruntime time per pixel (µs, one thread)")
    ax.set_ylabel("MAE(E) / std(E), fresh lattices")
    ax.set_title("Screened lattices: error against inference cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--L", type=int, default=512)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", default=str(RESULTS / "screened.json"))
    args = parser.parse_args()
    rows = model_rows(args.models.split(","), args.L, args.n, args.repeats)
    print(f"{'model':<38} {'MAE/std':>8} {'us/px':>8} {'cost':>6}")
    for r in rows:
        print(f"{r['model']:<38} {r['mae_over_std']:>8.4f} {r['seconds_per_pixel'] * 1e6:>8.3f} "
              f"{r['cost_vs_slowest']:>6.3f}")
    ceiling = ceiling_rows()
    print("\nceiling of block-mean coarsening (least squares, held out): MAE/std")
    for r in ceiling:
        print(f"  fine pairs within {r['fine_reach']:>2} px, factor {r['factor']}: "
              f"{r['mae_over_std']:.4f}")
    plot(rows, ROOT / "docs" / "screened-cost.png")
    write_result({"L": args.L, "n": args.n, "models": rows, "ceiling": ceiling},
                 args.json_out, sys.argv)


if __name__ == "__main__":
    main()
