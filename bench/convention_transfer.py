"""Supercell transfer in the replica convention: a Gamma-point model against its shifted copy.

    .venv/bin/python bench/convention_transfer.py [--models M.onnx ...]
        [--replicas data/replicas-2x2-hexagonal.zarr] [--json-out bench/results/convention.json]

A model trained on 60-atom Gamma-point cells learns their energies, which differ
from those of larger cells by the reference's finite-size term (the findings page).
:func:`training.convention.to_replica_convention` moves a model to the 2 x 2-replica
convention by shifting its reference energies per element, fitted on the replica
store (``python bench/reference_finite_size.py --store data/hexagonal.zarr
--per-group 8 --out data/replicas-2x2-hexagonal.zarr``: 120 held-out cells, 46 min on 2 cores).
For every model (default: the shipped hexagonal models) it prints the fit and the
errors of the model and its shifted copy on every supercell store of ``data/``
(cold, Gaussian and Monte Carlo snapshots; 224-540 atoms, Gamma point), overall and
by kind of sheet.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from record import RESULTS, write_result  # noqa: E402

SUPERCELLS = ("hexagonal-2x2.zarr", "hexagonal-3x3.zarr", "gaussian-test-hexagonal-2x2.zarr",
              "gaussian-test-hexagonal-3x3.zarr", "mc-test-hexagonal-2x2.zarr",
              "mc-test-hexagonal-3x3.zarr")
MODELS = ("models/hexagonal-f16c24.onnx", "models/hexagonal-thermal-f16c24.onnx")


def compare(model: str, replicas: str, folder: Path) -> dict:
    from training.atomistic import evaluate_atomistic
    from training.convention import to_replica_convention

    shifted = folder / f"{Path(model).stem}-replica.onnx"
    row = {"model": model, "fit": to_replica_convention(model, replicas, shifted,
                                                        overwrite=True), "stores": {}}
    for name in SUPERCELLS:
        if (ROOT / "data" / name).exists():
            store = str(ROOT / "data" / name)
            row["stores"][name] = {kind: _summary(evaluate_atomistic(str(m), store))
                                   for kind, m in (("gamma", model), ("replica", shifted))}
    return row


def _summary(result: dict) -> dict:
    keep = ("n", "atoms", "mae_meV_per_atom", "mean_signed_meV_per_atom", "max_meV_per_atom")
    return {**{k: result[k] for k in keep}, "by_kind": _by_kind(result["groups"])}


def _by_kind(groups: dict) -> dict:
    """MAE and count per kind of sheet, from the kind x vacancies groups."""
    kinds: dict[str, list] = {}
    for name, g in groups.get("kind_vacancies", {}).items():
        kinds.setdefault(str(name).split(",")[0], []).append((g["n"], g["mae"]))
    return {k: {"n": sum(n for n, _ in v), "mae": sum(n * m for n, m in v) / sum(n for n, _ in v)}
            for k, v in kinds.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--replicas", default="data/replicas-2x2-hexagonal.zarr")
    parser.add_argument("--json-out", default=str(RESULTS / "convention.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows = [compare(m, args.replicas, Path(folder)) for m in args.models]
    for row in rows:
        fit = row["fit"]
        shift = ", ".join(f"{s} {v * 1e3:+.2f}" for s, v in fit["shift_eV"].items())
        print(f"{row['model']}: shift (meV/atom) {shift}; fit rms {fit['rms_meV_per_atom']:.2f}, "
              f"leave-one-out MAE {fit['loo_mae_meV_per_atom']:.2f} ({fit['n']} cells)")
        for name, e in row["stores"].items():
            g, r = (f"{x['mae_meV_per_atom']:.2f} ({x['mean_signed_meV_per_atom']:+.2f})"
                    for x in (e["gamma"], e["replica"]))
            kinds = ", ".join(f"{k} {v['mae']:.2f}" for k, v in e["replica"]["by_kind"].items())
            print(f"  {name}: MAE (mean signed) {g} -> {r}; shifted, by kind: {kinds}")
    summary = {"replicas": args.replicas, "rows": rows}
    write_result(summary, args.json_out, sys.argv)
    return summary


if __name__ == "__main__":
    main()
