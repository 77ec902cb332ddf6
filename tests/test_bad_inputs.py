"""Bad input on every subcommand: one line on stderr, ``ednn-dask CMD: error: ...``, exit 2.

A handful run as real subprocesses (what a user sees, logging of the dask
cluster included); the rest call :func:`ednn_dask.cli.main` in-process. Where
the input has a shape (grid sizes, chunk sizes, positions of a NaN), hypothesis
draws it. No test here trains or scores anything large: every refusal comes
before the work.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ednn_dask import contributions, load_model, make_field, save_field, score
from ednn_dask.cli import main
from ednn_dask.defaults import MAX_CHUNKS
from ednn_dask.errors import FieldError, GeometryError, NonFiniteFieldError
from ednn_dask.tiling import Tiling, aligned_chunks

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ISING = str(MODELS / "ising-2d-f1c1.onnx")
LAPLACIAN = str(MODELS / "laplacian-f10c2.onnx")  # focus 10, context 2, periodic, no spacing
POROUS = str(MODELS / "porous-f32c16.onnx")  # atomistic: spacing 0.1015 x 0.0977 Å



def examples(n: int) -> settings:
    """Settings for a hypothesis test that also takes pytest fixtures."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(err: str, command: str, *fragments: str) -> str:
    """The single stderr line of a refused command, checked for its prefix and fragments."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"ednn-dask {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI in-process; assert exit 2 and one error line naming ``fragments``."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse refuses by exiting
        code = exited.code
    assert code == 2, argv
    return one_line(capsys.readouterr().err, argv[0], *fragments)


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "ednn_dask.cli", *argv]


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*argv), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Small stored fields, each wrong in one way."""
    root = tmp_path_factory.mktemp("stores")
    spins = np.random.default_rng(0).choice(np.array([-1, 1], np.int8), size=(256, 256))
    nan = spins.astype(np.float32)
    nan[100, 37] = np.nan
    paths = {
        "nan": save_field(make_field(nan, name="spins", spacing=0.5), root / "nan.zarr"),
        "big": save_field(make_field(np.ones((1024, 1024), np.int8), name="spins"),
                          root / "big.zarr"),
        "spaced": save_field(make_field(np.ones((64, 64), np.float32), name="density",
                                        spacing=0.5), root / "spaced.zarr"),
        "unspaced": save_field(make_field(np.ones((64, 64), np.float32), name="density"),
                               root / "unspaced.zarr"),
    }
    two = make_field(spins, name="a").to_dataset().assign(b=(("y", "x"), -spins))
    two.to_zarr(root / "two.zarr", zarr_format=3, consolidated=False)
    paths["two"] = root / "two.zarr"
    return {k: str(v) for k, v in paths.items()}


# --- real subprocesses: what a user sees ---------------------------------------------------


def test_subprocesses_print_one_line_and_exit_2(stores, tmp_path):
    cases = [
        (["data", "ising", "X", "--L", "1"], "L=1"),
        (["train", "ising", "--out", "m.onnx", "--L", "1"], "L=1"),
        (["score", stores["nan"], "--model", ISING],
         "NaN at y=100, x=37 (pixel index; y = 50.25, x = 18.75 angstrom)"),
        (["score", stores["big"], "--model", ISING, "--chunks", "3"], "at least 4 px"),
        (["sheet", "--size", "50nm", "--model", ISING], "no ednn.raster"),
        (["evaluate", "atoms", "--model", POROUS], "--data"),
        (["info", str(ROOT / "README.md")], "README.md"),
    ]
    # all at once: each is mostly a Python start-up, and none touches another's files
    procs = [subprocess.Popen(cli(*argv), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv, _ in cases]
    for proc, (argv, fragment) in zip(procs, cases, strict=True):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (argv, stderr)
        one_line(stderr, argv[0], fragment)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "X").exists()
    assert not (tmp_path / "runs" / "m" / "checkpoint.pt").exists()  # refused before training


def test_nan_on_a_cluster_with_worker_processes_is_one_line(stores, tmp_path):
    """Worker processes log a failed task; the CLI quiets them, so the error stands alone."""
    proc = run_cli("score", stores["nan"], "--model", ISING, "--processes", "--chunks", "64",
                   cwd=tmp_path)
    assert proc.returncode == 2
    one_line(proc.stderr, "score", "NaN at y=100, x=37")


