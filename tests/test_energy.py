"""energy(): atoms -> field -> EDNN -> total energy, equal across code paths, extensive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ednn_dask.atoms.total_energy as energy_module
from ednn_dask import energy
from ednn_dask.atoms.materials import hexagonal_sheet
from ednn_dask.atoms.raster import rasterize
from ednn_dask.atoms.structure import Structure
from ednn_dask.atoms.total_energy import registry_period
from ednn_dask.errors import ConfigError, ModelFormatError, StructureError
from ednn_dask.model import ModelSpec
from tests.conftest import MU, RASTER, SPECIES
from training.atomistic import SPACING
from training.structure_sets import hexagonal_structures


def test_metadata_round_trip(atomistic):
    _, model = atomistic
    spec = ModelSpec.from_metadata(model.spec.to_metadata())
    assert spec.raster == RASTER and spec.reference_energies == MU
    assert spec.spacing == pytest.approx(SPACING)


def test_energy_equals_torch_plus_references(atomistic):
    ednn, model = atomistic
    s = next(hexagonal_structures(1, seed=2))
    field = rasterize(s, SPACING, species=SPECIES).values
    with torch.no_grad():
        net = float(ednn(torch.as_tensor(field[None])).double()[0])
    references = sum(n * MU[{5: "B", 6: "C", 7: "N"}[z]] for z, n in s.species_counts().items())
    assert energy(s, model) == pytest.approx(net + references, rel=1e-6)
    many = energy([s, s.to_ase()] if _has_ase() else [s, s], model)
    np.testing.assert_allclose(many, energy(s, model), rtol=1e-12)


def _has_ase() -> bool:
    try:
        import ase  # noqa: F401
    except ImportError:
        return False
    return True


def test_supercells_are_extensive(atomistic):
    """A 2x2 and a 3x3 copy of a cell have exactly 4 and 9 times its energy."""
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=5))
    e = energy(s, model)
    assert energy(s.repeat(2, 2), model) == pytest.approx(4 * e, rel=1e-6)
    assert energy(s.repeat(3, 3), model) == pytest.approx(9 * e, rel=1e-6)


def test_the_dask_path_gives_the_same_energy(atomistic, local_cluster, monkeypatch):
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=6)).repeat(2, 2)
    in_process = energy(s, model)
    monkeypatch.setattr(energy_module, "IN_PROCESS_PIXELS", 0)
    assert energy(s, model, client=local_cluster, chunks=128) == pytest.approx(in_process,
                                                                                rel=1e-6)


def test_bad_input_is_refused(atomistic, exact_ising2d):
    _, model = atomistic
    s = hexagonal_sheet(np.random.default_rng(0), "graphene")
    with pytest.raises(ModelFormatError, match="no ednn.raster"):
        energy(s, exact_ising2d[1])
    with_oxygen = Structure(s.positions, np.where(np.arange(len(s)) == 0, 8, 6), s.cell)
    with pytest.raises(StructureError, match=r"\['O'\] are unknown to the model"):
        energy(with_oxygen, model)
    odd = Structure(s.positions, s.numbers, s.cell * [[1.1], [1], [1]])
    with pytest.raises(StructureError, match="not a whole number of pixels"):
        energy(odd, model)
    overlapping = Structure(np.vstack([s.positions, s.positions[:1]]), np.append(s.numbers, 6),
                            s.cell)
    with pytest.raises(StructureError, match="overlap"):
        energy(overlapping, model)


def _moved(s: Structure, pixels: tuple[int, int]) -> Structure:
    """``s`` moved rigidly by (y, x) whole pixels of the model's grid."""
    shift = np.array([pixels[1] * SPACING[1], pixels[0] * SPACING[0], 0.0])
    return Structure(s.positions + shift, s.numbers, s.cell, s.pbc).wrapped()


@settings(max_examples=6, deadline=None)
@given(g=st.sampled_from([1, 2, 4, 8]), blocks=st.tuples(st.integers(0, 3), st.integers(0, 3)))
def test_the_mean_over_registries_is_the_mean_over_moved_cells_and_moves_with_none(
        atomistic, g, blocks):
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=7))
    assert model.trunk_stride == (8, 8) and registry_period(model) == (8, 8)
    step = 8 // g  # the lattice spans one trunk stride
    mean = energy(s, model, registries=g * g)
    moved = [energy(_moved(s, (i * step, j * step)), model) for i in range(g) for j in range(g)]
    assert mean == pytest.approx(np.mean(moved), rel=1e-9)
    # a move by whole focus blocks (32 px) moves every registry with it: the mean stays
    far = _moved(s, (blocks[0] * 32, blocks[1] * 32))
    assert energy(far, model, registries=g * g) == pytest.approx(mean, rel=1e-9)


def test_one_registry_is_not_the_mean_of_many(atomistic):
    """The untrained net answers each registry differently, so the tests above can fail."""
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=7))
    assert abs(energy(s, model) - energy(_moved(s, (16, 0)), model)) > 1e-4
    assert abs(energy(s, model) - energy(s, model, registries=4)) > 1e-5


def test_registries_are_refused_where_they_cannot_be_averaged(atomistic, monkeypatch):
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=7))
    for bad in (0, 3, 9, 256):
        with pytest.raises(ConfigError, match=r"period \(8, 8\) px: one of \[1, 4, 16, 64\]"):
            energy(s, model, registries=bad)
    with pytest.raises(ConfigError, match="this one is open"):
        energy(Structure(s.positions, s.numbers, s.cell, (True, False, False)), model,
               registries=4)
    monkeypatch.setattr(energy_module, "IN_PROCESS_PIXELS", 0)
    with pytest.raises(ConfigError, match="score it with registries=1"):
        energy(s, model, registries=4)
