"""The atomistic recipe: reference energies fitted, model exported with them, energy() agrees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from ednn_dask import TileModel, energy
from ednn_dask.errors import ConfigError, OutputExistsError
from training import reference
from training.atomistic import NETS, cell_spacing, train_atomistic
from training.structure_sets import hexagonal_structures

ROOT = Path(__file__).resolve().parents[1]

MU = np.array([-41.5, -57.25, -85.5])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """60 hexagonal cells labelled by a synthetic energy (references + 7 eV per vacancy)."""
    path = tmp_path_factory.mktemp("atoms") / "hex.zarr"
    reference.create_store(path, hexagonal_structures(60, seed=9), seed=9)
    group = zarr.open_group(path, mode="r+")
    numbers = group["numbers"][:]
    counts = np.stack([(numbers == z).sum(1) for z in (5, 6, 7)], 1)
    group["energy"][:] = counts @ MU + 7.0 * group["vacancies"][:]
    group["status"][:] = reference.DONE
    return path


@pytest.mark.parametrize("net, stride, blurs", [
    ("compact", (8, 8), 0), ("compact-aa", (8, 8), 3), ("compact-pf", (8, 8), 3),
    ("smooth", (4, 4), 0), ("smooth-aa", (4, 4), 2), ("smooth-aa-wide", (4, 4), 2),
    ("smooth-aa-deep", (4, 4), 2)])
def test_net_presets_export_their_trunk_stride(tmp_path, net, stride, blurs):
    """Each valid-CNN preset builds at its own context and at the shipped models' wider
    ones, and its exported graph gives the stride that ``registries`` averages over."""
    from training.atomistic import build_net
    from training.export import export_onnx
    from training.nets import Blur

    for context in (None, 24, 32):
        ednn = build_net(3, net, context=context)
    assert sum(isinstance(m, Blur) for m in ednn.modules()) == blurs
    export_onnx(ednn, tmp_path / "net.onnx", channels=3)
    assert TileModel.load(tmp_path / "net.onnx").trunk_stride == stride


def test_the_cli_offers_every_net_preset():
    """`train --net` lists the presets without importing torch; the two lists agree."""
    from ednn_dask.cli import ATOMISTIC_NETS

    assert sorted(ATOMISTIC_NETS) == sorted(NETS)


@pytest.mark.parametrize("net", [pytest.param("compact", marks=pytest.mark.slow), "smooth"])
def test_train_export_and_score(store, tmp_path, net):
    out = tmp_path / "hex.onnx"
    metrics = train_atomistic("hexagonal", str(out), data=str(store), epochs=2, net=net,
                              workdir=str(tmp_path / "work"), progress=False)
    model = TileModel.load(out)
    spec = model.spec
    # each net brings its own grid: pixels per training cell, focus and context
    preset = NETS[net]
    assert spec.raster["species"] == [5, 6, 7]
    assert spec.spacing == pytest.approx(cell_spacing(preset["pixels"]))
    assert spec.focus == (preset["focus"],) * 2 and spec.context == (preset["context"],) * 2
    assert spec.provenance["net"] == net
    # the reference energies are fitted on the training split only; the data are exactly
    # linear in the counts except for the vacancy term, so they stay close to MU
    assert set(spec.reference_energies) == {"B", "C", "N"}
    assert spec.provenance["system"] == "hexagonal" and spec.provenance["n_structures"] == 60
    assert spec.provenance["whiten"] is True and spec.provenance["device"] == "cpu"
    assert spec.provenance["loss"] == "total"  # the hexagonal default
    assert spec.provenance["epochs"] == 2
    # the card's limits: cold data (disc radius <= 0.1 Å: per-coordinate RMS <= 0.05 Å)
    assert spec.provenance["temperatures_K"] == "cold"
    assert 0.04 < spec.provenance["sigma_max_angstrom"] <= 0.05
    assert spec.provenance["energy_convention"].endswith("Gamma point (tblite defaults)")
    assert spec.provenance["stores"] == ["hex.zarr"]
    assert out.with_suffix(".parity.png").stat().st_size > 10_000
    # the per-atom test error the recipe reports is what energy() gives on the test split
    ds = reference.load_reference(store)
    from training.metrics import split_indices

    _, _, test = split_indices(60, 0.1, 0.1, 0)
    predicted = energy(reference.dataset_structures(ds, test), model)
    error = np.abs(predicted - ds["energy"].values[test]) / ds["n_atoms"].values[test]
    assert metrics["test_per_atom"]["mae_meV"] == pytest.approx(error.mean() * 1e3, rel=1e-9)
    saved = json.loads((tmp_path / "work" / "metrics.json").read_text())
    assert saved["test_per_atom"] == metrics["test_per_atom"]
    # evaluate atoms --split test: the same split, found from the model's provenance
    from training.atomistic import evaluate_atomistic

    held_out = evaluate_atomistic(str(out), str(store), split="test")
    assert held_out["n"] == len(test)
    assert held_out["mae_meV_per_atom"] == pytest.approx(metrics["test_per_atom"]["mae_meV"],
                                                         rel=1e-9)
    # evaluate atoms on the whole store: the same errors, signed mean included
    everything = evaluate_atomistic(str(out), str(store))
    signed = (energy(reference.dataset_structures(ds), model) - ds["energy"].values) / ds[
        "n_atoms"].values
    assert everything["n"] == 60
    assert everything["mean_signed_meV_per_atom"] == pytest.approx(signed.mean() * 1e3,
                                                                   rel=1e-9)
    assert everything["mae_meV_per_atom"] == pytest.approx(np.abs(signed).mean() * 1e3,
                                                           rel=1e-9)
    with pytest.raises(OutputExistsError):
        train_atomistic("hexagonal", str(out), data=str(store), epochs=1, progress=False)


def test_the_same_command_trains_the_same_model(store, tmp_path):
    """The seed fixes the split, the batches and the initial weights."""
    import onnx

    weights = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.onnx"
        train_atomistic("hexagonal", str(out), data=str(store), epochs=1, net="smooth",
                        workdir=str(tmp_path / run), progress=False)
        weights.append([np.frombuffer(t.raw_data, np.uint8) for t in
                        onnx.load(out).graph.initializer])
    assert len(weights[0]) == len(weights[1]) > 3
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_threads_reach_atomistic_training(store, tmp_path):
    """``--threads`` sets torch's threads for the atomistic recipe as for the fields'."""
    import torch

    from ednn_dask.cli import main

    threads = torch.get_num_threads()
    try:  # 3: more than a 2-core machine's idle cores, so never the default
        assert main(["train", "hexagonal", "--data", str(store), "--net", "smooth",
                     "--epochs", "1", "--threads", "3", "--out", str(tmp_path / "m.onnx"),
                     "--workdir", str(tmp_path / "w")]) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def test_unknown_net_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="net must be one of"):
        train_atomistic("hexagonal", str(tmp_path / "m.onnx"), data=str(tmp_path / "missing"),
                        net="resnet", progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_atomistic("hexagonal", str(tmp_path / "m.onnx"), data=str(tmp_path / "missing"),
                        loss="huber", progress=False)


def test_blur_study_without_blur_reproduces_energy(store, tmp_path):
    """Scoring tile by tile (the study's path) equals energy(); the plot is written."""
    from training.blur_study import blur_study, gaussian_blur, masks

    out = tmp_path / "m.onnx"
    train_atomistic("hexagonal", str(out), data=str(store), epochs=1,
                    workdir=str(tmp_path / "w"), progress=False, whiten=False)
    assert TileModel.load(out).spec.provenance["whiten"] is False
    result = blur_study(str(out), str(store), n=5, steps=2, plot=str(tmp_path / "fig6.png"))
    ds = reference.load_reference(store).isel(structure=slice(55, 60))
    predicted = energy(reference.dataset_structures(ds), str(out))
    expected = np.mean(np.abs(predicted - ds["energy"].values) / ds["n_atoms"].values) * 1e3
    assert result["no_blur_meV"] == pytest.approx(expected, rel=1e-5)
    assert len(result["rows"]) == 2 and (tmp_path / "fig6.png").stat().st_size > 10_000
    for fraction, edge, centre in masks(64, 16, 4):
        assert abs(edge.sum() - centre.sum()) <= 2 * 64 and edge.mean() == fraction
    field = np.random.default_rng(0).random((2, 3, 40, 40))
    assert gaussian_blur(field, 2.0).mean() == pytest.approx(field.mean(), rel=1e-2)
    assert gaussian_blur(field, 2.0).std() < field.std() / 2


def test_prepare_run_init_seed_changes_the_weights_only(store):
    import torch

    from training.atomistic import prepare_run

    ds = reference.load_reference(store)
    first, again, other = (prepare_run(ds, "hexagonal", init_seed=s) for s in (0, 0, 1))
    for a, b in zip(first.splits, other.splits):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.fields, other.fields)
    np.testing.assert_array_equal(first.target, other.target)
    weights = [torch.cat([p.detach().ravel() for p in r.ednn.parameters()])
               for r in (first, again, other)]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_fine_tuning_starts_from_the_exported_weights(store, tmp_path):
    import torch

    from training.atomistic import build_net, load_weights, rasterize_structures
    from training.evaluation import score_samples

    first = tmp_path / "first.onnx"
    train_atomistic("hexagonal", str(first), data=str(store), epochs=1, net="smooth",
                    workdir=str(tmp_path / "w1"), progress=False)
    model = TileModel.load(first)
    spacing, species = cell_spacing(NETS["smooth"]["pixels"]), [5, 6, 7]
    # the exported file carries everything the net needs: torch equals onnxruntime
    ednn = build_net(3, "smooth")
    load_weights(ednn, str(first), spacing=spacing, species=species)
    x = rasterize_structures(reference.load_reference(store).isel(structure=slice(0, 4)),
                             species, spacing=spacing)
    with torch.no_grad():
        from_torch = ednn.double()(torch.as_tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(from_torch, score_samples(x, model), rtol=1e-5, atol=1e-3)
    with pytest.raises(ConfigError, match="not a model of this net"):
        load_weights(build_net(3, "smooth", context=12), str(first), spacing=spacing,
                     species=species)
    # fine-tuning keeps the reference energies and says where it started; on a cold and
    # an MD store, each is split alone (the cold store as when it trained alone) and the
    # MD store by run
    tuned, md = tmp_path / "tuned.onnx", "data/thermal-test-hexagonal.zarr"
    metrics = train_atomistic("hexagonal", str(tuned), data=[str(store), md], epochs=1,
                              net="smooth", workdir=str(tmp_path / "w2"), progress=False,
                              init_from=str(first))
    runs = reference.load_reference(md)["run"].values
    assert metrics["n_test"] == 6 + 20 * round(len(set(runs)) / 10) == metrics["test"]["n"]
    assert json.loads((tmp_path / "w1" / "metrics.json").read_text())["n_test"] == 6
    spec = TileModel.load(tuned).spec
    assert spec.reference_energies == model.spec.reference_energies
    assert spec.provenance["init_from"].startswith("first.onnx (sha256 ")
    assert spec.provenance["lr"] == pytest.approx(2e-4) and spec.provenance["whiten"] is False


def test_a_multiscale_model_grows_from_its_single_scale_model(store, tmp_path):
    """--scales with --init-from: the coarse branch starts at zero, so the prepared model is
    the single-scale one; the exported two-scale model scores in energy() as in torch."""
    import torch

    from training.atomistic import prepare_run
    from training.evaluation import score_samples

    first = tmp_path / "first.onnx"
    train_atomistic("hexagonal", str(first), data=str(store), epochs=1, net="smooth",
                    workdir=str(tmp_path / "w1"), progress=False)
    ds = reference.load_reference(store)
    run = prepare_run(ds, "hexagonal", net="smooth", scales=[(1, 16, 8), (4, 4, 4)],
                      init_from=str(first))
    x = run.fields[:4]
    with torch.no_grad():
        start = run.ednn(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(start, score_samples(x, TileModel.load(first)), rtol=1e-5,
                               atol=1e-4)
    tuned = tmp_path / "two.onnx"
    train_atomistic("hexagonal", str(tuned), data=str(store), epochs=1, net="smooth",
                    scales="1:16:8,4:4:4", init_from=str(first), workdir=str(tmp_path / "w2"),
                    progress=False)
    model = TileModel.load(tuned)
    assert [s.factor for s in model.spec.scales] == [(1, 1), (4, 4)]
    # the given model is frozen: its branch is the single-scale model times its weight
    fine = score_samples(x, model.branches[0]) / score_samples(x, TileModel.load(first))
    np.testing.assert_allclose(fine, fine[0], rtol=1e-5)
    assert model.spec.provenance["lr"] == pytest.approx(2e-3)  # the coarse branch is new
    assert model.spec.provenance["scales"] == [[1, 16, 8], [4, 4, 4]]
    assert model.spec.reference_energies == TileModel.load(first).spec.reference_energies
    structures = reference.dataset_structures(ds, [0, 1, 2])
    mu = np.array([model.spec.reference_energies[s] for s in ("B", "C", "N")])
    counts = np.stack([(ds["numbers"].values[:3] == z).sum(1) for z in (5, 6, 7)], 1)
    np.testing.assert_allclose(energy(structures, model),
                               score_samples(run.fields[:3], model) + counts @ mu, rtol=1e-6)


@pytest.mark.parametrize("kwargs, says", [
    ({"scales": "4:4:4,1:16:8"}, "factor-1 branch"),
    ({"scales": "1:16:8,4:4:4", "context": 8}, "not both"),
    ({"scales": "1:32:16,4:4:4", "net": "paper"}, "dense path"),
])
def test_bad_atomistic_scales_are_refused(store, tmp_path, kwargs, says):
    with pytest.raises(ConfigError, match=says):
        train_atomistic("hexagonal", str(tmp_path / "m.onnx"), data=str(store), epochs=1,
                        **{"net": "smooth", **kwargs}, workdir=str(tmp_path / "w"),
                        progress=False)
    assert not (tmp_path / "m.onnx").exists()


def test_fit_errors_scores_the_exported_weights_as_evaluate_does(store, tmp_path):
    """bench/fit_errors.py rebuilds a run from its checkpoint: its best-epoch weights, in
    torch, give the exported model's errors through onnxruntime, on the recipe's test
    split and on a whole store."""
    import importlib.util

    from training.atomistic import evaluate_atomistic

    out, fit = tmp_path / "hex.onnx", tmp_path / "fit"
    train_atomistic("hexagonal", str(out), data=str(store), epochs=3, net="smooth",
                    workdir=str(fit), progress=False)
    spec = importlib.util.spec_from_file_location("fit_errors", ROOT / "bench" / "fit_errors.py")
    fit_errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit_errors)
    fit_errors.main(["--run", f"smooth:{fit}", "--data", str(store), "--held-out", str(store),
                     "--json-out", str(tmp_path / "fit-errors.json")])
    run = json.loads((tmp_path / "fit-errors.json").read_text())["runs"][0]
    best, last = run["weights"]["best validation epoch"], run["weights"]["last epoch"]
    test = evaluate_atomistic(str(out), str(store), split="test")
    whole = evaluate_atomistic(str(out), str(store))
    assert best["test"]["n"] == test["n"] and best["hex.zarr"]["n"] == whole["n"] == 60
    assert best["test"]["mae"] == pytest.approx(test["mae_meV_per_atom"], rel=1e-4)
    assert best["hex.zarr"]["mae"] == pytest.approx(whole["mae_meV_per_atom"], rel=1e-4)
    assert run["epochs"] == 3 and 1 <= run["best_epoch"] <= 3
    assert (last == best) == (run["best_epoch"] == 3)
