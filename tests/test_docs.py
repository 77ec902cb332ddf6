"""The documentation: the site builds with ``--strict`` and every Python block in it runs.

Python blocks of README.md and docs/**/*.md run in a fresh interpreter, in a temporary
working directory where ``models/`` is the repository's. A block is skipped only when
the line before its fence is ``<!-- no-run -->`` (cluster addresses and the like) or
its fence carries a title (```` ```python title="..." ````). The README's tour runs
twice: it must be re-runnable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.M | re.S)
DIARY = re.compile(r"earlier session|this morning|the morning|before the fix|the same day|"
                   r"\b20\d\d-\d\d-\d\d\b", re.I)
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of each runnable ```python block of a Markdown file."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        if "title" in match["info"] or before == NO_RUN:
            continue
        blocks.append((line, match["code"]))
    return blocks


BLOCKS = [(path, line, code) for path in PAGES for line, code in python_blocks(path)]


def load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory in which ``models/`` is the repository's."""
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    return tmp_path


def run_block(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(
    ("path", "line", "code"), BLOCKS,
    ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in BLOCKS])
def test_python_block_runs(path: Path, line: int, code: str, workdir: Path):
    runs = 2 if path.name == "README.md" else 1  # the tour is re-runnable
    for attempt in range(runs):
        done = run_block(code, workdir)
        assert done.returncode == 0, (
            f"{path.relative_to(ROOT)}:{line} failed (run {attempt + 1}):\n{done.stderr[-3000:]}")


def test_blocks_are_found():
    """The README tour and the guides' examples are among the executed blocks."""
    where = {p.relative_to(ROOT).as_posix() for p, _, _ in BLOCKS}
    assert {"README.md", "docs/guide/fields.md", "docs/guide/atoms.md"} <= where
    skipped = (ROOT / "docs" / "guide" / "clusters.md").read_text().count(NO_RUN)
    assert skipped >= 1


def test_site_builds_strict(tmp_path: Path):
    for name in ("mkdocs", "material", "mkdocstrings"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: install the docs extra "
                        "(pip install -e '.[docs]') to build the site")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-5000:]
    for page in ("index.html", "cli/index.html", "benchmarks/index.html",
                 "models/index.html", "api/atoms/index.html", "findings/index.html"):
        assert (site / page).is_file(), page
    for model in sorted((ROOT / "models").glob("*.onnx")):
        card = (site / "models" / model.stem / "index.html").read_text()
        assert model.name in card
    cli = (site / "cli" / "index.html").read_text()
    for command in ("score", "sheet", "info", "demo", "data", "train", "evaluate",
                    "blur-study"):
        assert f"ednn-dask {command}" in cli


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 150
    assert lines[2:6] == [
        "```bash",
        "make demo   # score a 4096x4096 Ising lattice with the shipped model on a local "
        "Dask cluster",
        "make test   # install into .venv (Python 3.11 + pip) and run the test suite",
        "```",
    ]
    from ednn_dask.cli import build_parser

    commands = load_generator()._subcommands(build_parser())
    for command in commands:
        assert f"ednn-dask {command}" in text, f"the README synopsis lacks {command!r}"
    assert "pip install jupyterlab" in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"the README links to a missing {target!r}"


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_diary(path: Path):
    """The docs state what is true now; history lives in git."""
    found = DIARY.findall(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} reads like a diary: {found}"


def test_model_cards_from_metadata():
    from ednn_dask import load_model

    cards = load_generator().model_cards()
    for path in sorted((ROOT / "models").glob("*.onnx")):
        spec = load_model(path).spec
        card = cards[path.stem]
        assert f"| focus | {' x '.join(map(str, spec.focus))} px" in card
        if "command" in spec.provenance:
            assert "## Recipe" in card and "ednn-dask train" in card
        if "metrics" in spec.provenance:
            assert f"| `n` | {spec.provenance['metrics']['n']:,} |" in card
    assert all(f"[{p.stem}]({p.stem}.md)" in cards["index"]
               for p in (ROOT / "models").glob("*.onnx"))


