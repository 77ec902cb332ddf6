"""Every notebook runs top to bottom on a real Jupyter kernel, with small parameters."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALL = {  # appended to each notebook's parameters cell
    "01-ising-quickstart.ipynb": "N_TRAIN = 400\nEPOCHS = 150\nBIG = 512",
    "02-graphene-micron.ipynb": "SIDE_A = 100.0\nSCALING_SIDES = [60.0, 100.0, 200.0]",
    "03-model-exchange.ipynb": "",
}


def test_every_notebook_is_tested_and_built_from_build_py():
    import runpy

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALL)
    cells = runpy.run_path(str(NOTEBOOKS / "build.py"))
    for name, source in (("01-ising-quickstart.ipynb", cells["QUICKSTART"]),
                         ("02-graphene-micron.ipynb", cells["GRAPHENE"]),
                         ("03-model-exchange.ipynb", cells["EXCHANGE"])):
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
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    nbformat.write(nb, tmp_path / name)  # the executed notebook, for a look when debugging
