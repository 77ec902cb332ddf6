"""Monte Carlo with an EDNN: local rescoring against full rescoring, one run.

    python bench/bench_mc.py [--model models/ising-2d-f1c1.onnx] [--sides 64 256 1024]
                             [--sweeps 5] [--atoms-model models/hexagonal-f16c24.onnx]
                             [--cells 1 4 13 41] [--json-out bench/results/mc-ising.json]

For each lattice side, a Metropolis chain (``ednn_dask.mc.ising_chain``: colour
classes of sites priced in one onnxruntime call each) runs ``--sweeps`` sweeps at
T = 2.269 and reports attempted flips per second. The baseline, in the same
process, prices one flip by rescoring the whole L = 256 lattice before and after
(``contributions`` twice), as an energy function without locality would.
For atoms (``ednn_dask.mc.AtomsChain``, single-atom moves at 1000 K on graphene
sheets of ``--cells`` x ``--cells`` 60-atom cells), attempted moves per second
against pricing each move with a full ``ednn_dask.energy`` of the sheet, and where
the time of one move goes (stamp update of the field, window assembly,
onnxruntime, and the rest).
Prints a table and writes the JSON (with the machine and date) to ``--json-out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]


def full_rescoring_flips_per_second(model, side: int, repeats: int = 5) -> float:
    from ednn_dask.inference import contributions

    spins = np.random.default_rng(0).choice(np.float32([-1, 1]), size=(side, side))
    contributions(spins, model)  # warm-up: session and buffers
    t0 = time.perf_counter()
    for _ in range(repeats):
        before = contributions(spins, model).sum(dtype=np.float64)
        spins[0, 0] *= -1
        after = contributions(spins, model).sum(dtype=np.float64)
        spins[0, 0] *= -1
        del before, after
    return repeats / (time.perf_counter() - t0)


class _Timed:
    """Wraps a callable, adding up the seconds spent in it (for the per-move breakdown)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def move_breakdown(chain, moves: int) -> dict:
    """Milliseconds per attempted move in the stamp update, window assembly, onnxruntime
    and the rest (affected blocks, Metropolis, bookkeeping)."""
    import ednn_dask.mc.atoms as mc_atoms

    local = chain.local
    parts = {"field_update": _Timed(mc_atoms.stamp), "window_assembly": _Timed(local.window),
             "onnxruntime": _Timed(local._score_batch)}
    mc_atoms.stamp, local.window, local._score_batch = (
        parts["field_update"], parts["window_assembly"], parts["onnxruntime"])
    try:
        t0 = time.perf_counter()
        for _ in range(moves):
            chain.attempt()
        total = time.perf_counter() - t0
    finally:
        mc_atoms.stamp = parts["field_update"].fn
        del local.window, local._score_batch
    out = {name: 1e3 * timer.seconds / moves for name, timer in parts.items()}
    out["bookkeeping"] = 1e3 * total / moves - sum(out.values())
    out["total"] = 1e3 * total / moves
    return out


def atoms_rows(model, cells: list[int], moves: int = 200) -> list[dict]:
    from ednn_dask import energy
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.atoms.materials import TRAINING_CELLS
    from ednn_dask.mc import AtomsChain

    rows = []
    for n in cells:
        sheet = hexagonal_sheet(np.random.default_rng(0), "graphene", displacement=0.05,
                                cells=(TRAINING_CELLS[0] * n, TRAINING_CELLS[1] * n))
        chain = AtomsChain(sheet, model, 1000.0, seed=0)
        chain.run(20)  # warm-up
        run = chain.run(moves)
        t0 = time.perf_counter()
        energy(sheet, model, check=False)  # one move priced by rescoring the whole sheet
        full = time.perf_counter() - t0
        rows.append({"atoms": len(sheet), "moves_per_second": run.moves / run.seconds,
                     "full_rescoring_moves_per_second": 1 / full,
                     "acceptance": run.acceptance,
                     "ms_per_move": move_breakdown(chain, moves)})
    return rows


def two_thread_rate(model, moves: int = 400) -> float:
    """Moves per second on the 60-atom cell with onnxruntime on both cores (intra-op threads)."""
    from ednn_dask.atoms import hexagonal_sheet
    from ednn_dask.mc import AtomsChain

    sheet = hexagonal_sheet(np.random.default_rng(0), "graphene", displacement=0.05)
    chain = AtomsChain(sheet, model, 1000.0, seed=0, threads=2)
    chain.run(20)  # warm-up
    run = chain.run(moves)
    return run.moves / run.seconds