def test_model_cards_show_held_out_errors_by_vacancies(tmp_path: Path, monkeypatch):
    """A card lists its model's evaluations (this file's, by sha256) and pools the
    kind x vacancies groups by vacancy count, weighted by their sizes."""
    from ednn_dask import load_model

    generate = load_generator()
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    path = ROOT / "models" / "hexagonal-thermal-f16c24.onnx"
    record = {"model": f"models/{path.name}", "model_file": path.name,
              "model_sha256": load_model(path).sha256, "data": ["data/md.zarr"], "split": "all",
              "n": 40, "mae_meV_per_atom": 5.0, "median_meV_per_atom": 4.0,
              "groups": {"kind_vacancies": {"graphene, 0 vac": {"n": 10, "mae": 1.0},
                                            "hbn, 0 vac": {"n": 30, "mae": 3.0},
                                            "hbn, 4 vac": {"n": 20, "mae": 15.0}},
                         "temperature_K": {"300": {"n": 30, "mae": 2.0},
                                           "1000": {"n": 30, "mae": 9.0}}},
              "runs": {"n_runs": 3, "mae_of_run_means": 4.25, "mae_within_runs": 2.5,
                       "reference_within_runs": 7.0, "slope_within_runs": 0.953,
                       "r2_within_runs": 0.7}}
    (tmp_path / "evaluate-x.json").write_text(json.dumps(record))
    (tmp_path / "evaluate-other.json").write_text(json.dumps({**record, "model_sha256": "0"}))
    card = generate.model_cards()[path.stem]
    assert card.count("| `data/md.zarr`, all structures | 40 | 5.00 meV/atom") == 1
    assert "| 0 | 40 | 2.50 | graphene 1.00, hbn 3.00 |" in card
    assert "| 4 | 20 | 15.00 | hbn 15.00 |" in card
    assert "| 1000 | 30 | 9.00 |" in card
    assert "Over its 3 MD runs, 4.25 meV/atom" in card
    assert "vary by 7.00 (MAE about the run means); the model follows them with a slope of " \
        "0.95 and r² 0.70." in card
    assert "## Accuracy on data it never saw" not in generate.model_cards()["porous-f32c16"]
    # a record without vacancies (porous MD) still gets its temperatures and runs
    porous = ROOT / "models" / "porous-thermal-f32c32.onnx"
    (tmp_path / "evaluate-porous.json").write_text(json.dumps(
        {**record, "model": f"models/{porous.name}", "model_file": porous.name,
         "model_sha256": load_model(porous).sha256,
         "groups": {"temperature_K": {**record["groups"]["temperature_K"],
                                      "0": {"n": 10, "mae": 4.0}}}}))
    card = generate.model_cards()[porous.stem]
    assert "| vacancies |" not in card and "| 1000 | 30 | 9.00 |" in card
    assert "Over its 3 runs (MD runs and relaxation paths), 4.25 meV/atom" in card


