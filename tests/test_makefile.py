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
