"""The active-learning loop: MC with the model, GFN1-xTB labels, fine-tune, stop when flat."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tblite.ase")
pytest.importorskip("distributed")

from ednn_dask.cli import main  # noqa: E402
from ednn_dask.errors import ConfigError  # noqa: E402
from ednn_dask.model import load_model  # noqa: E402
from training.active_learning import active_learning, stopped_falling  # noqa: E402
from training.atomistic import evaluate_atomistic  # noqa: E402
from training.reference import load_reference  # noqa: E402

START = "models/hexagonal-f16c24.onnx"
BASE = ["data/thermal-test-hexagonal.zarr"]
# two chains of two snapshots per round, one fine-tuning epoch: the loop, not the physics
TINY = {"rounds": 2, "epochs": 1, "chains": 2, "progress": False,
        "mc": {"steps": 200, "every": 100, "equilibrate": 100, "max_vacancies": 0,
               "temperatures": (1000.0,), "min_distance": 1.1}}


def test_rounds_score_fresh_snapshots_then_fine_tune_on_them(tmp_path, local_cluster, capsys):
    work = tmp_path / "al"
    state = active_learning("hexagonal", START, work, data=BASE, client=local_cluster, **TINY)
    first, second = state["rounds"]
    assert first["model"] == START and second["model"] == str(work / "round-1" / "model.onnx")
    # each round's error is its model on snapshots of that round, which it never saw
    for x in (first, second):
        fresh = evaluate_atomistic(x["model"], x["mc_store"])
        assert x["fresh_mae_meV_per_atom"] == fresh["mae_meV_per_atom"] and x["n_snapshots"] == 4
        assert x["n_failed"] == 0
    assert [load_reference(x["mc_store"]).attrs["seed"] for x in (first, second)] == [500, 501]
    assert load_reference(first["mc_store"]).attrs["min_distance_A"] == 1.1  # the hard core
    card = load_model(second["model"]).spec.provenance
    assert card["stores"] == ["thermal-test-hexagonal.zarr", "mc.zarr"]
    assert card["init_from"].startswith("hexagonal-f16c24.onnx (sha256 ")
    assert state["best_model"] == min(state["rounds"],
                                      key=lambda x: x["fresh_mae_meV_per_atom"])["model"]
    assert json.loads((work / "rounds.json").read_text())["rounds"] == state["rounds"]
    # the same command line finds every stage done and changes nothing
    mtime = (work / "round-1" / "model.onnx").stat().st_mtime
    assert main(["active-learning", "hexagonal", "--model", START, "--data", *BASE,
                 "--workdir", str(work), "--rounds", "2", "--epochs", "1", "--chains", "2",
                 "--steps", "200", "--every", "100", "--equilibrate-steps", "100",
                 "--max-vacancies", "0", "--temperatures", "1000", "--min-distance", "1.1",
                 "--scheduler", local_cluster.scheduler.address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == state["rounds"]
    assert (work / "round-1" / "model.onnx").stat().st_mtime == mtime
    with pytest.raises(ConfigError, match="other settings"):
        active_learning("hexagonal", START, work, data=BASE, client=local_cluster, seed=7, **TINY)


def test_the_loop_stops_when_the_fresh_error_stops_falling():
    assert not stopped_falling([12.0], 0.05)
    assert not stopped_falling([12.0, 10.0], 0.05)
    assert stopped_falling([12.0, 11.7], 0.05)  # fell by 2.5 %
    assert stopped_falling([12.0, 13.0], 0.0)
    with pytest.raises(ConfigError, match="rounds"):
        active_learning("hexagonal", START, "unused", data=BASE, rounds=0)


def test_a_model_without_its_net_is_refused_before_any_work(tmp_path, atomistic):
    with pytest.raises(ConfigError, match="does not name its net"):
        active_learning("hexagonal", atomistic[1].path, tmp_path / "al", data=BASE)
    assert not (tmp_path / "al").exists()
