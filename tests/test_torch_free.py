"""Scoring runs without torch: the commands of a plain ``pip install .`` and ``energy()``.

One subprocess, with ``import torch`` blocked by a meta-path finder, runs each
scoring-side command through ``ednn_dask.cli.main`` and ``ednn_dask.energy`` and
reports what it printed; the test checks the exit codes and the output.
torch is needed only in training/ (training.train, .ednn, .nets, .export,
.precondition); tests/test_layout.py checks that from the source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
HEXAGONAL = MODELS / "hexagonal-f16c24.onnx"

SCRIPT = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    out_dir, commands = sys.argv[1], json.loads(sys.argv[2])
    report = {}
    try:
        import torch  # noqa: F401
        report["torch"] = "imported"
    except ImportError as err:
        report["torch"] = f"blocked: {err}"

    import numpy as np

    import ednn_dask
    from ednn_dask.cli import main
    from ednn_dask.field import make_field, save_field

    spins = np.random.default_rng(0).choice([-1.0, 1.0], size=(64, 64)).astype("float32")
    save_field(make_field(spins), out_dir + "/spins.zarr")

    for name, argv in commands.items():
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                rc = main(argv)
            except BaseException as err:  # a traceback is a failure we want to see
                rc, stderr = repr(err), io.StringIO(repr(err))
        report[name] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}

    sheet = ednn_dask.atoms.hexagonal_sheet(np.random.default_rng(0), "graphene")
    report["energy"] = {"energy": ednn_dask.energy(sheet, sys.argv[3]), "n_atoms": len(sheet)}
    report["torch_loaded"] = sorted(m for m in sys.modules if m == "torch" or
                                    m.startswith("torch."))
    report["training_loaded"] = sorted(m for m in sys.modules if m.startswith("training"))
    try:  # the blocker also stops an import of torch from inside the package
        import training.train  # noqa: F401
        report["training.train"] = "imported"
    except ImportError as err:
        report["training.train"] = f"blocked: {err}"
    print("REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torch-free")
    commands = {
        "demo": ["demo", "--size", "256", "--json"],
        "info": ["info", str(MODELS / "ising-2d-f1c1.onnx"), "--json"],
        "evaluate": ["evaluate", "ising", "--model", str(MODELS / "ising-2d-f1c1.onnx"),
                     "--L", "16", "--n", "5", "--json"],
        "sheet": ["sheet", "--size", "5nm", "--model", str(MODELS / "porous-f32c16.onnx"),
                  "--out", str(tmp / "sheet"), "--json"],
        "score": ["score", str(tmp / "spins.zarr"), "--model",
                  str(MODELS / "ising-2d-f1c1.onnx"), "--json"],
    }
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp), json.dumps(commands),
         str(HEXAGONAL)],
        capture_output=True, text=True, cwd=tmp, env=env, timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("REPORT "):]), tmp


def _ok(report, name) -> dict:
    run = report[name]
    assert run["rc"] == 0, f"{name}: rc {run['rc']}\n{run['stdout']}\n{run['stderr']}"
    return json.loads(run["stdout"].splitlines()[-1])


def test_torch_is_blocked_and_never_loaded(report):
    report, _ = report
    assert report["torch"].startswith("blocked"), report["torch"]
    assert report["training.train"].startswith("blocked"), report["training.train"]
    assert report["torch_loaded"] == []
    torch_modules = {"training.train", "training.ednn", "training.nets", "training.export",
                     "training.precondition"}
    assert not torch_modules & set(report["training_loaded"])


def test_demo(report):
    result = _ok(report[0], "demo")
    assert result["lattice"] == "256x256"
    assert abs(result["relative_error"]) < 0.05


def test_info(report):
    info = _ok(report[0], "info")
    assert info["kind"] in ("dense", "tile") and info["target"] and len(info["sha256"]) == 64


def test_evaluate(report):
    result = _ok(report[0], "evaluate")
    assert result["n"] == 5 and result["mae"] >= 0


def test_sheet(report):
    result = _ok(report[0], "sheet")
    assert result["n_atoms"] > 500 and result["energy"] < 0
    assert (report[1] / "sheet" / "result.json").exists()


def test_score(report):
    result = _ok(report[0], "score")
    assert result["field"].endswith("spins.zarr") and isinstance(result["energy"], float)


def test_energy_of_a_hexagonal_sheet(report):
    """The same number as with torch importable (this process), in eV; about -58 eV/atom."""
    import numpy as np

    import ednn_dask

    result = report[0]["energy"]
    sheet = ednn_dask.atoms.hexagonal_sheet(np.random.default_rng(0), "graphene")
    assert result["n_atoms"] == len(sheet) > 10
    assert result["energy"] == pytest.approx(ednn_dask.energy(sheet, HEXAGONAL), rel=1e-9)
    assert -65 < result["energy"] / result["n_atoms"] < -50
