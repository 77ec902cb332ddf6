"""Registry noise of the shipped atomistic models, and what averaging over registries buys.

    python bench/registry_noise.py [--models M.onnx ...] [--grid 8]
                                   [--json-out bench/results/registry-noise.json]
                                   [--plot docs/registry-noise.png]

Moving a periodic cell rigidly by whole pixels leaves its GFN1-xTB energy as it is and
rolls the model's input field. An EDNN's sum is invariant to rolls by whole focus blocks
only: a roll by part of a block changes which pixels share a tile, and a net with strided
layers answers differently (training rolls its samples at random, so it sees every
registry, but need not learn to answer them alike). For each atomistic model (default:
the shipped ones), on its held-out MD set (cells never trained on) and on the cold cells
of its own test split, this measures the standard deviation of the predicted energy per
atom over a grid x grid lattice of rolls within one focus block (the spread from
registry to registry), and the median, MAE and mean signed error of the prediction at
the cell's own registry, at any one of the rolls (the median over them), and of its mean
over 2 x 2, 4 x 4, ... rolls (`energy(..., registries=K)`, `ednn-dask evaluate atoms
--registries K`).

For Monte Carlo, what matters is the energy change of a move: `--moves` single-atom moves
uniform in a disc of 0.05 Å (the `AtomsChain` default) of the first held-out cell, each
scored at every registry, give the rms of the change and its spread across registries.

Registries are rolls within one trunk stride of the net (every pixel of it, up to
`--grid` per axis), where the noise repeats, and for comparison the lattice of rolls by
whole strides within the focus block, which the registries of `energy` leave out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import RESULTS, ROOT, write_result  # noqa: E402

from ednn_dask import TileModel  # noqa: E402
from ednn_dask.atoms.raster import cell_field  # noqa: E402
from ednn_dask.atoms.references import reference_sum  # noqa: E402
from ednn_dask.atoms.structure import Structure, species_counts  # noqa: E402
from ednn_dask.atoms.total_energy import registry_offsets, registry_period  # noqa: E402
from ednn_dask.inference import contributions  # noqa: E402
from training.atomistic import SYSTEMS, recipe_split  # noqa: E402
from training.reference import (  # noqa: E402
    dataset_structures,
    load_reference,
    load_reference_sets,
)

HELD_OUT = {"hexagonal": "data/thermal-test-hexagonal.zarr",
            "porous": "data/thermal-test-porous.zarr"}  # by the card's system
SHIPPED = ["models/hexagonal-f16c24.onnx", "models/hexagonal-thermal-f16c24.onnx",
           "models/porous-f32c16.onnx", "models/porous-thermal-f32c32.onnx"]


def rolled_energies(model: TileModel, structures: list,
                    offsets: list[tuple[int, int]]) -> np.ndarray:
    """Energies (eV), ``(structures, offsets)``: each cell's field rolled by each (y, x)."""
    spec = model.spec
    out = np.empty((len(structures), len(offsets)))
    for k, s in enumerate(structures):
        field = cell_field(s, spec.spacing, **spec.raster)
        references = reference_sum(species_counts(s), spec.reference_energies)
        for n, shift in enumerate(offsets):
            rolled = np.roll(field, shift, axis=(1, 2))
            out[k, n] = contributions(rolled, model).sum(dtype=np.float64) + references
    return out


