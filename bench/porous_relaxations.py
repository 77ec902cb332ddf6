"""Porous models fine-tuned on MD snapshots and relaxation paths: held-out MD error.

    python bench/porous_relaxations.py [--json-out bench/results/porous-relaxations.json]
                                       [--plot docs/porous-relaxations.png]

Each porous fine-tune of `make studies`, the shipped cold model, the shipped
`porous-thermal-f32c32` (a 3.2 Å context and anti-aliased strides, trained from scratch)
and the same recipe with the compact net (`make studies`) are scored on the 80
held-out MD snapshots of `data/thermal-test-porous.zarr` (four cells, 64-94 atoms,
never trained on), on the cold cells of their own recipe's test split, and on their
whole training split (how well the net fits its own data), on each cell of the 12 MD
runs, its MD frames and the cell relaxed apart (mean signed), and on each held-out run,
its offset and its spread from frame to frame. A power law fitted to the
held-out median against the number of relaxation paths (the fine-tunes of the cold model with
the 8 MD runs) says how many relaxations the target, a median of 4 meV/atom, would
need. A model that is missing keeps the row of the last run that scored it, with that
run's date (`make studies` trains the fine-tunes under runs/).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

from ednn_dask import TileModel, energy  # noqa: E402
from training.atomistic import evaluate_atomistic  # noqa: E402
from training.reference import dataset_structures, load_reference  # noqa: E402

HELD_OUT = "data/thermal-test-porous.zarr"
TARGET = 4.0  # meV/atom, the porous target: median on held-out cells (paper: about 4.4)
MD = "data/thermal-porous.zarr"
MODELS = {  # model -> its training stores besides data/porous.zarr
    "models/porous-f32c16.onnx": [],
    "runs/ft-porous/porous-md-f32c16.onnx": [MD],
    "runs/ft-porous-relaxed/porous-relaxed-f32c16.onnx": ["runs/relaxed-porous-32.zarr"],
    "runs/ft-porous-both/porous-md-relaxed-f32c16.onnx": [MD, "runs/relaxed-porous-32.zarr"],
    "runs/ft-porous-both48/porous-md-relaxed48-f32c16.onnx": [MD, "runs/relaxed-porous-48.zarr"],
    "runs/ft-porous-both96/porous-md-relaxed96-f32c16.onnx": [MD, "runs/relaxed-porous-96.zarr"],
    "runs/ft-porous-both160/porous-thermal-f32c16.onnx": [MD, "data/relaxed-porous.zarr"],
    "models/porous-thermal-f32c32.onnx": [MD, "data/relaxed-porous.zarr"],
    "runs/porous-compact-1000/porous-compact-f32c32.onnx": [MD, "data/relaxed-porous.zarr"],
    "runs/porous-c32-md12/porous-md12-f32c32.onnx": ["data/thermal-porous-12.zarr",
                                                     "data/relaxed-porous.zarr"],
    "runs/porous-md12-ft/porous-md12-ft-f32c32.onnx": ["data/thermal-porous-12.zarr",
                                                       "data/relaxed-porous.zarr"],
    "runs/porous-c32-md12-1000/porous-md12-1000-f32c32.onnx": ["data/thermal-porous-12.zarr",
                                                               "data/relaxed-porous.zarr"],
    "runs/porous-c32-md10/porous-md10-f32c32.onnx": ["runs/thermal-porous-10.zarr",
                                                     "data/relaxed-porous.zarr"],
    "runs/porous-ms/porous-ms.onnx": [MD, "data/relaxed-porous.zarr"],
    "runs/porous-ms12/porous-ms12.onnx": ["data/thermal-porous-12.zarr",
                                          "data/relaxed-porous.zarr"],
    "runs/porous-rattles/porous-rattles-f32c32.onnx": [
        "data/thermal-porous-12.zarr", "data/relaxed-porous.zarr",
        "runs/rattles/rattles-porous-12.zarr"],
}
COLD = "porous-f32c16.onnx"  # the fine-tunes of the power law start from the cold model
MD12, RELAXED = "data/thermal-porous-12.zarr", "data/relaxed-porous.zarr"


def runs_in(stores: list[str]) -> dict[str, int]:
    """MD runs, relaxation paths and rattles of MD runs in the training stores (a store may
    hold part of its plan)."""
    out = {"md_runs": 0, "relaxations": 0, "rattles": 0, "frames": 0}
    for path in stores:
        ds = load_reference(str(ROOT / path))
        generator = ds.attrs["generator"]
        if generator == "thermal-rattles":  # samples of runs counted already
            out["rattles"] += ds.sizes["structure"]
        else:
            key = "relaxations" if generator.startswith("relaxed") else "md_runs"
            out[key] += int(np.unique(ds["run"].values).size)
        out["frames"] += ds.sizes["structure"]
    return out


def model_row(model: str, stores: list[str]) -> dict:
    spec = TileModel.load(ROOT / model).spec
    held = evaluate_atomistic(str(ROOT / model), str(ROOT / HELD_OUT))
    paths = [str(ROOT / p) for p in ["data/porous.zarr", *stores]]
    split = evaluate_atomistic(str(ROOT / model), paths, split="test")
    train = evaluate_atomistic(str(ROOT / model), paths, split="train")
    by_store = split["groups"].get("store") or {  # a single store is not grouped
        "porous.zarr": {"mae": split["mae_meV_per_atom"]}}
    return {"model": model, "stores": stores, **runs_in(stores),
            "net": spec.provenance["net"], "context_px": int(spec.context[0]),
            "epochs": epochs_of(spec.provenance),
            "init_from": (spec.provenance.get("init_from") or "").split(" ")[0] or None,
            "loss": spec.provenance.get("loss", "total"),
            "scales": spec.provenance.get("scales"),
            "held_out": {k: held[f"{k}_meV_per_atom"] for k in ("mae", "median", "mean_signed")},
            "held_out_by_atoms": {n: g["mean_signed"] for n, g in held["groups"]["atoms"].items()},
            "held_out_by_temperature": {t: g["mean_signed"]
                                        for t, g in held["groups"]["temperature_K"].items()},
            "cold_split_mae": by_store["porous.zarr"]["mae"],
            "train_split_mae": train["mae_meV_per_atom"],
            "split_mae_by_store": {s: g["mae"] for s, g in by_store.items()},
            "offsets_by_cell": cell_offsets(model),
            "held_out_by_run": held_out_runs(model)}


def held_out_runs(model: str) -> dict[str, dict]:
    """Per held-out MD run (meV/atom): the model's mean signed error on its 20 frames, the
    spread of that error from frame to frame, and the spread of GFN1-xTB's own energy.

    An error that is an offset of the cell shifts the mean; one the net does not resolve
    frame by frame shows as a spread as large as GFN1-xTB's, or larger.
    """
    ds, tile_model, out = load_reference(str(ROOT / HELD_OUT)), TileModel.load(ROOT / model), {}
    for run in np.unique(ds["run"].values):
        frames = np.flatnonzero(ds["run"].values == run)
        atoms = int(ds["n_atoms"].values[frames[0]])
        reference = ds["energy"].values[frames] / atoms * 1e3
        error = np.asarray(energy(dataset_structures(ds, frames), tile_model)) / atoms * 1e3 \
            - reference
        out[str(int(run))] = {"atoms": atoms,
                              "temperature_K": float(ds["temperature"].values[frames[0]]),
                              "mean_signed": float(error.mean()), "error_sd": float(error.std()),
                              "reference_sd": float(reference.std())}
    return out


def cell_offsets(model: str) -> dict[str, dict]:
    """Per cell of the 12 MD runs (by run): the model's mean signed error (meV/atom) on the
    run's frames and on the cell relaxed (the last frame of its relaxation path: the
    relaxed store's first paths are the cells of the MD plan, in its order), and how far
    GFN1-xTB puts the MD frames above that relaxed cell (meV/atom). A term of the pore
    layout beyond the model's context would shift the MD frames and the relaxed cell alike.
    """
    md, relaxed = (load_reference(str(ROOT / p)) for p in (MD12, RELAXED))
    tile_model, out = TileModel.load(ROOT / model), {}
    for run in np.unique(md["run"].values):
        frames = np.flatnonzero(md["run"].values == run)
        end = np.flatnonzero(relaxed["run"].values == run)[-1:]
        atoms = int(md["n_atoms"].values[frames[0]])
        if int(relaxed["n_atoms"].values[end[0]]) != atoms:
            raise ValueError(f"relaxation path {run} is not the cell of MD run {run}")
        error_md, error_end = (
            (np.asarray(energy(dataset_structures(ds, idx), tile_model))
             - ds["energy"].values[idx]) / atoms * 1e3
            for ds, idx in ((md, frames), (relaxed, end)))
        out[str(int(run))] = {
            "atoms": atoms, "temperature_K": float(md["temperature"].values[frames[0]]),
            "md": float(error_md.mean()), "relaxed": float(error_end[0]),
            "md_above_relaxed": float((md["energy"].values[frames].mean()
                                       - relaxed["energy"].values[end[0]]) / atoms * 1e3)}
    return out


def epochs_of(provenance: dict) -> int:
    """The training epochs a model records (older files: in the command that trained it)."""
    if "epochs" in provenance:
        return int(provenance["epochs"])
    return int(re.search(r"--epochs (\d+)", provenance["command"]).group(1))


def power_law(rows: list[dict]) -> dict | None:
    """median = a * relaxations**b over the fine-tunes with MD runs and relaxations."""
    points = [(r["relaxations"], r["held_out"]["median"]) for r in _fine_tunes(rows)]
    if len(points) < 3:
        return None
    x, y = np.log(np.array(points, dtype=float)).T
    b, log_a = np.polyfit(x, y, 1)
    return {"a": float(np.exp(log_a)), "b": float(b), "points": len(points),
            "relaxations_for_target": float(np.exp((np.log(TARGET) - log_a) / b))}


def _fine_tunes(rows: list[dict]) -> list[dict]:
    """The fine-tunes of the cold model on the 8 MD runs and n relaxations."""
    return [r for r in rows if r["md_runs"] and r["relaxations"] and r.get("init_from") == COLD]


def last_rows(path: str) -> dict[str, dict]:
    """The rows of the last run's JSON at ``path`` by model, each with the date it was scored."""
    if not Path(path).is_file():
        return {}
    last = json.loads(Path(path).read_text())
    return {row["model"]: {**row, "measured": row.get("measured", last["date"])}
            for row in last["models"]}


