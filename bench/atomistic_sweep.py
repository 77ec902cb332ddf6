"""One run of the atomistic sweep: train a net/context/epochs configuration, then report
train/val/test errors per atom, by group (kind x vacancies), and on the supercells.

The README's "Context and compute" table was measured with it on one H100, six to eight
runs sharing the GPU (each `train` in the background, then `eval`), e.g.::

    python bench/atomistic_sweep.py train --tag s24 --net smooth --context 24 \
        --epochs 400 --device cuda
    python bench/atomistic_sweep.py eval --tag s24 --net smooth --context 24 --device cuda

`train` resumes from the checkpoint in ``ROOT/TAG`` (so a killed run continues);
`eval` scores the best weights so far and prints one JSON line. Unlike
``ednn-dask train``, ``--init-seed`` changes the initial weights only, not the split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import reference  # noqa: E402
from training.atomistic import (  # noqa: E402
    DEFAULTS,
    LOSSES,
    SYSTEMS,
    prepare_run,
    rasterize_structures,
)
from training.train import TrainConfig, fit, predict  # noqa: E402

SUPERCELLS = ("2x2", "3x3")  # data/hexagonal-NxN.zarr


def per_atom_errors(ednn, fields, target, n_atoms) -> np.ndarray:
    """Signed errors of the EDNN in meV/atom."""
    return (predict(ednn, torch.as_tensor(fields)) - target) / n_atoms * 1e3


def summary(errors: np.ndarray) -> dict[str, float]:
    return {"mae": round(float(np.abs(errors).mean()), 2),
            "median": round(float(np.median(np.abs(errors))), 2),
            "mean_signed": round(float(errors.mean()), 2), "n": int(errors.size)}


def evaluate(args, ds, run) -> dict:
    saved = torch.load(Path(args.root) / args.tag / "checkpoint.pt", weights_only=True,
                       map_location="cpu")
    state = json.loads(saved["state"])
    run.ednn.load_state_dict(saved["best"])
    run.ednn.to(args.device)
    n_atoms = ds["n_atoms"].values
    out = {"tag": args.tag, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
           "n_parameters": run.ednn.n_parameters}
    for name, idx in zip(("train", "val", "test"), run.splits):
        idx = idx[:1000]  # the training split is large; 1,000 cells say enough
        errors = per_atom_errors(run.ednn, run.fields[idx], run.target[idx], n_atoms[idx])
        out[name] = summary(errors)
        if name == "test" and "kind" in ds:
            kind, vacancies = ds["kind"].values[idx], ds["vacancies"].values[idx]
            out["test_by_kind_vacancies"] = {
                f"{k}{v}": round(float(np.abs(errors[(kind == k) & (vacancies == v)]).mean()), 1)
                for k in np.unique(kind) for v in np.unique(vacancies)
                if ((kind == k) & (vacancies == v)).any()}
    if args.system == "hexagonal":
        species = SYSTEMS["hexagonal"]["species"]
        for size in SUPERCELLS:
            cells = reference.load_reference(ROOT / "data" / f"hexagonal-{size}.zarr")
            fields = rasterize_structures(cells, species, spacing=run.spacing)
            target = reference.residual_energy(cells, run.reference_energies)
            out[size] = summary(per_atom_errors(run.ednn, fields, target,
                                                cells["n_atoms"].values))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["train", "eval"])
    p.add_argument("--tag", required=True, help="run name: checkpoints in ROOT/TAG")
    p.add_argument("--system", default="hexagonal", choices=sorted(SYSTEMS))
    p.add_argument("--net", default="compact")
    p.add_argument("--focus", type=int)
    p.add_argument("--context", type=int)
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--no-whiten", dest="whiten", action="store_false")
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--loss", choices=LOSSES, default="total")
    p.add_argument("--device", default="cpu")
    p.add_argument("--root", default="runs/sweep")
    args = p.parse_args()
    ds = reference.load_reference(ROOT / SYSTEMS[args.system]["data"])
    run = prepare_run(ds, args.system, net=args.net, focus=args.focus, context=args.context,
                      whiten=args.whiten, init_seed=args.init_seed)
    if args.mode == "train":
        config = TrainConfig(epochs=args.epochs, batch_size=DEFAULTS["batch_size"],
                             lr=DEFAULTS["lr"], lr_final=DEFAULTS["lr_final"],
                             patience=args.epochs, augment=True, device=args.device)
        atoms = ds["n_atoms"].values if args.loss == "per-atom" else None
        metrics = fit(run.ednn, run.fields, run.target, config, Path(args.root) / args.tag,
                      atoms=atoms, progress=sys.stderr.isatty())
        print(json.dumps({"tag": args.tag, "seconds": round(metrics["seconds"]),
                          "epochs_run": metrics["epochs_run"]}))
    else:
        print(json.dumps(evaluate(args, ds, run)))


if __name__ == "__main__":
    main()