def lattices(model: TileModel, grid: int) -> tuple[int, list[tuple[int, int]]]:
    """The registries' lattice side (``grid``, or the trunk stride where smaller) and the
    offsets: that lattice (``energy(..., registries=side ** 2)``), then the rolls by whole
    strides within the focus block other than (0, 0)."""
    period, focus = registry_period(model), model.spec.focus
    side = min(grid, *period)
    whole = [(i * period[0], j * period[1]) for i in range(focus[0] // period[0])
             for j in range(focus[1] // period[1])]
    return side, registry_offsets(model, side * side) + whole[1:]


def model_row(path: str, grid: int, moves: int) -> dict:
    model = TileModel.load(ROOT / path)
    store = HELD_OUT[model.spec.provenance["system"]]
    held_out = load_reference(str(ROOT / store))
    return {"model": path, "held_out": store, "focus_px": int(model.spec.focus[0]),
            "period_px": int(registry_period(model)[0]),
            **registry_errors(model, held_out, grid),
            "cold_split": registry_errors(model, cold_split(path), grid),
            "single_moves": move_noise(model, dataset_structures(held_out)[0], grid, moves)}


def move_noise(model: TileModel, cell, grid: int, moves: int, step: float = 0.05) -> dict:
    """Energy changes (meV) of ``moves`` single-atom moves of ``cell``, uniform in a disc
    of ``step`` Å, each at every registry of the lattice: their rms over moves (of the
    mean over registries), their standard deviation across registries, and that of the
    mean over 2 x 2 registries of half a stride (from each corner of the lattice) about
    the mean over all."""
    rng, (side, offsets) = np.random.default_rng(0), lattices(model, grid)
    offsets = offsets[:side * side]
    before = rolled_energies(model, [cell], offsets)[0]
    changes = []
    for _ in range(moves):
        atom, r, phi = rng.integers(len(cell.numbers)), step * np.sqrt(rng.random()), \
            rng.uniform(0, 2 * np.pi)
        positions = cell.positions.copy()
        positions[atom, :2] += r * np.cos(phi), r * np.sin(phi)
        moved = Structure(positions, cell.numbers, cell.cell, cell.pbc).wrapped()
        changes.append((rolled_energies(model, [moved], offsets)[0] - before) * 1e3)
    changes = np.array(changes).reshape(moves, side, side)
    full, half = changes.mean(axis=(1, 2)), side // 2
    fours = [changes[:, i::half, j::half].mean(axis=(1, 2)) - full
             for i in range(half) for j in range(half)]
    return {"moves": moves, "step_A": step, "atoms": int(len(cell.numbers)),
            "rms_meV": float(np.sqrt((full ** 2).mean())),
            "registry_sd_meV": float(np.median(changes.std(axis=(1, 2)))),
            "four_registries_sd_meV": float(np.std(fours))}


def cold_split(path: str):
    """The cold cells of the model's own test split (its recipe's split of the stores it
    was trained on; the first store is the cold one)."""
    provenance = TileModel.load(ROOT / path).spec.provenance
    stores = [str(ROOT / "data" / s) for s in provenance.get("stores", [])] or [
        str(ROOT / SYSTEMS[provenance["system"]]["data"])]  # cards older than "stores"
    ds = load_reference_sets(stores if len(stores) > 1 else stores[0])
    test = recipe_split(ds, str(ROOT / path), "test")
    if "source" in ds:
        test = test[ds["source"].values[test] == 0]
    return ds.isel(structure=test)


def registry_errors(model: TileModel, ds, grid: int) -> dict:
    """Spread over registries and errors (meV/atom) at the cell's own registry, at any one,
    averaged over 1, 4, ..., side x side of them and over the rolls by whole strides."""
    atoms = ds["n_atoms"].values
    side, offsets = lattices(model, grid)
    energies = rolled_energies(model, dataset_structures(ds), offsets) / atoms[:, None] * 1e3
    reference = ds["energy"].values / atoms * 1e3
    errors = energies - reference[:, None]
    rolled = energies[:, :side * side].reshape(-1, side, side)
    error = errors[:, :side * side].reshape(-1, side, side)
    strides = np.concatenate([errors[:, :1], errors[:, side * side:]], axis=1).mean(axis=1)
    out = {"structures": int(len(atoms)),
           "registry_sd": {"median": float(np.median(rolled.std(axis=(1, 2)))),
                           "max": float(rolled.std(axis=(1, 2)).max())},
           "any_registry": {"median": float(np.median(np.median(np.abs(error), axis=0))),
                            "mae": float(np.median(np.abs(error).mean(axis=0)))},
           "whole_strides": {"rolls": int(len(offsets) - side * side + 1),
                             "median": float(np.median(np.abs(strides))),
                             "mae": float(np.abs(strides).mean())},
           "averaged": {}}
    g = 1
    while g <= side:  # the g x g lattice of rolls is every (side / g)-th of the finest
        mean = error[:, ::side // g, ::side // g].mean(axis=(1, 2))
        out["averaged"][str(g * g)] = {"median": float(np.median(np.abs(mean))),
                                       "mae": float(np.abs(mean).mean()),
                                       "mean_signed": float(mean.mean())}
        g *= 2
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], lambda row: row, "median", "held-out MD: median |error|"),
              (axes[1], lambda row: row["cold_split"], "mae", "cold test split: MAE"))
    for ax, part, metric, title in panels:
        for row in rows:
            averaged = part(row)["averaged"]
            ax.plot([int(n) for n in averaged], [v[metric] for v in averaged.values()], "o-",
                    label=Path(row["model"]).stem)
        k = sorted({int(n) for row in rows for n in part(row)["averaged"]})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(k, [str(n) for n in k])
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        low, high = ax.get_ylim()
        if high / low < 10:  # under a decade: label the minor ticks too
            ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("registries averaged (rolls within one trunk stride)")
        ax.set_ylabel("meV/atom")
        ax.set_title(title)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=SHIPPED,
                        help="atomistic models (default: the shipped ones)")
    parser.add_argument("--grid", type=int, default=8,
                        help="rolls per axis at most (default 8; the net's stride if smaller)")
    parser.add_argument("--moves", type=int, default=60,
                        help="single-atom moves of the first held-out cell (default 60)")
    parser.add_argument("--json-out", default=str(RESULTS / "registry-noise.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "registry-noise.png"))
    args = parser.parse_args()
    rows = []
    for path in args.models:
        row = model_row(path, args.grid, args.moves)
        rows.append(row)
        k = list(row["averaged"])[-1]
        one, most, cold = row["averaged"]["1"], row["averaged"][k], row["cold_split"]["averaged"]
        print(f"{path}: spread over registries {row['registry_sd']['median']:.1f} meV/atom "
              f"(median over cells; max {row['registry_sd']['max']:.1f}); held-out median "
              f"{one['median']:.1f} at the cell's own registry, "
              f"{row['any_registry']['median']:.1f} at any one, {most['median']:.1f} averaged "
              f"over {k}; cold split MAE {cold['1']['mae']:.2f} -> {cold['4']['mae']:.2f} "
              f"(4) -> {cold[k]['mae']:.2f} ({k}), over whole strides "
              f"{row['cold_split']['whole_strides']['mae']:.2f}; a single-atom move changes "
              f"the energy by {row['single_moves']['rms_meV']:.0f} meV (rms), "
              f"{row['single_moves']['registry_sd_meV']:.1f} meV (sd) apart between registries")
    write_result({"grid": args.grid, "models": rows}, args.json_out, sys.argv)
    plot(rows, Path(args.plot))


if __name__ == "__main__":
    main()
