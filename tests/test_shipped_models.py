"""The models under models/ load, carry their provenance, and are as accurate as claimed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ednn_dask import TileModel, score
from training.evaluation import evaluate_ising, evaluate_laplacian, score_samples
from training.ising import sample_ising
from training.laplacian import TRAIN_CORRELATION, laplacian_images, laplacian_target
from training.metrics import error_metrics

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = ["ising-2d-f1c1.onnx", "ising-3d-f1c1.onnx", "laplacian-f10c2.onnx",
           "hexagonal-f16c24.onnx", "hexagonal-thermal-f16c24.onnx", "porous-f32c16.onnx",
           "porous-thermal-f32c32.onnx",
           "screened-short.onnx", "screened-wide.onnx", "screened-multiscale.onnx",
           "rock-volume.onnx", "rock-area.onnx", "rock-euler.onnx"]
ATOMISTIC = {  # model -> (data set unless its provenance names several, elements, structures)
    "hexagonal-f16c24.onnx": ("hexagonal.zarr", {"B", "C", "N"}, 5000),
    "hexagonal-thermal-f16c24.onnx": ("hexagonal.zarr", {"B", "C", "N"}, 8500),
    "porous-f32c16.onnx": ("porous.zarr", {"C"}, 1000),
    "porous-thermal-f32c32.onnx": ("porous.zarr", {"C"}, 1000 + 160 + 1021),  # cold, MD, relaxed
}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_with_provenance(name):
    model = TileModel.load(MODELS / name)
    assert model.spec.kind == "dense"
    assert {"data_hash", "seed", "metrics", "torch_version"} <= set(model.spec.provenance)
    assert (MODELS / name).with_suffix(".parity.png").is_file()


def test_ising_2d_on_fresh_8x8_samples():
    model = TileModel.load(MODELS / "ising-2d-f1c1.onnx")
    ds = sample_ising(300, 8, temperatures=(0.5, 6.0), seed=777)
    metrics = error_metrics(score_samples(ds["spins"].values, model), ds["energy"].values, 64)
    assert metrics["mae_per_site"] < 4e-4  # the held-out figure is checked under -m slow


def test_ising_3d_on_a_larger_lattice():
    model = TileModel.load(MODELS / "ising-3d-f1c1.onnx")
    ds = sample_ising(3, 8, dim=3, temperatures=(3.0, 6.0), seed=5, sweeps=20)
    for spins, energy in zip(ds["spins"].values, ds["energy"].values):
        result = score(spins, model, chunks=4)
        assert abs(result.energy - energy) / spins.size < 5e-3


@pytest.mark.slow
def test_ising_2d_accuracy_targets():
    metrics = evaluate_ising(str(MODELS / "ising-2d-f1c1.onnx"), L=8, n=2000,
                             near_critical=False, progress=False)
    assert metrics["mae_per_site"] <= 2e-4
    metrics = evaluate_ising(str(MODELS / "ising-2d-f1c1.onnx"), L=128, n=100, progress=False)
    assert metrics["mae_per_site"] <= 2e-4


@pytest.mark.slow
def test_laplacian_accuracy_target():  # target: relative MAE <= 0.1 % on 200 fresh images
    metrics = evaluate_laplacian(str(MODELS / "laplacian-f10c2.onnx"), L=100, n=200,
                                 progress=False)
    assert metrics["relative_mae"] <= 1e-3


def test_laplacian_on_a_fresh_image():
    model = TileModel.load(MODELS / "laplacian-f10c2.onnx")
    images = laplacian_images(4, 100, seed=99, correlation_length=TRAIN_CORRELATION)
    predicted = score_samples(images, model)
    np.testing.assert_allclose(predicted, laplacian_target(images), rtol=0.1)


def _atomistic_test_errors(name: str, store: str | None = None
                           ) -> tuple[TileModel, np.ndarray, np.ndarray]:
    """Energy errors (eV) and atom counts of a shipped model on its held-out test split
    (of one of its training stores, if ``store`` names it)."""
    from ednn_dask import energy
    from training import reference
    from training.atomistic import recipe_split

    model = TileModel.load(MODELS / name)
    stores = model.spec.provenance.get("stores") or [ATOMISTIC[name][0]]
    ds = reference.load_reference_sets([str(MODELS.parent / "data" / s) for s in stores])
    test = recipe_split(ds, str(MODELS / name), "test")  # refused unless the data hash matches
    if store is not None:
        test = test[ds["source"].values[test] == stores.index(store)]
    predicted = energy(reference.dataset_structures(ds, test), model)
    return model, predicted - ds["energy"].values[test], ds["n_atoms"].values[test]


@pytest.mark.parametrize("name", sorted(ATOMISTIC))
def test_atomistic_model_reproduces_its_recorded_test_error(name):
    """energy() on the shipped data sets' test split gives the error the model records."""
    model, error, _ = _atomistic_test_errors(name)
    _, elements, n = ATOMISTIC[name]
    assert set(model.spec.reference_energies) == elements
    assert model.spec.provenance["n_structures"] == n
    assert np.abs(error).mean() == pytest.approx(model.spec.provenance["metrics"]["mae"],
                                                 rel=1e-4)


