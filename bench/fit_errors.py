"""Fit or generalization: a training run's errors on its own splits and on held-out MD.

    .venv/bin/python bench/fit_errors.py --run NET:WORKDIR [...] --data STORE [...]
        [--context PX] [--held-out STORE ...] [--json-out runs/capacity/fit-errors.json]

For each ``ednn-dask train hexagonal --net NET --workdir WORKDIR`` run on the stores
``--data`` (the same ones, in the same order), it loads the run's checkpoint and scores
two sets of weights in torch: the last epoch's (what the net can fit) and the best
validation epoch's (what the run exports). Each is scored, in meV/atom, on the train,
val and test splits of the recipe and on every ``--held-out`` store, and the errors on
MD snapshots are split as ``evaluate atoms`` splits them: ``mae_of_run_means`` (an
offset per run) and ``mae_within_runs``. A net whose training error within runs is as
large as its held-out one is short of fit (capacity, epochs), not of data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402

HELD_OUT = ["data/thermal-test-hexagonal.zarr"]


def scored(ednn, fields, target, ds) -> dict:
    """MAE, median and the run split of the per-atom error, in meV/atom."""
    import torch

    from training.atomistic import run_offsets
    from training.train import predict

    error = (predict(ednn, torch.as_tensor(fields)) - target) / ds["n_atoms"].values * 1e3
    out = {"n": len(error), "mae": float(np.abs(error).mean()),
           "median": float(np.median(np.abs(error)))}
    if "run" in ds and (ds["run"].values >= 0).any():
        out["runs"] = run_offsets(error, ds, ds["energy"].values / ds["n_atoms"].values * 1e3)
    return out


def evaluate_run(net: str, workdir: Path, data: list[str], context: int | None,
                 held_out: list[str]) -> dict:
    import torch

    from training import reference
    from training.atomistic import SYSTEMS, prepare_run, rasterize_structures

    ds = reference.load_reference_sets(data)
    run = prepare_run(ds, "hexagonal", net=net, context=context, seed=0, init_seed=0)
    species = SYSTEMS["hexagonal"]["species"]
    sets = {name: (run.fields[idx], run.target[idx], ds.isel(structure=idx))
            for name, idx in zip(("train", "val", "test"), run.splits, strict=True)}
    for store in held_out:
        h = reference.load_reference_sets([store])
        sets[Path(store).name] = (rasterize_structures(h, species, spacing=run.spacing),
                                  reference.residual_energy(h, run.reference_energies), h)
    saved = torch.load(workdir / "checkpoint.pt", weights_only=True, map_location="cpu")
    state = json.loads(saved["state"])
    out = {"net": net, "workdir": str(workdir), "n_parameters": run.ednn.n_parameters,
           "epochs": state["epoch"], "best_epoch": state["best_epoch"], "weights": {}}
    for which in ("model", "best"):
        run.ednn.load_state_dict(saved[which])
        label = "last epoch" if which == "model" else "best validation epoch"
        out["weights"][label] = {name: scored(run.ednn, *s) for name, s in sets.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", required=True, metavar="NET:WORKDIR")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--context", type=int, help="the runs' --context (default the net's)")
    parser.add_argument("--held-out", nargs="*", default=HELD_OUT)
    parser.add_argument("--json-out", default="runs/capacity/fit-errors.json")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.run:
        net, _, workdir = spec.partition(":")
        runs.append(evaluate_run(net, Path(workdir), args.data, args.context, args.held_out))
        for label, sets in runs[-1]["weights"].items():
            shown = "  ".join(
                f"{name} {s['mae']:.2f}" + (f" ({s['runs']['mae_of_run_means']:.2f} / "
                                            f"{s['runs']['mae_within_runs']:.2f})"
                                            if "runs" in s else "")
                for name, s in sets.items())
            print(f"{net:16s} {label:22s} {shown}", flush=True)
    write_result({"runs": runs, "data": args.data, "held_out": args.held_out}, args.json_out,
                 [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
