"""Thermal GFN1-xTB data: MD runs as a resumable reference store, covariance rattles, mixed sets."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ase")
pytest.importorskip("tblite.ase")

import xarray as xr  # noqa: E402

from ednn_dask.atoms.materials import hexagonal_sheet  # noqa: E402
from ednn_dask.cli import main  # noqa: E402
from ednn_dask.errors import ExtrapolationWarning, OutputExistsError  # noqa: E402
from training.atomistic import (  # noqa: E402
    SIGMA_BINS,
    data_conditions,
    error_groups,
    run_offsets,
)
from training.reference import (  # noqa: E402
    DONE,
    dataset_structures,
    load_reference,
    load_reference_sets,
    structures_dataset,
    xtb_energy,
)
from training.thermal import (  # noqa: E402
    build_relaxed_set,
    build_thermal_set,
    thermal_rattles,
    thermal_runs,
)

pytest.importorskip("distributed")
# 16-atom cells: a few ms per GFN1-xTB step instead of ~1 s for the 60-atom training cell
SMALL = {"cells": (2, 2), "steps": 6, "every": 2, "equilibrate_steps": 2, "max_vacancies": 0,
         "temperatures": (800.0, 1500.0), "progress": False}


@pytest.fixture(scope="module")
def thermal(tmp_path_factory, local_cluster):
    out = tmp_path_factory.mktemp("thermal") / "t.zarr"
    first = build_thermal_set(out, n=3, limit=1, client=local_cluster, **SMALL)
    part = load_reference(out)
    rest = build_thermal_set(out, n=3, client=local_cluster, **SMALL)
    return out, first, part, rest, load_reference(out)


def test_runs_resume_into_one_store_labelled_by_the_md(thermal):
    out, first, part, rest, ds = thermal
    assert (first["runs_done"], first["runs_pending"], first["snapshots"]) == (1, 2, 2)
    assert (rest["runs_done"], rest["runs_pending"], rest["snapshots"]) == (3, 0, 6)
    assert ds["run"].values.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds["step"].values.tolist() == [4, 6] * 3  # the frames after equilibration
    assert ds["temperature"].values.tolist() == [800.0, 800.0, 1500.0, 1500.0, 800.0, 800.0]
    assert (ds["status"].values == DONE).all() and ds.attrs["generator"] == "thermal-hexagonal"
    # the first call's run is kept as it was, not rerun
    for name in ("positions", "energy"):
        np.testing.assert_array_equal(ds[name].values[:2], part[name].values)
    # the label is the GFN1-xTB energy of the stored (wrapped, float32) positions
    (s,) = dataset_structures(ds, [3])
    assert abs(xtb_energy(s) - ds["energy"].values[3]) < 1e-4
    # sigma: RMS from the run's mean; two snapshots sit equally far on either side of theirs
    sigma = ds["sigma"].values
    assert (sigma > 0).all() and (sigma < 0.2).all()
    np.testing.assert_allclose(sigma[::2], sigma[1::2], rtol=1e-6)


def test_a_changed_plan_is_refused_and_a_rerun_changes_nothing(thermal, local_cluster):
    out, *_, ds = thermal
    with pytest.raises(OutputExistsError, match="steps"):
        build_thermal_set(out, n=3, client=local_cluster, **{**SMALL, "steps": 8})
    again = build_thermal_set(out, n=3, client=local_cluster, **SMALL)
    assert again["runs_done"] == 3
    np.testing.assert_array_equal(load_reference(out)["energy"].values, ds["energy"].values)


def test_the_store_is_the_checkpoint_when_the_runs_are_gone(thermal, local_cluster, tmp_path):
    out, *_, ds = thermal
    copy = tmp_path / "clone" / "t.zarr"  # a fresh clone: the store, not the MD folders
    shutil.copytree(out, copy)
    again = build_thermal_set(copy, n=3, client=local_cluster, **SMALL)
    assert (again["runs_done"], again["runs_pending"], again["snapshots"]) == (3, 0, 6)
    assert sorted(p.name for p in (tmp_path / "clone" / "t-md").iterdir()) == ["plan.json"]
    xr.testing.assert_identical(load_reference(copy), ds)
    with pytest.raises(OutputExistsError, match="'every': 2"):
        build_thermal_set(copy, n=3, client=local_cluster, **{**SMALL, "every": 3, "steps": 9,
                                                       "equilibrate_steps": 3})
    with pytest.raises(OutputExistsError, match="not a thermal-porous set"):
        build_thermal_set(copy, "porous", n=3, client=local_cluster, workdir=tmp_path / "p",
                          **SMALL)


def test_a_set_grows_by_the_runs_after_its_own_and_never_shrinks(thermal, local_cluster,
                                                                  tmp_path):
    out, *_, ds = thermal
    copy = tmp_path / "t.zarr"
    shutil.copytree(out, copy)
    shutil.copytree(out.with_name("t-md"), tmp_path / "t-md")
    grown = build_thermal_set(copy, n=4, client=local_cluster, **SMALL)
    assert (grown["runs_done"], grown["runs_pending"], grown["snapshots"]) == (4, 0, 8)
    big = load_reference(copy)
    assert big["run"].values.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and big.attrs["n"] == 4
    for name in ("positions", "energy"):  # the runs it held are kept, not rerun
        np.testing.assert_array_equal(big[name].values[:6], ds[name].values)
    with pytest.raises(OutputExistsError, match="'n': 4"):  # it would drop run 3
        build_thermal_set(copy, n=3, client=local_cluster, **SMALL)
    # the runs folder serves a smaller set too: a new store of the first two runs
    two = build_thermal_set(tmp_path / "two.zarr", n=2, workdir=tmp_path / "t-md",
                            client=local_cluster, **SMALL)
    assert (two["runs_done"], two["runs_pending"], two["snapshots"]) == (2, 0, 4)
    np.testing.assert_array_equal(load_reference(tmp_path / "two.zarr")["energy"].values,
                                  ds["energy"].values[:4])


def test_a_copy_of_some_runs_keeps_them_and_is_refused_beside_its_source(thermal, tmp_path,
                                                                        capsys):
    out, *_, ds = thermal
    two = tmp_path / "two.zarr"
    assert main(["data", "runs", str(two), "--from", str(out), "--runs", "2", "0"]) == 0
    assert "left_out   [1]" in capsys.readouterr().out
    kept = load_reference(two)
    xr.testing.assert_identical(kept.drop_attrs(), ds.isel(structure=[0, 1, 4, 5]).drop_attrs())
    assert kept.attrs == {**ds.attrs, "runs": [0, 2]}
    from ednn_dask.errors import ConfigError

    # a run in both would sit in one store's training split and the other's test split
    with pytest.raises(ConfigError, match="share 2 of them"):
        load_reference_sets([str(out), str(two)])
    assert main(["data", "runs", str(two), "--from", str(out), "--runs", "1"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert load_reference(two).attrs["runs"] == [0, 2]  # nothing overwritten
    assert main(["data", "runs", str(tmp_path / "x.zarr"), "--from", str(out), "--runs",
                 "3"]) == 2
    assert "has no run [3]; its runs are 0-2" in capsys.readouterr().err
    assert main(["data", "runs", str(tmp_path / "x.zarr"), "--from", str(out)]) == 2
    assert "needs --from STORE (a thermal set) and --runs" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


# 16-atom cells with 1-2 vacancies: 10-30 FIRE steps each
RELAX = {"cells": (2, 2), "max_vacancies": 2, "every": 5, "max_steps": 30, "progress": False}


def test_relaxed_cells_are_a_resumable_store_of_their_paths(tmp_path, local_cluster):
    out = tmp_path / "r.zarr"
    first = build_relaxed_set(out, "hexagonal", n=3, limit=2, client=local_cluster, **RELAX)
    assert (first["runs_done"], first["runs_pending"]) == (2, 1)
    rest = build_relaxed_set(out, "hexagonal", n=3, client=local_cluster, **RELAX)
    assert (rest["runs_done"], rest["runs_pending"]) == (3, 0)
    ds = load_reference(out)
    assert ds.attrs["generator"] == "relaxed-hexagonal" and rest["snapshots"] == ds.sizes[
        "structure"]
    runs = thermal_runs("hexagonal", 3, cells=(2, 2), max_vacancies=2)
    for r in runs:  # each relaxation starts from the cell MD run k starts from
        rows = ds["run"].values == r.index
        path = xr.open_zarr(tmp_path / "r-relax" / r.name, zarr_format=3,
                            consolidated=False).load()
        np.testing.assert_array_equal(ds["energy"].values[rows], path["energy"].values)
        np.testing.assert_array_equal(ds["step"].values[rows], path["step"].values)
        np.testing.assert_allclose(ds["positions"].values[rows, : len(r.structure)][0],
                                   r.structure.wrapped().positions, atol=1e-5)
        assert path["step"].values[-1] == path.attrs["steps"] <= 30
    assert (ds["temperature"].values == 0).all() and (ds["sigma"].values == 0).all()
    assert ds["vacancies"].values.max() >= 1
    # what a model card trained on them says: relaxation paths, at 0 K
    conditions = data_conditions(load_reference_sets(["data/hexagonal-2x2.zarr", out]),
                                 ["data/hexagonal-2x2.zarr", out])
    assert conditions["temperatures_K"] == [0.0, 0.0]
    assert conditions["relaxation_paths_too"] and conditions["cold_lattices_too"]
    with pytest.raises(OutputExistsError, match="fmax"):
        build_relaxed_set(out, "hexagonal", n=3, fmax=0.1, client=local_cluster, **RELAX)
    with pytest.raises(OutputExistsError, match="'n': 3"):
        build_relaxed_set(out, "hexagonal", n=2, client=local_cluster, **RELAX)


def test_the_cli_makes_a_relaxed_set(tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert main(["data", "relaxed", str(out), "--n", "1", "--cells", "2", "2",
                 "--max-vacancies", "1", "--every", "4", "--steps", "8", "--fmax", "0.1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["runs_done"], summary["runs_pending"]) == (1, 0)
    assert load_reference(out).attrs["max_steps"] == 8


def _fake_thermal(rng, m=40):
    """One run of m snapshots of a 16-atom cell with known, correlated displacements."""
    cell = hexagonal_sheet(rng, "graphene", cells=(2, 2))
    mix = rng.normal(size=(32, 32)) * 0.01  # in-plane covariance mix @ mix.T
    moves = (rng.normal(size=(m, 32)) @ mix.T).reshape(m, 16, 2)
    snapshots = []
    for d in moves:
        xyz = cell.positions.copy()
        xyz[:, :2] += d
        snapshots.append(type(cell)(xyz, cell.numbers, cell.cell, cell.pbc, dict(cell.info))
                         .wrapped())
    ds = structures_dataset(snapshots)
    ds["run"] = ("structure", np.zeros(m, np.int32))
    ds["temperature"] = ("structure", np.full(m, 1000.0))
    return ds, cell.positions[None, :, :2] + moves


def test_rattles_sample_the_runs_mean_and_covariance():
    rng = np.random.default_rng(3)
    ds, unwrapped = _fake_thermal(rng)
    rattles = thermal_rattles(ds, 20000, seed=1)
    assert len(rattles) == 20000 and {s.info["temperature"] for s in rattles} == {1000.0}
    cell = np.diag(ds["cell"].values[0])[:2]
    x = np.stack([s.positions[:, :2] for s in rattles])
    assert (x >= 0).all() and (x < cell).all()  # wrapped into the cell
    # unwrap against the run's mean, then compare the first two moments
    mean = unwrapped.mean(axis=0)
    d = x - mean
    d -= np.round(d / cell) * cell
    want = np.cov((unwrapped - mean).reshape(len(unwrapped), -1), rowvar=False)
    got = np.cov(d.reshape(len(d), -1), rowvar=False)
    np.testing.assert_allclose(d.mean(axis=0), 0, atol=4 * np.sqrt(want.max() / len(d)))
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert {s.info["sigma"] > 0 for s in rattles} == {True}


def test_stores_sharing_runs_of_one_plan_are_refused():
    """thermal-porous-12.zarr continues thermal-porous.zarr's plan: its first 8 runs are those."""
    from ednn_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="share 8 of them .runs 0-7.: train with one"):
        load_reference_sets(["data/thermal-porous.zarr", "data/thermal-porous-12.zarr"])
    with pytest.raises(ConfigError, match="share 8"):  # one store twice
        load_reference_sets(["data/thermal-porous.zarr", "data/thermal-porous.zarr"])
    # the relaxations of the same cells and the held-out MD (another seed) are other plans
    both = load_reference_sets(["data/thermal-porous-12.zarr", "data/relaxed-porous.zarr",
                                "data/thermal-test-porous.zarr"])
    assert both.sizes["structure"] == 240 + 1021 + 80


