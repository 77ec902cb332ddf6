"""Every notebook runs top to bottom on a real Jupyter kernel, with small parameters."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALL = {  # appended to each notebook's parameters cell
    "01-ising-quickstart.ipynb": "N_TRAIN = 1000\nEPOCHS = 60\nLBFGS_STEPS = 500\nBIG = 256",
    "02-graphene-micron.ipynb": "SIDE_A = 100.0\nSCALING_SIDES = [60.0, 100.0, 200.0]",
    "03-model-exchange.ipynb": "",
    "04-monte-carlo.ipynb": "SIZES = [8, 16]\nSTEPS = 3000\nMOVES = 2000",
    "05-your-own-data.ipynb": "N_FIELDS = 300\nEPOCHS = 5\nLBFGS_STEPS = 60\nBIG = 256\nROCK = 64",
}


def test_every_notebook_is_tested_and_built_from_build_py():
    import runpy

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALL)
    cells = runpy.run_path(str(NOTEBOOKS / "build.py"))
    for name, source in (("01-ising-quickstart.ipynb", cells["QUICKSTART"]),
                         ("02-graphene-micron.ipynb", cells["GRAPHENE"]),
                         ("03-model-exchange.ipynb", cells["EXCHANGE"]),
                         ("04-monte-carlo.ipynb", cells["MONTE_CARLO"]),
                         ("05-your-own-data.ipynb", cells["YOUR_OWN_DATA"])):
        written = [c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells]
        assert written == [src for _, src in source], f"run python notebooks/build.py ({name})"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("# Parameters"):
            cell.source += "\n" + SMALL[name]
            break
    else:
        assert not SMALL[name], f"{name} has no parameters cell"
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    temp = tmp_path / "tmp"  # the kernel's temp dir: what the notebook leaves there is seen
    temp.mkdir()
    try:
        # raises CellExecutionError, with the cell and traceback, on any error
        client.execute(env={**os.environ, "TMPDIR": str(temp)})
    finally:
        nbformat.write(nb, tmp_path / name)  # the executed notebook, for a look when debugging
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    left = sorted(p.name for p in temp.glob("ednn-*"))
    assert not left, f"{name} leaves its temporary folders behind: {left}"
    if name == "01-ising-quickstart.ipynb":
        _check_quickstart_reports_its_error(outputs)
    if name == "05-your-own-data.ipynb":
        _check_the_rock_is_exact(outputs)


def _check_quickstart_reports_its_error(outputs) -> None:
    """Notebook 01 states its model's test error and large-lattice error, and both are small."""
    text = " ".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    test = re.search(r"test error: ([0-9.e+-]+) J per spin", text)
    big = re.search(r"off by ([0-9.]+)% of the exact energy", text)
    assert test and big, f"notebook 01 no longer states its errors: {text!r}"
    assert float(test.group(1)) < 2e-3  # J per spin on held-out 8x8 lattices
    assert float(big.group(1)) < 0.5  # % of the exact energy of the large lattice


def _check_the_rock_is_exact(outputs) -> None:
    """Notebook 05's 3-D section scores a rock's Euler characteristic exactly."""
    text = " ".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    found = re.search(r"EDNN Euler characteristic (-?[0-9.]+), exact (-?[0-9]+)", text)
    assert found, f"notebook 05 no longer states the rock's Euler characteristic: {text!r}"
    assert round(float(found.group(1))) == int(found.group(2))
