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
