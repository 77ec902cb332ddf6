"""Is a B-N vacancy pair in h-BN local? Its GFN1-xTB energy against the pair's distance.

    python bench/vacancy_pairs.py [--models models/hexagonal-f16c24.onnx ...] [--data STORE]
                                  [--json-out bench/results/vacancy-pairs.json]

A boron vacancy is an acceptor and a nitrogen vacancy a donor: in one neutral,
periodic cell, electrons move from one to the other whatever their distance. Takes
every h-BN cell of the store with exactly one vacancy of each kind, finds the two
empty lattice sites (minimum image), and prints, by their distance, the energy left
after the per-element reference energies (eV per cell; one vacancy of each kind in
separate cells add up to the ``separate`` line) and the model's signed and absolute
error (meV/atom; every cell, training ones included) of each model, side by side.
An interaction that does not fade within the model's context cannot be learned by
any EDNN of that context, and does not transfer to larger cells; a multi-scale model
(``train hexagonal --scales``) sees farther. Writes the JSON for the docs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import RESULTS, write_result  # noqa: E402

from ednn_dask import energy  # noqa: E402
from ednn_dask.atoms.materials import honeycomb_sites, sheet_cell  # noqa: E402
from training import reference  # noqa: E402

BINS = (0.0, 2.0, 3.0, 4.5, 6.0, 7.5, 10.0)  # A: first shells, then wider rings


def empty_sites(positions: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Lattice sites (x, y) of a sheet of ``cells`` with no atom within 0.6 A."""
    i, j = np.meshgrid(np.arange(cells[0]), np.arange(cells[1]), indexing="ij")
    sites = honeycomb_sites(i, j).reshape(-1, 2)
    box = np.diag(sheet_cell(cells))[:2]
    d = sites[:, None] - positions[None, :, :2]
    d -= np.round(d / box) * box
    return sites[np.sqrt((d**2).sum(-1)).min(1) > 0.6]


def pair_distance(positions: np.ndarray, cells: tuple[int, int]) -> float:
    a, b = empty_sites(positions, cells)
    box = np.diag(sheet_cell(cells))[:2]
    d = a - b
    return float(np.hypot(*(d - np.round(d / box) * box)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["models/hexagonal-f16c24.onnx"])
    parser.add_argument("--data", default="data/hexagonal.zarr")
    parser.add_argument("--json-out", default=str(RESULTS / "vacancy-pairs.json"))
    args = parser.parse_args()
    ds = reference.load_reference(args.data)
    cells = tuple(ds.attrs["cells"])
    sites = 4 * cells[0] * cells[1]
    mu = reference.fit_reference_energies(ds, [5, 6, 7])
    residual = reference.residual_energy(ds, mu)
    n_b, n_n = ((ds["numbers"].values == z).sum(1) for z in (5, 7))
    hbn = ds["kind"].values == reference.KINDS.index("hbn")
    group = {(vb, vn): residual[hbn & (n_b == sites // 2 - vb) & (n_n == sites // 2 - vn)].mean()
             for vb, vn in ((0, 0), (1, 0), (0, 1))}
    separate = group[1, 0] + group[0, 1] - group[0, 0]
    pairs = np.flatnonzero(hbn & (n_b == sites // 2 - 1) & (n_n == sites // 2 - 1))
    structures = reference.dataset_structures(ds, pairs)
    distance = np.array([pair_distance(s.positions, cells) for s in structures])
    n_atoms = ds["n_atoms"].values[pairs]
    errors = {m: (energy(structures, m) - ds["energy"].values[pairs]) / n_atoms * 1e3
              for m in args.models}
    print(f"separate vacancies: {separate:+.2f} eV per cell (pristine {group[0, 0]:+.2f})")
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (distance >= lo) & (distance < hi)
        if not m.any():
            continue
        rows.append({"from_A": lo, "to_A": hi, "n": int(m.sum()),
                     "residual_eV": round(float(residual[pairs][m].mean()), 2),
                     "binding_eV": round(float(residual[pairs][m].mean() - separate), 2),
                     "models": {name: {"signed_meV_per_atom": round(float(e[m].mean()), 2),
                                       "mae_meV_per_atom": round(float(np.abs(e[m]).mean()), 2)}
                                for name, e in errors.items()}})
        r = rows[-1]
        cells_text = "; ".join(f"{Path(name).stem} {v['signed_meV_per_atom']:+.2f} "
                               f"(MAE {v['mae_meV_per_atom']:.2f})"
                               for name, v in r["models"].items())
        print(f"{lo:4.1f}-{hi:4.1f} A (n={r['n']:3d}): binding {r['binding_eV']:+.2f} eV; "
              f"{cells_text} meV/atom")
    write_result({"data": args.data, "models": args.models,
                  "separate_eV": round(float(separate), 2), "rows": rows}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