def test_evaluate_atoms_refuses_a_split_of_another_store():
    from ednn_dask.errors import ConfigError
    from training.atomistic import evaluate_atomistic

    with pytest.raises(ConfigError, match="trained on.*--split all"):
        evaluate_atomistic(str(MODELS / "hexagonal-f16c24.onnx"),
                           str(MODELS.parent / "data" / "hexagonal-2x2.zarr"), split="test")


def test_evaluate_atoms_averages_registries_as_moved_cells(capsys):
    """``--registries 4``: each energy the mean over the cell moved by half a trunk stride."""
    import json

    from ednn_dask import energy
    from ednn_dask.atoms import Structure
    from ednn_dask.cli import main
    from training.reference import dataset_structures, load_reference

    model, store = str(MODELS / "porous-thermal-f32c32.onnx"), "data/thermal-test-porous.zarr"
    assert main(["evaluate", "atoms", "--model", model, "--data", store, "--registries", "4",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ds = load_reference(MODELS.parent / store)
    spacing, half = TileModel.load(model).spec.spacing, 4  # the trunk strides by 8 px
    moved = [[Structure(s.positions + [j * half * spacing[1], i * half * spacing[0], 0],
                        s.numbers, s.cell, s.pbc).wrapped() for s in dataset_structures(ds)]
             for i in (0, 1) for j in (0, 1)]
    mean = np.mean([energy(m, model) for m in moved], axis=0)
    error = (mean - ds["energy"].values) / ds["n_atoms"].values * 1e3
    assert result["registries"] == 4
    assert result["mae_meV_per_atom"] == pytest.approx(np.abs(error).mean(), rel=1e-6)
    run = ds["run"].values  # MD snapshots: the error's offset per run, and what is left
    means = np.array([error[run == r].mean() for r in np.unique(run)])
    # and how the predictions follow the reference about each run's mean
    truth, predicted = (np.concatenate([v[run == r] - v[run == r].mean() for r in np.unique(run)])
                        for v in (ds["energy"].values / ds["n_atoms"].values * 1e3,
                                  mean / ds["n_atoms"].values * 1e3))
    assert result["runs"] == pytest.approx({
        "n_runs": len(means), "mae_of_run_means": np.abs(means).mean(),
        "mae_within_runs": np.abs(error - means[np.unique(run, return_inverse=True)[1]]).mean(),
        "reference_within_runs": np.abs(truth).mean(),
        "slope_within_runs": np.linalg.lstsq(truth[:, None], predicted, rcond=None)[0][0],
        "r2_within_runs": np.corrcoef(truth, predicted)[0, 1] ** 2}, rel=1e-6)
    assert main(["evaluate", "atoms", "--model", model, "--data", store, "--registries",
                 "2"]) == 2
    assert "one of [1, 4, 16, 64]; got 2" in capsys.readouterr().err


# Accuracy targets (meV/atom). Where a shipped model does not reach one yet, the test is a
# strict xfail naming the target; the measured figures are in the models' metadata.
HEXAGONAL_TARGET = 1.0  # mean |error| on the held-out test cells
POROUS_TARGET = 4.0  # median |error| on the held-out test cells
SUPERCELL_TARGET = 2.0  # mean |error| on a supercell store


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"target: mean |error| <= {HEXAGONAL_TARGET:g} meV/atom "
                   "on the held-out test cells")
def test_hexagonal_accuracy_target():
    _, error, n_atoms = _atomistic_test_errors("hexagonal-f16c24.onnx")
    assert np.mean(np.abs(error) / n_atoms) * 1e3 <= HEXAGONAL_TARGET


def test_hexagonal_thermal_model_keeps_the_cold_split_and_holds_on_md_it_never_saw():
    """Trained on MD and Gaussian cells too, the thermal model is no worse than the cold
    model on the cold cells both held out, and far closer on MD of cells never trained on."""
    from training.atomistic import evaluate_atomistic

    _, error, n_atoms = _atomistic_test_errors("hexagonal-thermal-f16c24.onnx", "hexagonal.zarr")
    _, cold_error, cold_atoms = _atomistic_test_errors("hexagonal-f16c24.onnx")
    assert len(error) == len(cold_error) == 500
    cold_split = np.mean(np.abs(error) / n_atoms) * 1e3
    assert cold_split <= np.mean(np.abs(cold_error) / cold_atoms) * 1e3  # 4.18 against 4.84
    md = {name: evaluate_atomistic(str(MODELS / name),
                                   str(MODELS.parent / "data" / "thermal-test-hexagonal.zarr"))
          for name in ("hexagonal-f16c24.onnx", "hexagonal-thermal-f16c24.onnx")}
    assert md["hexagonal-f16c24.onnx"]["mae_meV_per_atom"] > 100  # 105 at export
    assert md["hexagonal-thermal-f16c24.onnx"]["mae_meV_per_atom"] < 13  # 12.1 at export


def test_within_runs_bench_splits_the_runs_evaluate_reports(tmp_path):
    """bench/within_runs.py: its row of all snapshots is the run split ``evaluate atoms``
    prints; each MD run falls in one vacancy row and one temperature row."""
    import importlib.util
    import json

    from training.atomistic import evaluate_atomistic

    model = str(MODELS / "hexagonal-thermal-f16c24.onnx")
    store = str(MODELS.parent / "data" / "thermal-test-hexagonal.zarr")
    spec = importlib.util.spec_from_file_location("within_runs",
                                                  MODELS.parent / "bench" / "within_runs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--model", model, "--data", store, "--json-out", str(tmp_path / "w.json")])
    groups = json.loads((tmp_path / "w.json").read_text())["groups"]
    runs = evaluate_atomistic(model, store)["runs"]
    assert groups.pop("all") == pytest.approx({"n": 160, **runs}, rel=1e-9)
    for suffix in (" vac", " K"):
        rows = [g for name, g in groups.items() if name.endswith(suffix)]
        assert sum(g["n"] for g in rows) == 160
        assert sum(g["n_runs"] for g in rows) == runs["n_runs"] == 8
    # the pristine runs' fluctuations are followed (slope 0.99, r² 0.90 at export)
    assert groups["0 vac"]["r2_within_runs"] > 0.85


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"target: median |error| <= {POROUS_TARGET:g} meV/atom "
                   "on the held-out test cells")
