"""Generated pages of the documentation site, made from data at build time.

Run by MkDocs as a hook (``hooks:`` in ``mkdocs.yml``), so ``mkdocs build`` alone
regenerates them; nothing here is written into ``docs/``:

- ``cli.md``: the help of ``ednn-dask`` and of each subcommand, from
  :func:`ednn_dask.cli.build_parser`;
- ``models/index.md`` and ``models/<name>.md``: one card per shipped model in
  ``models/*.onnx``, from the model's own metadata (``load_model(path).spec``);
- ``benchmarks.md``: one table per benchmark, from the JSON files the bench scripts
  write to ``bench/results/`` ("not run yet" where a file is missing);
- the accuracy table of ``findings.md`` (the line ``<!-- generated: accuracy -->``):
  one row per ``bench/results/evaluate-*.json`` that ``make evaluations`` writes
  (``ednn-dask evaluate --json-out``), "not run yet" for each of the target's files
  that is missing;
- a benchmark's table in a hand-written page, in place of the line
  ``<!-- generated: bench/SCRIPT.py -->``.

``python docs/generate.py OUT`` writes the same pages into the folder ``OUT`` to read them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = {  # bench script -> its result files under bench/results/
    "bench_pipeline.py": "pipeline-*.json",
    "bench_rasterize.py": "rasterize.json",
    "bench_sheet.py": "sheet.json",
    "bench_mc.py": "mc-ising.json",
    "binder.py": "mc-binder-*.json",
    "mc_gr_compare.py": "mc-gr-*.json",
    "mc_sheet.py": "mc-sheet.json",
    "soak.py": "soak.json",
    "screened_scales.py": "screened.json",
    "screened_memory.py": "screened-memory.json",
    "train_fields_accuracy.py": "train-fields-*.json",
    "rock_volume.py": "rock.json",
    "thermal_errors.py": "thermal-errors.json",
    "convention_transfer.py": "convention.json",
    "convention_locality.py": "convention-locality.json",
    "vacancy_pairs.py": "vacancy-pairs.json",
    "closest_pairs.py": "closest-pairs.json",
    "pair_correction.py": "pair-correction.json",
    "porous_relaxations.py": "porous-relaxations.json",
    "registry_noise.py": "registry-noise.json",
    "train_speed.py": "train-speed.json",
}
EVALUATIONS = "evaluate-*.json"  # ednn-dask evaluate --json-out, from `make evaluations`
CLOSEST_BINS = (0.0, 1.0, 1.1, 1.2, 1.3, 10.0)  # Å, as bench/closest_pairs.py bins them
ACCURACY_MARKER = "<!-- generated: accuracy -->"  # in findings.md
BENCH_MARKER = "<!-- generated: bench/{} -->"  # a benchmark's table in a hand-written page
SYMBOLS = {1: "H", 5: "B", 6: "C", 7: "N", 8: "O"}

if str(ROOT) not in sys.path:  # the hook runs from any working directory
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- CLI


def cli_page() -> str:
    """The CLI reference: ``ednn-dask --help`` and each subcommand's ``--help``."""
    from ednn_dask.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"  # argparse wraps its help to this width
    try:
        parser = build_parser()
        lines = [
            "# Command-line reference",
            "",
            "Generated from `ednn_dask.cli.build_parser()`: this is what `--help` prints.",
            "Errors print one line naming the problem and the remedy, and exit with status 2.",
            "Nothing is overwritten without `--overwrite`.",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
        ]
        for name, sub in _subcommands(parser).items():
            lines += ["", f"## `ednn-dask {name}`", "", "```text", sub.format_help().rstrip(),
                      "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# ----------------------------------------------------------------------- model cards

METRICS = {  # provenance["metrics"] key -> what it is
    "n": "samples in the held-out test split",
    "mae": "mean absolute error of the total, per sample",
    "median_ae": "median absolute error of the total, per sample",
    "max_ae": "largest absolute error of the total",
    "rmse": "root-mean-square error of the total",
    "relative_mae": "mean of abs(error) / abs(target)",
    "mae_per_site": "mean absolute error per {site}",
    "median_ae_per_site": "median absolute error per {site}",
}


def model_cards() -> dict[str, str]:
    """``{"<stem>": markdown}``, one card per ``models/*.onnx``, plus ``"index"``."""
    from ednn_dask import load_model

    cards, rows = {}, []
    for path in sorted(MODELS.glob("*.onnx")):
        model = load_model(path)
        cards[path.stem] = _model_card(path, model)
        spec = model.spec
        rows.append(f"| [{path.stem}]({path.stem}.md) | {spec.provenance.get('system', '-')} "
                    f"| {spec.target} ({_unit(spec) or '-'}) | {spec.kind} "
                    f"| {_axes(spec.focus)} | {_axes(spec.context)} "
                    f"| {_metric(spec.provenance.get('metrics', {}), 'mae', spec)} |")
    cards["index"] = "\n".join([
        "# Shipped models",
        "",
        "One card per ONNX file in `models/`, generated from the file's own metadata",
        "(`ednn_dask.load_model(path).spec`; `ednn-dask info M.onnx` prints the same).",
        "The metrics are those the training recipe measured on its held-out test split",
        "through onnxruntime at export; the cards of models that `make evaluations` scores",
        "also give those errors on data the model never saw, for the atomistic models by",
        "vacancies per cell and by temperature. `make models` retrains them all.",
        "",
        "| model | system | target | kind | focus (px) | context (px) | test MAE |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    return cards


def _model_card(path: Path, model) -> str:
    spec = model.spec
    prov = dict(spec.provenance)
    metrics = prov.pop("metrics", {}) or {}
    command = prov.pop("command", None)
    data = prov.pop("data", None)
    out = [f"# `{path.name}`", ""]
    system = prov.get("system", path.stem)
    unit = f" in {_unit(spec)}" if _unit(spec) else ""
    out += [f"An EDNN tile model for the system `{system}` ({spec.kind} kind): the sum of its "
            f"contributions predicts `{spec.target}`{unit}."]
    out += ["", "## Input and geometry", "", "| | |", "|---|---|"]
    out += [f"| dims | {', '.join(spec.spatial_dims)} |",
            f"| channels | {spec.channels}{_species(spec)} |",
            f"| focus | {_axes(spec.focus)} px{_angstrom(spec.focus, spec)} |",
            f"| context | {_axes(spec.context)} px{_angstrom(spec.context, spec)} |",
            f"| tile | {_axes([f + 2 * c for f, c in zip(spec.focus, spec.context)])} px |",
            f"| boundary | {spec.boundary} |",
            f"| spacing | {_spacing(spec)} |"]
    out += [f"| scale {k} | factor {_axes(s.factor)}, focus {_axes(s.focus)}, context "
            f"{_axes(s.context)} (coarse px), {s.kind} |" for k, s in enumerate(spec.scales)]
    if spec.input_offset or spec.input_scale != 1:
        out.append(f"| input scaling | (x - {spec.input_offset:.6g}) * {spec.input_scale:.6g} |")
    if spec.output_offset or spec.output_scale != 1:
        out.append(f"| output scaling | raw * {spec.output_scale:.6g} + "
                   f"{spec.output_offset:.6g} |")
    if spec.raster:
        r = spec.raster
        out.append(f"| raster (eq. 2) | gamma {r['gamma']} Å, cutoff {r['cutoff']} Å |")
    if spec.reference_energies:
        energies = ", ".join(f"{k} {v:.4f}" for k, v in sorted(spec.reference_energies.items()))
        out.append(f"| reference energies (eV per atom, added back by `energy()`) | "
                   f"{energies} |")
    out.append(f"| file sha256 | `{model.sha256[:16]}…` |")

    out += ["", "## Data", ""]
    described = {k: prov.get(k) for k in ("reference", "n_structures", "data_hash", "seed")
                 if k in prov}
    if isinstance(data, dict):
        described = {**{f"data.{k}": v for k, v in data.items()}, **described}
    elif data:  # train fields: the store's path
        described = {"data": data, **described}
    if described:
        out += ["| | |", "|---|---|"]
        out += [f"| {k} | {_value(v)} |" for k, v in described.items()]
    else:
        out.append("The provenance records no data set.")

    out += ["", "## Recipe", ""]
    shift = prov.get("convention_shift", {})
    if command:
        made = f"`{shift['from']}`, the model this file copies," if shift else "this file"
        out += [f"The command that trained and exported {made} as recorded in its "
                "provenance:", "", "```bash", _command(command), "```"]
    else:
        out.append("The provenance records no command.")
    if shift.get("command"):
        out += ["", "and the one that shifted its reference energies to the replica "
                "convention:", "", "```bash", _command(shift["command"]), "```"]
    rest = {k: v for k, v in prov.items() if k not in described}
    if rest:
        out += ["", "| provenance | |", "|---|---|"]
        out += [f"| {k} | {_value(v)} |" for k, v in sorted(rest.items())]

    out += ["", "## Metrics", ""]
    if metrics:
        whose = (f"Of `{shift['from']}` (Gamma-point energies, before the shift), on the "
                 if shift else "On the ")
        out += [whose + "held-out test split of its training data, through onnxruntime:", "",
                "| metric | value | what |", "|---|---|---|"]
        site = "pixel" if spec.raster else "site"
        for key in metrics:
            what = METRICS.get(key, "").format(site=site)
            out.append(f"| `{key}` | {_metric(metrics, key, spec)} | {what} |")
    else:
        out.append("The provenance records no metrics.")
    parity = path.with_name(path.stem + ".parity.png")
    if parity.exists():
        out += ["", f"![parity plot of {path.stem}]({parity.name})"]

    out += _held_out_accuracy(path, model)
    out += ["", "## Limits", ""] + [f"- {line}" for line in _limits(spec, data)]
    return "\n".join(out) + "\n"


def _held_out_accuracy(path: Path, model) -> list[str]:
    """The card's section on data the model never saw: its `make evaluations` records.

    Atomistic records with MD or defect groups also get the error by vacancy count
    (pooled over the kinds of cell), by temperature and split by MD run: where the
    model holds.
    """
    records = [r for r in (json.loads(p.read_text()) for p in sorted(RESULTS.glob(EVALUATIONS)))
               if r.get("model_file") == path.name and r.get("model_sha256") == model.sha256]
    if not records:
        return []
    out = ["", "## Accuracy on data it never saw", "",
           "From `make evaluations` (`bench/results/evaluate-*.json`), through onnxruntime:", "",
           "| evaluated on | n | MAE | median AE |", "|---|---|---|---|"]
    out += [f"| {_evaluated(r)} | {r.get('n', '?')} | {' | '.join(_accuracy(r))} |"
            for r in records]
    for r in records:
        groups, runs = r.get("groups", {}), r.get("runs")
        temperatures = groups.get("temperature_K", {})
        if "kind_vacancies" not in groups and len(temperatures) < 2 and not runs:
            continue
        out += ["", f"On {_evaluated(r)} (meV/atom; the snapshots of one MD run share its cell "
                f"and much of its error, so a row of few runs moves with them):"]
        if "kind_vacancies" in groups:
            out += ["", "| vacancies | n | MAE | by kind |", "|---|---|---|---|"]
            out += _by_vacancies(groups["kind_vacancies"])
        if len(temperatures) > 1:
            out += ["", "| temperature (K) | n | MAE |", "|---|---|---|"]
            out += [f"| {t} | {g['n']} | {g['mae']:.2f} |" for t, g in temperatures.items()]
        if runs:
            # a relaxation path (temperature 0) is a run too: its frames share a cell
            what = "runs (MD runs and relaxation paths)" if "0" in temperatures else "MD runs"
            out += ["", f"Over its {runs['n_runs']} {what}, {runs['mae_of_run_means']:.2f} "
                    f"meV/atom is the MAE of each run's mean error (an offset the whole run "
                    f"shares) and {runs['mae_within_runs']:.2f} the MAE left within runs."]
            if "slope_within_runs" in runs:
                out[-1] += (f" Within runs the reference energies vary by "
                            f"{runs['reference_within_runs']:.2f} (MAE about the run means); "
                            f"the model follows them with a slope of "
                            f"{runs['slope_within_runs']:.2f} and r² "
                            f"{runs['r2_within_runs']:.2f}.")
    return out


def _by_vacancies(groups: dict) -> list[str]:
    """Rows of vacancies -> n, pooled MAE and each kind's MAE, from "kind, N vac" groups."""
    pooled: dict[int, list[tuple[str, dict]]] = {}
    for name, g in groups.items():
        kind, vacancies = name.split(", ")
        pooled.setdefault(int(vacancies.split()[0]), []).append((kind, g))
    rows = []
    for vacancies, kinds in sorted(pooled.items()):
        n = sum(g["n"] for _, g in kinds)
        mae = sum(g["n"] * g["mae"] for _, g in kinds) / n
        each = ", ".join(f"{kind} {g['mae']:.2f}" for kind, g in kinds)
        rows.append(f"| {vacancies} | {n} | {mae:.2f} | {each} |")
    return rows


def _limits(spec, data) -> list[str]:
    lines = []
    if spec.spacing is not None:
        lines.append(f"Fields must have the model's pixel spacing ({_spacing(spec)}); "
                     "`score` refuses another.")
    multiple = "a multiple of the focus" if spec.kind == "dense" else "exactly one tile"
    lines.append(f"Each spatial axis of a field must be {multiple} "
                 f"({_axes(spec.focus)} px); the outside of the grid is "
                 + ("periodic." if spec.boundary == "periodic"
                    else f"the constant {spec.boundary}."))
    if spec.spacing is not None:
        reach = ", ".join(f"{c * s:.2f}" for c, s in zip(spec.context, spec.spacing))
        lines.append(f"Each contribution sees its focus block plus {reach} Å of context: "
                     "interactions that reach farther are invisible to it "
                     "(see [findings](../findings.md)).")
    else:
        lines.append(f"Each contribution sees its focus block plus {_axes(spec.context)} "
                     "sites of context.")
    if spec.raster and spec.raster.get("species"):
        elements = ", ".join(SYMBOLS.get(z, str(z)) for z in spec.raster["species"])
        lines.append(f"Only the elements {elements} (one channel each); `energy()` refuses "
                     "others.")
    if isinstance(data, dict) and "L" in data:
        shown = f"Trained on {data['L']}-site-per-axis samples"
        if "temperatures" in data:
            shown += " at T in {}..{}".format(*data["temperatures"])
        lines.append(shown + "; larger fields rely on the model being extensive.")
    if spec.provenance.get("reference"):
        lines.append(f"Its target is the {spec.provenance['reference']} energy of the training "
                     "cells, not an experiment or a higher-level method.")
    temperatures = spec.provenance.get("temperatures_K")
    if temperatures == "cold":
        lines.append("Trained on cold lattices only (independent displacements, per-coordinate "
                     f"RMS up to {spec.provenance['sigma_max_angstrom']} Å): thermal "
                     "configurations are extrapolation.")
    elif temperatures:
        cold = " and cold lattices" if spec.provenance.get("cold_lattices_too") else ""
        relaxed = " (0 K: relaxation paths)" if spec.provenance.get("relaxation_paths_too") else ""
        lines.append("Trained on thermal configurations from {:g} to {:g} K{}{} (per-coordinate "
                     "RMS up to {} Å).".format(*temperatures, relaxed, cold,
                                               spec.provenance["sigma_max_angstrom"]))
    if spec.provenance.get("energy_convention"):
        lines.append(f"Energy convention: {spec.provenance['energy_convention']}.")
    return lines


def _species(spec) -> str:
    if not spec.raster:
        return ""
    species = spec.raster.get("species")
    if species is None:
        return " (one Z-weighted channel)"
    return " (" + ", ".join(SYMBOLS.get(z, str(z)) for z in species) + ")"


def _axes(values) -> str:
    return " x ".join(str(v) for v in values)


def _angstrom(pixels, spec) -> str:
    if spec.spacing is None:
        return ""
    return " = " + " x ".join(f"{p * s:.2f}" for p, s in zip(pixels, spec.spacing)) + " Å"


def _spacing(spec) -> str:
    if spec.spacing is None:
        return "none (a lattice model)"
    return " x ".join(f"{s:.6g}" for s in spec.spacing) + f" {spec.spacing_unit or ''}".rstrip()


def _metric(metrics: dict, key: str, spec) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    unit = "" if key == "relative_mae" else f" {_unit(spec)}".rstrip()
    return f"{value:.4g}{unit}"


def _unit(spec) -> str:
    return "" if spec.target_unit in ("", "1") else spec.target_unit


def _value(value) -> str:
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _command(command: str) -> str:
    """The recorded command with its program shown as ``ednn-dask``."""
    words = shlex.split(command)
    if words and (words[0].endswith("ednn-dask") or words[0].endswith("cli.py")):
        words[0] = "ednn-dask"
    return shlex.join(words)


# ------------------------------------------------------------------------ benchmarks


def benchmarks_page() -> str:
    """One table per benchmark, from the JSON files the bench scripts write."""
    out = ["# Benchmarks", "",
           "Generated from the JSON files that the scripts in `bench/` write to "
           "`bench/results/`; each table names the machine and the date it was measured on.",
           "`make bench` runs them all. Benchmarks compare against a baseline in the same "
           "run (a ratio), so their ratios carry across machines better than their times."]
    for script in BENCHMARKS:
        doc = ast.get_docstring(ast.parse((ROOT / "bench" / script).read_text())) or script
        title, _, body = doc.partition("\n")
        out += ["", f"## {title.rstrip('.')}", "", _usage_as_code(body), "",
                *benchmark_table(script)]
    return "\n".join(out) + "\n"


def benchmark_table(script: str) -> list[str]:
    """One benchmark's table with where it was measured, or a line saying it has not run."""
    render = {"bench_pipeline.py": _pipeline_table, "bench_rasterize.py": _rasterize_table,
              "bench_sheet.py": _sheet_table, "bench_mc.py": _mc_table,
              "binder.py": _binder_table, "mc_gr_compare.py": _gr_table,
              "mc_sheet.py": _mc_sheet_table, "soak.py": _soak_table,
              "screened_scales.py": _screened_table, "screened_memory.py": _screened_memory_table,
              "train_fields_accuracy.py": _train_fields_table, "rock_volume.py": _rock_table,
              "thermal_errors.py": _thermal_table, "convention_transfer.py": _convention_table,
              "convention_locality.py": _convention_locality_table,
              "vacancy_pairs.py": _vacancy_pairs_table, "closest_pairs.py": _closest_table,
              "pair_correction.py": _pair_correction_table,
              "porous_relaxations.py": _porous_relaxations_table,
              "registry_noise.py": _registry_table, "train_speed.py": _train_speed_table}
    pattern = BENCHMARKS[script]
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(pattern))]
    if not records:
        return [f"**Not run yet**: `python bench/{script}` writes `bench/results/{pattern}`."]
    return _measured(records) + [""] + render[script](records)


def _usage_as_code(text: str) -> str:
    """A docstring body with its indented usage lines as a fenced block."""
    out, code = [], []
    for line in text.strip("\n").splitlines() + [""]:
        if line.startswith("    "):
            code.append(line[4:])
            continue
        if code:
            out += ["```text", *code, "```"]
            code = []
        out.append(line)
    return "\n".join(out).strip()


def _measured(records: list[dict]) -> list[str]:
    lines = []
    for r in records:
        m = r.get("machine", {})
        memory = f", {m['memory_gib']} GiB" if "memory_gib" in m else ""
        lines.append(f"Measured on {m.get('processor') or m.get('machine', '?')}, "
                     f"{m.get('cpu_count', '?')} cores{memory} ({m.get('platform', '?')}), "
                     f"{r.get('date', '?')}, commit `{r.get('commit')}`: "
                     f"`{r.get('command', '?')}`")
    return [line + "  " for line in lines[:-1]] + lines[-1:]


def _pipeline_table(records: list[dict]) -> list[str]:
    out = ["| field | raw onnxruntime | ednn-dask threaded | ednn-dask LocalCluster "
           "| torch eager | pipeline / raw | speed-up vs torch | memory gained / field |",
           "|---|---|---|---|---|---|---|---|"]
    for r in records:
        s, px = r["seconds"], r["pixels"]

        def rate(name, s=s, px=px):
            return f"{px / s[name] / 1e6:.1f} Mpx/s" if name in s else "-"

        speedup = r.get("speedup_vs_torch_eager")
        gained = (f"{r['localcluster_peak_gain_MB']:,.0f} / {r['field_MB']:,.0f} MB"
                  if "field_MB" in r else "-")
        out.append(f"| {r['system']}, {r['size']}² | {rate('raw onnxruntime')} "
                   f"| {rate('ednn-dask, threaded')} | {rate('ednn-dask, LocalCluster')} "
                   f"| {rate('torch eager EDNN')} | {r['fraction_of_raw_ort_threaded']:.2f} "
                   f"| {f'{speedup:.1f}x' if speedup else '-'} | {gained} |")
    return out


def _rasterize_table(records: list[dict]) -> list[str]:
    r = records[-1]
    return [
        "| method | atoms/s |", "|---|---|",
        f"| numba kernel, 1 core | {r['numba_atoms_per_s_core']:,.0f} |",
        f"| per-atom numpy stamp, 1 core | {r['numpy_atoms_per_s_core']:,.0f} |",
        f"| dask `rasterize`, all cores | {r['dask_pipeline_atoms_per_s']:,.0f} |",
        "",
        f"numba / numpy = {r['ratio_numba_over_numpy']:.1f}x; the two agree: "
        f"{r['numba_equals_numpy']}; {r['atoms']:,} atoms on {r['pixels']:,} pixels.",
    ]


def _mc_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = ["| lattice side | spin flips/s | acceptance |", "|---|---|---|"]
    out += [f"| {row['side']} | {row['flips_per_second']:,.0f} | {row['acceptance']:.3f} |"
            for row in r["rows"]]
    out += ["", f"Full rescoring at L = 256: "
            f"{r['full_rescoring_flips_per_second_256']:,.1f} flips/s; local rescoring is "
            f"{r['speedup_over_full_rescoring_256']:,.0f}x faster there, and its rate "
            f"varies {r['flips_per_second_max_over_min']:.2f}x over the sides."]
    if r.get("atoms"):
        out += ["", f"Single-atom moves at 1000 K, graphene, `{r.get('atoms_model')}`:", "",
                "| atoms | moves/s (local) | moves/s (full rescoring) |", "|---|---|---|"]
        out += [f"| {a['atoms']:,} | {a['moves_per_second']:,.0f} "
                f"| {a['full_rescoring_moves_per_second']:,.2f} |" for a in r["atoms"]]
        if "atoms_60_two_threads_moves_per_second" in r:
            out += ["", f"The 60-atom cell with onnxruntime on two threads: "
                    f"{r['atoms_60_two_threads_moves_per_second']:,.0f} moves/s."]
    parts = [a["ms_per_move"] for a in r.get("atoms", []) if "ms_per_move" in a]
    if parts:
        names = list(parts[0])
        out += ["", "Where the time of one move goes (ms per attempted move):", "",
                "| atoms | " + " | ".join(n.replace("_", " ") for n in names) + " |",
                "|---|" + "---|" * len(names)]
        out += [f"| {a['atoms']:,} | " + " | ".join(f"{a['ms_per_move'][n]:.3f}" for n in names)
                + " |" for a in r["atoms"]]
    if r.get("porous"):
        out += ["", f"Porous sheets, `{r['porous_model']}`, single-atom moves at 1000 K:", "",
                "| side | atoms | moves/s | 10 sweeps of a 100 nm sheet (330 k atoms), one core |",
                "|---|---|---|---|"]
        out += [f"| {p['side_nm']:g} nm | {p['atoms']:,} | {p['moves_per_second']:,.0f} "
                f"| {p['hours_for_10_sweeps_of_100nm_one_core']:.1f} h |" for p in r["porous"]]
    return out


def _binder_table(records: list[dict]) -> list[str]:
    out = ["| model | sides | T_c (Binder crossing) | exact T_c | deviation |",
           "|---|---|---|---|---|"]
    for r in records:
        for c in r["crossings"]:
            found = isinstance(c.get("tc"), (int, float)) and math.isfinite(c["tc"])
            tc = f"{c['tc']:.4f} ± {c['tc_error']:.4f}" if found else "no crossing in range"
            deviation = f"{100 * c['relative_deviation']:+.2f} %" if found else "-"
            out.append(f"| `{r['model']}` | {c['sides'][0]}, {c['sides'][1]} | {tc} "
                       f"| {c['exact_tc']:.4f} | {deviation} |")
    out += ["", "| model | side | cluster steps | steps/s | correction acceptance |",
            "|---|---|---|---|---|"]
    for r in records:
        out += [f"| `{r['model']}` | {c['side']} | {c['steps']:,} | {c['steps_per_second']:,.0f} "
                f"| {c['acceptance']:.3f} |" for c in r["chains"]]
    return out


def _gr_table(records: list[dict]) -> list[str]:
    r = records[-1]
    t = r["targets"]
    out = ["| run | frames | peak 1: r, g | peak 2: r, g | peak 3: r, g "
           "| RMS displacement per coordinate | peaks within target |",
           "|---|---|---|---|---|---|---|"]
    for row in [{"model": "GFN1-xTB molecular dynamics", **r["md"]}, *r["mc"]]:
        label = row["model"] if "peak_errors" not in row else f"EDNN Monte Carlo, `{row['model']}`"
        peaks = " | ".join(f"{p['position_A']:.3f} Å, {p['height']:.2f}" for p in row["peaks"])
        within = ("" if "peak_errors" not in row else
                  f"{sum(e['within'] for e in row['peak_errors'])} of {len(row['peak_errors'])}")
        out.append(f"| {label} | {row['frames']} | {peaks} | {row['rms_displacement_A']:.4f} Å "
                   f"| {within} |")
    out += ["", f"{r['atoms']} atoms at {r['temperature_K']:g} K. A peak is within target when "
            f"its position is within {t['position_A']:g} Å of the MD's and its height within "
            f"{100 * t['height_relative']:g} %. "
            f"![g(r) of EDNN Monte Carlo and GFN1-xTB MD](mc-gr-1000K.png)"]
    return out


def _mc_sheet_table(records: list[dict]) -> list[str]:
    out = ["| sheet | atoms | regions, workers | sweeps | moves/s | serial chain moves/s "
           "| ratio | acceptance | workers' memory in use, first → last phase |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        memory = r["worker_memory_MiB"]
        out.append(f"| {r['side_nm']:g} nm | {r['atoms']:,} | {r['regions'][0]}×{r['regions'][1]}"
                   f", {r['workers']} | {r['phases']} | {r['moves_per_second']:,.0f} "
                   f"| {r['serial_moves_per_second']:,.0f} | {r['speedup_over_serial']:.2f}x "
                   f"| {r['acceptance']:.3f} | {memory[0]:,.0f} → {memory[-1]:,.0f} MiB "
                   f"({r['memory_last_over_first']:.3f}x) |")
    return out + ["", "![Worker memory and energy per phase](mc-sheet.png)"]


def _soak_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = ["| phase | items | seconds | worker memory at 10 % | at 100 % | change |",
           "|---|---|---|---|---|---|"]
    for phase, items in (("batch", f"{r['fields']:,} fields"),
                         ("sheets", f"{r['sheets']:,} sheets of {r['sheet_size_nm']:g} nm")):
        out.append(f"| {phase} | {items} | {r[f'{phase}_seconds']:,.0f} "
                   f"| {r[f'{phase}_memory_MB_at_10pct']:,.0f} MB "
                   f"| {r[f'{phase}_memory_MB_at_100pct']:,.0f} MB "
                   f"| {100 * r[f'{phase}_memory_change']:+.1f} % |")
    return out + ["", f"{r['rows']:,} rows, every field once: {r['every_field_once']}; "
                  f"failed tasks: {r['erred_tasks']}; the same workers throughout: "
                  f"{r['same_workers']}. **{'Passed' if r['passed'] else 'Failed'}** "
                  "(memory change below 10 %, no failure, every field once)."]


def _screened_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = [f"Fresh {r['L']} x {r['L']} lattices ({r['n']}):", "",
           "| model | focus | context | scales (factor:focus:context) | MAE / std(E) "
           "| µs per pixel | cost / slowest |", "|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        scales = ", ".join(":".join(map(str, s)) for s in m["scales"]) or "one"
        out.append(f"| `{m['model']}` | {m['focus'][0]} | {m['context'][0]} | {scales} "
                   f"| {m['mae_over_std']:.4f} | {m['seconds_per_pixel'] * 1e6:.3f} "
                   f"| {m['cost_vs_slowest']:.3f} |")
    out += ["", "Pair nets fitted in closed form on the recipe's data set (each at the best "
            "its reach allows), scored on the same lattices. For a multi-scale layout, "
            "*matched* is the full-resolution context of equal or worse accuracy nearest "
            "to it:", "",
            "| layout | MAE / std(E) | µs per pixel | time / context 32 | matched | "
            "time / matched |", "|---|---|---|---|---|---|"]
    for m in r["sweep"]:
        if m["scales"]:
            name = ", ".join(":".join(map(str, v)) for v in m["scales"])
            matched = (f"context {m['matched_context']} | {m['cost_vs_matched']:.3f}"
                       if m["matched_context"] is not None else "- | -")
        else:
            name, matched = f"full resolution, context {m['context'][0]}", "- | -"
        out.append(f"| {name} | {m['mae_over_std']:.4f} | {m['seconds_per_pixel'] * 1e6:.3f} "
                   f"| {m['cost_vs_wide']:.3f} | {matched} |")
    return out + ["", "![error against cost](screened-cost.png)"]


def _screened_memory_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = [f"`{r['model']}`, {r['workers']} single-threaded worker processes, chunks of "
           f"{r['chunk']}:", "",
           "| lattice | field | seconds | worker peak | gained while scoring |",
           "|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['size']}² | {row['field_MB']:,.0f} MB | {row['seconds']:.1f} "
                   f"| {row['worker_peak_MB']:,.0f} MB | {row['worker_gain_MB']:,.0f} MB |")
    return out + ["", f"Peak at the largest size over the peak at the smallest: "
                  f"{r['peak_growth']:.2f}."]


def _vacancy_pairs_table(records: list[dict]) -> list[str]:
    r = records[-1]
    rows = r["rows"]
    out = [f"`{r['data']}`, h-BN cells with one vacancy of each kind; two vacancies in separate "
           f"cells: {r['separate_eV']:+.2f} eV. Model errors in meV/atom, signed (MAE):", "",
           "| V_B-V_N distance (Å) | " + " | ".join(f"{x['from_A']:g}-{x['to_A']:g}" for x in rows)
           + " |", "|---|" + "---|" * len(rows),
           "| cells | " + " | ".join(str(x["n"]) for x in rows) + " |",
           "| binding (eV per cell) | " + " | ".join(f"{x['binding_eV']:+.2f}" for x in rows)
           + " |"]
    for model in r["models"]:
        cells = [x["models"][model] for x in rows]
        out.append(f"| `{Path(model).name}` | " + " | ".join(
            f"{c['signed_meV_per_atom']:+.2f} ({c['mae_meV_per_atom']:.2f})" for c in cells)
            + " |")
    return out


def _closest_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = [f"`{r['model']}`; MAE (signed) in meV/atom by the structure's closest pair:", "",
           "| store | structures | closest pair: min / 1 % / median | " + " | ".join(
               f"{lo:g}-{hi:g} Å" for lo, hi in zip(CLOSEST_BINS[:-1], CLOSEST_BINS[1:]))
           + " |", "|---|---|---|" + "---|" * (len(CLOSEST_BINS) - 1)]
    for row in r["stores"]:
        p = row["closest_percentiles_A"]
        cells = {b["from_A"]: f"{b['mae_meV_per_atom']:.1f} ({b['signed_meV_per_atom']:+.1f}), "
                 f"{b['n']}" for b in row["bins"]}
        out.append(f"| `{Path(row['store']).name}` | {row['n']} | {p['0']:.2f} / {p['1']:.2f} "
                   f"/ {p['50']:.2f} Å | " + " | ".join(cells.get(lo, "-")
                                                     for lo in CLOSEST_BINS[:-1]) + " |")
    return out


def _train_speed_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = [f"Median of each step, {r['threads']} threads, default layout -> channels-last:", "",
           "| recipe (system:net:context) | cell, batch | Adam step (ms) | ratio "
           "| forward, no gradients (ms) | ratio | largest relative difference |",
           "|---|---|---|---|---|---|---|"]
    for row in r["recipes"]:
        out.append(f"| `{row['recipe']}` | {row['pixels']} px, {row['batch']} "
                   f"| {row['default_step_s'] * 1e3:.0f} -> "
                   f"{row['channels_last_step_s'] * 1e3:.0f} "
                   f"| {row['step_ratio']:.2f}x "
                   f"| {row['default_forward_s'] * 1e3:.0f} -> "
                   f"{row['channels_last_forward_s'] * 1e3:.0f} | {row['forward_ratio']:.2f}x "
                   f"| {row['max_relative_difference']:.1e} |")
    return out


def _pair_correction_table(records: list[dict]) -> list[str]:
    r = records[-1]
    names = list(r["held_out_sizes"])
    out = [f"`{r['model']}` alone and with a fitted pair term; MAE in meV/atom (held-out "
           "structures in brackets):", "",
           "| pair term: reach, Monte Carlo weight (unknowns) | training stores | " + " | ".join(
               f"{k} ({r['held_out_sizes'][k]})" for k in names) + " |",
           "|---|---|" + "---|" * len(names)]
    for row in r["rows"]:
        label = "none (the net alone)" if not row["reach_px"] else (
            f"{row['reach_px']} px, {row['mc_weight']:g} ({row['unknowns']})")
        out.append(f"| {label} | {row['train_mae_meV_per_atom']:.1f} | " + " | ".join(
            f"{row['held_out_meV_per_atom'][k]:.1f}" for k in names) + " |")
    return out


def _porous_relaxations_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = [f"Held out: `{r['held_out']}`; meV/atom. The cold split is the model's own test "
           "split of `porous.zarr`, the training split all its training frames.", "",
           "| model | training data besides `porous.zarr` | frames | held-out median "
           f"| mean signed | the same, cells of {' / '.join(r['models'][0]['held_out_by_atoms'])}"
           " atoms | cold split, MAE | training split, MAE |",
           "|---|---|---|---|---|---|---|---|"]
    for row in r["models"]:
        data = " and ".join(f"{n} {what}" for n, what in (
            (row["md_runs"], "MD runs"), (row["relaxations"], "relaxations"),
            (row.get("rattles", 0), "rattles of the MD runs")) if n) or "none"
        epochs = f", {row['epochs']} epochs" if "epochs" in row else ""  # older rows lack it
        net = f", `{row['net']}` net" if row.get("net", "compact") != "compact" else ""
        how = (f"fine-tuned from `{row['init_from']}`{epochs}" if row.get("init_from")
               else f"{row['context_px']} px context{net}{epochs} from scratch")
        if row.get("scales"):  # [factor, focus, context] per branch, coarse pixels
            factor, _, context = row["scales"][-1]
            how = (f"a coarse {factor}x branch, {factor * context} px context, grown on "
                   f"`{row['init_from']}`{epochs}")
        how += ", per-atom loss" if row.get("loss") == "per-atom" else ""
        when = f"; scored {row['measured'][:10]}" if row.get("measured") else ""
        h = row["held_out"]
        sizes = " / ".join(f"{v:+.0f}" for v in row["held_out_by_atoms"].values())
        out.append(f"| `{Path(row['model']).name}` ({how}{when}) | {data} | {row['frames']:,} "
                   f"| {h['median']:.1f} | {h['mean_signed']:+.1f} | {sizes} "
                   f"| {row['cold_split_mae']:.2f} | {row['train_split_mae']:.2f} |")
    fit = r.get("power_law")
    if fit:
        target = r["target_median_meV_per_atom"]
        out += ["", f"Fine-tuned with the 8 MD runs, the median falls as n^{fit['b']:.2f} with n "
                f"relaxation paths ({fit['points']} fine-tunes): {target:g} meV/atom at about "
                f"{fit['relaxations_for_target']:,.0f} relaxations."]
    return out + _porous_offsets_table(r["models"]) + _held_out_runs_table(r["models"]) + [
        "", "![Held-out median against relaxations](porous-relaxations.png)"]


def _rows_with(rows: list[dict], key: str) -> tuple[list[dict], list[dict]]:
    """The rows that have ``key`` (rows kept from older runs may lack it), and the first
    one's cells under it."""
    rows = [row for row in rows if row.get(key)]
    return rows, list(rows[0][key].values()) if rows else []


def _per_cell_head(caption: str, columns: list[str]) -> list[str]:
    return ["", caption, "", "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]


def _held_out_runs_table(rows: list[dict]) -> list[str]:
    """Per held-out run: each model's mean signed error and its spread over the frames."""
    rows, runs = _rows_with(rows, "held_out_by_run")
    if not rows:
        return []
    out = _per_cell_head(
        "Per held-out MD run (its atoms and temperature), meV/atom: each model's mean signed "
        "error on the run's 20 frames ± its standard deviation from frame to frame, beside "
        "the standard deviation of GFN1-xTB's own energy per atom.",
        [f"{c['atoms']} at {c['temperature_K']:g} K" for c in runs])
    out.append("| GFN1-xTB, sd | " + " | ".join(f"{c['reference_sd']:.1f}" for c in runs) + " |")
    for row in rows:
        out.append(f"| `{Path(row['model']).name}` | " + " | ".join(
            f"{round(c['mean_signed']):+d} ± {c['error_sd']:.0f}"
            for c in row["held_out_by_run"].values()) + " |")
    return out


def _registry_table(records: list[dict]) -> list[str]:
    r = records[-1]
    k = sorted({n for row in r["models"] for n in row["averaged"]}, key=int)[1:]
    out = ["meV/atom. Registries: rolls of the cell's field within one trunk stride of the "
           "net (its period, px). Spread: the standard deviation of a cell's energy per atom "
           "over every pixel of that stride (median over the cells). Errors at the cell's "
           "own registry, at any one (the median over registries), averaged over "
           f"{', '.join(k)} registries (`registries=K`), and averaged over the rolls by "
           "whole strides within the focus block instead (strides): the held-out MD's "
           "median |error|, the cold test split's MAE.", "",
           "| model | held-out set | period | spread | own | any | " + " | ".join(k)
           + " | strides | cold split: spread | own | any | " + " | ".join(k)
           + " | strides |", "|---|---|---|" + "---|" * (2 * len(k) + 8)]

    def cells(part: dict, metric: str, digits: int) -> str:
        values = [part["registry_sd"]["median"], part["averaged"]["1"][metric],
                  part["any_registry"][metric],
                  *(part["averaged"].get(n, {}).get(metric) for n in k),
                  part["whole_strides"][metric]]
        return " | ".join("–" if v is None else f"{v:.{digits}f}" for v in values)

    for row in r["models"]:
        out.append(f"| `{Path(row['model']).name}` | `{Path(row['held_out']).name}` | "
                   f"{row['period_px']} | {cells(row, 'median', 1)} | "
                   f"{cells(row['cold_split'], 'mae', 2)} |")
    moves = r["models"][0]["single_moves"]
    out += ["", f"Monte Carlo: {moves['moves']} single-atom moves of the first held-out cell, "
            f"uniform in a disc of {moves['step_A']} Å, each scored at every registry: the rms "
            "of the energy change (meV), its standard deviation across registries, and that of "
            "its mean over 4 registries (`registries=4`) about the mean over all, against "
            "kT = 25.9 meV at 300 K and 86.2 at 1000 K.", "",
            "| model | atoms | energy change, rms | sd across registries | sd, mean of 4 |",
            "|---|---|---|---|---|"]
    out += [f"| `{Path(row['model']).name}` | {m['atoms']} | {m['rms_meV']:.0f} | "
            f"{m['registry_sd_meV']:.1f} | {m['four_registries_sd_meV']:.1f} |"
            for row in r["models"] for m in [row["single_moves"]]]
    return out + ["", "![Held-out median against registries averaged](registry-noise.png)"]


def _porous_offsets_table(rows: list[dict]) -> list[str]:
    """Mean signed error per cell of the 12 MD runs: its MD frames against the cell relaxed."""
    rows, cells = _rows_with(rows, "offsets_by_cell")
    if not rows:
        return []
    out = _per_cell_head(
        "Per cell of the 12 MD runs (by its atoms), meV/atom: how far GFN1-xTB puts the run's "
        "20 frames above the cell relaxed, and each model's mean signed error on the frames "
        "and on the relaxed cell.", [f"{c['atoms']}" for c in cells])
    out += ["| thermostat, K | " + " | ".join(f"{c['temperature_K']:g}" for c in cells) + " |",
            "| GFN1-xTB: MD frames above the relaxed cell | "
            + " | ".join(f"{c['md_above_relaxed']:+.0f}" for c in cells) + " |"]
    for row in rows:
        for what, label in (("md", "MD frames"), ("relaxed", "relaxed cell")):
            out.append(f"| `{Path(row['model']).name}`: {label} | " + " | ".join(
                f"{c[what]:+.0f}" for c in row["offsets_by_cell"].values()) + " |")
    return out


def _train_fields_table(records: list[dict]) -> list[str]:
    out = ["| training set | scored field | training (default settings) | epochs (best) "
           "| test relative MAE | relative error on the scored field |",
           "|---|---|---|---|---|---|"]
    for r in records:
        side = "x".join([str(r["sample_side"])] * r["dim"])
        big = "x".join([str(r["big_side"])] * r["dim"])
        out.append(f"| {r['samples']:,} fields of {side} | {big} | {r['train_minutes']:.1f} min "
                   f"on {r['cores']} cores | {r['epochs_run']} ({r['best_epoch']}) "
                   f"| {r['test']['relative_mae']:.2%} | {r['big_relative_error']:+.3%} |")
    return out


def _rock_table(records: list[dict]) -> list[str]:
    r = records[-1]
    out = ["| volume | generate + count | memory gained: generate | score (3 models) "
           "| memory gained: score | with halos from the scored chunks "
           "| volume error | area error | Euler | Mvoxel/s | ednn-dask / raw "
           "| / raw inference alone |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        overlap = row.get("euler_overlap", {}).get("peak_gain_MB")
        euler = row["euler"]
        out.append(
            f"| {row['size']}³ | {row['generate_seconds']:,.0f} s "
            f"| {row['generate_peak_gain_MB']:,.0f} MB "
            f"| {sum(row[t]['seconds'] for t in ('volume', 'area', 'euler')):,.0f} s "
            f"| {max(row[t]['peak_gain_MB'] for t in ('volume', 'area', 'euler')):,.0f} MB "
            f"| {'-' if overlap is None else f'{overlap:,.0f} MB'} "
            f"| {row['volume']['relative_error']:.1e} | {row['area']['relative_error']:.1e} "
            f"| {'exact' if euler['exact_after_rounding'] else 'off'} "
            f"({euler['predicted']:,.0f}) | {euler['voxels_per_second'] / 1e6:.0f} "
            f"| {row['speed_vs_raw']:.2f} | {row['speed_vs_raw_inference']:.2f} |")
    return out


def _atoms_range(atoms: list[int]) -> str:
    return f"{min(atoms)}" if min(atoms) == max(atoms) else f"{min(atoms)}-{max(atoms)}"


def _convention_table(records: list[dict]) -> list[str]:
    """Each model's replica shift and its supercell errors before and after, and by kind."""
    out = ["MAE in meV/atom (mean signed error in brackets): the Gamma-point model, then the "
           "same model shifted to the 2 x 2-replica convention, and that one by kind of sheet.",
           "", "| model | shift (meV/atom) | fit: rms, leave-one-out MAE | store | atoms | n "
           "| Gamma-point model | replica convention | by kind |",
           "|---|---|---|---|---|---|---|---|---|"]
    for row in records[-1]["rows"]:
        fit = row["fit"]
        shift = ", ".join(f"{s} {v * 1e3:+.2f}" for s, v in fit["shift_eV"].items())
        quality = (f"{fit['rms_meV_per_atom']:.2f}, {fit['loo_mae_meV_per_atom']:.2f} "
                   f"({fit['n']} cells)")
        for name, e in row["stores"].items():
            g, r = (f"{x['mae_meV_per_atom']:.2f} ({x['mean_signed_meV_per_atom']:+.2f})"
                    for x in (e["gamma"], e["replica"]))
            kinds = ", ".join(f"{k} {v['mae']:.2f} ({v['n']})"
                              for k, v in e["replica"].get("by_kind", {}).items()) or "-"
            out.append(f"| `{Path(row['model']).name}` | {shift} | {quality} | `{name}` "
                       f"| {_atoms_range(e['gamma']['atoms'])} | {e['gamma']['n']} | {g} | {r} "
                       f"| {kinds} |")
            shift = quality = ""
    return out


def _convention_locality_table(records: list[dict]) -> list[str]:
    """Leave-one-out error of each feature set's fit to replica minus cell, by kind."""
    r = records[-1]
    kinds = list(next(iter(r["fits"].values()))["by_kind"])
    out = [f"{r['n']} cells of `{Path(r['replicas']).name}`; replica minus cell varies by "
           f"{r['difference_std_meV_per_atom']:.2f} meV/atom (std). Leave-one-out MAE in "
           "meV/atom, each feature set at the penalty that suits it best:", "",
           "| features | terms | penalty | all | " + " | ".join(kinds) + " |",
           "|---|---|---|---|" + "---|" * len(kinds)]
    for name, fit in r["fits"].items():
        out.append(f"| {name} | {fit['features']} | {fit['alpha']:g} | "
                   f"{fit['loo_mae_meV_per_atom']:.2f} | "
                   + " | ".join(f"{fit['by_kind'][k]:.2f}" for k in kinds) + " |")
    return out


def _thermal_table(records: list[dict]) -> list[str]:
    """MAE of each model on held-out MD (by temperature, sigma), its own splits, supercells."""
    r = records[-1]
    out = ["MAE in meV/atom (mean signed error in brackets).", "",
           "| model | data | n | MAE | by temperature | by sigma (Å) |",
           "|---|---|---|---|---|---|"]

    def line(model: str, data: str, e: dict) -> str:
        groups = {name: ", ".join(f"{k}: {g['mae']:.1f} ({g['mean_signed']:+.1f})"
                                  for k, g in e["groups"].get(name, {}).items()) or "-"
                  for name in ("temperature_K", "sigma_angstrom")}
        return (f"| `{Path(model).name}` | {data} | {e['n']:,} | "
                f"{e['mae_meV_per_atom']:.2f} ({e['mean_signed_meV_per_atom']:+.2f}) "
                f"| {groups['temperature_K']} | {groups['sigma_angstrom']} |")

    for row in r["rows"]:
        for name, e in row["held_out"].items():
            out.append(line(row["model"], f"`{name}` (held out)", e))
        for split in ("train", "test"):
            if f"{split}_split" not in row:
                continue
            e = row[f"{split}_split"]
            out.append(line(row["model"], f"its {split} split", e))
            out += [f"| `{Path(row['model']).name}` | its {split} split of `{name}` | {g['n']:,} "
                    f"| {g['mae']:.2f} ({g['mean_signed']:+.2f}) | - | - |"
                    for name, g in e["groups"].get("store", {}).items()]
        for name, e in row["supercells"].items():
            out.append(line(row["model"], f"`{name}` (cold, {_atoms_range(e['atoms'])} atoms)",
                            e))
    return out


def _sheet_table(records: list[dict]) -> list[str]:
    r = records[-1]
    cores = r["cores"]
    out = ["| sheet side | atoms | wall (warm) | µs/atom warm | µs/atom cold | core-ms/atom "
           "| peak memory |", "|---|---|---|---|---|---|---|"]
    for s in r["sizes"]:
        side = s["side_A"]
        shown = f"{side / 1e4:g} µm" if side >= 1e4 else f"{side / 10:g} nm"
        out.append(f"| {shown} | {s['n_atoms']:,} | {s['seconds']:.2f} s "
                   f"| {s['seconds'] / s['n_atoms'] * 1e6:.2f} "
                   f"| {s['cold_seconds'] / s['cold_n_atoms'] * 1e6:.2f} "
                   f"| {s['seconds'] * cores / s['n_atoms'] * 1e3:.4f} "
                   f"| {s['peak_bytes'] / 2**30:.2f} GiB |")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in r["one_core_us_per_atom"].items())
    deviation = r.get("time_per_atom_deviation", math.nan)
    out += [
        "",
        f"- Model `{r['model']}`; the largest sheet costs "
        f"{r['largest_core_ms_per_atom']:.4f} core-ms per atom (the paper: "
        f"{r['paper_core_ms_per_atom']}).",
        f"- Time per atom from 10⁵ atoms up: within {deviation:+.0%} of its median "
        f"(first sheet of each size: {r.get('cold_time_per_atom_deviation', math.nan):+.0%}).",
        f"- The sheet job runs at {r['sheet_of_raw_onnxruntime']:.2f} of raw onnxruntime's "
        f"pixel rate on the same windows ({r['raw_onnxruntime_px_per_s']:.3g} px/s).",
        f"- One core, µs per atom: {stages}.",
        f"- One 60-atom cell, atoms -> energy in-process: "
        f"{r['single_60_atom_structure_ms']:.2f} ms.",
        "",
        "![sheet scaling](sheet-scaling.png)",
    ]
    return out


# -------------------------------------------------------------------- accuracy table


def planned_evaluations(makefile: Path = ROOT / "Makefile") -> dict[str, str]:
    """``{result file name: command}`` of the Makefile's ``evaluations`` target, in order."""
    try:
        lines = makefile.read_text().splitlines()
    except OSError:
        return {}
    planned, inside = {}, False
    for line in lines:
        if line.startswith("evaluations:"):
            inside = True
        elif inside and line.startswith("\t"):
            match = re.search(r"\s--json-out\s+bench/results/(\S+)", line)
            if match:
                command = (line[: match.start()] + line[match.end():]).strip()
                command = command.replace("$(EVALUATE)", "ednn-dask evaluate")
                planned[match[1]] = command.replace("$(VENV)/bin/ednn-dask", "ednn-dask")
        elif inside:
            break
    return planned


def accuracy_table() -> str:
    """The accuracy of the shipped models: one row per ``bench/results/evaluate-*.json``."""
    records = {p.name: json.loads(p.read_text()) for p in sorted(RESULTS.glob(EVALUATIONS))}
    planned = planned_evaluations()
    out = ["Generated from the JSON files that `make evaluations` (`ednn-dask evaluate "
           "... --json-out`) writes to `bench/results/`: through onnxruntime, on samples "
           "the model never saw. Per site for the lattice models (spin, pixel), per atom "
           "for the atomistic ones.", "",
           "| model | evaluated on | n | MAE | median AE | command | measured |",
           "|---|---|---|---|---|---|---|"]
    for name in [*planned, *(n for n in records if n not in planned)]:
        record = records.get(name)
        if record is None:
            model = _command_option(planned[name], "--model")
            out.append(f"| {_model_link(model)} | **not run yet**: `make evaluations` writes "
                       f"`bench/results/{name}` | - | - | - | `{planned[name]}` | - |")
            continue
        mae, median = _accuracy(record)
        date = str(record.get("date", "?"))[:10]
        commit = f" (`{record['commit']}`)" if record.get("commit") else ""
        out.append(f"| {_model_link(record.get('model', '?'), record.get('model_sha256'))} "
                   f"| {_evaluated(record)} | {record.get('n', '?')} | {mae} | {median} "
                   f"| `{record.get('command', '?')}` | {date}{commit} |")
    machines = sorted({_machine(r.get("machine", {})) for r in records.values()})
    if machines:
        out += ["", "Measured on " + "; ".join(machines) + "."]
    return "\n".join(out)


def _accuracy(record: dict) -> tuple[str, str]:
    """The MAE and median AE cells of one evaluation."""
    if "mae_meV_per_atom" in record:
        signed = record.get("mean_signed_meV_per_atom")
        shown = f", mean signed {signed:+.2f}" if signed is not None else ""
        return (f"{record['mae_meV_per_atom']:.2f} meV/atom{shown}",
                f"{record.get('median_meV_per_atom', math.nan):.2f} meV/atom")
    unit = record.get("target_unit", "")
    unit = f" {unit}" if unit not in ("", "1") else ""
    relative = record.get("relative_mae")
    shown = f" ({relative * 100:.3g} % relative)" if relative is not None else ""
    return (f"{record.get('mae_per_site', math.nan):.3g}{unit} per site{shown}",
            f"{record.get('median_ae_per_site', math.nan):.3g}{unit} per site")


def _evaluated(record: dict) -> str:
    """What an evaluation scored: the store and split, or the fresh samples."""
    if "data" in record:
        atoms = record.get("atoms") or []
        sizes = (f"; {atoms[0]} atoms" if len(atoms) == 1
                 else f"; {atoms[0]}-{atoms[-1]} atoms" if atoms else "")
        split = record.get("split", "all")
        which = "all structures" if split == "all" else f"{split} split"
        data = record["data"]
        stores = " + ".join(f"`{d}`" for d in ([data] if isinstance(data, str) else data))
        return f"{stores}, {which}{sizes}"
    side = "x".join([str(record.get("L", "?"))] * int(record.get("dim", 2)))
    if "near_critical" in record:
        temps = "T in T_c ± 0.1" if record["near_critical"] else "T in 1..5"
        return f"fresh {side} Monte Carlo configurations, {temps}"
    return f"fresh {side} smooth random images"


def _model_link(model: str | None, sha256: str | None = None) -> str:
    """The model's name, linked to its card when it is a shipped model."""
    if not model:
        return "?"
    path = MODELS / Path(model).name
    if not path.exists():
        return f"`{Path(model).name}`"
    shown = f"[{path.stem}](models/{path.stem}.md)"
    if sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        shown += " (measured on an older file: rerun `make evaluations`)"
    return shown


def _command_option(command: str, option: str) -> str | None:
    words = shlex.split(command)
    return words[words.index(option) + 1] if option in words[:-1] else None


def _machine(m: dict) -> str:
    memory = f", {m['memory_gib']} GiB" if "memory_gib" in m else ""
    return (f"{m.get('processor') or m.get('machine', '?')}, {m.get('cpu_count', '?')} cores"
            f"{memory} ({m.get('platform', '?')})")


def render_markers(markdown: str, uri: str) -> str:
    """A hand-written page with its generated parts in place: the accuracy table in the
    findings, and a benchmark's table wherever its line ``BENCH_MARKER`` stands."""
    if uri == "findings.md":
        if ACCURACY_MARKER not in markdown:
            raise ValueError(f"findings.md lacks the line {ACCURACY_MARKER!r}")
        markdown = markdown.replace(ACCURACY_MARKER, accuracy_table())
    for script in BENCHMARKS:
        marker = BENCH_MARKER.format(script)
        if marker in markdown:
            markdown = markdown.replace(marker, "\n".join(benchmark_table(script)))
    return markdown


# ------------------------------------------------------------------------ all pages


def pages() -> dict[str, str]:
    """Every generated page: ``{path under docs/: markdown}``."""
    out = {"cli.md": cli_page(), "benchmarks.md": benchmarks_page()}
    for stem, text in model_cards().items():
        out[f"models/{stem}.md"] = text
    return out


def parity_plots() -> dict[str, Path]:
    """The parity plots beside the shipped models, shown on their cards."""
    return {f"models/{p.name}": p for p in sorted(MODELS.glob("*.parity.png"))}


# ------------------------------------------------------------------------ MkDocs hooks


def on_config(config):
    """Expand the nav entry ``models/index.md`` into the index and one card per model."""
    stems = [p.stem for p in sorted(MODELS.glob("*.onnx"))]
    cards = [{stem: f"models/{stem}.md"} for stem in stems]

    def expand(items):
        result = []
        for item in items:
            if isinstance(item, dict):
                item = {k: ["models/index.md", *cards] if v == "models/index.md"
                        else expand(v) if isinstance(v, list) else v
                        for k, v in item.items()}
            result.append(item)
        return result

    if config.get("nav"):
        config["nav"] = expand(config["nav"])
    return config


def on_files(files, config):
    """Add the generated pages and the parity plots to the site, in memory only."""
    from mkdocs.structure.files import File

    for uri, text in pages().items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=text))
    for uri, source in parity_plots().items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Generated tables into hand-written pages; every ``ednn.*`` key on the format page."""
    if page.file.src_uri == "findings.md":
        return render_markers(markdown, "findings.md")
    if page.file.src_uri == "model-format.md":
        import logging

        from ednn_dask.model.spec import METADATA_KEYS

        missing = [k for k in METADATA_KEYS if f"`{k}`" not in markdown]
        if missing:
            logging.getLogger("mkdocs.hooks.generate").warning(
                "model-format.md does not describe the metadata keys %s", missing)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the generated pages to a folder")
    parser.add_argument("out", type=Path)
    out = parser.parse_args(argv).out
    findings = render_markers((ROOT / "docs" / "findings.md").read_text(), "findings.md")
    for uri, text in {**pages(), "findings.md": findings}.items():
        (out / uri).parent.mkdir(parents=True, exist_ok=True)
        (out / uri).write_text(text)
        print(out / uri)


if __name__ == "__main__":
    main()
