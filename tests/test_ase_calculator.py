"""EDNNCalculator: ASE energies equal to energy(), no stale cache, no forces or stress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ase")

from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402

from ednn_dask.ase import EDNNCalculator, EnergyOnlyError  # noqa: E402
from ednn_dask.atoms import energy  # noqa: E402
from ednn_dask.atoms.materials import hexagonal_sheet  # noqa: E402
from ednn_dask.errors import EDNNError, ModelFormatError  # noqa: E402
from ednn_dask.model import load_model  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
HEXAGONAL = MODELS / "hexagonal-f16c24.onnx"


@pytest.fixture(scope="module")
def model():
    return load_model(HEXAGONAL)


@pytest.fixture
def atoms():
    return hexagonal_sheet(np.random.default_rng(3), "graphene", displacement=0.05).to_ase()


def test_energy_equals_energy_function(atoms, model):
    atoms.calc = EDNNCalculator(model)
    e = atoms.get_potential_energy()
    assert e == energy(atoms, model)
    assert atoms.get_potential_energy(force_consistent=True) == e  # free_energy


def test_registries_are_averaged_and_a_bad_count_refused_at_construction(atoms, model):
    atoms.calc = EDNNCalculator(model, registries=4)
    averaged = atoms.get_potential_energy()
    assert averaged == energy(atoms, model, registries=4)
    assert averaged != energy(atoms, model)
    with pytest.raises(EDNNError, match=r"one of \[1, 4, 16\]; got 9"):
        EDNNCalculator(model, registries=9)


def test_a_path_is_loaded(atoms, model):
    atoms.calc = EDNNCalculator(HEXAGONAL)
    assert atoms.get_potential_energy() == energy(atoms, model)


def test_moving_an_atom_recomputes(atoms, model):
    atoms.calc = EDNNCalculator(model)
    before = atoms.get_potential_energy()
    atoms.positions[7, :2] += [0.15, -0.1]
    after = atoms.get_potential_energy()
    assert after != before
    assert after == energy(atoms, model)
    atoms.positions[7, :2] -= [0.15, -0.1]
    assert atoms.get_potential_energy() == pytest.approx(before, abs=1e-9)


def test_atoms_outside_the_cell_are_wrapped(atoms, model):
    atoms.calc = EDNNCalculator(model)
    inside = atoms.get_potential_energy()
    atoms.positions[0, 0] += atoms.cell[0, 0]  # a periodic image: the same cell
    assert atoms.get_potential_energy() == pytest.approx(inside, abs=1e-6)


@pytest.mark.parametrize("ask", ["get_forces", "get_stress"])
def test_forces_and_stress_are_refused_with_our_message(atoms, model, ask):
    atoms.calc = EDNNCalculator(model)
    with pytest.raises(EnergyOnlyError, match="energy-only") as info:
        getattr(atoms, ask)()
    message = str(info.value)
    assert ("forces" if ask == "get_forces" else "stress") in message
    assert "AtomsChain" in message and "finite differences" in message
    assert isinstance(info.value, PropertyNotImplementedError)  # ASE users catch this
    assert isinstance(info.value, EDNNError)


def test_calculate_refuses_forces(atoms, model):
    calc = EDNNCalculator(model)
    with pytest.raises(EnergyOnlyError, match="'forces'"):
        calc.calculate(atoms, ["energy", "forces"])


def test_a_field_model_is_refused_at_construction():
    with pytest.raises(ModelFormatError, match="scores fields, not atoms"):
        EDNNCalculator(MODELS / "ising-2d-f1c1.onnx")
