"""Reference energies moved to the n x n-replica convention (Δ linear in the composition)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tblite.ase")
pytest.importorskip("distributed")

from ednn_dask import energy  # noqa: E402
from ednn_dask.errors import ConfigError, OutputExistsError  # noqa: E402
from ednn_dask.model import load_model  # noqa: E402
from training import reference  # noqa: E402
from training.convention import fit_convention_shift, to_replica_convention  # noqa: E402
from training.structure_sets import hexagonal_structures  # noqa: E402

MODEL = "models/hexagonal-f16c24.onnx"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, local_cluster):
    """Six 16-atom cells computed alone and as 2 x 2 replicas (about 5 s of GFN1-xTB)."""
    folder = tmp_path_factory.mktemp("replicas")
    cells, rep = folder / "cells.zarr", folder / "rep.zarr"
    structures = list(hexagonal_structures(6, seed=4, cells=(2, 2), max_vacancies=1))
    reference.create_store(cells, structures)
    reference.create_store(rep, structures, source=str(cells), source_index=list(range(6)),
                           replicas=2)
    for store in (cells, rep):
        assert reference.compute_energies(store, client=local_cluster,
                                          progress=False)["done"] == 6
    return cells, rep


def test_the_shift_is_the_least_squares_fit_of_replica_minus_cell(replicas):
    cells_path, rep_path = replicas
    cells, rep = reference.load_reference(cells_path), reference.load_reference(rep_path)
    fit = fit_convention_shift(rep_path, ["B", "C", "N"])
    counts = reference.species_counts(cells, [5, 6, 7])
    diff = rep["energy"].values - cells["energy"].values
    delta = np.array([fit["shift_eV"][s] for s in "BCN"])
    # normal equations: the residual is orthogonal to every element's count
    np.testing.assert_allclose(counts.T @ (diff - counts @ delta), 0, atol=1e-8)
    rms = np.sqrt(np.mean(((diff - counts @ delta) / cells["n_atoms"].values) ** 2)) * 1e3
    assert fit["rms_meV_per_atom"] == pytest.approx(rms) and fit["n"] == 6
    assert fit["replicas"] == 2 and fit["loo_mae_meV_per_atom"] >= 0


def test_a_shifted_model_differs_by_the_composition_term_only(replicas, tmp_path):
    _, rep_path = replicas
    out = tmp_path / "m-2x2.onnx"
    fit = to_replica_convention(MODEL, rep_path, out)
    spec, before = load_model(out).spec, load_model(MODEL).spec
    assert "2 x 2 replica" in spec.provenance["energy_convention"]
    assert spec.provenance["convention_shift"]["shift_eV"] == fit["shift_eV"]
    ds = reference.load_reference("data/hexagonal.zarr").isel(structure=slice(0, 8))
    structures = reference.dataset_structures(ds)
    delta = np.array([fit["shift_eV"][s] for s in before.reference_energies])
    counts = reference.species_counts(ds, [5, 6, 7])
    np.testing.assert_allclose(energy(structures, str(out)) - energy(structures, MODEL),
                               counts @ delta, atol=1e-6)
    with pytest.raises(OutputExistsError):
        to_replica_convention(MODEL, rep_path, out)
    with pytest.raises(ConfigError, match="not a replica store"):
        to_replica_convention(MODEL, replicas[0], tmp_path / "other.onnx")


def _convention_locality():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "convention_locality.py"
    spec = importlib.util.spec_from_file_location("convention_locality", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_left_out_cell_does_not_take_part_in_its_own_fit():
    leave_one_out = _convention_locality().leave_one_out
    rng = np.random.default_rng(0)
    free, penalized = rng.normal(size=(12, 2)), rng.normal(size=(12, 3))
    y = free @ [1.0, -2.0] + penalized @ [0.5, 0.0, 3.0]
    np.testing.assert_allclose(leave_one_out(free, penalized, y, 1e-12), 0, atol=1e-8)
    # moving one cell's target moves its own left-out residual by exactly as much
    moved = y.copy()
    moved[4] += 0.7
    shift = leave_one_out(free, penalized, moved, 1.0) - leave_one_out(free, penalized, y, 1.0)
    assert shift[4] == pytest.approx(0.7, abs=1e-12)
    # the penalty shrinks only the penalized columns: a large one leaves the free fit
    np.testing.assert_allclose(leave_one_out(free, penalized, y, 1e12),
                               leave_one_out(free, penalized[:, :0], y, 0.0), rtol=1e-4)


def test_the_composition_fit_left_out_is_the_shift_s(replicas, tmp_path):
    _, rep_path = replicas
    result = _convention_locality().main(["--replicas", str(rep_path), "--alphas", "1", "10",
                                          "--json-out", str(tmp_path / "c.json")])
    fits = result["fits"]
    assert fits["composition"]["loo_mae_meV_per_atom"] == pytest.approx(
        fit_convention_shift(rep_path, ["B", "C", "N"])["loo_mae_meV_per_atom"], rel=1e-9)
    assert list(fits) == ["composition", "+ group", "+ local", "+ gap"] and result["n"] == 6
    assert fits["+ local"]["alpha"] in (1.0, 10.0)
    assert (tmp_path / "c.json").exists()


def test_the_convention_command_writes_the_shifted_copy_once(replicas, tmp_path):
    from ednn_dask.cli import main

    _, rep_path = replicas
    out, direct = tmp_path / "cli.onnx", tmp_path / "direct.onnx"
    argv = ["convention", MODEL, "--replicas", str(rep_path), "--out", str(out)]
    assert main(argv) == 0
    to_replica_convention(MODEL, rep_path, direct)
    assert load_model(out).spec.reference_energies == load_model(direct).spec.reference_energies
    shift = load_model(out).spec.provenance["convention_shift"]
    assert shift["command"].startswith("ednn-dask ")
    written = out.read_bytes()
    assert main(argv) == 2  # refused: nothing overwritten without --overwrite
    assert out.read_bytes() == written
    assert main([*argv, "--overwrite"]) == 0


def test_the_shipped_replica_copy_is_the_thermal_model_shifted_by_its_fit():
    """models/hexagonal-thermal-replica-f16c24.onnx: the shipped replica store's fit added
    to the thermal model's reference energies, the same net, and a card that says so."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    copy = load_model(root / "models" / "hexagonal-thermal-replica-f16c24.onnx").spec
    source = load_model(root / "models" / "hexagonal-thermal-f16c24.onnx").spec
    fit = fit_convention_shift(root / "data" / "replicas-2x2-hexagonal.zarr", ["B", "C", "N"])
    assert fit["n"] == 120
    for element, mu in source.reference_energies.items():
        assert copy.reference_energies[element] == pytest.approx(
            mu + fit["shift_eV"][element], abs=1e-12)
    assert (copy.focus, copy.context, copy.output_scale) == (
        source.focus, source.context, source.output_scale)
    spec = importlib.util.spec_from_file_location("generate", root / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    card = generate.model_cards()["hexagonal-thermal-replica-f16c24"]
    assert "Of `hexagonal-thermal-f16c24.onnx` (Gamma-point energies, before the shift)" in card
    assert "ednn-dask convention models/hexagonal-thermal-f16c24.onnx" in card
    assert "2 x 2 replica" in card
