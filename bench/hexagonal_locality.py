"""How local is the hexagonal GFN1-xTB data? A short-range descriptor baseline, group by group.

    python bench/hexagonal_locality.py [--data STORE ...] [--held-out STORE]

A ridge fit of the total energy on local descriptors (per element pair and
neighbour shell up to 3.3 A: counts and the first powers of the distance
deviations; per element: coordination counts and bond-angle deviations) is a
valence force field in all but name. Fitted on the training split of each group
(kind x number of vacancies) and scored on its test split (the EDNN recipe's
split, seed 0: by run for a store of MD snapshots), it shows which part of the
data a short-range model can learn: where it is good, an EDNN with a 6.4 A window
should be at least as good; where it fails, the energy depends on more than the
near neighbours (vacancy-vacancy and C/BN interface interactions in a 60-atom,
Gamma-point cell, reconstructed vacancies in MD). ``--held-out``
scores the fit on a whole other store instead (e.g. MD of cells never trained on).
Prints a table and one JSON line (test MAE, meV/atom; NaN where a group has no
training or test rows).
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from training import reference
from training.atomistic import recipe_splits

BOND = 2.5 / np.sqrt(3)  # the 2.5 A lattice's C-C distance
# (inner radius, outer radius, ideal distance) of the first three neighbour shells, A
SHELLS = ((0.0, 1.85, BOND), (1.85, 2.9, 2.5), (2.9, 3.3, 2 * BOND))
SPECIES = (5, 6, 7)
PAIRS = list(itertools.combinations_with_replacement(SPECIES, 2))


def descriptors(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Short-range descriptors of one periodic sheet (minimum image in x and y)."""
    xy, box = positions[:, :2].astype(float), np.diag(cell)[:2]
    d = xy[None] - xy[:, None]
    d -= box * np.round(d / box)
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    upper = np.triu(np.ones_like(r, bool), 1)
    pairs = [((numbers[:, None] == a) & (numbers[None] == b))
             | ((numbers[:, None] == b) & (numbers[None] == a)) for a, b in PAIRS]
    out = []
    for shell, (lo, hi, ideal) in enumerate(SHELLS):
        in_shell = (r > lo) & (r < hi) & upper
        for pair in pairs:
            dev = r[in_shell & pair] - ideal
            powers = (0, 1, 2, 3, 4) if shell == 0 else (0, 1, 2)
            out += [np.sum(dev**p) for p in powers]
    bonded = r < SHELLS[0][1]
    coordination = bonded.sum(1)
    for z in SPECIES:
        out += [np.sum((numbers == z) & (coordination == c)) for c in (1, 2, 3)]
        angles = [_angle(d[i, j], d[i, k]) for i in np.flatnonzero(numbers == z)
                  for j, k in itertools.combinations(np.flatnonzero(bonded[i]), 2)]
        dev = np.array(angles) - 2 * np.pi / 3
        out += [len(dev), dev.sum(), np.sum(dev**2)]
    return np.array(out, float)


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))


def ridge_mae(x, energy, n_atoms, train, x_test, energy_test, n_atoms_test,
              alpha: float = 1e-4) -> float:
    """MAE (meV/atom) on the test rows of a ridge fit on standardized descriptors."""
    if len(train) == 0 or len(x_test) == 0:
        return float("nan")
    mean, std = x[train].mean(0), x[train].std(0) + 1e-9
    a = np.c_[(x[train] - mean) / std, np.ones(len(train))]
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ energy[train])
    predicted = np.c_[(x_test - mean) / std, np.ones(len(x_test))] @ w
    return float(np.mean(np.abs(predicted - energy_test) / n_atoms_test) * 1e3)


def store_descriptors(ds) -> np.ndarray:
    return np.stack([descriptors(p[:n], z[:n], c) for p, z, c, n in zip(
        ds["positions"].values, ds["numbers"].values, ds["cell"].values, ds["n_atoms"].values)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["data/hexagonal.zarr"])
    parser.add_argument("--held-out", help="score on this whole store instead of the test split")
    args = parser.parse_args()
    ds = reference.load_reference_sets(args.data if len(args.data) > 1 else args.data[0])
    x, energy, n_atoms = store_descriptors(ds), ds["energy"].values, ds["n_atoms"].values
    train, _, test = recipe_splits(ds, seed=0)
    test_ds = ds.isel(structure=test)
    x_test = x[test]
    if args.held_out:
        test_ds = reference.load_reference(args.held_out)
        x_test = store_descriptors(test_ds)
    kind, vacancies = ds["kind"].values, ds["vacancies"].values
    test_kind, test_vacancies = test_ds["kind"].values, test_ds["vacancies"].values
    groups = {"all": (np.ones(len(x), bool), np.ones(len(x_test), bool))}
    for k, name in enumerate(reference.KINDS[:3]):
        for v in np.unique(vacancies):
            groups[f"{name} {v} vac"] = ((kind == k) & (vacancies == v),
                                         (test_kind == k) & (test_vacancies == v))
    result = {}
    print(f"{'group':<16}{'test MAE, meV/atom':>20}")
    for key, (in_group, in_test) in groups.items():
        result[key] = ridge_mae(x, energy, n_atoms, np.intersect1d(train, np.flatnonzero(in_group)),
                                x_test[in_test], test_ds["energy"].values[in_test],
                                test_ds["n_atoms"].values[in_test])
        print(f"{key:<16}{result[key]:>20.2f}")
    print(json.dumps({k: round(v, 2) for k, v in result.items()}))


if __name__ == "__main__":
    main()
