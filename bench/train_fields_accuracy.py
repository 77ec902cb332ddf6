"""The train-your-own check: a φ⁴ Ginzburg-Landau energy of smooth random 2-D fields.

Writes a training data set (3,000 fields of 32x32, smooth Gaussian random fields with
correlation lengths of 2-4 px, unit variance) with the exact local target

    E = sum over pixels of (φ² - 1)² / 4 + ((φ[x+1] - φ)² + (φ[y+1] - φ)²) / 2   (periodic)

and one 1024x1024 field of the same statistics with its exact E, for

    .venv/bin/python bench/train_fields_accuracy.py OUT
    ednn-dask train fields --data OUT/fields.zarr --field phi --target energy \\
        --focus 4 --context 1 --out OUT/model.onnx --workdir OUT/run
    ednn-dask score OUT/big.zarr --model OUT/model.onnx --json
    cat OUT/big-exact.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ednn_dask.field import make_field, save_field
from training.datasets import save_dataset
from training.field_data import field_dataset
from training.laplacian import laplacian_images

CORRELATION = (2.0, 4.0)


def ginzburg_landau(phi: np.ndarray) -> np.ndarray:
    """The exact target per field (float64), periodic forward differences."""
    p = np.asarray(phi, np.float64)
    gx, gy = np.roll(p, -1, -1) - p, np.roll(p, -1, -2) - p
    return ((p * p - 1) ** 2 / 4 + (gx * gx + gy * gy) / 2).sum(axis=(-2, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--L", type=int, default=32)
    parser.add_argument("--big", type=int, default=1024)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = laplacian_images(args.n, args.L, seed=0, correlation_length=CORRELATION)
    ds = field_dataset(fields, ginzburg_landau(fields), spacing=1.0, spacing_unit="um",
                       target_unit="1", field="phi", target="energy")
    save_dataset(ds.chunk({"sample": 500}), out / "fields.zarr", overwrite=True)
    big = laplacian_images(1, args.big, seed=1, correlation_length=CORRELATION)[0]
    save_field(make_field(big, spacing=1.0, spacing_unit="um", name="phi"), out / "big.zarr",
               chunks={"y": 512, "x": 512}, overwrite=True)
    exact = float(ginzburg_landau(big))
    (out / "big-exact.json").write_text(json.dumps({"energy": exact, "shape": list(big.shape)}))
    print(json.dumps({"store": str(out / "fields.zarr"), "samples": args.n, "big_exact": exact}))


if __name__ == "__main__":
    main()
