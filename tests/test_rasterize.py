"""Rasterization (eq. 2): numba equals the numpy stamp, chunking and images change nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.atoms.materials import PorousSheet, hexagonal_sheet
from ednn_dask.atoms.raster import grid_shape, rasterize, stamp, stamp_numpy
from ednn_dask.atoms.structure import Structure
from ednn_dask.errors import StructureError
from training.structure_sets import hexagonal_structures

CELL = next(hexagonal_structures(1, seed=4, cells=(5, 3)))  # a hetero or h-BN or graphene cell
SPACING = (CELL.cell[1, 1] / 128, CELL.cell[0, 0] / 128)
REFERENCE = rasterize(CELL, SPACING, chunks=128).values


def test_numba_equals_the_per_atom_numpy_stamp():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 11, (300, 2))
    z = rng.integers(1, 9, 300).astype(float)
    channel = rng.integers(0, 2, 300)
    fast = stamp(np.zeros((2, 90, 100)), xy, z, channel, (0.11, 0.1), 0.2, 1.0)
    slow = stamp_numpy(np.zeros((2, 90, 100)), xy, z, channel, (0.11, 0.1), 0.2, 1.0)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-14)
    assert fast.max() > 1


def test_integral_is_the_sum_of_gaussians():
    sheet = hexagonal_sheet(np.random.default_rng(0), "hbn")
    field = rasterize(sheet, (sheet.cell[1, 1] / 256, sheet.cell[0, 0] / 256), gamma=0.2)
    area = field.attrs["spacing"][0] * field.attrs["spacing"][1]
    expected = 2 * math.pi * 0.2**2 * sheet.numbers.sum()  # ∫ Z exp(-r²/2γ²) = 2πγ² Z
    assert float(field.sum()) * area == pytest.approx(expected, rel=1e-4)


def test_field_labels():
    field = rasterize(CELL, SPACING, chunks=64)
    assert field.dims == ("y", "x") and field.shape == (128, 128)
    assert field.chunks == ((64, 64), (64, 64)) and field.dtype == np.float32
    np.testing.assert_allclose(field.x.values[:2], [SPACING[1] / 2, 1.5 * SPACING[1]])
    assert field.attrs["gamma"] == 0.2 and field.attrs["cutoff"] == pytest.approx(1.0)
    assert field.attrs["periodic"] == [True, True]
    assert field.attrs["species_counts"] == {str(k): v for k, v in CELL.species_counts().items()}


@settings(max_examples=15, deadline=None)
@given(cy=st.integers(7, 128), cx=st.integers(7, 128))
def test_chunking_changes_nothing(cy, cx):
    field = rasterize(CELL, SPACING, chunks=(cy, cx))
    np.testing.assert_array_equal(field.values, REFERENCE)


def test_periodic_images_are_equal():
    """A lattice translation changes nothing; a one-pixel shift rolls the field by one pixel."""
    moved = Structure(CELL.positions + CELL.cell[0] + CELL.cell[1], CELL.numbers, CELL.cell)
    np.testing.assert_allclose(rasterize(moved.wrapped(), SPACING).values, REFERENCE,
                               rtol=1e-5, atol=1e-6)
    by_pixel = Structure(CELL.positions + [SPACING[1], 0, 0], CELL.numbers, CELL.cell)
    np.testing.assert_allclose(rasterize(by_pixel.wrapped(), SPACING).values,
                               np.roll(REFERENCE, 1, axis=1), rtol=1e-5, atol=1e-6)


def test_species_channels_add_up():
    species = [5, 6, 7]
    field = rasterize(CELL, SPACING, species=species, chunks=50)
    assert field.dims == ("channel", "y", "x") and field.channel.values.tolist() == species
    np.testing.assert_allclose(field.sum("channel").values, REFERENCE, rtol=1e-6, atol=1e-6)
    for z, channel in zip(species, field.values):
        assert (channel.max() > 0) == (z in CELL.numbers)


def test_a_sheet_and_its_structure_rasterize_the_same():
    sheet = PorousSheet((10, 6), porosity=0.2, seed=3)
    spacing = (sheet.size[1] / 256, sheet.size[0] / 256)
    np.testing.assert_allclose(rasterize(sheet, spacing, chunks=96).values,
                               rasterize(sheet.structure(), spacing).values, rtol=1e-6, atol=1e-6)


def test_ase_atoms_are_accepted():
    pytest.importorskip("ase")
    np.testing.assert_array_equal(rasterize(CELL.to_ase(), SPACING).values, REFERENCE)


def test_bad_input_is_refused():
    with pytest.raises(StructureError, match="not a whole number of pixels"):
        rasterize(CELL, 0.1)
    tilted = Structure(CELL.positions, CELL.numbers, [[12.5, 0, 0], [6.0, 12.99, 0], [0, 0, 20]])
    with pytest.raises(StructureError, match="rectangular cell"):
        grid_shape(tilted.cell, SPACING)
    with pytest.raises(StructureError, match="no channel among species"):
        rasterize(hexagonal_sheet(np.random.default_rng(0), "hbn"), SPACING, species=[6]).compute()
    with pytest.raises(StructureError, match="cannot rasterize a dict"):
        rasterize({}, SPACING)


def test_an_atoms_table_on_disk_rasterizes_like_its_source(tmp_path):
    from ednn_dask.atoms.table import AtomsTable, write_atoms_table
    from ednn_dask.errors import OutputExistsError, StoreNotFoundError

    sheet = PorousSheet((40, 24), porosity=0.15, seed=8)
    table = write_atoms_table(tmp_path / "atoms.zarr", sheet, bin=17.0)
    xy, _ = sheet.atoms(0, 40, 0, 24)
    assert len(table) == len(xy) == sum(table.species_counts().values())
    spacing = (sheet.size[1] / 512, sheet.size[0] / 500)
    np.testing.assert_allclose(rasterize(table, spacing, chunks=(200, 160)).values,
                               rasterize(sheet, spacing, chunks=256).values, rtol=1e-6, atol=1e-6)
    reopened = AtomsTable(tmp_path / "atoms.zarr")
    assert sorted(map(tuple, reopened.atoms_in_box(-5, 30, 90, 120)[0].round(9))) == sorted(
        map(tuple, sheet.atoms_in_box(-5, 30, 90, 120)[0].round(9)))
    with pytest.raises(OutputExistsError):
        write_atoms_table(tmp_path / "atoms.zarr", sheet)
    with pytest.raises(StoreNotFoundError, match="no atoms table"):
        AtomsTable(tmp_path / "missing.zarr")


def test_a_rasterized_sheet_round_trips_through_zarr(tmp_path):
    from ednn_dask.field import open_field, save_field

    sheet = PorousSheet((20, 12), porosity=0.1, seed=2)
    field = rasterize(sheet, (sheet.size[1] / 256, sheet.size[0] / 250), chunks=(128, 125))
    save_field(field, tmp_path / "sheet.zarr")
    back = open_field(tmp_path / "sheet.zarr")
    assert back.chunks == ((128, 128), (125, 125))  # stored chunk by chunk, opened lazily
    np.testing.assert_array_equal(back.values, field.values)
    assert back.attrs["gamma"] == 0.2 and back.attrs["spacing"] == list(field.attrs["spacing"])
