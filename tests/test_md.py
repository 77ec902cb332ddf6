"""In-plane GFN1-xTB Langevin dynamics (z fixed, resumable bit for bit, configurations guarded)
and relaxation."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ase")
pytest.importorskip("tblite.ase")

import xarray as xr  # noqa: E402
import zarr  # noqa: E402

from ednn_dask.atoms.materials import hexagonal_sheet  # noqa: E402
from ednn_dask.atoms.structure import Structure  # noqa: E402
from ednn_dask.errors import ConfigError, OutputExistsError, StructureError  # noqa: E402
from training.md import FRAME_VARIABLES, relax, run_md  # noqa: E402
from training.reference import xtb_energy  # noqa: E402

# a 16-atom graphene cell: a few ms per GFN1-xTB step instead of ~1 s for 60 atoms
CELLS = (2, 2)
RUN = {"every": 2, "seed": 4, "progress": False}


@pytest.fixture(scope="module")
def sheet():
    return hexagonal_sheet(np.random.default_rng(0), "graphene", cells=CELLS, displacement=0.05)


@pytest.fixture(scope="module")
def uninterrupted(sheet, tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "full.zarr"
    summary = run_md(out, sheet, 1000.0, 6, **RUN)
    return out, summary


def _open(path):
    return xr.open_zarr(path, zarr_format=3, consolidated=False).load()


def _assert_identical(a, b):
    for name in (*FRAME_VARIABLES, "numbers", "cell", "pbc"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert a.attrs == b.attrs


def test_store_layout(uninterrupted, sheet):
    out, summary = uninterrupted
    ds = _open(out)
    assert summary["step"] == 6 and summary["frames"] == 4 and summary["new_steps"] == 6
    assert ds["positions"].dims == ("frame", "atom", "xyz")
    assert ds.sizes == {"frame": 4, "atom": len(sheet), "xyz": 3, "vector": 3}
    assert ds["step"].values.tolist() == [0, 2, 4, 6]
    np.testing.assert_array_equal(ds["positions"].values[0], sheet.positions)
    np.testing.assert_array_equal(ds["numbers"].values, sheet.numbers)
    np.testing.assert_array_equal(ds["cell"].values, sheet.cell)
    assert ds["energy"].attrs["units"] == "eV" and ds["temperature"].attrs["units"] == "K"
    assert np.isfinite(ds["energy"].values).all() and (ds["temperature"].values > 0).all()
    assert ds.attrs["temperature_K"] == 1000.0 and ds.attrs["method"] == "GFN1-xTB"
    assert json.loads(ds.attrs["rng_state"])["bit_generator"] == "PCG64"


def test_z_stays_exactly_fixed(uninterrupted, sheet):
    ds = _open(uninterrupted[0])
    positions, momenta = ds["positions"].values, ds["momenta"].values
    assert (positions[..., 2] == sheet.positions[:, 2]).all()
    assert (momenta[..., 2] == 0).all()
    assert np.abs(positions[-1, :, :2] - positions[0, :, :2]).max() > 1e-3  # it does move


def test_a_continued_run_equals_an_uninterrupted_one_bit_for_bit(uninterrupted, sheet, tmp_path):
    out = tmp_path / "resumed.zarr"
    first = run_md(out, sheet, 1000.0, 2, **RUN)
    assert first["step"] == 2
    second = run_md(out, sheet, 1000.0, 6, **RUN)
    assert second["new_steps"] == 4 and second["step"] == 6
    _assert_identical(_open(out), _open(uninterrupted[0]))


def test_a_frame_written_but_not_committed_is_dropped(uninterrupted, sheet, tmp_path):
    out = tmp_path / "crashed.zarr"
    run_md(out, sheet, 1000.0, 4, **RUN)
    group = zarr.open_group(out, mode="r+", zarr_format=3)
    for name in ("positions", "energy"):  # a kill in the middle of saving the next frame
        array = group[name]
        array.resize((array.shape[0] + 1, *array.shape[1:]))
        array[-1] = 99.0
    run_md(out, sheet, 1000.0, 6, **RUN)
    _assert_identical(_open(out), _open(uninterrupted[0]))


def test_a_finished_run_is_left_as_it_is(uninterrupted, sheet):
    out, _ = uninterrupted
    before = _open(out)
    summary = run_md(out, sheet, 1000.0, 6, **RUN)
    assert summary["new_steps"] == 0
    _assert_identical(_open(out), before)


@pytest.mark.parametrize(
    "change",
    [{"temperature": 300.0}, {"seed": 5}, {"every": 3, "steps": 6}, {"friction": 0.02},
     {"structure": "other"}],
    ids=lambda c: next(iter(c)),
)
def test_another_configuration_is_refused(uninterrupted, sheet, change):
    out, _ = uninterrupted
    before = _open(out)
    kwargs = {**RUN, "temperature": 1000.0, "steps": 6, **change}
    structure = sheet
    if kwargs.pop("structure", None):
        structure = hexagonal_sheet(np.random.default_rng(1), "graphene", cells=CELLS,
                                    displacement=0.05)
    with pytest.raises(OutputExistsError, match="overwrite=True") as info:
        run_md(out, structure, kwargs.pop("temperature"), kwargs.pop("steps"), **kwargs)
    assert "holds a run made with" in str(info.value)
    _assert_identical(_open(out), before)


def test_overwrite_replaces_another_configuration(sheet, tmp_path):
    out = tmp_path / "run.zarr"
    run_md(out, sheet, 1000.0, 2, **RUN)
    run_md(out, sheet, 300.0, 0, overwrite=True, **RUN)
    ds = _open(out)
    assert ds.attrs["temperature_K"] == 300.0 and ds.sizes["frame"] == 1


def test_a_path_that_is_not_a_run_is_refused(sheet, tmp_path):
    out = tmp_path / "other.zarr"
    out.mkdir()
    with pytest.raises(OutputExistsError, match="not a molecular-dynamics store"):
        run_md(out, sheet, 1000.0, 2, **RUN)


def test_bad_settings_are_refused(sheet, tmp_path):
    with pytest.raises(ConfigError, match="multiple of every"):
        run_md(tmp_path / "a.zarr", sheet, 1000.0, 5, **RUN)
    with pytest.raises(ConfigError, match="temperature"):
        run_md(tmp_path / "a.zarr", sheet, -1.0, 4, **RUN)
    assert not (tmp_path / "a.zarr").exists()


@pytest.fixture(scope="module")
def vacancy():
    """A 16-atom graphene cell with a vacancy: its neighbours move a lot as it relaxes."""
    return hexagonal_sheet(np.random.default_rng(1), "graphene", cells=CELLS, vacancies=1)


@pytest.fixture(scope="module")
def relaxed(vacancy):
    return relax(vacancy, fmax=0.05, every=4)


def test_a_relaxation_keeps_every_nth_step_and_the_last(relaxed, vacancy):
    steps = relaxed["step"].values
    assert relaxed.attrs["converged"] == 1 and steps[-1] == relaxed.attrs["steps"]
    assert steps.tolist() == [*range(0, steps[-1], 4), steps[-1]] and len(steps) > 3
    np.testing.assert_array_equal(relaxed["positions"].values[0], vacancy.positions)
    np.testing.assert_array_equal(relaxed["positions"].values[..., 2],
                                  np.broadcast_to(vacancy.positions[:, 2], steps.shape + (15,)))
    energy = relaxed["energy"].values
    assert energy[-1] == energy.min() and energy[0] - energy[-1] > 0.1  # eV: it relaxed


def test_relaxation_energies_are_the_reference_energies_of_the_frames(relaxed, vacancy):
    for xyz, e in zip(relaxed["positions"].values[::2], relaxed["energy"].values[::2],
                      strict=True):
        frame = Structure(xyz, vacancy.numbers, vacancy.cell, vacancy.pbc)
        assert xtb_energy(frame) == pytest.approx(e, abs=1e-5)


def test_the_relaxed_frame_feels_no_in_plane_force_above_fmax(relaxed, vacancy):
    from tblite.ase import TBLite

    atoms = Structure(relaxed["positions"].values[-1], vacancy.numbers, vacancy.cell,
                      vacancy.pbc).to_ase()
    atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
    assert np.linalg.norm(atoms.get_forces()[:, :2], axis=1).max() <= 0.05


def test_a_relaxation_stops_at_max_steps_and_says_so(vacancy):
    short = relax(vacancy, max_steps=3, every=2)
    assert short["step"].values.tolist() == [0, 2, 3]
    assert (short.attrs["converged"], short.attrs["steps"]) == (0, 3)


def test_bad_relaxation_settings_are_refused(vacancy):
    with pytest.raises(ConfigError, match="fmax"):
        relax(vacancy, fmax=0.0)
    with pytest.raises(ConfigError, match="every"):
        relax(vacancy, every=0)
    with pytest.raises(StructureError, match="periodic in x and y"):
        relax(Structure(vacancy.positions, vacancy.numbers, vacancy.cell, (True, False, False)))
