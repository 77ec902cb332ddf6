"""Atom sheets split into regions on a real two-worker cluster: exact energies, resumable runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ednn_dask import energy
from ednn_dask.atoms.materials import PorousSheet
from ednn_dask.atoms.raster import cell_field
from ednn_dask.errors import ConfigError, OutputExistsError, StructureError
from ednn_dask.mc import AtomsChain, decomposed_atoms_chain, sheet_domains
from ednn_dask.mc.rdf import pair_distances
from ednn_dask.model import load_model

ROOT = Path(__file__).resolve().parents[1]
POROUS = ROOT / "models" / "porous-f32c16.onnx"


@pytest.fixture(scope="module")
def sheet():
    return PorousSheet.square(60.0, seed=0).structure()  # 640 x 640 px: 2 x 2 regions of 320


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path, zarr_format=3, consolidated=False).load()


def test_the_regions_energy_changes_add_up_to_the_sheets(local_cluster, sheet):
    options = dict(regions=2, sweeps_per_phase=0.25, seed=3, client=local_cluster)
    run = decomposed_atoms_chain(sheet, POROUS, 1000.0, 3, **options)
    assert run.moves > 0 and 0.4 < run.acceptance < 0.95
    assert run.drift == pytest.approx(0, abs=1e-6)  # running total against a full rescoring
    fresh = energy(run.structure, POROUS)  # the final positions rasterized anew
    assert run.energy[-1] == pytest.approx(fresh, abs=2e-3)
    np.testing.assert_array_equal(run.structure.numbers, sheet.numbers)
    moved = np.linalg.norm(run.structure.positions - sheet.positions, axis=1)
    assert 0.5 < (moved > 0).mean() < 1  # edge atoms wait for a later shift
    again = decomposed_atoms_chain(sheet, POROUS, 1000.0, 3, **options)
    np.testing.assert_array_equal(again.energy, run.energy)  # whichever worker ran what
    np.testing.assert_array_equal(again.structure.positions, run.structure.positions)
    assert run.rdf.frames == 3 and run.summary()["regions"] == (2, 2)


def test_a_region_moves_only_its_interior_atoms_and_keeps_its_field_exact(sheet):
    model = load_model(POROUS)
    spec = model.spec
    field = cell_field(sheet, spec.spacing, **spec.raster)  # (channel, y, x)
    geometry = sheet_domains._Geometry.of(sheet, spec, 1)  # one region: the whole cell
    atoms = sheet_domains._atoms_of(sheet, sheet.positions[:, :2])
    block, moved, stats = sheet_domains._sweep_region(
        field, atoms, (0, 0), geometry, model, 1e9, 0.3, 3.0, (0, 0, 0))
    changed = np.any(moved["xy"] != atoms["xy"], axis=1)
    chain = AtomsChain(sheet, model, 1000.0)
    margin, size = geometry.margin, geometry.size
    boxes = [chain.change_box(k, np.zeros(2)) for k in range(len(sheet))]
    interior = np.array([all(a >= m and b <= n - m for a, b, m, n
                             in zip(lo, hi, margin, size, strict=True)) for lo, hi in boxes])
    assert not changed[~interior].any() and changed[interior].mean() > 0.9
    assert stats[3] == interior.sum() and stats[2] == 3 * len(sheet)
    positions = np.column_stack([moved["xy"], sheet.positions[:, 2]])
    after = type(sheet)(positions, sheet.numbers, sheet.cell, sheet.pbc)
    np.testing.assert_allclose(block, cell_field(after, spec.spacing, **spec.raster),
                               atol=2e-5)  # stamps moved, never re-rasterized


def test_an_interrupted_run_continues_bit_for_bit(tmp_path, monkeypatch, local_cluster, sheet):
    options = dict(regions=2, sweeps_per_phase=0.25, thermalize=1, seed=5, client=local_cluster)
    whole = decomposed_atoms_chain(sheet, POROUS, 1000.0, 3, out=tmp_path / "whole.zarr",
                                   **options)
    original, calls = sheet_domains._phase, [0]

    def killed_in_phase_three(*args):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(*args)

    with monkeypatch.context() as patch:
        patch.setattr(sheet_domains, "_phase", killed_in_phase_three)
        with pytest.raises(KeyboardInterrupt):
            decomposed_atoms_chain(sheet, POROUS, 1000.0, 3, out=tmp_path / "cut.zarr", **options)
    assert _open(tmp_path / "cut.zarr").attrs["frames_done"] == 1
    resumed = decomposed_atoms_chain(sheet, POROUS, 1000.0, 3, out=tmp_path / "cut.zarr",
                                     **options)
    assert _open(tmp_path / "whole.zarr").identical(_open(tmp_path / "cut.zarr"))
    np.testing.assert_array_equal(resumed.energy, whole.energy)
    assert resumed.moves == whole.moves and resumed.accepted == whole.accepted
    store = _open(tmp_path / "whole.zarr")
    np.testing.assert_array_equal(store.energy, whole.energy)
    side = np.diag(sheet.cell)[:2]
    closest = min(pair_distances(xy, side, 3.0).min() for xy in store.positions.values[..., :2])
    assert whole.summary()["closest_pair_A"] == pytest.approx(closest, rel=1e-12)
    assert resumed.summary()["closest_pair_A"] == whole.summary()["closest_pair_A"]
    np.testing.assert_array_equal(store.positions[-1, :, :2], whole.structure.positions[:, :2])
    with pytest.raises(OutputExistsError, match="settings differ: temperature_K"):
        decomposed_atoms_chain(sheet, POROUS, 900.0, 3, out=tmp_path / "whole.zarr", **options)


@pytest.mark.parametrize("regions, rule", [(3, "does not split"), (5, "more than 128")])
def test_regions_that_do_not_fit_are_refused(sheet, regions, rule):
    with pytest.raises(ConfigError, match=rule):
        decomposed_atoms_chain(sheet, POROUS, 1000.0, 1, regions=regions)


def test_a_sheet_that_is_not_periodic_is_refused(sheet):
    open_sheet = type(sheet)(sheet.positions, sheet.numbers, sheet.cell, (True, False, False))
    with pytest.raises(StructureError, match="periodic in x and y"):
        decomposed_atoms_chain(open_sheet, POROUS, 1000.0, 1)


@pytest.mark.slow
def test_decomposed_and_serial_chains_agree(local_cluster, sheet):
    split = decomposed_atoms_chain(sheet, POROUS, 1000.0, 40, regions=2, thermalize=5,
                                   seed=1, client=local_cluster).summary()
    chain = AtomsChain(sheet, POROUS, 1000.0, seed=2)
    serial = chain.run(40 * len(sheet), equilibrate=5 * len(sheet),
                       every=len(sheet)).summary()
    sigma = math.hypot(split["energy_sem"], serial["energy_sem"])
    assert abs(split["energy_mean"] - serial["energy_mean"]) < 3 * sigma
