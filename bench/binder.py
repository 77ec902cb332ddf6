"""Binder-cumulant crossings of the shipped Ising EDNNs: T_c from cluster Monte Carlo.

    python bench/binder.py [--dim 2 3] [--model M] [--sizes 16 32 64] [--T0 2.269]
                           [--steps 120000 100000 40000] [--out runs/binder-2d] [--exact]
                           [--json-out bench/results/mc-binder-2d.json]
                           [--plot docs/mc-binder.png]

For each dimension (default both), a Wolff chain corrected to the EDNN energy
(``ednn_dask.mc.cluster``) runs at each lattice side and each ``--T0`` for
``--steps`` cluster steps (one number, or one per side). The chains live in
``--out`` (``L<side>-T<T0>/chain.npz``): rerunning the command continues them bit
for bit, and more ``--steps`` extends them. Then ``ednn_dask.mc.binder`` reweights
each side's samples (multiple histograms), finds the crossing of the Binder cumulants
of each pair of sides with a jackknife error (20 blocks per chain) and
compares it with the exact T_c (Onsager's 2.26919 in 2-D, 4.5115 in 3-D).
``--exact`` runs the same analysis with the exact nearest-neighbour energy as the EDNN
(a hand-set network from ``tests/helpers.py``; needs torch to export it), which
separates the model's error from finite-size effects. Writes the JSON (with the
machine and date) and the figure: per dimension, ``<|m|>(T)`` and ``U_L(T)`` for
each side with the crossings marked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {  # per dimension: the run (about 25 minutes of one core in all)
    2: {"model": ROOT / "models" / "ising-2d-f1c1.onnx", "sizes": [16, 32, 64],
        "T0": [2.269], "steps": [120000, 100000, 40000]},
    # not L = 32 in 3-D: the shipped 3-D model's local error (about 0.15 J per site, half of
    # it odd under s -> -s) makes the correction reject nearly every cluster of more than
    # ~1000 sites (0.3 % accepted at L = 32), so the chain barely decorrelates there
    3: {"model": ROOT / "models" / "ising-3d-f1c1.onnx", "sizes": [8, 12, 16],
        "T0": [4.5115], "steps": [40000, 60000, 80000]},
}


def exact_model(ndim: int, folder: Path):
    """The exact Ising energy as an ONNX EDNN (hand-set weights; float32 exact)."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import exact_ising_ednn
    from training.export import export_onnx

    path = folder / f"exact-ising-{ndim}d.onnx"
    if path.exists():  # the chains check the model's hash: keep the first export
        from ednn_dask.model import load_model

        return load_model(path)
    folder.mkdir(parents=True, exist_ok=True)
    return export_onnx(exact_ising_ednn(ndim), folder / f"exact-ising-{ndim}d.onnx",
                       target_unit="J")


def per_side(values: list, sizes: list[int], name: str) -> list:
    if len(values) == 1:
        return values * len(sizes)
    if len(values) != len(sizes):
        raise SystemExit(f"--{name} takes one value or one per side ({len(sizes)}).")
    return values


