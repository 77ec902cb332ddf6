from __future__ import annotations

import json

import numpy as np
import pytest

from ednn_dask import make_field, save_field
from ednn_dask.cli import main
from ednn_dask.errors import StructureError
from tests.helpers import ising_energy_np


@pytest.fixture()
def ising_store(tmp_path):
    lattice = np.random.default_rng(4).choice(np.array([-1, 1], np.int8), size=(32, 48))
    path = save_field(make_field(lattice, name="spins"), tmp_path / "lattice.zarr")
    return path, ising_energy_np(lattice.astype(float))


def test_score_json(exact_ising2d, ising_store, capsys):
    _, model, _ = exact_ising2d
    path, expected = ising_store
    assert main(["score", str(path), "--model", str(model.path), "--json", "--chunks", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["energy"] == expected
    assert result["n_tiles"] == 32 * 48 and result["n_chunks"] == 6
    assert result["model_sha256"] == model.sha256


def test_info(exact_ising2d, capsys):
    _, model, _ = exact_ising2d
    assert main(["info", str(model.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["focus"] == [1, 1] and info["kind"] == "dense" and info["target_unit"] == "J"
    assert main(["info", str(model.path)]) == 0
    assert "provenance" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "missing.zarr"], "does not exist"),
        (["info", "missing.onnx"], "does not exist"),
    ],
)
def test_errors_exit_2_without_traceback(exact_ising2d, tmp_path, capsys, argv, message):
    _, model, _ = exact_ising2d
    if argv[0] == "score":
        argv = [*argv[:1], str(tmp_path / argv[1]), "--model", str(model.path)]
    else:
        argv = [argv[0], str(tmp_path / argv[1])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_score_refuses_a_non_zarr_path(exact_ising2d, tmp_path, capsys):
    _, model, _ = exact_ising2d
    (tmp_path / "plain.txt").write_text("hello")
    assert main(["score", str(tmp_path / "plain.txt"), "--model", str(model.path)]) == 2
    assert "not a Zarr store" in capsys.readouterr().err


def test_data_command_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "ising.zarr"
    assert main(["data", "ising", str(out), "--n", "4", "--L", "4"]) == 0
    assert out.exists()
    assert main(["data", "ising", str(out), "--n", "4", "--L", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_data_hexagonal_creates_resumes_and_refuses_other_parameters(tmp_path, capsys):
    pytest.importorskip("tblite")
    out = str(tmp_path / "hex.zarr")
    argv = ["data", "hexagonal", out, "--n", "3", "--seed", "4", "--limit", "0", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"store": out, "done": 0, "failed": 0,
                                                   "pending": 3}
    assert main(argv) == 0  # the same parameters: resumed, nothing recreated
    capsys.readouterr()
    assert main(["data", "hexagonal", out, "--n", "3", "--seed", "5", "--limit", "0"]) == 2
    err = capsys.readouterr().err
    assert "made with" in err and "--overwrite" in err and "Traceback" not in err


def test_data_hexagonal_max_vacancies(tmp_path, capsys):
    from training.reference import load_reference

    out = str(tmp_path / "pristine.zarr")
    assert main(["data", "hexagonal", out, "--n", "12", "--cells", "10", "6",
                 "--max-vacancies", "0", "--limit", "0"]) == 0
    ds = load_reference(out, done_only=False)
    assert ds.attrs["max_vacancies"] == 0
    assert set(ds["n_atoms"].values.tolist()) == {240}  # 2x2 training cells, no vacancy
    capsys.readouterr()
    # resuming needs the same cap; the default cap is another data set
    assert main(["data", "hexagonal", out, "--n", "12", "--cells", "10", "6", "--limit", "0"]) == 2
    assert "made with" in capsys.readouterr().err
    assert main(["data", "porous", str(tmp_path / "p.zarr"), "--max-vacancies", "0"]) == 2
    assert "hexagonal sheets" in capsys.readouterr().err


def test_data_hexagonal_gaussian_displacements(tmp_path, capsys):
    from ednn_dask.atoms.materials import TRAINING_CELLS, hexagonal_sheet
    from training.atomistic import displacement_sigma
    from training.reference import load_reference

    out = str(tmp_path / "warm.zarr")
    assert main(["data", "hexagonal", out, "--n", "40", "--sigma", "0.1", "--seed", "300",
                 "--limit", "0"]) == 0
    ds = load_reference(out, done_only=False)
    sigma = ds["sigma"].values
    assert ds.attrs["max_sigma"] == 0.1 and (ds["displacement"].values == 0).all()
    assert 0 < sigma.min() and sigma.max() <= 0.1 and np.ptp(sigma) > 0.05
    np.testing.assert_array_equal(displacement_sigma(ds), sigma)  # evaluation's sigma bins
    # each coordinate moves by a Gaussian of that sigma from its lattice site
    lattice = hexagonal_sheet(np.random.default_rng(0), "graphene").positions[:, :2]
    for k in np.flatnonzero(ds["vacancies"].values == 0)[:3]:
        d = ds["positions"].values[k, :, :2] - lattice
        d -= np.diag(ds["cell"].values[k])[:2] * np.round(d / np.diag(ds["cell"].values[k])[:2])
        assert d.std() == pytest.approx(sigma[k], rel=0.15)
    capsys.readouterr()
    assert main(["data", "hexagonal", out, "--n", "40", "--seed", "300", "--limit", "0"]) == 2
    assert "made with" in capsys.readouterr().err
    assert main(["data", "porous", str(tmp_path / "p.zarr"), "--sigma", "0.1"]) == 2
    assert "hexagonal sheets" in capsys.readouterr().err
    with pytest.raises(StructureError, match="not both"):
        hexagonal_sheet(np.random.default_rng(0), cells=TRAINING_CELLS, displacement=0.1,
                        sigma=0.1)


def test_a_truncated_store_is_refused_not_read_as_fill_values(exact_ising2d, tmp_path, capsys):
    """int8 spins read a missing chunk as 0: a silently wrong energy unless refused."""
    import os

    from ednn_dask import open_field
    from ednn_dask.errors import FieldError

    _, model, _ = exact_ising2d
    lattice = np.ones((32, 32), np.int8)
    lattice[:16, :16] = 0  # a whole chunk equal to the fill value is still written
    path = save_field(make_field(lattice, name="spins"), tmp_path / "s.zarr",
                      chunks={"y": 16, "x": 16})
    assert open_field(path).values.tolist() == lattice.tolist()
    os.remove(path / "spins" / "c" / "1" / "1")
    with pytest.raises(FieldError, match="3 of its 4 chunks"):
        open_field(path)
    assert main(["score", str(path), "--model", str(model.path)]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert (open_field(path, allow_missing_chunks=True).values[16:, 16:] == 0).all()


def test_evaluate_json_out_records_the_printed_metrics(tmp_path, capsys):
    import hashlib
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "models" / "ising-2d-f1c1.onnx"
    out = tmp_path / "results" / "evaluate.json"
    out.parent.mkdir()
    out.write_text("{}")  # replaced, not refused
    argv = ["evaluate", "ising", "--model", str(model), "--L", "16", "--n", "3"]
    assert main([*argv, "--json", "--json-out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads(out.read_text())
    assert {k: record[k] for k in printed} == printed
    assert printed["n"] == 3 and printed["L"] == 16 and printed["mae_per_site"] >= 0
    assert record["model_file"] == "ising-2d-f1c1.onnx"
    assert record["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert record["command"] == "ednn-dask " + " ".join(argv)
    assert record["date"] and record["machine"]["cpu_count"] >= 1
    assert [p.name for p in out.parent.iterdir()] == ["evaluate.json"]  # no temporary left


def test_json_output_is_the_whole_stdout_progress_goes_to_stderr(capsys):
    assert main(["demo", "--size", "64", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # nothing but the JSON object
    assert result["lattice"] == "64x64" and "Completed" in captured.err