def test_cold_and_thermal_sets_load_together(thermal):
    out, *_, thermal_ds = thermal
    cold = load_reference("data/hexagonal-2x2.zarr")
    both = load_reference_sets(["data/hexagonal-2x2.zarr", str(out)])
    n_cold = cold.sizes["structure"]
    assert both.sizes["structure"] == n_cold + thermal_ds.sizes["structure"]
    assert both["source"].values.tolist() == [0] * n_cold + [1] * thermal_ds.sizes["structure"]
    np.testing.assert_array_equal(both["energy"].values[n_cold:], thermal_ds["energy"].values)
    s_cold, s_thermal = dataset_structures(both, [0, n_cold])
    np.testing.assert_array_equal(s_cold.positions, dataset_structures(cold, [0])[0].positions)
    np.testing.assert_array_equal(s_thermal.numbers, dataset_structures(thermal_ds, [0])[0].numbers)
    # cold sets get sigma from their displacement radius (uniform in a disc: RMS = radius / 2)
    np.testing.assert_array_equal(both["sigma"].values[:n_cold], cold["displacement"].values / 2)
    assert np.isnan(both["temperature"].values[:n_cold]).all()
    assert (both["run"].values[:n_cold] == -1).all()
    np.testing.assert_array_equal(both["run"].values[n_cold:], thermal_ds["run"].values)
    np.testing.assert_array_equal(both["temperature"].values[n_cold:],
                                  thermal_ds["temperature"].values)
    conditions = data_conditions(both, ["data/hexagonal-2x2.zarr", str(out)])
    assert conditions["temperatures_K"] == [800.0, 1500.0] and conditions["cold_lattices_too"]
    assert not conditions["relaxation_paths_too"]
    assert conditions["stores"] == ["hexagonal-2x2.zarr", "t.zarr"]