def test_benchmarks_page_from_json(tmp_path: Path, monkeypatch):
    """Missing results read "not run yet"; present ones become tables with machine and date."""
    generate = load_generator()
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    empty = generate.benchmarks_page()
    assert empty.count("**Not run yet**") == len(generate.BENCHMARKS)

    header = {"date": "2030-01-02T03:04:05+00:00", "commit": "abc1234", "command": "python x",
              "machine": {"platform": "Linux-x86_64", "processor": "Test CPU", "cpu_count": 2,
                          "memory_gib": 8.0}}
    seconds = {"raw onnxruntime": 2.0, "ednn-dask, threaded": 1.6,
               "ednn-dask, LocalCluster": 1.8, "torch eager EDNN": 6.4}
    (tmp_path / "pipeline-ising.json").write_text(json.dumps({
        **header, "system": "ising", "size": 1024, "pixels": 1024**2, "seconds": seconds,
        "fraction_of_raw_ort_threaded": 1.25, "speedup_vs_torch_eager": 4.0}))
    (tmp_path / "rasterize.json").write_text(json.dumps({
        **header, "atoms": 1000, "pixels": 4096, "numba_atoms_per_s_core": 2e6,
        "numpy_atoms_per_s_core": 4e4, "ratio_numba_over_numpy": 50.0,
        "numba_equals_numpy": True, "dask_pipeline_atoms_per_s": 3e6}))
    size = {"side_A": 550.0, "n_atoms": 100_000, "seconds": 0.5, "cold_seconds": 0.6,
            "cold_n_atoms": 100_000, "peak_bytes": 2**29}
    (tmp_path / "sheet.json").write_text(json.dumps({
        **header, "model": "porous.onnx", "cores": 2, "sizes": [size, {**size, "side_A": 1e4}],
        "largest_core_ms_per_atom": 0.01, "paper_core_ms_per_atom": 18.9,
        "time_per_atom_deviation": 0.05, "cold_time_per_atom_deviation": 0.2,
        "raw_onnxruntime_px_per_s": 5e7, "sheet_of_raw_onnxruntime": 0.75,
        "one_core_us_per_atom": {"atoms": 1.0, "rasterize": 0.8, "onnxruntime": 5.8},
        "single_60_atom_structure_ms": 0.9}))
    (tmp_path / "mc-ising.json").write_text(json.dumps({
        **header, "model": "ising.onnx", "sweeps": 5,
        "rows": [{"side": 64, "flips_per_second": 9e4, "acceptance": 0.4}],
        "full_rescoring_flips_per_second_256": 7.5, "speedup_over_full_rescoring_256": 1.2e4,
        "flips_per_second_max_over_min": 1.3, "atoms_model": "hex.onnx",
        "atoms": [{"atoms": 960, "moves_per_second": 250.0,
                   "full_rescoring_moves_per_second": 33.5, "acceptance": 0.5}]}))
    crossing = {"sides": [16, 32], "tc": 2.2711, "tc_error": 0.0019, "exact_tc": 2.2692,
                "relative_deviation": 0.0008}
    (tmp_path / "mc-binder-2d.json").write_text(json.dumps({
        **header, "model": "ising-2d.onnx", "crossings": [crossing, {**crossing, "tc": None}],
        "chains": [{"side": 16, "steps": 1000, "steps_per_second": 900.0, "acceptance": 0.99}]}))
    peak = {"position_A": 1.426, "height": 6.6}
    peaks = [peak, {"position_A": 2.46, "height": 3.1}, {"position_A": 2.84, "height": 2.5}]
    errors = [{"position_A": 0.01, "height_relative": -0.05, "within": True}] * 2 + [
        {"position_A": 0.03, "height_relative": 0.01, "within": False}]
    (tmp_path / "mc-gr-1000K.json").write_text(json.dumps({
        **header, "atoms": 60, "temperature_K": 1000.0,
        "targets": {"position_A": 0.02, "height_relative": 0.1},
        "md": {"frames": 251, "peaks": peaks, "rms_displacement_A": 0.054},
        "mc": [{"model": "hex.onnx", "frames": 1000, "peaks": peaks, "peak_errors": errors,
                "rms_displacement_A": 0.051}]}))
    (tmp_path / "mc-sheet.json").write_text(json.dumps({
        **header, "side_nm": 100.0, "atoms": 330_826, "regions": [2, 2], "workers": 2,
        "phases": 10, "moves_per_second": 1500.0, "serial_moves_per_second": 1000.0,
        "speedup_over_serial": 1.5, "acceptance": 0.65, "worker_memory_MiB": [900.0, 910.0],
        "memory_last_over_first": 1.011}))
    (tmp_path / "soak.json").write_text(json.dumps({
        **header, "fields": 2000, "sheets": 200, "sheet_size_nm": 50.0, "batch_seconds": 300.0,
        "sheets_seconds": 320.0, "batch_memory_MB_at_10pct": 350.0,
        "batch_memory_MB_at_100pct": 360.0, "batch_memory_change": 0.0286,
        "sheets_memory_MB_at_10pct": 670.0, "sheets_memory_MB_at_100pct": 680.0,
        "sheets_memory_change": 0.0149, "rows": 2000, "every_field_once": True,
        "erred_tasks": 0, "same_workers": True, "passed": True}))
    row = {"model": "models/screened-wide.onnx", "focus": [4, 4], "context": [32, 32],
           "scales": [], "mae_over_std": 0.05, "seconds_per_pixel": 2e-6, "cost_vs_slowest": 1.0}
    (tmp_path / "screened.json").write_text(json.dumps({
        **header, "L": 512, "n": 32, "models": [row, {
            **row, "model": "models/screened-multiscale.onnx", "scales": [[1, 4, 8], [4, 1, 8]],
            "context": [32, 32], "cost_vs_slowest": 0.25, "seconds_per_pixel": 5e-7}],
        "sweep": [{**row, "family": "full", "cost_vs_wide": 1.0},
                  {**row, "family": "multi", "scales": [[1, 4, 12], [2, 2, 12]],
                   "mae_over_std": 0.0167, "seconds_per_pixel": 2.1e-7, "cost_vs_wide": 0.236,
                   "matched_context": 22, "cost_vs_matched": 0.471}]}))
    (tmp_path / "screened-memory.json").write_text(json.dumps({
        **header, "model": "models/screened-multiscale.onnx", "workers": 2, "chunk": 2048,
        "rows": [{"size": 4096, "field_MB": 67.1, "seconds": 2.2, "energy": 1.0,
                  "worker_peak_MB": 326.0, "worker_gain_MB": 187.0}], "peak_growth": 1.21}))
    (tmp_path / "vacancy-pairs.json").write_text(json.dumps({
        **header, "data": "data/hexagonal.zarr", "models": ["a.onnx", "b.onnx"],
        "separate_eV": 1.5, "rows": [{"from_A": 0.0, "to_A": 2.0, "n": 13, "residual_eV": 1.0,
                                      "binding_eV": -6.09, "models": {
            "a.onnx": {"signed_meV_per_atom": -1.84, "mae_meV_per_atom": 2.54},
            "b.onnx": {"signed_meV_per_atom": 0.5, "mae_meV_per_atom": 1.0}}}]}))
    (tmp_path / "closest-pairs.json").write_text(json.dumps({
        **header, "model": "t.onnx", "stores": [{
            "store": "data/mc.zarr", "n": 320, "mae_meV_per_atom": 203.0,
            "closest_percentiles_A": {"0": 0.89, "1": 0.95, "5": 1.05, "50": 1.25},
            "bins": [{"from_A": 1.3, "to_A": 10.0, "n": 99, "mae_meV_per_atom": 52.6,
                      "signed_meV_per_atom": -52.6}]}]}))
    (tmp_path / "pair-correction.json").write_text(json.dumps({
        **header, "model": "t.onnx", "held_out_sizes": {"MD 1000 K": 80, "fresh Monte Carlo": 304},
        "rows": [{"reach_px": 0, "mc_weight": None, "unknowns": 0, "train_mae_meV_per_atom": 24.1,
                  "held_out_meV_per_atom": {"MD 1000 K": 18.9, "fresh Monte Carlo": 221.5}},
                 {"reach_px": 8, "mc_weight": 1.0, "unknowns": 273,
                  "train_mae_meV_per_atom": 14.4,
                  "held_out_meV_per_atom": {"MD 1000 K": 50.7, "fresh Monte Carlo": 76.6}}]}))
    (tmp_path / "train-fields-2d.json").write_text(json.dumps({
        **header, "dim": 2, "samples": 3000, "sample_side": 32, "big_side": 1024,
        "train_minutes": 6.2, "cores": 2, "epochs_run": 150, "best_epoch": 149,
        "test": {"relative_mae": 0.0037}, "big_relative_error": -0.0027}))
    scored = {"seconds": 10.0, "peak_gain_MB": 120.0, "relative_error": 1e-9,
              "exact_after_rounding": True, "predicted": -1234.0, "voxels_per_second": 8e7}
    (tmp_path / "rock.json").write_text(json.dumps({
        **header, "rows": [{"size": 256, "generate_seconds": 3.0, "generate_peak_gain_MB": 90.0,
                            "volume": scored, "area": scored, "euler": scored,
                            "euler_overlap": {**scored, "peak_gain_MB": 300.0},
                            "speed_vs_raw": 0.95, "speed_vs_raw_inference": 0.7}]}))
    groups = {"temperature_K": {"300": {"n": 80, "mae": 3.0, "mean_signed": 2.5},
                                "1000": {"n": 80, "mae": 9.0, "mean_signed": 8.5}},
              "sigma_angstrom": {"< 0.03": {"n": 60, "mae": 2.0, "mean_signed": 1.0}}}
    evaluated = {"n": 160, "mae_meV_per_atom": 6.0, "mean_signed_meV_per_atom": 5.5,
                 "groups": groups, "atoms": [56, 60]}
    (tmp_path / "thermal-errors.json").write_text(json.dumps({
        **header, "rows": [{"model": "models/hex.onnx", "held_out": {"t.zarr": evaluated},
                            "test_split": {**evaluated, "groups": {"store": {
                                "cold.zarr": {"n": 500, "mae": 4.5, "mean_signed": 0.5},
                                "t.zarr": {"n": 100, "mae": 2.25, "mean_signed": -0.25}}}},
                            "train_split": {**evaluated, "mae_meV_per_atom": 3.0},
                            "supercells": {"h2.zarr": {**evaluated, "atoms": [224, 240]}}}]}))
    fit = {"shift_eV": {"B": -0.001, "C": -0.0045, "N": -0.0005}, "n": 90,
           "rms_meV_per_atom": 1.5, "loo_mae_meV_per_atom": 1.25}
    supercell = {"n": 24, "atoms": [540], "mae_meV_per_atom": 6.5,
                 "mean_signed_meV_per_atom": 5.25}
    (tmp_path / "convention.json").write_text(json.dumps({
        **header, "replicas": "r.zarr", "rows": [{"model": "models/hex.onnx", "fit": fit,
                                                  "stores": {"h3.zarr": {
                                                      "gamma": supercell, "replica": {
                                                          **supercell, "mae_meV_per_atom": 2.5,
                                                          "by_kind": {"graphene": {
                                                              "n": 24, "mae": 2.5}}}}}}]}))
    fits = {name: {"alpha": alpha, "loo_mae_meV_per_atom": mae, "features": terms,
                   "by_kind": {"graphene": mae + 0.5, "hbn": mae - 0.5}}
            for name, alpha, mae, terms in (("composition", 0.0, 1.5, 3),
                                            ("+ local", 100.0, 1.25, 90))}
    (tmp_path / "convention-locality.json").write_text(json.dumps({
        **header, "replicas": "runs/r8.zarr", "n": 120, "difference_std_meV_per_atom": 2.49,
        "fits": fits}))
    porous = {"held_out_by_atoms": {"64": 53.0, "85": -3.0}, "cold_split_mae": 12.5,
              "train_split_mae": 11.25, "held_out_by_run": {"0": {
                  "atoms": 94, "temperature_K": 300.0, "mean_signed": 0.75, "error_sd": 12.75,
                  "reference_sd": 3.25}}}
    (tmp_path / "porous-relaxations.json").write_text(json.dumps({
        **header, "held_out": "h.zarr", "target_median_meV_per_atom": 4.0,
        "power_law": {"a": 1000.0, "b": -0.75, "points": 3, "relaxations_for_target": 1550.0},
        "models": [{"model": "models/cold.onnx", "md_runs": 0, "relaxations": 0, "frames": 0,
                    "context_px": 16, "init_from": None, "epochs": 1500,
                    "held_out": {"mae": 250.0, "median": 217.0, "mean_signed": 245.0}, **porous},
                   {"model": "runs/p96.onnx", "md_runs": 8, "relaxations": 96, "frames": 777,
                    "context_px": 16, "init_from": "cold.onnx", "measured": "2029-12-31T00:00",
                    "held_out": {"mae": 33.0, "median": 32.0, "mean_signed": 31.0}, **porous}]}))
    errors = {"structures": 80, "registry_sd": {"median": 10.5, "max": 27.0},
              "any_registry": {"median": 14.0, "mae": 6.25},
              "averaged": {str(k): {"median": m, "mae": m / 2, "mean_signed": 0.5}
                           for k, m in ((1, 16.0), (4, 14.5), (16, 15.25), (64, 11.0))},
              "whole_strides": {"rolls": 16, "median": 15.0, "mae": 7.5}}
    smooth = {**errors, "averaged": {k: v for k, v in errors["averaged"].items() if k != "64"}}
    moves = {"moves": 60, "step_A": 0.05, "atoms": 88, "rms_meV": 95.4, "registry_sd_meV": 12.25,
             "four_registries_sd_meV": 6.5}
    (tmp_path / "registry-noise.json").write_text(json.dumps({
        **header, "grid": 8, "models": [
            {"model": "models/p.onnx", "held_out": "data/h.zarr", "focus_px": 32,
             "period_px": 8, **errors, "cold_split": errors, "single_moves": moves},
            {"model": "models/s.onnx", "held_out": "data/h.zarr", "focus_px": 16,
             "period_px": 4, **smooth, "cold_split": smooth, "single_moves": moves}]}))
    (tmp_path / "train-speed.json").write_text(json.dumps({
        **header, "threads": 2, "recipes": [
            {"recipe": "hexagonal:smooth:24", "pixels": 64, "batch": 32, "reps": 12,
             "max_relative_difference": 7.4e-7, "default_step_s": 0.203,
             "channels_last_step_s": 0.133, "step_ratio": 1.526, "default_forward_s": 0.068,
             "channels_last_forward_s": 0.051, "forward_ratio": 1.333}]}))
    page = generate.benchmarks_page()
    assert "Not run yet" not in page
    assert page.count("Test CPU, 2 cores, 8.0 GiB") == 21
    assert page.count("2030-01-02T03:04:05+00:00") == 21
    assert "| + local | 90 | 100 | 1.25 | 1.75 | 0.75 |" in page
    assert "120 cells of `r8.zarr`; replica minus cell varies by 2.49 meV/atom" in page
    assert "| `hexagonal:smooth:24` | 64 px, 32 | 203 -> 133 | 1.53x | 68 -> 51 | 1.33x " \
           "| 7.4e-07 |" in page
    assert "| `p.onnx` | `h.zarr` | 8 | 10.5 | 16.0 | 14.0 | 14.5 | 15.2 | 11.0 | 15.0 | 10.50 " \
           "| 8.00 | 6.25 | 7.25 | 7.62 | 5.50 | 7.50 |" in page
    assert "| `s.onnx` | `h.zarr` | 4 | 10.5 | 16.0 | 14.0 | 14.5 | 15.2 | – | 15.0 | 10.50 " \
           "| 8.00 | 6.25 | 7.25 | 7.62 | – | 7.50 |" in page
    assert "| `s.onnx` | 88 | 95 | 12.2 | 6.5 |" in page
    assert "| `cold.onnx` (16 px context, 1500 epochs from scratch) | none | 0 | 217.0 " \
           "| +245.0 | +53 / -3 | 12.50 | 11.25 |" in page
    assert "| `p96.onnx` (fine-tuned from `cold.onnx`; scored 2029-12-31) | 8 MD runs and 96 " \
           "relaxations | 777 | 32.0 | +31.0 |" in page
    assert "the same, cells of 64 / 85 atoms" in page
    assert "| | 94 at 300 K |\n|---|---|\n| GFN1-xTB, sd | 3.2 |\n| `cold.onnx` | +1 ± 13 |" \
        in page
    assert "Fine-tuned with the 8 MD runs, the median falls as n^-0.75 with n relaxation " \
           "paths (3 fine-tunes): 4 meV/atom at about 1,550 relaxations." in page
    assert "| 8 px, 1 (273) | 14.4 | 50.7 | 76.6 |" in page
    assert "| `hex.onnx` | B -1.00, C -4.50, N -0.50 | 1.50, 1.25 (90 cells) | `h3.zarr` | 540 " \
           "| 24 | 6.50 (+5.25) | 2.50 (+5.25) | graphene 2.50 (24) |" in page
    assert "| `hex.onnx` | its train split | 160 | 3.00 (+5.50) | 300: 3.0 (+2.5), " \
           "1000: 9.0 (+8.5) | < 0.03: 2.0 (+1.0) |" in page
    assert "| `hex.onnx` | `t.zarr` (held out) | 160 | 6.00 (+5.50) | 300: 3.0 (+2.5), " \
           "1000: 9.0 (+8.5) | < 0.03: 2.0 (+1.0) |" in page
    assert "| `hex.onnx` | `h2.zarr` (cold, 224-240 atoms) | 160 |" in page
    assert "| `hex.onnx` | its test split | 160 | 6.00 (+5.50) | - | - |" in page
    assert "| `hex.onnx` | its test split of `cold.zarr` | 500 | 4.50 (+0.50) | - | - |" in page
    assert "| 256³ | 3 s | 90 MB | 30 s | 120 MB | 300 MB | 1.0e-09 | 1.0e-09 | exact (-1,234) " \
           "| 80 | 0.95 | 0.70 |" in page
    assert "| 3,000 fields of 32x32 | 1024x1024 | 6.2 min on 2 cores | 150 (149) | 0.37% " \
           "| -0.270% |" in page
    assert "| `models/screened-multiscale.onnx` | 4 | 32 | 1:4:8, 4:1:8 | 0.0500 | 0.500 " \
           "| 0.250 |" in page
    assert "| full resolution, context 32 | 0.0500 | 2.000 | 1.000 | - | - |" in page
    assert "| 1:4:12, 2:2:12 | 0.0167 | 0.210 | 0.236 | context 22 | 0.471 |" in page
    assert "| 4096² | 67 MB | 2.2 | 326 MB | 187 MB |" in page
    assert "| binding (eV per cell) | -6.09 |" in page
    assert "| `b.onnx` | +0.50 (1.00) |" in page
    assert "| `mc.zarr` | 320 | 0.89 / 0.95 / 1.25 Å | - | - | - | - | 52.6 (-52.6), 99 |" in page
    assert "| batch | 2,000 fields | 300 | 350 MB | 360 MB | +2.9 % |" in page
    assert "**Passed**" in page
    assert "| 100 nm | 330,826 | 2×2, 2 | 10 | 1,500 | 1,000 | 1.50x | 0.650 " \
           "| 900 → 910 MiB (1.011x) |" in page
    assert "| `ising-2d.onnx` | 16, 32 | 2.2711 ± 0.0019 | 2.2692 | +0.08 % |" in page
    assert "no crossing in range" in page
    assert "| GFN1-xTB molecular dynamics | 251 | 1.426 Å, 6.60 | 2.460 Å, 3.10 | 2.840 Å, 2.50 " \
           "| 0.0540 Å |  |" in page
    assert "| EDNN Monte Carlo, `hex.onnx` | 1000 | 1.426 Å, 6.60 | 2.460 Å, 3.10 " \
           "| 2.840 Å, 2.50 | 0.0510 Å | 2 of 3 |" in page
    assert "| 64 | 90,000 | 0.400 |" in page and "12,000x faster" in page
    assert "| 960 | 250 | 33.50 |" in page
    assert "| ising, 1024² | 0.5 Mpx/s | 0.7 Mpx/s |" in page
    assert "| 1 µm | 100,000 |" in page and "| 55 nm |" in page