def porous_rows(model, sides_nm: list[float], moves: int = 200) -> list[dict]:
    """Single-atom moves per second on porous sheets with the porous model, and what ten
    sweeps of the 100 nm sheet (the decomposed-sheet target) would take on one core."""
    from ednn_dask.atoms.materials import PorousSheet
    from ednn_dask.mc import AtomsChain

    rows = []
    for side in sides_nm:
        sheet = PorousSheet.square(side * 10.0, seed=0).structure()
        chain = AtomsChain(sheet, model, 1000.0, seed=0)
        chain.run(20)  # warm-up
        run = chain.run(moves)
        rate = run.moves / run.seconds
        rows.append({"side_nm": side, "atoms": len(sheet), "moves_per_second": rate,
                     "acceptance": run.acceptance,
                     "hours_for_10_sweeps_of_100nm_one_core": 10 * 330_000 / rate / 3600})
    return rows


def main() -> None:
    from ednn_dask.mc import ising_chain
    from ednn_dask.model import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "ising-2d-f1c1.onnx"))
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--atoms-model", default=str(ROOT / "models" / "hexagonal-f16c24.onnx"))
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 4, 13, 41],
                        help="sheets of N x N training cells (60 N^2 atoms)")
    parser.add_argument("--porous-model", default=str(ROOT / "models" / "porous-f32c16.onnx"))
    parser.add_argument("--porous-sides", type=float, nargs="+", default=[5.0],
                        help="porous sheets of these sides (nm)")
    parser.add_argument("--json-out", default=str(RESULTS / "mc-ising.json"))
    args = parser.parse_args()
    model = load_model(args.model)
    rows = []
    for side in args.sides:
        run = ising_chain(model, side, 2.269, args.sweeps, thermalize=0, seed=0)
        rows.append({"side": side, "flips_per_second": run.moves / run.seconds,
                     "acceptance": run.acceptance, "energy_drift": run.drift})
    baseline = full_rescoring_flips_per_second(model, 256)
    local_256 = next((r["flips_per_second"] for r in rows if r["side"] == 256), float("nan"))
    rates = [r["flips_per_second"] for r in rows]
    result = {
        "model": Path(args.model).name,
        "sweeps": args.sweeps,
        "rows": rows,
        "full_rescoring_flips_per_second_256": baseline,
        "speedup_over_full_rescoring_256": local_256 / baseline,
        "flips_per_second_max_over_min": max(rates) / min(rates),
        "atoms_model": Path(args.atoms_model).name,
        "atoms": atoms_rows(load_model(args.atoms_model), args.cells),
        "atoms_60_two_threads_moves_per_second": two_thread_rate(load_model(args.atoms_model)),
        "porous_model": Path(args.porous_model).name,
        "porous": porous_rows(load_model(args.porous_model), args.porous_sides),
    }
    print(f"{'side':>6} {'flips/s':>12} {'acceptance':>10}")
    for r in rows:
        print(f"{r['side']:>6} {r['flips_per_second']:>12,.0f} {r['acceptance']:>10.3f}")
    print(f"full rescoring at L = 256: {baseline:,.1f} flips/s; local is "
          f"{result['speedup_over_full_rescoring_256']:,.0f}x faster; flips/s vary "
          f"{result['flips_per_second_max_over_min']:.2f}x over the sides")
    parts = list(result["atoms"][0]["ms_per_move"])
    print(f"{'atoms':>8} {'moves/s':>10} {'full rescoring moves/s':>24}  ms per move: "
          + " ".join(parts))
    for r in result["atoms"]:
        print(f"{r['atoms']:>8,} {r['moves_per_second']:>10,.0f} "
              f"{r['full_rescoring_moves_per_second']:>24,.2f}  "
              + " ".join(f"{r['ms_per_move'][k]:.3f}" for k in parts))
    print(f"60 atoms with 2 onnxruntime threads: "
          f"{result['atoms_60_two_threads_moves_per_second']:,.0f} moves/s")
    for r in result["porous"]:
        print(f"porous {r['side_nm']:g} nm ({r['atoms']:,} atoms): {r['moves_per_second']:,.0f} "
              f"moves/s; 10 sweeps of 100 nm: {r['hours_for_10_sweeps_of_100nm_one_core']:.1f} "
              f"h on one core")
    write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
