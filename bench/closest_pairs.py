"""Atomistic model error against the closest pair of atoms in each structure.

    python bench/closest_pairs.py [--model models/hexagonal-thermal-f16c24.onnx]
                                  [--data STORE ...] [--json-out bench/results/closest-pairs.json]

For every labelled structure of each store: the shortest in-plane distance between two
atoms (minimum image) and the model's error against GFN1-xTB (meV/atom). Prints, per
store, the distribution of that distance and the error in bins of it. MD at up to
1,500 K never brings two atoms closer than about 1.15 Å; EDNN Monte Carlo with a
model that is too soft there does, and this is where its errors sit. It is how to
choose the hard core of ``mc atoms --min-distance``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

from ednn_dask import energy  # noqa: E402
from training import reference  # noqa: E402

BINS = (0.0, 1.0, 1.1, 1.2, 1.3, 10.0)  # Å (docs/generate.py: CLOSEST_BINS)
DATA = ["data/thermal-hexagonal.zarr", "data/mc-test-hexagonal-2x2.zarr"]


def store_row(model: str, path: str) -> dict:
    ds = reference.load_reference(path)
    done = np.flatnonzero(ds["status"].values == reference.DONE)
    structures = reference.dataset_structures(ds, done)
    closest = np.array([s.closest_pair()[2] for s in structures])  # minimum image
    error = ((energy(structures, model, check=False) - ds["energy"].values[done])
             / ds["n_atoms"].values[done] * 1e3)
    bins = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (closest >= lo) & (closest < hi)
        if m.any():
            bins.append({"from_A": lo, "to_A": hi, "n": int(m.sum()),
                         "mae_meV_per_atom": float(np.abs(error[m]).mean()),
                         "signed_meV_per_atom": float(error[m].mean())})
    return {"store": path, "n": len(done),
            "closest_percentiles_A": dict(zip(("0", "1", "5", "50"),
                                              np.percentile(closest, [0, 1, 5, 50]).tolist())),
            "mae_meV_per_atom": float(np.abs(error).mean()), "bins": bins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/hexagonal-thermal-f16c24.onnx")
    parser.add_argument("--data", nargs="+", default=DATA)
    parser.add_argument("--json-out", default=str(RESULTS / "closest-pairs.json"))
    args = parser.parse_args()
    rows = [store_row(args.model, path) for path in args.data]
    for r in rows:
        p = r["closest_percentiles_A"]
        print(f"{r['store']} ({r['n']}): closest pair min {p['0']:.3f}, 1 % {p['1']:.3f}, "
              f"5 % {p['5']:.3f}, median {p['50']:.3f} Å; MAE {r['mae_meV_per_atom']:.1f}")
        for b in r["bins"]:
            print(f"  {b['from_A']:.1f}-{b['to_A']:.1f} Å: n={b['n']:4d}  MAE "
                  f"{b['mae_meV_per_atom']:7.1f}  signed {b['signed_meV_per_atom']:+7.1f} meV/atom")
    write_result({"model": args.model, "stores": rows}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
