"""GFN1-xTB reference molecular dynamics of pristine graphene: the 60-atom training cell at 1000 K.

    OMP_NUM_THREADS=1 python bench/md_reference.py [--temperature 1000] [--steps 3000]

In-plane Langevin dynamics (z fixed; 1 fs, friction 0.01/fs) of the pristine
60-atom graphene training cell (``hexagonal_sheet(kind="graphene")``, 5 x 3
rectangular cells, 12.5 x 12.99 Å), a snapshot every 10 steps into
``data/md-graphene-1000K.zarr`` (see :mod:`training.md` for the layout). The
first 500 steps are equilibration: every frame is kept and the store's
``equilibrate_steps`` attribute says which to drop (``step >= 500`` are the
production frames). Resumable: the same command continues an interrupted run
exactly where its last snapshot left it; other settings on an existing store are
refused unless ``--overwrite``. Prints one JSON line with the rate at the end.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ednn_dask.atoms.materials import hexagonal_sheet
from training.md import run_md


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/md-graphene-1000K.zarr")
    parser.add_argument("--temperature", type=float, default=1000.0, help="K")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=0.01, help="1/fs")
    parser.add_argument("--every", type=int, default=10, help="steps between snapshots")
    parser.add_argument("--equilibrate-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    # the pristine graphene training cell: ideal lattice, no vacancies, no displacement
    cell = hexagonal_sheet(np.random.default_rng(0), "graphene")
    summary = run_md(args.out, cell, args.temperature, args.steps,
                     timestep_fs=args.timestep_fs, friction=args.friction, every=args.every,
                     seed=args.seed, equilibrate_steps=args.equilibrate_steps,
                     overwrite=args.overwrite)
    summary = {**summary, "out": str(summary["out"]), "atoms": len(cell)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
