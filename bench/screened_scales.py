"""Screened lattices: accuracy against inference cost for short, wide and multi-scale EDNNs.

    python bench/screened_scales.py [--models models/screened-short.onnx,...] [--L 512]
                                    [--n 32] [--repeats 3] [--json-out bench/results/screened.json]

Each model scores the same ``--n`` fresh ``L x L`` screened lattices (seed 1234, never
trained on) through onnxruntime (numpy dense path, one thread, no dask); the table
gives the mean absolute error of E divided by the standard deviation of E across the
lattices, and onnxruntime's time per pixel (median of ``--repeats`` passes over one
lattice) with its ratio to the slowest model's.

A second table is a *sweep*: pair nets (``train fields --net pair``, a closed-form
least-squares fit, so every model sits at the best its reach allows) fitted on the
recipe's data set at full resolution for contexts 4 to 32, and in several multi-scale
layouts, each scored like the shipped models. It is the error-cost curve of each
family, and it names, for each multi-scale model, the full-resolution model of equal
or worse accuracy (the most accurate one whose error is not below the multi-scale
model's) with the ratio of their times. Writes the JSON and ``docs/screened-cost.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

from ednn_dask.inference import contributions  # noqa: E402
from ednn_dask.model import load_model  # noqa: E402
from training.screened import SCREENED_TRAINING, screened_dataset  # noqa: E402

MODELS = "models/screened-short.onnx,models/screened-wide.onnx,models/screened-multiscale.onnx"
SWEEP = {"full": [4, 8, 12, 16, 20, 22, 24, 26, 28, 32],
         "multi": ["1:4:8,2:2:16", "1:4:10,2:2:16", "1:4:12,2:2:12", "1:4:12,2:2:16",
                   "1:4:16,2:2:16", "1:4:12,2:4:8,4:2:8", "1:4:16,4:2:8"]}


def score_row(path: Path, fields: np.ndarray, target: np.ndarray, repeats: int) -> dict:
    """Error and onnxruntime time per pixel of one model on the lattices."""
    model = load_model(path)
    predicted = np.array([contributions(x, model).sum(dtype=np.float64) for x in fields])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        contributions(fields[0], model)
        times.append(time.perf_counter() - t0)
    spec = model.spec
    return {"focus": list(spec.focus), "context": list(spec.context),
            "scales": [[s.factor[0], s.focus[0], s.context[0]] for s in spec.scales],
            "n_parameters": spec.provenance.get("n_parameters"),
            "mae_over_std": float(np.abs(predicted - target).mean() / target.std()),
            "mae": float(np.abs(predicted - target).mean()),
            "seconds_per_pixel": statistics.median(times) / fields[0].size}


def model_rows(paths: list[str], fields, target, repeats: int) -> list[dict]:
    rows = [{"model": p, **score_row(ROOT / p, fields, target, repeats)} for p in paths]
    slowest = max(r["seconds_per_pixel"] for r in rows)
    for r in rows:
        r["cost_vs_slowest"] = r["seconds_per_pixel"] / slowest
    return rows


def sweep_rows(fields, target, repeats: int) -> list[dict]:
    """Pair nets fitted on the recipe's data set: full resolution and multi-scale layouts."""
    from training.datasets import save_dataset
    from training.fields import train_fields

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "screened.zarr"
        save_dataset(screened_dataset(SCREENED_TRAINING["n"], SCREENED_TRAINING["L"], seed=0),
                     store)
        layouts = [("full", {"focus": 4, "context": c}) for c in SWEEP["full"]]
        layouts += [("multi", {"scales": s}) for s in SWEEP["multi"]]
        for k, (family, layout) in enumerate(layouts):
            out = Path(tmp) / f"m{k}.onnx"
            train_fields(store, out, field="field", target="target", net="pair",
                         workdir=Path(tmp) / f"w{k}", progress=False, **layout)
            row = {"family": family, **score_row(out, fields, target, repeats)}
            rows.append(row)
            print(f"  {family:<5} {layout_name(row):<22} MAE/std {row['mae_over_std']:.4f}  "
                  f"{row['seconds_per_pixel'] * 1e6:.3f} us/px", flush=True)
    wide = max(r["seconds_per_pixel"] for r in rows if r["family"] == "full")
    for r in rows:
        r["cost_vs_wide"] = r["seconds_per_pixel"] / wide
        if r["family"] == "multi":
            r.update(matched_full(r, rows))
    return rows


def layout_name(row: dict) -> str:
    if row["scales"]:
        return ", ".join(":".join(map(str, s)) for s in row["scales"])
    return f"context {row['context'][0]}"


def matched_full(row: dict, rows: list[dict]) -> dict:
    """The full-resolution model of equal or worse accuracy nearest to ``row``; time ratio."""
    worse = [r for r in rows if r["family"] == "full" and r["mae_over_std"] >= row["mae_over_std"]]
    if not worse:
        return {"matched_context": None, "cost_vs_matched": None}
    match = min(worse, key=lambda r: r["mae_over_std"])
    return {"matched_context": match["context"][0],
            "cost_vs_matched": row["seconds_per_pixel"] / match["seconds_per_pixel"]}


def plot(rows: list[dict], sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for family, style in (("full", "o-"), ("multi", "s")):
        points = sorted((r["seconds_per_pixel"] * 1e6, max(r["mae_over_std"], 1e-6))
                        for r in sweep if r["family"] == family)
        if points:
            ax.plot(*zip(*points, strict=True), style, ms=4, alpha=0.6,
                    label=f"pair nets, {'full resolution' if family == 'full' else 'multi-scale'}")
    for r in rows:
        xy = (r["seconds_per_pixel"] * 1e6, max(r["mae_over_std"], 1e-6))
        ax.scatter(*xy, s=60, marker="*", color="k", zorder=3)
        ax.annotate(Path(r["model"]).stem.removeprefix("screened-"), xy,
                    textcoords="offset points", xytext=(6, 4))
    ax.axhline(0.02, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("onnxruntime time per pixel (µs, one thread)")
    ax.set_ylabel("MAE(E) / std(E), fresh lattices")
    ax.set_title("Screened lattices: error against inference cost")
    ax.legend(fontsize=8)
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
    ds = screened_dataset(args.n, args.L, seed=1234)
    fields, target = ds["field"].values, ds["target"].values
    rows = model_rows(args.models.split(","), fields, target, args.repeats)
    print(f"{'model':<38} {'MAE/std':>8} {'us/px':>8} {'cost':>6}")
    for r in rows:
        print(f"{r['model']:<38} {r['mae_over_std']:>8.4f} {r['seconds_per_pixel'] * 1e6:>8.3f} "
              f"{r['cost_vs_slowest']:>6.3f}")
    print("\nsweep of pair nets (closed-form fits on the recipe's data set):")
    sweep = sweep_rows(fields, target, args.repeats)
    for r in sweep:
        if r["family"] == "multi" and r["matched_context"] is not None:
            print(f"  {layout_name(r):<22} vs full resolution of equal or worse accuracy "
                  f"(context {r['matched_context']}): {r['cost_vs_matched']:.3f} of its time; "
                  f"vs context 32: {r['cost_vs_wide']:.3f}")
    plot(rows, sweep, ROOT / "docs" / "screened-cost.png")
    write_result({"L": args.L, "n": args.n, "models": rows, "sweep": sweep},
                 args.json_out, sys.argv)


if __name__ == "__main__":
    main()
