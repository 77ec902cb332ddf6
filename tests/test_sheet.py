"""score_atoms / `ednn-dask sheet`: the streaming atoms -> energy job equals the in-memory path.

Tolerance: both paths rasterize the same atoms (the streamed windows add their
periodic images themselves) and run the same float32 network; they can differ
only in the order atoms are stamped and in how onnxruntime sums inside a layer,
about 1e-6 of a contribution. Summed in float64 over the focus blocks: at most
RTOL * n_blocks * max|contribution|, far below a meV.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ednn_dask import energy, open_field, rasterize
from ednn_dask.atoms.materials import PorousSheet
from ednn_dask.atoms.stream import default_window, score_atoms
from ednn_dask.atoms.structure import Structure
from ednn_dask.cli import main
from ednn_dask.errors import GeometryError, ModelFormatError, StructureError
from tests.conftest import MU
from training.structure_sets import hexagonal_structures

RTOL = 2e-6
SHEET = PorousSheet.square(60.0, porosity=0.15, seed=4)  # 60 x 64.95 Å, ~1,200 atoms


def _reference(structure, model):
    """The in-memory path: the whole cell rasterized at once, scored in-process."""
    return energy(structure, model, check=False)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.integers(2, 24), extra=st.integers(0, 31))  # windows of at least one tile
def test_streamed_energy_is_the_in_memory_energy_for_any_window(atomistic, blocks, extra):
    _, model = atomistic
    result = score_atoms(SHEET, model, chunks=32 * blocks + extra)  # rounded down to blocks
    expected = _reference(SHEET, model)
    n_blocks = np.prod(result.shape) / 32**2
    assert result.energy == pytest.approx(expected, rel=0, abs=RTOL * n_blocks * 10)
    structure = SHEET.structure()
    assert result.n_atoms == len(structure.numbers)
    assert result.species_counts == structure.species_counts()
    assert result.energy - result.ednn_energy == pytest.approx(result.n_atoms * MU["C"])


def test_windows_smaller_than_a_tile_are_refused(atomistic):
    _, model = atomistic
    with pytest.raises(GeometryError, match="chunks of at least 64 px"):
        score_atoms(SHEET, model, chunks=63)


def test_species_are_counted_per_element(atomistic):
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=7, cells=(10, 6)))  # B, C and N, 2x2 cells
    result = score_atoms(s, model, chunks=96)
    assert result.species_counts == s.species_counts()
    assert result.energy == pytest.approx(_reference(s, model), rel=0, abs=1e-3)
    density = result.density
    assert int(density["atoms"].sum()) == len(s.numbers)
    assert float(density["contribution"].sum()) == pytest.approx(result.ednn_energy, abs=1e-3)


def test_the_density_map_is_downsampled_to_map_pixels(atomistic):
    _, model = atomistic
    result = score_atoms(SHEET, model, map_pixels=7)
    assert max(result.density.sizes.values()) <= 7
    assert int(result.density["atoms"].sum()) == result.n_atoms
    assert float(result.density["contribution"].sum()) == pytest.approx(result.ednn_energy,
                                                                        abs=1e-3)


def test_refusals(atomistic, exact_ising2d):
    _, model = atomistic
    s = next(hexagonal_structures(1, seed=1))
    odd = Structure(s.positions[:30] * [0.625, 1, 1], s.numbers[:30],
                    s.cell * [[0.625], [1], [1]])
    with pytest.raises(GeometryError, match="focus blocks"):
        score_atoms(odd, model)
    numbers = s.numbers.copy()
    numbers[3] = 14
    silicon = Structure(s.positions, numbers, s.cell)
    with pytest.raises(StructureError, match=r"\[14\]"):
        score_atoms(silicon, model)
    with pytest.raises(ModelFormatError, match="no ednn.raster"):
        score_atoms(s, exact_ising2d[1])


def test_sheet_command_writes_its_outputs_once(atomistic, tmp_path, capsys):
    _, model = atomistic
    out = tmp_path / "sheet"
    argv = ["sheet", "--size", "6nm", "--porosity", "0.15", "--seed", "4", "--model",
            str(model.path), "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["energy"] == pytest.approx(_reference(SHEET, model), rel=0, abs=1e-3)
    assert json.loads((out / "result.json").read_text())["energy"] == printed["energy"]
    density = xr.open_zarr(out / "density.zarr", consolidated=False)
    assert int(density["atoms"].sum()) == printed["n_atoms"]
    assert (out / "density.png").stat().st_size > 1000

    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    field_store = tmp_path / "field.zarr"
    assert main([*argv, "--overwrite", "--field", str(field_store)]) == 0
    stored = open_field(field_store)
    spec = model.spec
    expected = rasterize(SHEET, spec.spacing, species=spec.raster["species"]).values
    np.testing.assert_array_equal(stored.values, expected)
    assert stored.attrs["spacing"] == pytest.approx(list(spec.spacing))


def test_sheet_command_refuses_a_size_without_unit(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sheet", "--size", "60", "--model", "m.onnx"])
    assert exit_.value.code == 2
    assert "1um, 250nm or 500A" in capsys.readouterr().err


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ny=st.integers(1, 4000), nx=st.integers(1, 4000), cores=st.integers(1, 512),
       memory=st.floats(1e7, 1e11))
def test_default_window_fits_the_machine(atomistic, ny, nx, cores, memory):
    _, model = atomistic
    shape = (32 * ny, 32 * nx)
    side = default_window(model, shape, cores=cores, memory_per_core=memory)
    smallest = 4 * 32
    assert side % 32 == 0 and smallest <= side <= 4096
    if side > smallest:
        assert 16 * 3 * (side + 32) ** 2 <= memory / 16  # buffers within 1/16 of a core's RAM
        windows = np.prod([-(-n // side) for n in shape])
        assert windows >= 2 * cores  # every core gets work