def plot(rows: list[dict], fit: dict | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(14.0, 4.6), constrained_layout=True)
    both = _fine_tunes(rows)
    ax.loglog([r["relaxations"] for r in both], [r["held_out"]["median"] for r in both],
              "o", color="C0", label="fine-tuned on 8 MD runs and n relaxations: held-out median")
    alone = [r for r in rows if r["relaxations"] and not r["md_runs"]]
    ax.loglog([r["relaxations"] for r in alone], [r["held_out"]["median"] for r in alone],
              "s", color="C1", label="on n relaxations alone")
    ax.loglog([r["relaxations"] for r in both], [r["train_split_mae"] for r in both], "o",
              mfc="none", color="C0", label="the same, MAE on its own training frames")
    if fit:
        n = np.geomspace(min(r["relaxations"] for r in both), fit["relaxations_for_target"] * 1.2)
        ax.loglog(n, fit["a"] * n ** fit["b"], "--", color="C0", lw=1,
                  label=f"median ~ n^{fit['b']:.2f}")
    wide = [r for r in rows if r["relaxations"] and r["md_runs"] and r.get("init_from") != COLD]
    for row, color in zip(wide, (f"C{k}" for k in range(2, 10))):
        start = (f"from {row['init_from']}" if row.get("init_from") else "from scratch")
        if row.get("scales"):
            start = f"of a coarse branch grown on {row['init_from']}"
        loss = ", per-atom loss" if row.get("loss") == "per-atom" else ""
        rattles = f" and {row['rattles']} rattles" if row.get("rattles") else ""
        ax.loglog([row["relaxations"]], [row["held_out"]["median"]], "*", ms=12, color=color,
                  label=f"{Path(row['model']).name}: {row['context_px']} px context, "
                  f"{row['md_runs']} MD runs{rattles}, {row['epochs']} epochs {start}{loss}: "
                  "held-out median")
        ax.loglog([row["relaxations"]], [row["train_split_mae"]], "*", ms=12, mfc="none",
                  color=color, label="the same, MAE on its own training frames")
    for row, style in zip((r for r in rows if not r["relaxations"]), ("-.", "-")):
        ax.axhline(row["held_out"]["median"], color="grey", lw=0.8, ls=style,
                   label=f"{Path(row['model']).name}: {row['md_runs']} MD runs, no relaxations")
    ax.axhline(TARGET, color="k", lw=0.8, ls=":", label=f"target, {TARGET:g} meV/atom")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set(xlabel="relaxation paths in the training data",
           ylabel="|error| (meV/atom)",
           title="porous graphene, 80 MD snapshots of 4 held-out cells")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", default=str(RESULTS / "porous-relaxations.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "porous-relaxations.png"))
    args = parser.parse_args()
    rows, kept = [], last_rows(args.json_out)
    for model, stores in MODELS.items():
        if (ROOT / model).is_file():
            row = model_row(model, stores)
        elif row := kept.get(model):
            print(f"{model}: not found, its row of {row['measured']} is kept")
        else:
            print(f"skipped {model}: not found (`make studies` or `make models` trains it)")
            continue
        rows.append(row)
        h = row["held_out"]
        print(f"{model}: {row['md_runs']} MD runs, {row['relaxations']} relaxations: held-out "
              f"median {h['median']:.1f}, mean signed {h['mean_signed']:+.1f}; cold split "
              f"{row['cold_split_mae']:.2f}, training split {row['train_split_mae']:.2f} meV/atom")
    fit = power_law(rows)
    if fit:
        print(f"median ~ {fit['a']:.0f} * n^{fit['b']:.2f}: {TARGET:g} meV/atom at about "
              f"{fit['relaxations_for_target']:.0f} relaxations")
    plot(rows, fit, args.plot)
    write_result({"held_out": HELD_OUT, "target_median_meV_per_atom": TARGET,
                  "models": rows, "power_law": fit}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
