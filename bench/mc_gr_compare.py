"""The paper's Fig. 13 comparison: in-plane g(r) of EDNN Monte Carlo against GFN1-xTB MD at 1000 K.

    python bench/mc_gr_compare.py [--md data/md-graphene-1000K.zarr]
        [--model models/hexagonal-f16c24.onnx] [--steps 60000] [--out runs/mc-graphene-1000K.zarr]

The reference is the in-plane GFN1-xTB Langevin molecular dynamics of the pristine
60-atom graphene cell written by ``bench/md_reference.py`` (frames after its
``equilibrate_steps``). The EDNN side is a Metropolis chain of single-atom moves
(``ednn_dask.mc.run_atoms``) of the same cell at the same temperature with the
shipped hexagonal model, stored in ``--out`` and resumable (the same command
continues it). Both g(r) use the same bins; the script reports the first-peak
position and height, the per-coordinate RMS displacement of the atoms about their
mean positions, plots both g(r) in one figure (``docs/mc-gr-1000K.png``) and writes
``bench/results/mc-gr-1000K.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
BINS = 160


def md_frames(path: Path) -> tuple[xr.Dataset, np.ndarray]:
    """The MD store and its production positions (frame, atom, xyz), wrapped into the cell."""
    md = xr.open_zarr(path, zarr_format=3, consolidated=False)
    md = md.isel(frame=slice(0, int(md.attrs["frames"]))).load()  # the committed frames
    frames = md.sel(frame=md["step"] >= int(md.attrs.get("equilibrate_steps", 0)))
    return md, frames["positions"].values


def rdf_of(positions: np.ndarray, cell: np.ndarray):
    from ednn_dask.mc import InPlaneRDF

    rdf = InPlaneRDF(cell, positions.shape[1], bins=BINS)
    for xyz in positions:
        rdf.add(xyz[:, :2])
    return rdf


def rms_displacement(positions: np.ndarray, cell: np.ndarray) -> float:
    """Per-coordinate RMS in-plane displacement about each atom's mean (unwrapped) position,
    the sheet's centre-of-mass drift removed (Langevin dynamics lets the sheet wander)."""
    xy = positions[:, :, :2]
    step = np.diff(xy, axis=0)
    xy = xy[0] + np.concatenate([np.zeros_like(xy[:1]),
                                 np.cumsum(step - cell * np.round(step / cell), axis=0)])
    xy = xy - xy.mean(axis=1, keepdims=True)
    return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).mean()))


def first_peak(rdf) -> dict:
    g, r = rdf.g(), rdf.r
    k = int(np.argmax(np.where(r < 1.8, g, 0)))
    return {"position_A": float(r[k]), "height": float(g[k])}


def main() -> None:
    from ednn_dask.atoms import Structure
    from ednn_dask.mc import run_atoms
    from ednn_dask.mc.plots import plot_atoms_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--md", default=str(ROOT / "data" / "md-graphene-1000K.zarr"))
    parser.add_argument("--model", default=str(ROOT / "models" / "hexagonal-f16c24.onnx"))
    parser.add_argument("--steps", type=int, default=60000, help="measured MC moves")
    parser.add_argument("--every", type=int, default=60, help="moves between MC frames")
    parser.add_argument("--out", default=str(ROOT / "runs" / "mc-graphene-1000K.zarr"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "mc-gr-1000K.png"))
    parser.add_argument("--json-out", default=str(RESULTS / "mc-gr-1000K.json"))
    args = parser.parse_args()

    md, md_positions = md_frames(Path(args.md))
    cell = md["cell"].values
    temperature = float(md.attrs["temperature_K"])
    start = Structure(md["positions"].values[0], md["numbers"].values, cell,
                      (True, True, False)).wrapped()
    run = run_atoms(start, args.model, temperature, args.steps, every=args.every,
                    equilibrate=args.steps // 5, seed=0, out=args.out, rdf_bins=BINS)
    mc_positions = xr.open_zarr(args.out, zarr_format=3, consolidated=False)["positions"].values
    sides = np.diag(cell)[:2]
    md_rdf = rdf_of(md_positions, sides)
    plot_atoms_run(run, args.plot, reference=(md_rdf.r, md_rdf.g(), "GFN1-xTB MD"))
    result = {
        "temperature_K": temperature,
        "atoms": int(len(md["numbers"])),
        "model": Path(args.model).name,
        "md": {"frames": len(md_positions), "first_peak": first_peak(md_rdf),
               "rms_displacement_A": rms_displacement(md_positions, sides)},
        "mc": {"moves": run.moves, "frames": len(mc_positions), "acceptance": run.acceptance,
               "step_A": run.step, "moves_per_second": run.moves / run.seconds,
               "first_peak": first_peak(run.rdf),
               "rms_displacement_A": rms_displacement(mc_positions, sides)},
        "g_r_mean_abs_difference": float(np.nanmean(np.abs(run.rdf.g() - md_rdf.g()))),
    }
    for side in ("md", "mc"):
        row = result[side]
        print(f"{side}: first peak {row['first_peak']['position_A']:.3f} Å "
              f"(g = {row['first_peak']['height']:.2f}), RMS displacement "
              f"{row['rms_displacement_A']:.4f} Å per coordinate, {row['frames']} frames")
    write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
