"""Train-your-own accuracy: the default `train fields` on a φ⁴ energy, scored on a large field.

A data set of smooth Gaussian random fields (correlation lengths of 2-4 px, each sample
shifted and scaled to zero mean and unit variance), 3,000 fields of 32x32 in 2-D or
3,000 volumes of 16x16x16 in 3-D, with the exact local target (the Ginzburg-Landau
φ⁴ energy, periodic forward differences)

    E = sum over pixels of (φ² - 1)² / 4 + (sum over axes of (φ[+1] - φ)²) / 2

and one large field of the same statistics (1024x1024, or 256x256x256) with its exact
E. The script writes both, trains with `ednn-dask train fields` at its defaults
(`--focus 4 --context 1`), scores the large field with `ednn-dask score`, and records
the relative error and the training time (each command in a subprocess):

    .venv/bin/python bench/train_fields_accuracy.py OUT [--dim 3] [--json-out PATH]

Step by step, the same (`--data-only` writes the data and stops):

    .venv/bin/python bench/train_fields_accuracy.py OUT --data-only
    ednn-dask train fields --data OUT/fields.zarr --field phi --target energy \\
        --focus 4 --context 1 --out OUT/model.onnx --workdir OUT/run
    ednn-dask score OUT/big.zarr --model OUT/model.onnx --json
    cat OUT/big-exact.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

CORRELATION = (2.0, 4.0)
SIZES = {2: (32, 1024), 3: (16, 256)}  # training side, large-field side
CLI = str(Path(sys.executable).with_name("ednn-dask"))


def smooth_fields(n: int, L: int, dim: int, seed: int) -> np.ndarray:
    """``n`` periodic Gaussian random fields of side ``L`` in ``dim`` dims, float32.

    White noise filtered by a Gaussian spectrum (correlation length drawn per sample,
    log-uniform in :data:`CORRELATION`), each sample then at zero mean, unit variance.
    In 2-D these are :func:`training.laplacian.laplacian_images`.
    """
    if dim == 2:
        from training.laplacian import laplacian_images

        return laplacian_images(n, L, seed=seed, correlation_length=CORRELATION)
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(*np.log(CORRELATION), size=n))
    freqs = [np.fft.fftfreq(L)] * (dim - 1) + [np.fft.rfftfreq(L)]
    k2 = sum(f.reshape([-1 if a == i else 1 for a in range(dim)]) ** 2
             for i, f in enumerate(freqs)) * (2 * np.pi) ** 2
    out = np.empty((n, *(L,) * dim), np.float32)
    for i in range(n):
        noise = rng.standard_normal((L,) * dim)
        field = np.fft.irfftn(np.fft.rfftn(noise) * np.exp(-0.5 * lengths[i] ** 2 * k2),
                              s=(L,) * dim, axes=tuple(range(dim)))
        field -= field.mean()
        out[i] = field / field.std()
    return out


def ginzburg_landau(phi: np.ndarray, dim: int) -> np.ndarray:
    """The exact target per field (float64), periodic forward differences."""
    p = np.asarray(phi, np.float64)
    axes = tuple(range(-dim, 0))
    energy = (p * p - 1) ** 2 / 4
    for a in axes:
        g = np.roll(p, -1, a) - p
        energy += g * g / 2
    return energy.sum(axis=axes)


def write_data(out: Path, dim: int, n: int, L: int, big_side: int) -> float:
    """The training data set and the large field; returns the large field's exact E."""
    from ednn_dask.field import make_field, save_field
    from training.datasets import save_dataset
    from training.field_data import field_dataset

    fields = smooth_fields(n, L, dim, seed=0)
    ds = field_dataset(fields, ginzburg_landau(fields, dim), spacing=1.0, spacing_unit="um",
                       target_unit="1", field="phi", target="energy")
    save_dataset(ds.chunk({"sample": 500}), out / "fields.zarr", overwrite=True)
    big = smooth_fields(1, big_side, dim, seed=1)[0]
    save_field(make_field(big, spacing=1.0, spacing_unit="um", name="phi"), out / "big.zarr",
               chunks={d: min(big_side, 512 if dim == 2 else 128)
                       for d in ("z", "y", "x")[-dim:]}, overwrite=True)
    exact = float(ginzburg_landau(big, dim))
    (out / "big-exact.json").write_text(json.dumps({"energy": exact, "shape": list(big.shape)}))
    return exact


def run(command: list[str]) -> float:
    """Run a command (stderr passed through); its wall seconds. Fails loudly."""
    print("$", " ".join(command), flush=True)
    t = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if "train" in command
                   else None)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--data-only", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    L, big_side = SIZES[args.dim]
    exact = write_data(out, args.dim, args.n, L, big_side)
    print(json.dumps({"store": str(out / "fields.zarr"), "samples": args.n, "big_exact": exact}))
    if args.data_only:
        return
    model, work = out / "model.onnx", out / "run"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
    load = os.getloadavg()[0]
    train_s = run([CLI, "train", "fields", "--data", str(out / "fields.zarr"), "--field", "phi",
                   "--target", "energy", "--focus", "4", "--context", "1", "--out", str(model),
                   "--workdir", str(work), "--overwrite"])
    score_s = time.perf_counter()
    scored = subprocess.run([CLI, "score", str(out / "big.zarr"), "--model", str(model),
                             "--json"], check=True, capture_output=True, text=True)
    score_s = time.perf_counter() - score_s
    energy = json.loads(scored.stdout.strip().splitlines()[-1])["energy"]
    metrics = json.loads((work / "metrics.json").read_text())
    summary = {
        "dim": args.dim, "samples": args.n, "sample_side": L, "big_side": big_side,
        "target": "phi4 Ginzburg-Landau energy", "focus": 4, "context": 1,
        "train_minutes": train_s / 60, "score_seconds": score_s,
        "load_average_at_start": load, "cores": len(os.sched_getaffinity(0)),
        "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "n_parameters": metrics["n_parameters"], "test": metrics["test"],
        "big_energy": energy, "big_exact": exact, "big_relative_error": (energy - exact) / exact,
    }
    print(json.dumps({k: summary[k] for k in ("train_minutes", "big_relative_error")}))
    write_result(summary, args.json_out or RESULTS / f"train-fields-{args.dim}d.json", sys.argv)


if __name__ == "__main__":
    main()
