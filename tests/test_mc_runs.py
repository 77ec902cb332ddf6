"""Monte Carlo runs on disk: resumed runs equal uninterrupted ones bit for bit; g(r); the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.errors import ConfigError, OutputExistsError, StructureError
from ednn_dask.mc import InPlaneRDF, ising_scan, run_atoms
from ednn_dask.mc import atoms as mc_atoms
from ednn_dask.mc import lattice as mc_lattice
from ednn_dask.mc.rdf import _cell_list_distances, pair_distances

ROOT = Path(__file__).resolve().parents[1]
ISING = ROOT / "models" / "ising-2d-f1c1.onnx"
HEXAGONAL = ROOT / "models" / "hexagonal-thermal-f16c24.onnx"  # its card covers 1000 K


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path, zarr_format=3, consolidated=False).load()


def _graphene(displacement=0.0, seed=0):
    from ednn_dask.atoms import hexagonal_sheet

    return hexagonal_sheet(np.random.default_rng(seed), "graphene", displacement=displacement)


def _interrupt_after(monkeypatch, cls, name, calls):
    """Make ``cls.name`` raise KeyboardInterrupt on its ``calls``-th call (a kill, in process)."""
    original, count = getattr(cls, name), [0]

    def interrupted(self, *args):
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(cls, name, interrupted)


@pytest.mark.parametrize("stop", [7, pytest.param(431, marks=pytest.mark.slow),
                                  pytest.param(250, marks=pytest.mark.slow),
                                  pytest.param(599, marks=pytest.mark.slow)])
def test_an_interrupted_ising_scan_continues_bit_for_bit(tmp_path, monkeypatch, stop):
    args = (ISING, 8, [2.0, 2.6, 3.0], 160)
    options = dict(seed=4, thermalize=40)
    whole = ising_scan(*args, **options, out=tmp_path / "whole.zarr")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, mc_lattice.IsingChain, "sweep", stop)
        with pytest.raises(KeyboardInterrupt):
            ising_scan(*args, **options, out=tmp_path / "cut.zarr", checkpoint_seconds=0)
    assert not _open(tmp_path / "cut.zarr").attrs["complete"]
    resumed = ising_scan(*args, **options, out=tmp_path / "cut.zarr")
    assert _open(tmp_path / "whole.zarr").identical(_open(tmp_path / "cut.zarr"))
    assert [r["energy_per_site"] for r in whole] == [r["energy_per_site"] for r in resumed]
    assert [r["acceptance"] for r in whole] == [r["acceptance"] for r in resumed]
    in_memory = ising_scan(*args, **options)
    assert [r["energy_per_site"] for r in in_memory] == [r["energy_per_site"] for r in whole]


def test_an_interrupted_atoms_run_continues_bit_for_bit(tmp_path, monkeypatch):
    cell = _graphene()
    args = (cell, HEXAGONAL, 1000.0, 300)
    options = dict(every=15, equilibrate=120, seed=2, progress=False)
    whole = run_atoms(*args, **options, out=tmp_path / "whole.zarr")
    with monkeypatch.context() as patch:  # inside equilibration, and again while measuring
        _interrupt_after(patch, mc_atoms.AtomsChain, "attempt", 70)
        with pytest.raises(KeyboardInterrupt):
            run_atoms(*args, **options, out=tmp_path / "cut.zarr", checkpoint_seconds=0)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, mc_atoms.AtomsChain, "attempt", 200)
        with pytest.raises(KeyboardInterrupt):
            run_atoms(*args, **options, out=tmp_path / "cut.zarr", checkpoint_seconds=0)
    resumed = run_atoms(*args, **options, out=tmp_path / "cut.zarr")
    a, b = _open(tmp_path / "whole.zarr"), _open(tmp_path / "cut.zarr")
    assert a.identical(b)
    np.testing.assert_array_equal(whole.energy, resumed.energy)
    assert whole.acceptance == resumed.acceptance and whole.step == resumed.step
    assert whole.summary()["closest_pair_A"] == resumed.summary()["closest_pair_A"]
    # what the store holds: the layout, in the model's total-energy convention
    assert a["positions"].dims == ("frame", "atom", "xyz") and a.sizes["frame"] == 20
    assert a["positions"].attrs["units"] == "angstrom" and a["energy"].attrs["units"] == "eV"
    np.testing.assert_array_equal(a["numbers"], cell.numbers)
    np.testing.assert_allclose(a["cell"][:2, :2], cell.cell[:2, :2])
    np.testing.assert_array_equal(a["move"], np.arange(1, 21) * 15)
    np.testing.assert_array_equal(a["positions"][:, :, 2], np.broadcast_to(cell.positions[:, 2],
                                                                           (20, len(cell))))
    from ednn_dask import energy
    from ednn_dask.atoms import Structure

    last = Structure(a["positions"][-1].values, cell.numbers, cell.cell, cell.pbc)
    assert a["energy"][-1] == pytest.approx(energy(last, HEXAGONAL, check=False), abs=2e-3)
    assert np.isfinite(a["g_r"]).all() and a["g_r"].max() > 1


def test_another_run_is_refused_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "run.zarr"
    ising_scan(ISING, 8, [2.5], 20, out=out)
    with pytest.raises(OutputExistsError, match="temperatures.*--overwrite"):
        ising_scan(ISING, 8, [2.6], 20, out=out)
    with pytest.raises(OutputExistsError, match="seed"):
        ising_scan(ISING, 8, [2.5], 20, out=out, seed=1)
    (tmp_path / "other").mkdir()
    with pytest.raises(OutputExistsError, match="not a Monte Carlo run"):
        ising_scan(ISING, 8, [2.5], 20, out=tmp_path / "other")
    again = ising_scan(ISING, 8, [2.6], 20, out=out, overwrite=True)
    assert _open(out)["temperature"].values.tolist() == [2.6]
    assert again[0]["sweeps"] == 20


def test_an_atoms_run_keeps_its_hard_core(tmp_path):
    """The hard core is a setting of the stored run: continuing with another is refused."""
    from ednn_dask.atoms import hexagonal_sheet

    cell = hexagonal_sheet(np.random.default_rng(0), "graphene")
    out = tmp_path / "core.zarr"
    run_atoms(cell, HEXAGONAL, 1000.0, 20, every=10, equilibrate=0, out=out,
              progress=False, min_distance=1.1)
    assert _open(out).attrs["config"]["min_distance_A"] == 1.1
    with pytest.raises(OutputExistsError, match="min_distance_A"):
        run_atoms(cell, HEXAGONAL, 1000.0, 20, every=10, equilibrate=0, out=out,
                  progress=False, min_distance=1.2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 400), lx=st.floats(20, 60), ly=st.floats(20, 60),
       r_max=st.floats(1.0, 6.6), seed=st.integers(0, 2**16))
def test_the_cell_list_finds_every_pair_within_the_cutoff(n, lx, ly, r_max, seed):
    cell = np.array([lx, ly])
    xy = np.random.default_rng(seed).random((n, 2)) * cell
    i, j = np.triu_indices(n, 1)
    d = xy[i] - xy[j]
    d -= cell * np.round(d / cell)
    expected = np.sort(np.hypot(d[:, 0], d[:, 1]))
    expected = expected[expected < r_max]
    np.testing.assert_allclose(np.sort(_cell_list_distances(xy, cell, r_max)), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(np.sort(pair_distances(xy, cell, r_max)), expected, rtol=1e-12)


def test_g_of_r_counts_the_three_neighbours_of_graphene_and_is_one_for_a_gas():
    sheet = _graphene()
    cell = np.diag(sheet.cell)[:2]
    rdf = InPlaneRDF(cell, len(sheet), bins=300)
    rdf.add(sheet.positions[:, :2])
    density = len(sheet) / np.prod(cell)
    first = rdf.r < 1.8
    shells = math.pi * np.diff(rdf.edges**2)
    # rho * sum g 2 pi r dr over the first shell: 3 N / (N - 1) with g normalized by N - 1 pairs
    assert (density * rdf.g() * shells)[first].sum() == pytest.approx(3 * len(sheet)
                                                                      / (len(sheet) - 1))
    assert rdf.r[np.argmax(rdf.g())] == pytest.approx(1.42, abs=0.03)
    gas = InPlaneRDF([80.0, 80.0], 20000, r_max=10, bins=10)
    gas.add(np.random.default_rng(0).random((20000, 2)) * 80)
    np.testing.assert_allclose(gas.g(), 1, atol=0.02)
    with pytest.raises(ConfigError, match="half the shorter side"):
        InPlaneRDF(cell, len(sheet), r_max=7.0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), frames=st.integers(1, 4), side=st.floats(12, 40),
       seed=st.integers(0, 2**16))
def test_the_closest_pair_is_the_smallest_minimum_image_distance_of_any_frame(n, frames, side,
                                                                             seed):
    cell = np.array([side, side * 0.8])
    rdf = InPlaneRDF(cell, n, bins=100)
    expected = math.inf
    for xy in np.random.default_rng(seed).random((frames, n, 2)) * cell:
        rdf.add(xy)
        d = xy[:, None] - xy[None]
        d -= cell * np.round(d / cell)
        r = np.hypot(d[..., 0], d[..., 1])[np.triu_indices(n, 1)]
        expected = min(expected, r.min())
    assert rdf.closest == (pytest.approx(expected, rel=1e-12) if expected < rdf.r_max
                           else math.inf)
    again = InPlaneRDF(cell, n, bins=100)
    again.restore(rdf.state())
    assert again.closest == rdf.closest and again.frames == frames
    older = {k: v for k, v in rdf.state().items() if k != "rdf_closest"}
    again.restore(older)  # a checkpoint without it: a lower bound within one bin
    if math.isfinite(rdf.closest):
        assert rdf.closest - rdf.edges[1] < again.closest <= rdf.closest
    else:
        assert again.closest == math.inf


def test_a_chain_that_brings_atoms_closer_than_md_does_is_warned(tmp_path):
    import warnings

    from ednn_dask.atoms import Structure
    from ednn_dask.atoms.references import CLOSEST_PAIR_A
    from ednn_dask.errors import ExtrapolationWarning

    cell = _graphene()  # its bonds are 1.42 Å; then one of atom 0's pulled to 1.0 Å
    positions = cell.positions.copy()
    nearest = np.argmin(np.linalg.norm(positions[1:] - positions[0], axis=1)) + 1
    bond = positions[nearest] - positions[0]
    positions[nearest] = positions[0] + bond / np.linalg.norm(bond)
    squeezed = Structure(positions, cell.numbers, cell.cell, cell.pbc)
    options = dict(every=10, equilibrate=0, step=0.01, progress=False)
    for structure, warned in ((cell, False), (squeezed, True)):
        out = tmp_path / f"{warned}.zarr"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExtrapolationWarning)
            run = run_atoms(structure, HEXAGONAL, 1000.0, 20, **options, out=out)
        said = [str(w.message) for w in caught if w.category is ExtrapolationWarning]
        frames = _open(out)["positions"].values[:, :, :2]
        closest = min(pair_distances(xy, np.diag(cell.cell)[:2], 3.0).min() for xy in frames)
        assert run.summary()["closest_pair_A"] == pytest.approx(closest, rel=1e-12)
        assert (closest < CLOSEST_PAIR_A) == warned and len(said) == warned
    assert said[0].startswith(f"the chain of {HEXAGONAL.name} at 1000 K brought two atoms "
                              f"{closest:.2f} Å apart")


@settings(max_examples=10, deadline=None)
@given(bins=st.integers(80, 400), sigma=st.floats(0.02, 0.07))
def test_the_first_three_peaks_of_warm_graphene_are_found_finer_than_a_bin(bins, sigma):
    sheet = _graphene()
    cell = np.diag(sheet.cell)[:2]
    bond = float(np.sort(pair_distances(sheet.positions[:, :2], cell, 1.8))[0])
    rdf = InPlaneRDF(cell, len(sheet), bins=bins)
    rng = np.random.default_rng(bins)
    for _ in range(400):
        rdf.add(sheet.positions[:, :2] + rng.normal(0, sigma, (len(sheet), 2)))
    peaks = rdf.peaks(3)
    # bond, second and third neighbours: a, a sqrt(3), 2a; the noise moves each peak out
    # by about sigma^2 / r (the distance of two Gaussian points is Rice-distributed), and
    # the tails of the 2nd and 3rd peaks overlap (a shift of ~0.015 Å at sigma = 0.08 Å)
    for peak, r in zip(peaks, bond * np.array([1, 3**0.5, 2]), strict=True):
        assert abs(peak["position_A"] - r - sigma**2 / r) < 0.015
    heights = [p["height"] for p in peaks]
    assert heights[0] > heights[2] > 1 and heights[1] > 1
    assert rdf.peaks(1) == peaks[:1]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="every <= steps"):
        run_atoms(_graphene(), HEXAGONAL, 1000.0, 10, every=20)
    with pytest.raises(ConfigError, match="sweeps >= 1"):
        ising_scan(ISING, 8, [2.0], 0)
    from ednn_dask.atoms.structure import read_structure

    with pytest.raises(StructureError, match="no structure file"):
        read_structure(tmp_path / "missing.extxyz")
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    with pytest.raises(StructureError, match="cannot read"):
        read_structure(tmp_path / "junk.xyz")


def _cli(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "ednn_dask.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_mc_atoms_killed_and_run_again_equals_the_uninterrupted_run(tmp_path):
    """SIGKILL a real `ednn-dask mc atoms` once it has saved its state; the same command
    continues it, and the store equals that of a run never interrupted."""
    structure = tmp_path / "graphene.extxyz"
    _graphene(0.02, seed=1).to_ase().write(structure)
    argv = ["mc", "atoms", "--model", HEXAGONAL, "--structure", structure, "--T", "1000",
            "--steps", "600", "--every", "10", "--equilibrate", "100", "--seed", "5",
            "--checkpoint", "0.3"]
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    done = _cli(*argv, "--out", whole, "--json")  # beside the run to be killed: its own store
    proc = _cli(*argv, "--out", cut)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        attrs = json.loads((cut / "zarr.json").read_text())["attributes"] \
            if (cut / "zarr.json").exists() else {}
        if attrs.get("frames_done", 0) >= 20:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not _open(cut).attrs["complete"], "the run ended before it could be killed"
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    summary = json.loads(out)
    assert {"acceptance", "moves_per_second", "energy_mean", "energy_sem"} <= summary.keys()
    again = _cli(*argv, "--out", cut, "--json", "--plot", tmp_path / "run.png")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert _open(whole).identical(_open(cut))
    assert json.loads(out)["energy_mean"] == summary["energy_mean"]
    assert (tmp_path / "run.png").stat().st_size > 10_000
    other = _cli(*argv[:-2], "--checkpoint", "1", "--T", "900", "--out", cut)
    _, err = other.communicate(timeout=300)
    assert other.returncode == 2 and "settings differ: temperature_K" in err
    assert len(err.strip().splitlines()) == 1


def test_mc_ising_cli_writes_the_scan_and_its_plot(tmp_path):
    proc = _cli("mc", "ising", "--model", ISING, "--L", "8", "--T", "2.0,3.0", "--sweeps", "50",
                "--out", tmp_path / "scan.zarr", "--plot", tmp_path / "scan.png", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["temperature"] for r in rows] == [2.0, 3.0]
    scan = _open(tmp_path / "scan.zarr")
    assert scan["energy"].shape == (2, 50) and np.isfinite(scan["energy"]).all()
    assert rows[1]["energy_per_site"] == pytest.approx(float(scan["energy"][1].mean()))
    assert (tmp_path / "scan.png").stat().st_size > 10_000
    proc = _cli("mc", "ising", "--model", ISING, "--T", "2.0", "--plot", tmp_path / "x.png")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--out" in err
