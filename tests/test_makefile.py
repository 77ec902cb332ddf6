"""The Makefile's recipes (models, data, evaluations, studies) are commands that parse.

They run for hours, so a misspelt option would only show at the end of a long job;
here every ``ednn-dask`` line goes through the CLI's parser, and every option of a
``bench/`` line must be one that script declares.
"""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = {"$(VENV)/bin/ednn-dask": "ednn-dask", "$(E)": "ednn-dask",
       "$(EVALUATE)": "ednn-dask evaluate", "$(TRAIN_DEVICE)": "cpu"}


def _recipe_lines(kind: str) -> list[str]:
    lines = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        line = line.strip()
        for name, value in CLI.items():
            line = line.replace(name, value)
        if kind == "cli" and line.startswith("ednn-dask "):
            lines.append(line)
        if kind == "bench" and line.startswith("$(PY) bench/"):
            lines.append(line)
    return lines


def test_the_makefile_has_recipes():
    assert len(_recipe_lines("cli")) > 40
    assert len(_recipe_lines("bench")) > 10


@pytest.mark.parametrize("line", _recipe_lines("cli"))
def test_cli_recipe_parses(line: str):
    from ednn_dask.cli import build_parser

    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"the Makefile line does not parse ({exit_}): {line}")
    assert callable(args.func)


@pytest.mark.parametrize("line", _recipe_lines("bench"))
def test_bench_recipe_options_exist(line: str):
    words = shlex.split(line)
    script = ROOT / words[1]
    assert script.is_file(), f"no {words[1]}: {line}"
    declared = set(re.findall(r"""add_argument\(\s*["'](--[\w-]+)""", script.read_text()))
    used = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
    assert used <= declared, f"{words[1]} declares no {sorted(used - declared)}: {line}"


GROWING = {"thermal-hexagonal-192.zarr"}  # shipped part-way: its line continues the plan


def _data_lines() -> list[str]:
    """``data thermal`` / ``data relaxed`` lines (not Monte Carlo) whose store is shipped."""
    return [line for line in _recipe_lines("cli")
            if re.match(r"ednn-dask data (thermal|relaxed) data/", line)
            and "--from-mc" not in line and (ROOT / shlex.split(line)[3]).is_dir()]


@pytest.mark.parametrize("line", _data_lines())
def test_a_data_line_asks_for_the_runs_its_shipped_store_holds(line: str):
    """A shipped store is complete (its plan's runs are all in it; but those GROWING), and
    its line asks for that plan: with more runs it would grow the store past what the
    models trained on; with fewer it is refused."""
    import numpy as np
    import xarray as xr

    from ednn_dask.cli import build_parser

    args = build_parser().parse_args(shlex.split(line)[1:])
    store = ROOT / shlex.split(line)[3]
    with xr.open_zarr(store, zarr_format=3, consolidated=False) as ds:
        planned, held = int(ds.attrs["n"]), np.unique(ds["run"].values).size
    assert planned == held or store.name in GROWING, (
        f"{store.name} plans {planned} runs and holds {held}")
    assert (args.n or 96) == planned, f"{store.name} plans {planned} runs: {line}"
