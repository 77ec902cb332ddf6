"""A pair term beside the atomistic net: what it buys on Monte Carlo snapshots and costs elsewhere.

    python bench/pair_correction.py [--model models/hexagonal-thermal-f16c24.onnx]
                                    [--train STORE ...] [--fresh STORE]
                                    [--json-out bench/results/pair-correction.json]

The net lacks the steep rise of the energy as bonds shorten, so EDNN Monte Carlo finds
configurations it puts hundreds of meV/atom too low. A pair energy between the model's
species channels, ``sum_c mu_c sum_p x_c + sum_{c<=d} sum_d k_cd(d) F_cd(d)`` with
``F_cd`` the cross-correlation of the rasterized channels within a reach of ``R``
pixels, is linear in its unknowns, so the correction that the net's residual asks for
is one weighted ridge solve (seconds), and it would sit in the ONNX file as a
quadratic branch beside the net (the pair nets of ``train fields --net pair``). This
fits it on the residual of the net over the training stores (the cold store's own
test split held out), Monte Carlo stores weighted by ``w_MC``, and scores held-out
sets: the cold test split, MD snapshots at 300 K and 1000 K of cells never trained
on, Gaussian cells, and fresh Monte Carlo snapshots from chains not trained on.
The Monte Carlo stores are those of ``make studies``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

from ednn_dask import energy  # noqa: E402
from ednn_dask.model import TileModel, load_model  # noqa: E402
from training import reference  # noqa: E402
from training.atomistic import rasterize_structures, recipe_splits  # noqa: E402
from training.pair_fit import cross_pair_features  # noqa: E402

COLD = "data/hexagonal.zarr"
TRAIN = [COLD, "data/thermal-hexagonal.zarr", "data/gaussian-hexagonal.zarr",
         "runs/al-hex/round-0/mc.zarr", "runs/mc-core/mc.zarr"]
FRESH = "runs/al-hex/round-1/mc.zarr"
MD_TEST = "data/thermal-test-hexagonal.zarr"
HELD_OUT = {"cold test split": (COLD, "test"), "MD 300 K": (MD_TEST, 300),
            "MD 1000 K": (MD_TEST, 1000),
            "Gaussian cells": ("data/gaussian-test-hexagonal.zarr", None)}
REACHES = (8, 14)  # px: 1.6 and 2.8 Å at the hexagonal models' 0.2 Å pixels
MC_WEIGHTS = (0.0, 0.1, 1.0)
RIDGE = 1e-8  # on standardized columns, times the number of rows


class Store:
    """One store's rasterized fields, GFN1-xTB energies, the net's energies and atom counts."""

    def __init__(self, path: str, model: TileModel):
        spec = model.spec
        ds = reference.load_reference(path)
        self.path, self.ds = path, ds
        self.mc = str(ds.attrs.get("generator", "")).startswith("mc-")
        self.fields = rasterize_structures(ds, spec.raster["species"], spacing=spec.spacing,
                                           gamma=spec.raster["gamma"],
                                           cutoff=spec.raster["cutoff"])
        structures = reference.dataset_structures(ds)
        self.residual = ds["energy"].values - energy(structures, model, check=False)
        self.atoms = ds["n_atoms"].values.astype(float)
        self.seed = spec.provenance.get("seed", 0)

    def rows(self, which: object = None) -> np.ndarray:
        """Indices: all, a recipe split (``"train"``, ``"test"``) or one temperature."""
        if which is None:
            return np.arange(len(self.atoms))
        if isinstance(which, str):
            train, val, test = recipe_splits(self.ds, self.seed)
            return np.sort(np.concatenate([train, val]) if which == "train" else test)
        return np.flatnonzero(np.isclose(self.ds["temperature"].values, which))


def fit(features: np.ndarray, residual: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted ridge solve on standardized columns; the coefficients of the raw columns."""
    scale = features.std(axis=0) + 1e-12
    a = features / scale
    gram = (a * weight[:, None]).T @ a + RIDGE * len(a) * np.eye(a.shape[1])
    return np.linalg.solve(gram, (a * weight[:, None]).T @ residual) / scale


def mae(residual: np.ndarray, atoms: np.ndarray) -> float:
    return float(np.mean(np.abs(residual) / atoms) * 1e3)


def study(model: str, train: list[str], fresh: str) -> dict:
    net_model = load_model(model)  # loaded once: every store is scored with it
    stores = {p: Store(p, net_model) for p in dict.fromkeys(train + [fresh] + [
        path for path, _ in HELD_OUT.values()])}
    held = {name: (stores[path], stores[path].rows(which))
            for name, (path, which) in HELD_OUT.items()} | {
        "fresh Monte Carlo": (stores[fresh], stores[fresh].rows())}
    fitted = [(stores[p], stores[p].rows("train" if p == COLD else None)) for p in train]
    net = {"reach_px": 0, "mc_weight": None, "unknowns": 0,
           "train_mae_meV_per_atom": mae(np.concatenate([s.residual[i] for s, i in fitted]),
                                         np.concatenate([s.atoms[i] for s, i in fitted])),
           "held_out_meV_per_atom": {k: mae(s.residual[i], s.atoms[i])
                                     for k, (s, i) in held.items()}}
    rows = [net]
    for reach in REACHES:
        feats = {p: cross_pair_features(s.fields, (reach, reach)) for p, s in stores.items()}
        a = np.concatenate([feats[s.path][i] for s, i in fitted])
        y = np.concatenate([s.residual[i] for s, i in fitted])
        atoms = np.concatenate([s.atoms[i] for s, i in fitted])
        is_mc = np.concatenate([np.full(len(i), s.mc) for s, i in fitted])
        for w_mc in MC_WEIGHTS:
            coef = fit(a, y, np.where(is_mc, w_mc, 1.0))
            rows.append({
                "reach_px": reach, "mc_weight": w_mc, "unknowns": a.shape[1],
                "train_mae_meV_per_atom": mae(y - a @ coef, atoms),
                "held_out_meV_per_atom": {
                    k: mae(s.residual[i] - feats[s.path][i] @ coef, s.atoms[i])
                    for k, (s, i) in held.items()}})
    sizes = {k: len(i) for k, (_, i) in held.items()}
    return {"model": model, "train": train, "fresh": fresh, "held_out_sizes": sizes,
            "ridge": RIDGE, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/hexagonal-thermal-f16c24.onnx")
    parser.add_argument("--train", nargs="+", default=TRAIN)
    parser.add_argument("--fresh", default=FRESH)
    parser.add_argument("--json-out", default=str(RESULTS / "pair-correction.json"))
    args = parser.parse_args()
    result = study(args.model, args.train, args.fresh)
    names = list(result["held_out_sizes"])
    print("reach  w_MC  unknowns  train | " + " | ".join(names) + "   (MAE, meV/atom)")
    for r in result["rows"]:
        held = " | ".join(f"{r['held_out_meV_per_atom'][k]:7.2f}" for k in names)
        label = "net alone       " if not r["reach_px"] else \
            f"{r['reach_px']:3d} px {r['mc_weight']:5.2f} {r['unknowns']:5d}"
        print(f"{label}  {r['train_mae_meV_per_atom']:7.2f} | {held}")
    write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