def test_accuracy_table_from_json(tmp_path: Path, monkeypatch):
    """One row per evaluate-*.json; each planned evaluation without one reads "not run yet"."""
    generate = load_generator()
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    planned = generate.planned_evaluations()
    assert "evaluate-ising-2d.json" in planned and "evaluate-porous.json" in planned
    assert all(c.startswith("ednn-dask evaluate ") and "--json-out" not in c
               for c in planned.values())
    empty = generate.accuracy_table()
    assert empty.count("**not run yet**") == len(planned)
    assert "| [ising-2d-f1c1](models/ising-2d-f1c1.md) | **not run yet**" in empty

    sha = hashlib.sha256((ROOT / "models" / "ising-2d-f1c1.onnx").read_bytes()).hexdigest()
    header = {"date": "2030-01-02T03:04:05+00:00", "commit": "abc1234",
              "machine": {"platform": "Linux-x86_64", "processor": "Test CPU", "cpu_count": 2}}
    (tmp_path / "evaluate-ising-2d.json").write_text(json.dumps({
        **header, "model": "models/ising-2d-f1c1.onnx", "dim": 2, "L": 128, "n": 100,
        "near_critical": True, "mae_per_site": 1.28e-5, "median_ae_per_site": 9.1e-6,
        "relative_mae": 9.0e-6, "model_sha256": sha, "target_unit": "J",
        "command": "ednn-dask evaluate ising --model models/ising-2d-f1c1.onnx"}))
    (tmp_path / "evaluate-porous.json").write_text(json.dumps({
        **header, "model": "models/porous-f32c16.onnx", "data": "data/porous.zarr",
        "split": "test", "n": 100, "mae_meV_per_atom": 8.68, "median_meV_per_atom": 6.08,
        "mean_signed_meV_per_atom": -0.5, "atoms": [23, 60, 116], "model_sha256": "0" * 64,
        "command": "ednn-dask evaluate atoms --model models/porous-f32c16.onnx"}))
    (tmp_path / "evaluate-extra.json").write_text(json.dumps({
        **header, "model": "/elsewhere/mine.onnx", "dim": 1, "L": 50, "n": 3,
        "mae_per_site": 0.5, "median_ae_per_site": 0.25, "command": "x"}))
    table = generate.accuracy_table()
    assert table.count("**not run yet**") == len(planned) - 2
    assert ("| [ising-2d-f1c1](models/ising-2d-f1c1.md) | fresh 128x128 Monte Carlo "
            "configurations, T in T_c ± 0.1 | 100 | 1.28e-05 J per site (0.0009 % relative) "
            "| 9.1e-06 J per site | `ednn-dask evaluate ising --model "
            "models/ising-2d-f1c1.onnx` | 2030-01-02 (`abc1234`) |") in table
    assert ("| [porous-f32c16](models/porous-f32c16.md) (measured on an older file: rerun "
            "`make evaluations`) | `data/porous.zarr`, test split; 23-116 atoms | 100 "
            "| 8.68 meV/atom, mean signed -0.50 | 6.08 meV/atom |") in table
    assert "| `mine.onnx` | fresh 50 smooth random images | 3 | 0.5 per site |" in table
    assert "Measured on Test CPU, 2 cores (Linux-x86_64)." in table

    findings = (ROOT / "docs" / "findings.md").read_text()
    assert generate.ACCURACY_MARKER in findings
    page = generate.render_markers(findings, "findings.md")
    assert generate.ACCURACY_MARKER not in page and table in page
    with pytest.raises(ValueError, match="lacks"):
        generate.render_markers("# Findings\n", "findings.md")
    marker = generate.BENCH_MARKER.format("closest_pairs.py")  # any page, any benchmark
    assert generate.render_markers(f"# Page\n\n{marker}\n", "guide/x.md") == (
        "# Page\n\n**Not run yet**: `python bench/closest_pairs.py` writes "
        "`bench/results/closest-pairs.json`.\n")
