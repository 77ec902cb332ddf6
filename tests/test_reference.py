"""GFN1-xTB reference stores: resumable, reproducible, refusing to mix data sets."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ednn_dask.atoms.materials import hexagonal_sheet
from ednn_dask.atoms.structure import Structure
from ednn_dask.errors import ConfigError, OutputExistsError, StoreNotFoundError
from training import reference
from training.structure_sets import hexagonal_structures

pytest.importorskip("tblite")


def test_compute_resumes_and_matches_a_direct_calculation(tmp_path, local_cluster):
    structures = [hexagonal_sheet(np.random.default_rng(k), kind) for k, kind in
                  enumerate(["graphene", "hbn", "hetero"])]
    path = reference.create_store(tmp_path / "ref.zarr", structures, seed=0)
    assert reference.compute_energies(path, client=local_cluster, limit=1, progress=False) == {
        "done": 1, "failed": 0, "pending": 2}
    counts = reference.compute_energies(path, client=local_cluster, progress=False)
    assert counts == {"done": 3, "failed": 0, "pending": 0}
    ds = reference.load_reference(path)
    stored = reference.dataset_structures(ds)
    direct = [reference.xtb_energy(s) for s in stored]
    np.testing.assert_allclose(ds["energy"].values, direct, rtol=1e-9)
    assert ds["energy"].values[0] < -3000  # 60 carbon atoms, GFN1-xTB total energy in eV
    # a periodic image of the same cell has the same energy
    s = stored[0]
    moved = Structure(s.positions + [3.1, -2.2, 0], s.numbers, s.cell, s.pbc).wrapped()
    assert reference.xtb_energy(moved) == pytest.approx(direct[0], abs=1e-6)
    # nothing left to do: a re-run computes nothing and changes nothing
    assert reference.compute_energies(path, client=local_cluster, progress=False)["done"] == 3
    np.testing.assert_array_equal(reference.load_reference(path)["energy"].values,
                                  ds["energy"].values)


def test_a_store_with_other_parameters_is_refused(tmp_path, local_cluster):
    path = tmp_path / "hex.zarr"
    counts = reference.build_reference_set("hexagonal", path, n=4, seed=0, client=local_cluster,
                                           limit=0, progress=False)
    assert counts == {"done": 0, "failed": 0, "pending": 4}
    with pytest.raises(OutputExistsError, match="made with .*seed"):
        reference.build_reference_set("hexagonal", path, n=4, seed=1, client=local_cluster,
                                      limit=0, progress=False)
    with pytest.raises(StoreNotFoundError):
        reference.compute_energies(tmp_path / "missing.zarr")


def test_positions_are_stored_as_the_energies_were_computed(tmp_path):
    s = next(hexagonal_structures(1, seed=3))
    ds = reference.structures_dataset([s])
    back = reference.dataset_structures(ds)[0]
    np.testing.assert_array_equal(back.positions, s.positions.astype(np.float32))
    assert back.info["kind"] == s.info["kind"]
    assert zarr.__version__ >= "3"


def test_atoms_rounded_out_of_the_cell_by_float32_storage_come_back_inside():
    s = next(hexagonal_structures(1, seed=3))
    positions = s.positions.copy()
    positions[0, 1] = s.cell[1, 1] - 1e-9  # inside in float64, outside once stored as float32
    assert np.float32(positions[0, 1]) > s.cell[1, 1]
    ds = reference.structures_dataset([Structure(positions, s.numbers, s.cell, s.pbc, s.info)])
    back = reference.dataset_structures(ds)[0]
    back.check()
    assert 0 <= back.positions[0, 1] < 1e-5
    np.testing.assert_array_equal(back.positions[1:], s.positions[1:].astype(np.float32))


def test_reference_energies_are_recovered_exactly():
    structures = list(hexagonal_structures(30, seed=1))
    ds = reference.structures_dataset(structures)
    mu = {"B": -41.5, "C": -57.25, "N": -85.5}
    counts = reference.species_counts(ds, [5, 6, 7])
    ds["energy"][:] = counts @ np.array(list(mu.values())) + 0.25 * ds["vacancies"].values
    fitted = reference.fit_reference_energies(ds, [5, 6, 7])
    residual = reference.residual_energy(ds, fitted)
    # the vacancy term is not a linear function of the counts only because B+N+C vary
    np.testing.assert_allclose(residual + counts @ np.array(list(fitted.values())),
                               ds["energy"].values, rtol=1e-12)
    ds["energy"][:] = counts @ np.array(list(mu.values()))
    assert reference.fit_reference_energies(ds, [5, 6, 7]) == pytest.approx(mu, rel=1e-10)


def test_replicas_store_the_energy_per_cell_of_the_replica(tmp_path, local_cluster):
    path = tmp_path / "rep.zarr"
    counts = reference.build_reference_set("hexagonal", path, n=2, seed=4, cells=(2, 1),
                                           replicas=2, client=local_cluster, progress=False)
    assert counts == {"done": 2, "failed": 0, "pending": 0}
    ds = reference.load_reference(path)
    cells = reference.dataset_structures(ds)
    assert ds.attrs["replicas"] == 2 and all(len(s) <= 8 for s in cells)
    direct = [reference.xtb_energy(s.repeat(2, 2)) / 4 for s in cells]
    np.testing.assert_allclose(ds["energy"].values, direct, rtol=1e-12)
    gamma = [reference.xtb_energy(s) for s in cells]  # 8 atoms at Gamma: far from converged
    assert np.all(np.abs(np.array(direct) - gamma) > 1e-3)
    with pytest.raises(OutputExistsError, match="replicas"):
        reference.build_reference_set("hexagonal", path, n=2, seed=4, cells=(2, 1),
                                      client=local_cluster, progress=False)
    with pytest.raises(ConfigError, match="replicas must be >= 1"):
        reference.build_reference_set("hexagonal", tmp_path / "x.zarr", n=2, replicas=0)
