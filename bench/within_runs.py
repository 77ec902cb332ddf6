"""Does a model follow the energy as it fluctuates within an MD run? By vacancies and temperature.

    python bench/within_runs.py --model M.onnx --data STORE ... [--split train] \\
        [--registries K] [--json-out runs/within-runs.json]

``ednn-dask evaluate atoms`` splits the error on MD snapshots into an offset per run
and a scatter within runs, and says how the predictions follow the reference about
each run's mean (slope, r²). This prints that split (:func:`training.atomistic.run_offsets`)
for the snapshots of each vacancy count and each temperature: where the scatter
within runs is as large as the reference's own fluctuation, the model does not see
what moves the energy in those cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import write_result  # noqa: E402


def by_group(error: np.ndarray, truth: np.ndarray, ds) -> dict[str, dict[str, float]]:
    """``run_offsets`` of all MD snapshots, then of each vacancy count and temperature."""
    from training.atomistic import run_offsets

    in_run = ds["run"].values >= 0
    groups = {"all": in_run}
    groups |= {f"{v} vac": in_run & (ds["vacancies"].values == v)
               for v in np.unique(ds["vacancies"].values[in_run])}
    groups |= {f"{t:g} K": in_run & (ds["temperature"].values == t)
               for t in np.unique(ds["temperature"].values[in_run])}
    return {name: {"n": int(m.sum()), **run_offsets(error[m], ds.isel(structure=m), truth[m])}
            for name, m in groups.items()}


def main(argv: list[str] | None = None) -> None:
    from ednn_dask.atoms import energy
    from training import reference
    from training.atomistic import recipe_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--split", default="all", choices=["all", "train", "val", "test"])
    parser.add_argument("--registries", type=int, default=1)
    parser.add_argument("--json-out", default="runs/within-runs.json")
    args = parser.parse_args(argv)
    ds = reference.load_reference_sets(args.data)
    if args.split != "all":
        ds = ds.isel(structure=recipe_split(ds, args.model, args.split))
    n_atoms = ds["n_atoms"].values
    predicted = energy(reference.dataset_structures(ds), args.model, registries=args.registries)
    truth = ds["energy"].values / n_atoms * 1e3
    groups = by_group(predicted / n_atoms * 1e3 - truth, truth, ds)
    print(f"{'':>8}  {'n':>5}  {'run means':>9}  {'within':>6}  {'reference':>9}  {'slope':>5}  "
          f"{'r2':>4}   (meV/atom)")
    for name, g in groups.items():
        g = {"reference_within_runs": np.nan, "slope_within_runs": np.nan,
             "r2_within_runs": np.nan, **g}  # runs of one snapshot each have none
        print(f"{name:>8}  {g['n']:5d}  {g['mae_of_run_means']:9.2f}  {g['mae_within_runs']:6.2f}  "
              f"{g['reference_within_runs']:9.2f}  {g['slope_within_runs']:5.2f}  "
              f"{g['r2_within_runs']:4.2f}")
    write_result({"model": args.model, "data": args.data, "split": args.split,
                  "registries": args.registries, "groups": groups}, args.json_out,
                 [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