@settings(max_examples=40, deadline=None)
@given(n_cold=st.integers(10, 60), runs=st.integers(10, 30), per_run=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_each_store_is_split_alone_and_md_runs_are_not_cut(n_cold, runs, per_run, seed):
    from training.atomistic import recipe_splits

    cold = xr.Dataset({"energy": ("structure", np.zeros(n_cold)),
                       "run": ("structure", np.full(n_cold, -1))})
    md = xr.Dataset({"energy": ("structure", np.zeros(runs * per_run)),
                     "run": ("structure", np.repeat(np.arange(runs), per_run))})
    both = xr.concat([cold, md], "structure").assign(
        source=("structure", np.repeat([0, 1], [n_cold, runs * per_run])))
    splits = recipe_splits(both, seed)
    assert np.array_equal(np.sort(np.concatenate(splits)), np.arange(both.sizes["structure"]))
    # the cold store's split is the one a model trained on it alone holds out
    alone = recipe_splits(cold.drop_vars("run"), seed)
    for mixed, single in zip(splits, alone, strict=True):
        np.testing.assert_array_equal(mixed[mixed < n_cold], single)
    run_of = both["run"].values
    sides = [set(run_of[s[s >= n_cold]]) for s in splits]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert all(sides)  # at least one run on each side
    md_test = splits[2][splits[2] >= n_cold]
    np.testing.assert_array_equal(recipe_splits(md, seed)[2] + n_cold, md_test)  # MD alone too


def test_errors_are_grouped_by_temperature_sigma_kind_and_size():
    ds = xr.Dataset({"sigma": ("structure", [0.01, 0.04, 0.06, 0.09, 0.01, 0.02]),
                     "temperature": ("structure", [300.0, 300.0, 1000.0, 1000.0, 300.0, np.nan]),
                     "kind": ("structure", np.int8([0, 0, 1, 1, 0, 0])),
                     "vacancies": ("structure", np.int16([0, 0, 0, 0, 0, 0])),
                     "n_atoms": ("structure", [60] * 6)})
    groups = error_groups(np.array([1.0, -3.0, 5.0, 7.0, 2.0, -1.0]), ds)
    assert list(groups) == ["temperature_K", "sigma_angstrom", "kind_vacancies"]  # one size: none
    assert groups["temperature_K"]["300"] == {"n": 3, "mae": 2.0, "mean_signed": 0.0}
    assert list(groups["sigma_angstrom"]) == [f"< {SIGMA_BINS[0]:g}", "0.03-0.05", "0.05-0.07",
                                              f">= {SIGMA_BINS[-1]:g}"]
    assert groups["temperature_K"]["cold"] == {"n": 1, "mae": 1.0, "mean_signed": -1.0}
    assert groups["sigma_angstrom"]["< 0.03"] == {"n": 3, "mae": 4 / 3, "mean_signed": 2 / 3}
    assert groups["kind_vacancies"]["hbn, 0 vac"]["mae"] == 6.0


def test_run_offsets_split_the_error_into_run_means_and_scatter_within_runs():
    # two stores whose runs share a number: (store 0, run 0) and (store 1, run 0) differ
    ds = xr.Dataset({"run": ("structure", [0, 0, 0, 0, -1, 3]),
                     "source": ("structure", [0, 0, 1, 1, 0, 1])})
    runs = run_offsets(np.array([1.0, 3.0, 10.0, 14.0, 100.0, -4.0]), ds)
    # run means 2, 12 and -4; the cold cell (run -1) is left out
    assert runs == {"n_runs": 3, "mae_of_run_means": 6.0, "mae_within_runs": 1.2}
    # reference about its run means: +1 -1 | -2 +2 | 0; errors about theirs: -1 +1 | -2 +2 |
    # 0, so the predictions' deviations are 0 0 | -4 +4 | 0: slope 16/10, r² 16²/(10 x 32)
    runs = run_offsets(np.array([1.0, 3.0, 10.0, 14.0, 100.0, -4.0]), ds,
                       np.array([2.0, 0.0, 5.0, 9.0, 50.0, 1.0]))
    assert runs == pytest.approx({"n_runs": 3, "mae_of_run_means": 6.0, "mae_within_runs": 1.2,
                                  "reference_within_runs": 1.2, "slope_within_runs": 1.6,
                                  "r2_within_runs": 0.8}, rel=1e-12)
    # runs of one snapshot each: no fluctuation to follow, so no slope or r²
    single = xr.Dataset({"run": ("structure", [0, 1, 2])})
    assert run_offsets(np.array([1.0, -2.0, 3.0]), single, np.array([5.0, 6.0, 7.0])) == {
        "n_runs": 3, "mae_of_run_means": 2.0, "mae_within_runs": 0.0}


def test_the_cli_refuses_what_it_cannot_do(capsys, tmp_path):
    assert main(["data", "rattles", str(tmp_path / "r.zarr")]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["train", "ising", "--out", str(tmp_path / "m.onnx"), "--data", "a.zarr",
                 "b.zarr"]) == 2
    assert "one --data store" in capsys.readouterr().err


def test_monte_carlo_snapshots_become_a_labelled_store(tmp_path, local_cluster):
    from ednn_dask.model import load_model
    from training.thermal import build_mc_set

    model = "models/hexagonal-f16c24.onnx"
    out = tmp_path / "mc.zarr"
    run = {"n": 1, "steps": 200, "every": 100, "equilibrate": 100, "max_vacancies": 0,
           "temperatures": (1000.0,), "client": local_cluster, "progress": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        assert build_mc_set(out, model, **run) == {"done": 2, "failed": 0, "pending": 0}
    # the worker's warning (a cold model at 1000 K) is said here, once
    said = [str(w.message) for w in caught if w.category is ExtrapolationWarning]
    assert len(said) == 1 and said[0].startswith("hexagonal-f16c24.onnx was trained on cold")
    ds = load_reference(out)
    assert ds.attrs["model_sha256"] == load_model(model).sha256
    assert ds["temperature"].values.tolist() == [1000.0, 1000.0]
    # the snapshots are the chain's frames, labelled by GFN1-xTB
    chain = xr.open_zarr(tmp_path / "mc-mc" / "run-00000.zarr", zarr_format=3,
                         consolidated=False)
    structures = dataset_structures(ds)
    for frame, s in zip(chain["positions"].values, structures, strict=True):
        np.testing.assert_allclose(s.positions[:, :2] % np.diag(s.cell)[:2],
                                   frame[:, :2] % np.diag(s.cell)[:2], atol=1e-5)
    assert xtb_energy(structures[1]) == pytest.approx(ds["energy"].values[1], abs=1e-6)
    # the same command finds everything done; another model's chains are refused
    assert build_mc_set(out, model, **run)["done"] == 2
    with pytest.raises(OutputExistsError, match="model"):
        build_mc_set(out, "models/porous-f32c16.onnx", **run)


def test_chains_too_close_are_said_once_with_the_closest():
    from ednn_dask.model import load_model
    from training.thermal import _warn_about_chains

    model = load_model("models/hexagonal-thermal-f16c24.onnx")  # its card covers 1000 K
    runs = thermal_runs("hexagonal", 3, cells=(2, 2), temperatures=(600.0, 1000.0))
    for closest, said in (([1.3, 1.2, 1.1], []),
                          ([1.3, 1.05, 0.9], ["2 of 3 chains of hexagonal-thermal-f16c24.onnx "
                                              "(the closest at 600 K) brought two atoms 0.90 Å "
                                              "apart, closer than 1.1 Å"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExtrapolationWarning)
            _warn_about_chains(model, runs, closest)
        assert [str(w.message)[:len(s)] for w, s in zip(caught, said, strict=True)] == said


def test_the_shipped_held_out_md_set_reproduces_its_labels():
    ds = load_reference("data/thermal-test-hexagonal.zarr")
    assert ds.sizes["structure"] == 160 and (ds["status"].values == DONE).all()
    assert sorted(set(ds["temperature"].values.tolist())) == [300.0, 1000.0]
    assert ds.attrs["seed"] == 200  # no training set uses this seed
    for k in (0, 159):
        (s,) = dataset_structures(ds, [k])
        assert xtb_energy(s) == pytest.approx(ds["energy"].values[k], abs=1e-4)


def _shipped_relaxation_path(store: str, frames: int, runs: int, run: int) -> tuple:
    """The store (its size, seed and runs checked) and the frames of relaxation ``run``,
    whose first and last labels are recomputed with GFN1-xTB."""
    ds = load_reference(store)
    assert ds.sizes["structure"] == frames and (ds["status"].values == DONE).all()
    assert ds.attrs["seed"] == 100 and sorted(set(ds["run"].values.tolist())) == list(range(runs))
    path = np.flatnonzero(ds["run"].values == run)
    for k in (path[0], path[-1]):
        (s,) = dataset_structures(ds, [k])
        assert xtb_energy(s) == pytest.approx(ds["energy"].values[k], abs=1e-4)
    drop = ds["energy"].values[path[-1]] - ds["energy"].values[path[0]]
    return ds, path, drop / ds["n_atoms"].values[path[0]]


def test_the_shipped_relaxed_set_reproduces_its_labels_and_relaxes():
    # run 9: 41 atoms, a small cell, 215 steps; its pore edges reconstruct (eV/atom)
    _, _, drop = _shipped_relaxation_path("data/relaxed-porous.zarr", 1021, 160, run=9)
    assert drop < -0.4


def test_the_shipped_hexagonal_relaxed_set_starts_from_the_md_cells_and_relaxes():
    # run 8: graphene, 4 vacancies, 72 FIRE steps; the vacancies reconstruct (eV/atom)
    ds, path, drop = _shipped_relaxation_path("data/relaxed-hexagonal.zarr", 1265, 300, run=8)
    assert drop < -0.1
    assert (ds["temperature"].values == 0).all() and (ds["sigma"].values == 0).all()
    start = thermal_runs("hexagonal", 9)[8].structure.positions  # MD run 8's starting cell
    np.testing.assert_allclose(ds["positions"].values[path[0], :len(start)], start, atol=1e-5)


def test_monte_carlo_frames_with_overlapping_atoms_are_left_out(tmp_path):
    from training.thermal import mc_dataset, thermal_runs

    (run,) = thermal_runs("hexagonal", 1, cells=(2, 2), max_vacancies=0)
    frames = np.stack([run.structure.positions] * 3).astype(np.float32)
    frames[1, 1] = frames[1, 0] + [0.2, 0.0, 0.0]  # atom 1 on top of atom 0
    xr.Dataset({"positions": (("frame", "atom", "xyz"), frames)}).to_zarr(
        tmp_path / run.name, zarr_format=3, consolidated=False)
    ds = mc_dataset([run], tmp_path, {"generator": "mc-hexagonal"})
    assert ds.sizes["structure"] == 2 and ds.attrs["overlapping_frames_skipped"] == 1
    np.testing.assert_array_equal(ds["run"].values, [0, 0])
    assert ds["sigma"].shape == (2,)
