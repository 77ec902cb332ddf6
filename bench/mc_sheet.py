"""A porous sheet's Monte Carlo split into regions on a LocalCluster: speed and flat memory.

    python bench/mc_sheet.py [--side-nm 100] [--phases 10] [--regions 2] [--workers 2]
                             [--model models/porous-f32c16.onnx] [--baseline-moves 2000]
                             [--json-out bench/results/mc-sheet.json] [--plot docs/mc-sheet.png]

Runs ``ednn_dask.mc.decomposed_atoms_chain`` on a square porous sheet of
``--side-nm`` at 1000 K, one sweep per phase (each region attempts as many
moves as it holds atoms), on a LocalCluster of ``--workers`` single-threaded
processes, and records the workers' memory in use after every phase (resident
memory summed over the workers, each after a garbage collection and
``malloc_trim``). The baseline, in the same command, is the serial
``ednn_dask.mc.AtomsChain`` on the same sheet in this process (single-atom
moves per second). Prints the figures, writes the JSON (with the machine and
date) and a plot of memory and energy per phase.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]


def serial_rate(sheet, model, moves: int) -> float:
    """Single-atom moves per second of one in-process chain on the whole sheet."""
    from ednn_dask.mc import AtomsChain

    chain = AtomsChain(sheet, model, 1000.0, seed=0)
    chain.run(50)  # warm-up: session and buffers
    run = chain.run(moves)
    return run.moves / run.seconds


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = range(1, len(result["worker_memory_MiB"]) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(phases, result["worker_memory_MiB"], "o-")
    top.set_ylabel("workers' memory in use (MiB)")
    top.set_ylim(0, max(result["worker_memory_MiB"]) * 1.2)
    bottom.plot(phases, result["energy_per_atom"], "o-")
    bottom.set_ylabel("energy (eV/atom)")
    bottom.set_xlabel("phase (one sweep each)")
    top.set_title(f"{result['atoms']:,}-atom porous sheet, {result['regions'][0]}x"
                  f"{result['regions'][1]} regions on {result['workers']} workers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    from distributed import Client, LocalCluster

    from ednn_dask.atoms.materials import PorousSheet
    from ednn_dask.mc import decomposed_atoms_chain
    from ednn_dask.model import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-nm", type=float, default=100.0)
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--regions", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "models" / "porous-f32c16.onnx"))
    parser.add_argument("--baseline-moves", type=int, default=2000)
    parser.add_argument("--json-out", default=str(RESULTS / "mc-sheet.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "mc-sheet.png"))
    args = parser.parse_args()
    model = load_model(args.model)
    sheet = PorousSheet.square(args.side_nm * 10.0, seed=0).structure()
    baseline = serial_rate(sheet, model, args.baseline_moves)
    print(f"{len(sheet):,} atoms; serial chain: {baseline:,.0f} moves/s", flush=True)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        run = decomposed_atoms_chain(sheet, model, 1000.0, args.phases, regions=args.regions,
                                     sweeps_per_phase=1.0, seed=0, client=client, progress=True)
    wall = time.perf_counter() - t0
    summary = run.summary()
    memory = summary["worker_memory_MiB"]
    result = {
        "model": Path(args.model).name, "side_nm": args.side_nm, "workers": args.workers,
        "temperature_K": 1000.0, **{k: summary[k] for k in (
            "atoms", "phases", "steps", "acceptance", "moves_per_second", "energy_drift",
            "worker_memory_MiB", "regions", "region_pixels", "interior_fraction")},
        "energy_per_atom": (run.energy / run.n_atoms).tolist(),
        "serial_moves_per_second": baseline,
        "speedup_over_serial": summary["moves_per_second"] / baseline,
        "memory_last_over_first": memory[-1] / memory[0],
        "wall_seconds": wall,
    }
    print(f"{result['phases']} sweeps of {result['atoms']:,} atoms in {wall:,.0f} s: "
          f"{result['moves_per_second']:,.0f} moves/s on {args.workers} workers, "
          f"{result['speedup_over_serial']:.2f}x the serial chain; acceptance "
          f"{result['acceptance']:.3f}; drift {result['energy_drift']:.2e} eV")
    print("workers' memory in use per phase (MiB): " + " ".join(f"{m:,.0f}" for m in memory)
          + f"  (last / first {result['memory_last_over_first']:.3f})")
    write_result(result, args.json_out, sys.argv)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