def test_porous_accuracy_target():
    _, error, n_atoms = _atomistic_test_errors("porous-f32c16.onnx")
    assert np.median(np.abs(error) / n_atoms) * 1e3 <= POROUS_TARGET


def _held_out_porous_md(name: str) -> dict:
    from training.atomistic import evaluate_atomistic

    return evaluate_atomistic(str(MODELS / name),
                              str(MODELS.parent / "data" / "thermal-test-porous.zarr"))


def test_porous_thermal_model_holds_on_md_of_cells_it_never_saw():
    """On MD snapshots of four held-out porous cells the cold model is off by hundreds of
    meV/atom (their pore edges relax); the model trained on MD and relaxations is not."""
    cold = _held_out_porous_md("porous-f32c16.onnx")
    warm = _held_out_porous_md("porous-thermal-f32c32.onnx")
    assert cold["n"] == warm["n"] == 80
    assert cold["median_meV_per_atom"] > 200
    assert warm["median_meV_per_atom"] < 15  # 11.1 at export


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"target: median |error| <= {POROUS_TARGET:g} meV/atom "
                   "on held-out porous MD at 300 and 1000 K")
def test_porous_thermal_accuracy_target():
    assert _held_out_porous_md("porous-thermal-f32c32.onnx")["median_meV_per_atom"] \
        <= POROUS_TARGET