# --- in-process: every subcommand ----------------------------------------------------------


def test_each_subcommand_refuses_bad_input_in_one_line(stores, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.zarr").mkdir()
    (tmp_path / "exists.onnx").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    cases = [
        (["data", "laplacian", "X", "--n", "0"], "'0' is not an integer >= 1"),
        (["data", "ising", "exists.zarr", "--n", "4", "--L", "4"], "--overwrite"),
        (["data", "porous", "p.zarr", "--max-vacancies", "0"], "hexagonal"),
        (["train", "ising", "--out", "exists.onnx"], "--overwrite"),
        (["train", "laplacian", "--out", "m.onnx", "--epochs", "-1"], "integer >= 1"),
        (["evaluate", "ising", "--model", "missing.onnx"], "does not exist"),
        (["evaluate", "laplacian", "--model", LAPLACIAN, "--n", "0"], "integer >= 1"),
        (["blur-study", "--model", ISING, "--data", "nowhere.zarr", "--out", "x.png"],
         "nowhere.zarr"),
        (["blur-study", "--model", ISING, "--data", "d", "--out", "x.png", "--sigma", "-1"],
         "positive number"),
        (["sheet", "--size", "50", "--model", POROUS], "not a length"),
        (["sheet", "--size", "50nm", "--model", POROUS, "--porosity", "2"], "porosity"),
        (["score", "nothing.zarr", "--model", ISING], "does not exist"),
        (["score", stores["spaced"], "--model", POROUS], "differs from the model's"),
        (["score", stores["unspaced"], "--model", POROUS], "CLI: save the field"),
        (["score", stores["two"], "--model", ISING], "--variable NAME"),
        (["score", stores["two"], "--model", ISING, "--variable", "c"], "choose one of"),
        (["score", "notes.txt", "--model", ISING], "not a Zarr store"),
        (["score", stores["big"], "--model", ISING, "--chunks", "0"], "integer >= 1"),
        (["info", "notes.txt"], "notes.txt"),
        (["demo", "--size", "0"], "integer >= 1"),
    ]
    for argv, fragment in cases:
        line = refused(capsys, argv, fragment)
        assert "pass spacing=" not in line and "Traceback" not in line


def test_score_variable_chooses_the_field(stores, capsys):
    import json

    from ednn_dask import open_field

    energies = {}
    for name in ("a", "b"):
        assert main(["score", stores["two"], "--model", ISING, "--variable", name,
                     "--json"]) == 0
        energies[name] = json.loads(capsys.readouterr().out)["energy"]
        expected = score(open_field(stores["two"], name), ISING).energy
        assert energies[name] == pytest.approx(expected, rel=1e-6)
    assert energies["a"] != energies["b"]


def test_save_field_refuses_a_name_that_is_one_of_its_dims(tmp_path):
    with pytest.raises(FieldError, match="'x' cannot be stored beside its dim"):
        save_field(make_field(np.zeros((4, 4)), name="x"), tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


# --- shapes, drawn ---------------------------------------------------------------------------


@examples(15)
@given(system=st.sampled_from(["ising", "laplacian"]), option=st.sampled_from(["--n", "--L"]),
       value=st.one_of(st.integers(-3, 0).map(str), st.sampled_from(["1.5", "ten", ""])))
def test_data_counts_must_be_positive_integers(tmp_path_factory, capsys, system, option, value):
    out = tmp_path_factory.getbasetemp() / "never.zarr"
    refused(capsys, ["data", system, str(out), option, value],
            f"argument {option}: {value!r} is not an integer >= 1")
    assert not out.exists()


@examples(6)
@given(shape=st.tuples(st.integers(1, 45), st.integers(1, 45)).filter(
    lambda s: s[0] % 10 or s[1] % 10), pad=st.booleans())
def test_grid_not_a_multiple_of_the_focus_is_refused(tmp_path_factory, capsys, shape, pad):
    path = tmp_path_factory.mktemp("shape") / "f.zarr"
    save_field(make_field(np.zeros(shape, np.float32), name="u"), path)
    argv = ["score", str(path), "--model", LAPLACIAN] + (["--pad"] if pad else [])
    bad = [axis for axis, n in enumerate(shape) if n % 10]
    if pad:
        refused(capsys, argv, f"periodic field of shape {shape}", "cannot be padded")
    else:
        refused(capsys, argv, f"grid shape {shape} is not a multiple of the focus (10, 10) "
                f"on axes {bad}", "--pad")


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_absurd_chunkings_are_refused_naming_the_minimum(stores, capsys, chunks):
    line = refused(capsys, ["score", stores["big"], "--model", ISING, "--chunks", str(chunks)],
                   f"chunks of {chunks} px make", "at least 4 px")
    least = int(line.split("at least ")[1].split(" px")[0])
    assert math.ceil(1024 / least) ** 2 <= MAX_CHUNKS < math.ceil(1024 / (least - 1)) ** 2


@settings(max_examples=200, deadline=None)
@given(shape=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
       focus=st.tuples(st.integers(1, 4), st.integers(1, 4)), target=st.integers(1, 64))
def test_a_refused_chunking_names_a_minimum_that_is_accepted(shape, focus, target):
    shape = tuple(-(-n // f) * f for n, f in zip(shape, focus, strict=True))
    tiling = Tiling.create(focus, 1, "periodic")
    try:
        chunks = aligned_chunks(shape, tiling, target)
    except GeometryError as err:
        least = int(str(err).split("at least ")[1].split(" px")[0])
        assert least > target
        assert math.prod(map(len, aligned_chunks(shape, tiling, least))) <= MAX_CHUNKS
    else:
        assert math.prod(map(len, chunks)) <= MAX_CHUNKS


# --- NaN and Inf: named at their position in the field ---------------------------------------


@pytest.fixture(scope="module")
def models():
    return {"ising": load_model(ISING), "laplacian": load_model(LAPLACIAN)}


@examples(40)
@given(data=st.data())
def test_nan_is_named_at_its_field_position(models, data):
    """Whatever the chunking and wherever the NaN (halo or not), the error names its
    pixel index in the field's own dims, on dask and in the numpy path."""
    name = data.draw(st.sampled_from(sorted(models)), label="model")
    model = models[name]
    focus = model.spec.focus[0]
    shape = tuple(focus * data.draw(st.integers(1 if focus > 1 else 3, 4 if focus > 1 else 24))
                  for _ in range(2))
    index = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    chunks = data.draw(st.integers(max(model.spec.context), max(shape)), label="chunks")
    x = np.ones(shape, np.float32)
    x[index] = value
    word = "NaN" if np.isnan(value) else ("Inf" if value > 0 else "-Inf")
    expected = f"holds {word} at y={index[0]}, x={index[1]} (pixel index)"
    with pytest.raises(NonFiniteFieldError, match=re.escape(expected)):
        score(x, model, chunks=chunks)
    with pytest.raises(NonFiniteFieldError) as numpy_path:
        contributions(x, model)
    assert numpy_path.value.index == index


def test_nan_is_named_with_the_fields_coordinates_and_channel(models):
    field = make_field(np.ones((20, 20), np.float32), spacing=(0.25, 0.5), dims=("row", "col"))
    field[19, 0] = np.inf
    with pytest.raises(NonFiniteFieldError, match=re.escape(
            "Inf at row=19, col=0 (pixel index; row = 4.875, col = 0.25 angstrom)")):
        score(field, models["ising"], chunks=5)
    three = np.ones((3, 32, 32), np.float32)
    three[2, 5, 31] = np.nan
    with pytest.raises(NonFiniteFieldError, match=re.escape("NaN at channel=2, y=5, x=31")):
        contributions(three, load_model(MODELS / "hexagonal-f16c24.onnx"))


@pytest.mark.parametrize("dims, spacing", [(("channel", "y", "x"), 0.2), (("y", "x"), (0.1,))])
def test_make_field_refuses_dims_that_do_not_fit(dims, spacing):
    from ednn_dask import make_field

    with pytest.raises(FieldError, match="channel axis|one value per spatial dim"):
        make_field(np.zeros((2, 4, 4), np.float32), spacing=spacing, dims=dims)
