"""How extensive is the GFN1-xTB reference? A 60-atom cell against its own n x n replicas.

    python bench/reference_finite_size.py [--replicas 2] [--kinds graphene hbn]

tblite samples the Brillouin zone at Gamma only, so a periodic cell and the same
cell repeated n x n (which samples n x n k-points of the small cell) do not have
the same energy per atom. An EDNN trained on 60-atom cells learns the 60-atom
convention; on supercells it is off by this difference even if it were perfect,
so the transfer error to 2 x 2 / 3 x 3 supercells has this floor. Prints a table
and one JSON line (meV/atom: replica minus cell, and the seconds each took).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ednn_dask.structures import Structure, hexagonal_sheet
from training.reference import xtb_energy


def replica(s: Structure, n: int) -> Structure:
    """The cell ``s`` repeated ``n`` x ``n`` in the plane."""
    a, b = s.cell[0], s.cell[1]
    shifts = [i * a + j * b for i in range(n) for j in range(n)]
    positions = np.concatenate([s.positions + shift for shift in shifts])
    cell = np.array([n * a, n * b, s.cell[2]])
    return Structure(positions, np.tile(s.numbers, n * n), cell, s.pbc)


def timed_energy_per_atom(s: Structure) -> tuple[float, float]:
    start = time.perf_counter()
    e = xtb_energy(s)
    return e / len(s.numbers), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    parser.add_argument("--kinds", nargs="+", default=["graphene", "hbn"])
    args = parser.parse_args()
    rows = []
    for kind in args.kinds:
        cell = hexagonal_sheet(np.random.default_rng(0), kind)
        e1, t1 = timed_energy_per_atom(cell)
        for n in args.replicas:
            en, tn = timed_energy_per_atom(replica(cell, n))
            rows.append({"kind": kind, "replica": n, "atoms": len(cell.numbers) * n * n,
                         "cell_eV_per_atom": e1, "replica_eV_per_atom": en,
                         "difference_meV_per_atom": (en - e1) * 1e3,
                         "seconds": {"cell": t1, "replica": tn}})
            print(f"{kind:>9} {n}x{n} ({rows[-1]['atoms']} atoms): "
                  f"{rows[-1]['difference_meV_per_atom']:+.2f} meV/atom against the 60-atom cell "
                  f"({t1:.1f} s, {tn:.1f} s)", flush=True)
    print(json.dumps({"method": "GFN1-xTB (tblite, Gamma point)", "rows": rows}))


if __name__ == "__main__":
    main()