@pytest.mark.slow
@pytest.mark.parametrize("store", [
    pytest.param("hexagonal-2x2.zarr", marks=pytest.mark.xfail(
        strict=True, reason=f"target: mean |error| <= {SUPERCELL_TARGET:g} meV/atom on the 2x2 "
        "supercells (limits: the Gamma-point reference's finite-size term, B-N vacancy charge "
        "transfer beyond the model's window)")),
    pytest.param("hexagonal-3x3.zarr", marks=pytest.mark.xfail(
        strict=True, reason=f"target: mean |error| <= {SUPERCELL_TARGET:g} meV/atom on the "
        "vacancy-free 3x3 supercells")),
])
def test_hexagonal_transfer_to_supercells_target(store):
    from training.atomistic import evaluate_atomistic

    result = evaluate_atomistic(str(MODELS / "hexagonal-f16c24.onnx"),
                                str(MODELS.parent / "data" / store))
    assert result["mae_meV_per_atom"] <= SUPERCELL_TARGET


THERMAL_SUPERCELLS = ("hexagonal-2x2.zarr", "hexagonal-3x3.zarr",
                      "gaussian-test-hexagonal-2x2.zarr", "gaussian-test-hexagonal-3x3.zarr",
                      "mc-test-hexagonal-3x3.zarr")
TRANSFER_TARGET = 3.0  # meV/atom, on supercells in the convention the model card states


def _replica_copy_errors(store: str) -> dict[str, float]:
    """MAE (meV/atom) of the replica-convention thermal model on a supercell store, by kind
    as ``bench/convention_transfer.py`` pools the kind x vacancies groups."""
    import importlib.util

    from training.atomistic import evaluate_atomistic

    spec = importlib.util.spec_from_file_location(
        "convention_transfer", MODELS.parent / "bench" / "convention_transfer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = evaluate_atomistic(str(MODELS / "hexagonal-thermal-replica-f16c24.onnx"),
                                str(MODELS.parent / "data" / store))
    return {"all": result["mae_meV_per_atom"],
            **{k: g["mae"] for k, g in bench._by_kind(result["groups"]).items()}}


@pytest.mark.parametrize("store", THERMAL_SUPERCELLS)
def test_the_replica_copy_transfers_to_graphene_supercells(store):
    """Cold, Gaussian and 1000 K Monte Carlo supercells of 224-540 atoms: graphene within
    the transfer target (2x2 with vacancies 2.80 at export, the rest 0.9-2.6)."""
    assert _replica_copy_errors(store)["graphene"] <= TRANSFER_TARGET


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"target: MAE <= {TRANSFER_TARGET:g} meV/atom on 2x2 "
                   "supercells of every kind (h-BN with vacancies 5.09, hetero 4.88: charge "
                   "transfer and C/BN interfaces, findings)")
def test_the_replica_copy_transfer_target_on_every_kind():
    assert _replica_copy_errors("hexagonal-2x2.zarr")["all"] <= TRANSFER_TARGET


def test_screened_models_reproduce_their_recorded_test_error(tmp_path):
    """The recipe's data set is regenerated from its seed; the ONNX files score its test split
    as the recipe measured at export (the three kinds, one of them multi-scale)."""
    from training.fields import evaluate_fields
    from training.recipes import make_dataset
    from training.screened import SCREENED_TRAINING

    store = tmp_path / "screened.zarr"
    make_dataset("screened", str(store), n=SCREENED_TRAINING["n"], L=SCREENED_TRAINING["L"],
                 progress=False)
    for kind in ("short", "wide", "multiscale"):
        model = TileModel.load(MODELS / f"screened-{kind}.onnx")
        assert bool(model.spec.scales) == (kind == "multiscale")
        result = evaluate_fields(MODELS / f"screened-{kind}.onnx", store, split="test")
        recorded = model.spec.provenance["metrics"]
        assert result["n"] == recorded["n"] == SCREENED_TRAINING["n"] // 10
        if kind == "wide":  # exact: its error is float32 rounding, moved by the order of sums
            assert result["mae"] < 1e-4 and recorded["mae"] < 1e-4
        else:
            assert result["mae"] == pytest.approx(recorded["mae"], rel=1e-4)
