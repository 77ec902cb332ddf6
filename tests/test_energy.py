"""energy(): atoms -> field -> EDNN -> total energy, equal across code paths, extensive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ednn_dask.atoms.total_energy as energy_module
from ednn_dask import energy
from ednn_dask.atoms.materials import hexagonal_sheet
from ednn_dask.atoms.raster import rasterize
from ednn_dask.atoms.structure import Structure
from ednn_dask.errors import ModelFormatError, StructureError
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