def run_dimension(ndim: int, args, command: list[str]) -> dict:
    from ednn_dask.mc.binder import TC_2D, TC_3D, Reweighting, crossing_with_error, run_chain
    from ednn_dask.model import load_model

    d = DEFAULTS[ndim]
    tag = f"{ndim}d" + ("-exact" if args.exact else "")
    out = Path(args.out or ROOT / "runs" / f"binder-{tag}")
    model = exact_model(ndim, out) if args.exact else load_model(args.model or d["model"])
    if model.spec.ndim != ndim:
        raise SystemExit(f"{model.name} is a {model.spec.ndim}-d model, not {ndim}-d.")
    sizes = args.sizes or d["sizes"]
    steps = per_side(args.steps or d["steps"], sizes, "steps")
    temperatures = args.T0 or d["T0"]
    exact_tc = TC_2D if ndim == 2 else TC_3D
    chains = {}
    t0 = time.perf_counter()
    for side, n in zip(sizes, steps, strict=True):
        for t in temperatures:
            chains.setdefault(side, []).append(run_chain(
                model, side, t, n, out / f"L{side}-T{t:.5f}", seed=args.seed, log=print))
    run_seconds = time.perf_counter() - t0
    reweight = {side: Reweighting(c, discard=args.discard, blocks=args.blocks)
                for side, c in chains.items()}
    rows = []
    for c in chains.values():
        for samples in c:
            rows.append({**samples.summary(),
                         "acceptance_by_cluster_size": acceptance_by_size(samples)})
    crossings = []
    for a, b in itertools.combinations(sorted(sizes), 2):
        cross = crossing_with_error(reweight[a], reweight[b], width=args.width)
        cross["exact_tc"] = exact_tc
        cross["relative_deviation"] = (cross["tc"] - exact_tc) / exact_tc
        crossings.append(cross)
        print(f"{ndim}-D crossing L={a},{b}: Tc = {cross['tc']:.5f} +- {cross['tc_error']:.5f} "
              f"(exact {exact_tc:.5f}, {100 * cross['relative_deviation']:+.3f} %)")
    curves = {}
    for side, r in reweight.items():
        lo, hi = r.reliable_range(args.width)
        grid = np.linspace(lo, hi, 121)
        moments = r.moments(grid)
        curves[str(side)] = {"temperature": grid.tolist(),
                             "abs_magnetization": moments["abs_magnetization"].tolist(),
                             "binder": moments["binder"].tolist(),
                             "energy_per_site": moments["energy_per_site"].tolist()}
    exact_path = exact_result_path(ndim)
    if not args.exact and exact_path.exists():  # the same analysis with the exact energy
        exact = json.loads(exact_path.read_text())
        by_sides = {tuple(c["sides"]): c for c in exact["crossings"]}
        for cross in crossings:
            other = by_sides.get(tuple(cross["sides"]))
            if other is not None:
                cross["exact_energy_tc"] = other["tc"]
                cross["exact_energy_tc_error"] = other["tc_error"]
                cross["model_minus_exact_energy"] = cross["tc"] - other["tc"]
                cross["model_minus_exact_energy_error"] = float(np.hypot(cross["tc_error"],
                                                                         other["tc_error"]))
    result = {
        "model": model.name if not args.exact else f"exact Ising {ndim}-D EDNN",
        "ndim": ndim, "sizes": sizes, "temperatures": temperatures, "steps": steps,
        "seed": args.seed, "discard": args.discard, "jackknife_blocks": args.blocks,
        "reweighting_width": args.width, "exact_tc": exact_tc,
        "chains": rows, "crossings": crossings,
        "chain_seconds_total": float(sum(r["seconds"] for r in rows)),
        "wall_seconds_this_call": run_seconds,
        "curves": curves,
    }
    if not args.exact and exact_path.exists():
        result["exact_energy_run"] = {k: exact[k] for k in ("sizes", "steps", "temperatures",
                                                             "command", "date")}
        result["exact_energy_run"]["result"] = str(exact_path.relative_to(ROOT))
        result["exact_energy_run"]["chains"] = exact["chains"]
    default = exact_path if args.exact else RESULTS / f"mc-binder-{tag}.json"
    write_result(result, args.json_out or default, command)
    return result


def exact_result_path(ndim: int) -> Path:
    """Where ``--exact`` writes by default (under runs/, not a committed result)."""
    return ROOT / "runs" / f"binder-{ndim}d-exact" / "result.json"


def acceptance_by_size(samples) -> list[dict]:
    """The correction step's acceptance for proposed clusters of 1-9, 10-99, ... sites."""
    rows = []
    decade = np.floor(np.log10(samples.size)).astype(int)
    for k in np.unique(decade):
        pick = decade == k
        rows.append({"sizes": [int(10**k), int(10 ** (k + 1) - 1)], "count": int(pick.sum()),
                     "acceptance": float(samples.accepted[pick].mean())})
    return rows


