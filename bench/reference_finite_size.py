"""How extensive is the GFN1-xTB reference? 60-atom cells against their own n x n replicas.

    python bench/reference_finite_size.py [--replicas 2] [--kinds graphene hbn]
    python bench/reference_finite_size.py --store data/hexagonal.zarr --per-group 8 \
        --out data/replicas-2x2-hexagonal.zarr [--workers N] [--limit K]

tblite samples the Brillouin zone at Gamma only, so a periodic cell and the same
cell repeated n x n (which samples n x n k-points of the small cell) do not have
the same energy per atom. An EDNN trained on 60-atom cells learns the 60-atom
convention; on supercells it is off by this difference even if it were perfect,
so the transfer error to 2 x 2 / 3 x 3 supercells has this floor.

Without ``--store`` it compares freshly generated pristine cells (one per kind).
With ``--store`` it replicates ``--per-group`` held-out cells of each kind x
vacancies group of the training recipe's test split into a reference store of its
own (``--out``; resumable: a re-run computes only what is pending) and reports the
difference per group. Prints a table and one JSON line (meV/atom: replica minus cell).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ednn_dask.atoms.materials import hexagonal_sheet
from ednn_dask.atoms.structure import Structure
from training import reference
from training.atomistic import recipe_splits
from training.reference import xtb_energy


def timed_energy_per_atom(s: Structure) -> tuple[float, float]:
    start = time.perf_counter()
    e = xtb_energy(s)
    return e / len(s.numbers), time.perf_counter() - start


def fresh_cells(kinds: list[str], replicas: list[int]) -> dict:
    rows = []
    for kind in kinds:
        cell = hexagonal_sheet(np.random.default_rng(0), kind)
        e1, t1 = timed_energy_per_atom(cell)
        for n in replicas:
            en, tn = timed_energy_per_atom(cell.repeat(n, n))
            rows.append({"kind": kind, "replica": n, "atoms": len(cell.numbers) * n * n,
                         "cell_eV_per_atom": e1, "replica_eV_per_atom": en,
                         "difference_meV_per_atom": (en - e1) * 1e3,
                         "seconds": {"cell": t1, "replica": tn}})
            print(f"{kind:>9} {n}x{n} ({rows[-1]['atoms']} atoms): "
                  f"{rows[-1]['difference_meV_per_atom']:+.2f} meV/atom against the 60-atom cell "
                  f"({t1:.1f} s, {tn:.1f} s)", flush=True)
    return {"method": "GFN1-xTB (tblite, Gamma point)", "rows": rows}


def sample_test_cells(ds, per_group: int, seed: int = 0) -> np.ndarray:
    """``per_group`` cells of each kind x vacancies group of the recipe's test split."""
    test = recipe_splits(ds, seed)[2]
    kind, vacancies = ds["kind"].values[test], ds["vacancies"].values[test]
    picked = [test[(kind == k) & (vacancies == v)][:per_group]
              for k in np.unique(kind) for v in np.unique(vacancies)]
    return np.sort(np.concatenate(picked))


def store_cells(args) -> dict:
    ds = reference.load_reference(args.store)
    out = Path(args.out)
    if not (out / "zarr.json").exists():
        index = sample_test_cells(ds, args.per_group)
        cells = reference.dataset_structures(ds, index)
        for s, k in zip(cells, index):
            s.info["vacancies"] = int(ds["vacancies"].values[k])
        # the store's ``replicas`` makes compute_energies score each cell's n x n replica
        reference.create_store(out, cells, source=str(args.store), source_index=index.tolist(),
                               replicas=args.replicas[0])
    from ednn_dask.compute import dask_client

    with dask_client(processes=True, n_workers=args.workers, threads_per_worker=1) as client:
        reference.compute_energies(out, client=client, limit=args.limit)
    return compare(ds, reference.load_reference(out, done_only=False))


def compare(ds, rep) -> dict:
    """Replica minus cell per atom, by kind x vacancies of the cell, in meV/atom."""
    index = np.asarray(rep.attrs["source_index"])
    done = rep["status"].values == reference.DONE
    cell = ds.sel(structure=index[done])
    diff = (rep["energy"].values[done] / rep["n_atoms"].values[done]
            - cell["energy"].values / cell["n_atoms"].values) * 1e3
    rows = []
    for k in np.unique(cell["kind"].values):
        for v in np.unique(cell["vacancies"].values):
            d = diff[(cell["kind"].values == k) & (cell["vacancies"].values == v)]
            if d.size:
                rows.append({"kind": reference.KINDS[k], "vacancies": int(v), "n": int(d.size),
                             "mean": round(float(d.mean()), 2), "std": round(float(d.std()), 2),
                             "min": round(float(d.min()), 2), "max": round(float(d.max()), 2)})
                print(f"{rows[-1]['kind']:>9} {v} vacancies: {d.mean():+6.2f} meV/atom "
                      f"(std {d.std():.2f}, {d.min():+.2f} .. {d.max():+.2f}, n={d.size})")
    return {"method": "GFN1-xTB (tblite, Gamma point)", "replicas": int(rep.attrs["replicas"]),
            "done": int(done.sum()), "pending": int((~done).sum()), "groups": rows,
            "differences": [round(float(x), 3) for x in diff],
            "source_index": index[done].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    parser.add_argument("--kinds", nargs="+", default=["graphene", "hbn"])
    parser.add_argument("--store", help="replicate held-out cells of this reference store")
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument("--out", default="data/replicas-2x2-hexagonal.zarr")
    parser.add_argument("--workers", type=int, help="tblite worker processes (default: cores)")
    parser.add_argument("--limit", type=int, help="compute at most this many this run")
    args = parser.parse_args()
    result = store_cells(args) if args.store else fresh_cells(args.kinds, args.replicas)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
