"""Can a local model learn the finite-size term of the reference? Leave-one-out fits.

    python bench/convention_locality.py [--replicas data/replicas-2x2-hexagonal.zarr]
        [--alphas 0.01 0.1 1 10 100 1000] [--json-out bench/results/convention-locality.json]

A 60-atom cell's GFN1-xTB energy differs from its 2 x 2 replica's by a few meV/atom
(the findings page). :func:`training.convention.to_replica_convention` removes the
part linear in the composition. Training on replica labels (a fine-tune, or a
Δ-model beside the Gamma-point net) could remove more only where the rest depends
on what a tile sees. Fitted here to the cells of a replica store (``python
bench/reference_finite_size.py --store data/hexagonal.zarr --per-group 8 --out
data/replicas-2x2-hexagonal.zarr``: 120 cells, 46 min on 2 cores), each feature set
scored by leave-one-out, meV/atom:

- ``composition``: counts of B, C and N, the shift ``to_replica_convention`` applies
  (its ``loo_mae_meV_per_atom``, exactly);
- ``+ group``: one more term per kind x vacancies group;
- ``+ local``: the short-range descriptors of ``bench/hexagonal_locality.py`` (bonds by
  element pair and shell up to 3.3 Å, coordination, bond angles), ridge-penalized;
- ``+ gap`` (instead of the local terms): the cell's Gamma-point HOMO-LUMO gap in
  GFN1-xTB (gap, its square root and exp(-gap / 0.2 eV)), a property of the whole
  cell's electrons that no tile sees (one more GFN1-xTB run per cell, 2-3 s each).

The penalty of each set is the best of ``--alphas`` on the same left-out errors, so
the richer sets' figures are optimistic: what no local fit of this kind can beat.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from record import RESULTS, write_result  # noqa: E402

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def gamma_gap(structure) -> float:
    """HOMO-LUMO gap (eV) of a periodic cell at the Gamma point, GFN1-xTB as labelled."""
    from training.reference import HARTREE, xtb_calculator

    result = xtb_calculator(structure).singlepoint()
    levels = np.sort(result.get("orbital-energies"))
    filled = int(round(result.get("orbital-occupations").sum())) // 2
    return float(levels[filled] - levels[filled - 1]) * HARTREE


def leave_one_out(free: np.ndarray, penalized: np.ndarray, y: np.ndarray,
                  alpha: float) -> np.ndarray:
    """Left-out residuals of ``y ~ free @ a + penalized @ b`` with ``alpha |b|²``.

    ``penalized`` columns are scaled to unit standard deviation on each fit's rows
    (not centred: no intercept is added; constant ones drop out); ``free`` columns are
    neither scaled nor penalized, so with no penalized columns this is ordinary least
    squares, left out row by row."""
    residuals = np.empty(len(y))
    for k in range(len(y)):
        rows = np.arange(len(y)) != k
        std = penalized[rows].std(0)
        std[std == 0] = np.inf
        a = np.c_[free, penalized / std]
        ridge = np.diag(np.r_[np.zeros(free.shape[1]), np.full(penalized.shape[1], alpha)])
        w = np.linalg.lstsq(a[rows].T @ a[rows] + ridge, a[rows].T @ y[rows], rcond=None)[0]
        residuals[k] = y[k] - a[k] @ w
    return residuals


def feature_sets(cells, gaps: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(free, penalized) columns of each feature set."""
    from hexagonal_locality import store_descriptors

    from training import reference

    counts = reference.species_counts(cells, [5, 6, 7]).astype(float)
    group = cells["kind"].values * 10 + cells["vacancies"].values
    indicators = (group[:, None] == np.unique(group)[None]).astype(float)
    local = store_descriptors(cells)
    none = np.empty((len(counts), 0))
    return {"composition": (counts, none),
            "+ group": (counts, indicators),
            "+ local": (counts, np.c_[indicators, local]),
            "+ gap": (counts, np.c_[indicators, gaps, np.sqrt(gaps), np.exp(-gaps / 0.2)])}


def scores(cells, diff: np.ndarray, gaps: np.ndarray, alphas=ALPHAS) -> dict:
    """Leave-one-out MAE (meV/atom) of each feature set, overall and by kind, at its best alpha."""
    from training import reference

    n_atoms, kind = cells["n_atoms"].values, cells["kind"].values
    out = {}
    for name, (free, penalized) in feature_sets(cells, gaps).items():
        tried = {a: np.abs(leave_one_out(free, penalized, diff, a)) / n_atoms * 1e3
                 for a in (alphas if penalized.shape[1] else (0.0,))}
        alpha = min(tried, key=lambda a: tried[a].mean())
        errors = tried[alpha]
        out[name] = {"alpha": alpha, "loo_mae_meV_per_atom": float(errors.mean()),
                     "features": int(free.shape[1] + penalized.shape[1]),
                     "by_kind": {reference.KINDS[k]: float(errors[kind == k].mean())
                                 for k in np.unique(kind)}}
    return out


def main(argv: list[str] | None = None) -> dict:
    from training.convention import replica_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="data/replicas-2x2-hexagonal.zarr")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--json-out", default=str(RESULTS / "convention-locality.json"))
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from training.reference import dataset_structures, species_counts

    cells, diff, n = replica_pairs(args.replicas)
    n_atoms = cells["n_atoms"].values
    per_atom = diff / n_atoms * 1e3
    gaps = np.array([gamma_gap(s) for s in tqdm(dataset_structures(cells), desc="gaps")])
    counts = species_counts(cells, [5, 6, 7])
    # what the shift leaves, per atom, against the gap (small gap: a metal's k-point error)
    left = (diff - counts @ np.linalg.lstsq(counts, diff, rcond=None)[0]) / n_atoms * 1e3
    result = {"replicas": args.replicas, "n": len(diff), "replicas_per_side": n,
              "difference_mae_meV_per_atom": float(np.abs(per_atom).mean()),
              "difference_std_meV_per_atom": float(per_atom.std()),
              "gap_eV": {"min": float(gaps.min()), "median": float(np.median(gaps)),
                         "max": float(gaps.max())},
              "shift_residual_vs_gap_r": float(np.corrcoef(left, np.exp(-gaps / 0.2))[0, 1]),
              "fits": scores(cells, diff, gaps, args.alphas)}
    kinds = list(next(iter(result["fits"].values()))["by_kind"])
    print(f"{len(diff)} cells, replica minus cell: mean |d| "
          f"{result['difference_mae_meV_per_atom']:.2f}, std "
          f"{result['difference_std_meV_per_atom']:.2f} meV/atom; what the shift leaves "
          f"against exp(-gap / 0.2 eV): r = {result['shift_residual_vs_gap_r']:+.2f}")
    print(f"{'features':<14}{'terms':>6}{'alpha':>8}{'LOO MAE':>9}" + "".join(
        f"{k:>10}" for k in kinds))
    for name, fit in result["fits"].items():
        print(f"{name:<14}{fit['features']:>6}{fit['alpha']:>8g}"
              f"{fit['loo_mae_meV_per_atom']:>9.2f}"
              + "".join(f"{fit['by_kind'][k]:>10.2f}" for k in kinds))
    write_result(result, args.json_out, sys.argv)
    return result


if __name__ == "__main__":
    main()