def plot(path: Path) -> None:
    """Per dimension, <|m|>(T) and U_L(T) of each side with the crossings marked (from the
    JSONs); the exact-energy runs, where there are any, dashed and as open squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def load(p):
        return json.loads(p.read_text()) if p.exists() else None

    pairs = [(rec, load(exact_result_path(ndim))) for ndim in (2, 3)
             if (rec := load(RESULTS / f"mc-binder-{ndim}d.json"))]
    if not pairs:
        return
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 4.2 * len(pairs)), squeeze=False)
    for (ax_m, ax_u), (rec, exact) in zip(axes, pairs, strict=True):
        colours = {}
        for side, c in rec["curves"].items():
            (line,) = ax_m.plot(c["temperature"], c["abs_magnetization"], label=f"L = {side}")
            colours[side] = line.get_color()
            ax_u.plot(c["temperature"], c["binder"], color=colours[side], label=f"L = {side}")
        if exact is not None:
            for side, c in exact["curves"].items():
                style = {"color": colours.get(side, "gray"), "ls": "--", "lw": 0.8}
                ax_m.plot(c["temperature"], c["abs_magnetization"], **style)
                ax_u.plot(c["temperature"], c["binder"], **style)
        for r, marker, who in ((rec, "o", "EDNN"), (exact, "s", "exact E")):
            for cross in r["crossings"] if r else []:
                if not np.isfinite(cross["tc"]):
                    continue
                ax_u.errorbar([cross["tc"]], [cross["binder_at_crossing"]],
                              xerr=[cross["tc_error"]], fmt=marker, color="k", ms=5,
                              mfc="k" if who == "EDNN" else "none", capsize=3,
                              label=f"{who} {cross['sides'][0]}/{cross['sides'][1]}: "
                                    f"{cross['tc']:.4f} ± {cross['tc_error']:.4f}")
        for ax in (ax_m, ax_u):
            ax.axvline(rec["exact_tc"], color="gray", ls=":", lw=1,
                       label=f"exact $T_c$ = {rec['exact_tc']:.4f}")
            ax.set_xlabel("T  [J / k_B]")
        ax_m.legend(fontsize=8)
        ax_u.legend(fontsize=7)
        ax_m.set_ylabel(r"$\langle |m| \rangle$")
        ax_u.set_ylabel(r"$U_L = 1 - \langle m^4 \rangle / 3 \langle m^2 \rangle^2$")
        note = " (dashed: exact energy)" if exact is not None else ""
        ax_m.set_title(f"{rec['ndim']}-D, {rec['model']}: Wolff + EDNN correction{note}",
                       fontsize=9)
        ax_u.set_title(f"{rec['ndim']}-D Binder cumulants, reweighted from T0 = "
                       f"{', '.join(f'{t:g}' for t in rec['temperatures'])}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, nargs="+", choices=[2, 3], default=[2, 3])
    parser.add_argument("--model", help="default models/ising-<dim>d-f1c1.onnx")
    parser.add_argument("--exact", action="store_true",
                        help="the exact Ising energy as the EDNN (needs torch)")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--T0", type=float, nargs="+", help="sampled temperatures")
    parser.add_argument("--steps", type=int, nargs="+",
                        help="cluster steps per chain: one, or one per side")
    parser.add_argument("--out", help="chain folder; default runs/binder-<dim>d[-exact]")
    parser.add_argument("--json-out", help="default bench/results/mc-binder-<dim>d.json; with "
                        "--exact runs/binder-<dim>d-exact/result.json, which the EDNN runs "
                        "then compare with")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "mc-binder.png"),
                        help="the figure ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--discard", type=float, default=0.1,
                        help="fraction of each chain dropped as thermalization")
    parser.add_argument("--blocks", type=int, default=20, help="jackknife blocks per chain")
    parser.add_argument("--width", type=float, default=2.0,
                        help="reweighting reach, in standard deviations of the energy")
    args = parser.parse_args()
    if len(args.dim) > 1 and any(v is not None for v in (args.model, args.sizes, args.T0,
                                                         args.steps, args.out, args.json_out)):
        parser.error("--model, --sizes, --T0, --steps, --out and --json-out need one --dim.")
    for ndim in args.dim:
        run_dimension(ndim, args, sys.argv)
    if args.plot:
        plot(Path(args.plot))


if __name__ == "__main__":
    main()
