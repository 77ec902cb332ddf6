"""Structure generators: lattice geometry, compositions, validation, region-by-region sheets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.atoms.materials import LATTICE_CONSTANT, PorousSheet, hexagonal_sheet
from ednn_dask.atoms.structure import Structure
from ednn_dask.errors import StructureError
from training.structure_sets import hexagonal_structures, porous_structures

BOND = LATTICE_CONSTANT / math.sqrt(3)


def _distances(s: Structure) -> np.ndarray:
    delta = s.positions[:, None] - s.positions[None]
    size = np.diag(s.cell)
    delta[..., :2] -= np.round(delta[..., :2] / size[:2]) * size[:2]
    d = np.linalg.norm(delta, axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


def test_pristine_graphene_is_a_honeycomb():
    s = hexagonal_sheet(np.random.default_rng(0), "graphene")
    assert len(s) == 60 and s.species_counts() == {6: 60}
    np.testing.assert_allclose(np.diag(s.cell)[:2], [12.5, 3 * math.sqrt(3) * 2.5])
    d = _distances(s)
    assert np.allclose(d.min(axis=1), BOND)
    assert ((np.abs(d - BOND) < 1e-9).sum(axis=1) == 3).all()  # three neighbours each


def test_hbn_alternates_boron_and_nitrogen():
    s = hexagonal_sheet(np.random.default_rng(0), "hbn")
    assert s.species_counts() == {5: 30, 7: 30}
    d = _distances(s)
    for i in range(len(s)):
        neighbours = s.numbers[np.abs(d[i] - BOND) < 1e-9]
        assert len(neighbours) == 3 and set(neighbours) == {12 - s.numbers[i]}


def test_vacancies_and_displacements():
    rng = np.random.default_rng(3)
    s = hexagonal_sheet(rng, "graphene", vacancies=4, displacement=0.1)
    assert len(s) == 56
    ideal = hexagonal_sheet(np.random.default_rng(3), "graphene")
    # every atom lies within 0.1 Å of some ideal site
    delta = s.positions[:, None, :2] - ideal.positions[None, :, :2]
    size = np.diag(s.cell)[:2]
    delta -= np.round(delta / size) * size
    assert np.linalg.norm(delta, axis=-1).min(axis=1).max() <= 0.1 + 1e-12


def test_dataset_is_reproducible_per_index():
    a = list(hexagonal_structures(5, seed=7))
    b = list(hexagonal_structures(2, seed=7, start=3))
    for s, t in zip(a[3:], b):
        np.testing.assert_array_equal(s.positions, t.positions)
        np.testing.assert_array_equal(s.numbers, t.numbers)
    kinds = {s.info["kind"] for s in hexagonal_structures(60, seed=0)}
    assert kinds == {"graphene", "hbn", "hetero"}


def test_supercells_are_integer_multiples():
    s = next(hexagonal_structures(1, seed=0, cells=(10, 6)))
    np.testing.assert_allclose(np.diag(s.cell)[:2], [25.0, 6 * math.sqrt(3) * 2.5])
    assert 240 - 16 <= len(s) <= 240


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, z: (np.vstack([p, p[:1] + [0.1, 0, 0]]), np.append(z, 6)), "overlap"),
        (lambda p, z: (p + [20.0, 0, 0], z), "outside the periodic cell"),
        (lambda p, z: (np.where(np.arange(len(p))[:, None] == 0, np.nan, p), z), "NaN"),
    ],
)
def test_check_refuses_bad_atoms(change, message):
    s = hexagonal_sheet(np.random.default_rng(0), "graphene")
    positions, numbers = change(s.positions, s.numbers)
    with pytest.raises(StructureError, match=message):
        Structure(positions, numbers, s.cell).check()


def test_check_refuses_unknown_elements_and_wraps():
    s = hexagonal_sheet(np.random.default_rng(0), "hbn")
    with pytest.raises(StructureError, match=r"\['B', 'N'\] are unknown to the model"):
        s.check(elements=[6])
    shifted = Structure(s.positions + [12.5 * 3 + 0.3, -13.0, 0], s.numbers, s.cell)
    shifted.wrapped().check(elements=[5, 7])


def test_bad_arrays_are_refused():
    with pytest.raises(StructureError, match=r"shape \(n, 3\)"):
        Structure(np.zeros((3, 2)), [6, 6, 6], np.eye(3))
    with pytest.raises(StructureError, match="one per atom"):
        Structure(np.zeros((3, 3)), [6, 6], np.eye(3))


def test_ase_round_trip():
    pytest.importorskip("ase")
    s = next(hexagonal_structures(1, seed=1))
    back = Structure.from_ase(s.to_ase())
    np.testing.assert_array_equal(back.positions, s.positions)
    np.testing.assert_array_equal(back.numbers, s.numbers)
    assert back.pbc == (True, True, False) and back.info["kind"] == s.info["kind"]


SHEET = PorousSheet((150, 90), porosity=0.15, seed=5, block=32)
FULL_XY, FULL_IDS = SHEET.atoms(0, 150, 0, 90)
BY_ID = dict(zip(FULL_IDS.tolist(), map(tuple, FULL_XY)))


@settings(max_examples=25, deadline=None)
@given(
    i0=st.integers(-160, 150), di=st.integers(1, 70),
    j0=st.integers(-100, 90), dj=st.integers(1, 50),
)
def test_porous_regions_agree_with_the_whole_sheet(i0, di, j0, dj):
    """Any region, periodic images included, is the matching part of the whole sheet."""
    xy, ids = SHEET.atoms(i0, i0 + di, j0, j0 + dj)
    assert len(set(ids.tolist())) == len(ids)
    whole = np.array([BY_ID[i] for i in ids.tolist()]).reshape(-1, 2)
    shift = (xy - whole) / SHEET.size
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    # nothing missing: every kept site of the region's cells is returned
    ii, jj = np.divmod(FULL_IDS // 4, 90)
    in_region = (((ii - i0) % 150 < di) & ((jj - j0) % 90 < dj)) if di <= 150 and dj <= 90 else None
    if in_region is not None:
        assert len(ids) == int(in_region.sum())


def test_porosity_is_close_to_the_target():
    sheet = PorousSheet((400, 240), porosity=0.1, seed=1, displacement=0.0)
    xy, _ = sheet.atoms(0, 400, 0, 240)
    removed = 1 - len(xy) / sheet.n_sites
    assert 0.09 < removed < 0.13  # pores remove ~10 %, cleaning dangling atoms a little more


def test_porous_training_cells():
    cells = list(porous_structures(4, seed=2, cells=(5, 6)))
    for s in cells:
        s.check(elements=[6])
        assert 0 < len(s) < 120 and s.info["kind"] == "porous"
    again = next(porous_structures(1, seed=2, cells=(5, 6)))
    np.testing.assert_array_equal(again.positions, cells[0].positions)


def test_porous_sheet_refuses_bad_parameters():
    with pytest.raises(StructureError, match="porosity"):
        PorousSheet((10, 10), porosity=1.2)
    with pytest.raises(StructureError, match="pore_radius"):
        PorousSheet((10, 10), pore_radius=(3.0, 1.0))


@pytest.mark.parametrize("kind", ["graphene", "hbn"])
def test_repeat_of_a_pristine_cell_is_the_larger_pristine_sheet(kind):
    rng = np.random.default_rng(0)
    small = hexagonal_sheet(rng, kind, cells=(5, 3)).repeat(2, 3)
    large = hexagonal_sheet(rng, kind, cells=(10, 9))
    np.testing.assert_allclose(small.cell, large.cell)

    def sites(s):
        order = np.lexsort((s.positions[:, 1].round(6), s.positions[:, 0].round(6)))
        return s.positions[order], s.numbers[order]

    np.testing.assert_allclose(sites(small)[0], sites(large)[0], atol=1e-9)
    np.testing.assert_array_equal(sites(small)[1], sites(large)[1])


def test_repeat_keeps_atoms_apart_and_counts_vacancies():
    s = hexagonal_sheet(np.random.default_rng(3), "hetero", vacancies=2, displacement=0.1)
    big = s.repeat(3, 2)
    assert len(big) == 6 * len(s) and big.info["vacancies"] == 12
    assert big.species_counts() == {z: 6 * n for z, n in s.species_counts().items()}
    big.check()  # no overlaps across the new cell's boundaries, all atoms inside
    with pytest.raises(StructureError, match="positive integers"):
        s.repeat(0, 2)
