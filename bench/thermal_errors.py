"""Atomistic models at temperature: errors on held-out GFN1-xTB MD snapshots, cold test cells
and supercells, by temperature and by displacement.

    .venv/bin/python bench/thermal_errors.py [--models M.onnx ...] [--held-out STORE ...]
        [--json-out bench/results/thermal-errors.json]

For every model (default: the two shipped hexagonal models, cold and thermal) it
evaluates, through ``ednn-dask evaluate atoms``'s function:

- every ``--held-out`` store whole, with the errors by temperature and by sigma bin.
  By default: ``data/thermal-test-hexagonal.zarr`` (MD at 300 K and 1000 K of cells
  no model trains on: ``ednn-dask data thermal data/thermal-test-hexagonal.zarr
  --seed 200 --temperatures 300 1000 --n 8``), EDNN Monte Carlo snapshots of
  supercells at 1000 K (``data/mc-test-hexagonal-2x2.zarr``: 16 of 4 chains of 228-231-atom
  cells with vacancies; ``-3x3.zarr``: 4 of 2 chains of pristine 540-atom cells; sampled
  with the cold shipped model, labelled with GFN1-xTB; the lines of ``make data``) and,
  where they exist,
  ``data/gaussian-test-hexagonal.zarr``, ``-2x2.zarr`` and ``-3x3.zarr`` (independent
  Gaussian displacements of sigma up to 0.1 Å on 60, 240 and 540-atom cells:
  ``ednn-dask data hexagonal OUT --sigma 0.1`` with ``--seed 300 --n 200``, ``--seed 301
  --n 16 --cells 10 6`` and ``--seed 302 --n 8 --cells 15 9 --max-vacancies 0``), and
  these three together (the sigma bins of all sizes);
- the training and held-out test splits of the model's own training stores (its
  provenance names them; they are looked for in ``data/``), store by store;
- the cold supercells ``data/hexagonal-2x2.zarr`` and ``data/hexagonal-3x3.zarr``.

``docs/generate.py`` turns the JSON into the table of the benchmarks page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from record import RESULTS, write_result  # noqa: E402

SHIPPED = ("models/hexagonal-f16c24.onnx", "models/hexagonal-thermal-f16c24.onnx")
SUPERCELLS = ("data/hexagonal-2x2.zarr", "data/hexagonal-3x3.zarr")
HELD_OUT = ("data/thermal-test-hexagonal.zarr", "data/mc-test-hexagonal-2x2.zarr",
            "data/mc-test-hexagonal-3x3.zarr", "data/gaussian-test-hexagonal.zarr",
            "data/gaussian-test-hexagonal-2x2.zarr", "data/gaussian-test-hexagonal-3x3.zarr")


def training_stores(model: str) -> list[str]:
    """The stores a model was trained on, from its provenance (default: the cold set)."""
    from ednn_dask.model import load_model

    names = load_model(model).spec.provenance.get("stores") or ["hexagonal.zarr"]
    return [str(ROOT / "data" / name) for name in names]


def evaluate_model(model: str, held_out: list[str]) -> dict:
    from training.atomistic import evaluate_atomistic

    row = {"model": str(model), "held_out": {}, "supercells": {}}
    for store in held_out:
        row["held_out"][Path(store).name] = evaluate_atomistic(model, store)
    gaussian = [s for s in held_out if Path(s).name.startswith("gaussian-test")]
    if len(gaussian) > 1:  # the sigma bins of 60, 240 and 540-atom cells together
        row["held_out"]["gaussian-test sets together"] = evaluate_atomistic(model, gaussian)
    stores = training_stores(model)
    stores = stores if len(stores) > 1 else stores[0]
    for split in ("train", "test"):  # train next to test: underfitting shows as both high
        row[f"{split}_split"] = evaluate_atomistic(model, stores, split=split)
    for store in SUPERCELLS:
        row["supercells"][Path(store).name] = evaluate_atomistic(model, str(ROOT / store))
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHIPPED))
    parser.add_argument("--held-out", nargs="+",
                        default=[p for p in HELD_OUT if (ROOT / p).exists()])
    parser.add_argument("--json-out", default=str(RESULTS / "thermal-errors.json"))
    args = parser.parse_args(argv)
    summary = {"rows": [evaluate_model(m, args.held_out) for m in args.models]}
    for row in summary["rows"]:
        for name, result in row["held_out"].items():
            by_t = result["groups"].get("temperature_K", {})
            shown = ", ".join(f"{t} K {g['mae']:.1f}" for t, g in by_t.items())
            print(f"{row['model']} on {name}: MAE {result['mae_meV_per_atom']:.2f} meV/atom "
                  f"({shown})")
        print(f"{row['model']} train / test split: {row['train_split']['mae_meV_per_atom']:.2f}"
              f" / {row['test_split']['mae_meV_per_atom']:.2f} meV/atom")
    write_result(summary, args.json_out, sys.argv)
    return summary


if __name__ == "__main__":
    main()
