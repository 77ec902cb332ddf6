"""Domain-decomposed Monte Carlo on a real two-worker cluster samples as the serial chain does."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ednn_dask.errors import ConfigError
from ednn_dask.mc import ising_chain
from ednn_dask.mc.domains import _sweep_interior, decomposed_ising_chain

ROOT = Path(__file__).resolve().parents[1]
ISING = ROOT / "models" / "ising-2d-f1c1.onnx"


def _agree(a: dict, b: dict, key: str = "energy_per_site") -> None:
    sigma = math.hypot(a[f"{key}_sem"], b[f"{key}_sem"])
    assert abs(a[key] - b[key]) < 3 * sigma, (a[key], b[key], sigma)


@pytest.mark.slow
def test_decomposed_and_serial_chains_agree(local_cluster):
    split = decomposed_ising_chain(ISING, 32, 3.0, 30, regions=2, sweeps_per_phase=6,
                                   thermalize=4, seed=1, client=local_cluster)
    serial = ising_chain(ISING, 32, 3.0, 600, seed=2).summary()
    _agree(split.summary(), serial)
    assert split.drift == pytest.approx(0, abs=1e-3)  # the running total is exact
    assert split.extra["regions"] == 4 and split.extra["region_side"] == 16
    assert 0.3 < split.acceptance < 0.6


def test_a_decomposed_chain_is_the_same_whichever_worker_runs_a_region(local_cluster):
    first = decomposed_ising_chain(ISING, 32, 3.0, 4, regions=2, thermalize=0, seed=1,
                                   sweeps_per_phase=6, client=local_cluster)
    assert first.drift == pytest.approx(0, abs=1e-3)  # the running total is exact
    assert first.extra["regions"] == 4 and first.extra["region_side"] == 16
    np.testing.assert_array_equal(  # the same chain, whichever worker ran which region
        first.energy, decomposed_ising_chain(ISING, 32, 3.0, 4, regions=2, thermalize=0, seed=1,
                                             sweeps_per_phase=6, client=local_cluster).energy)


def test_a_region_flips_only_its_interior():
    from ednn_dask.model import load_model

    block = np.random.default_rng(0).choice(np.float32([-1, 1]), size=(16, 16))
    new, stats = _sweep_interior(block, load_model(ISING), 1e6, 1, 3, (0, 0))
    edge = np.ones_like(block, bool)
    edge[3:-3, 3:-3] = False
    np.testing.assert_array_equal(new[edge], block[edge])
    assert (new[~edge] != block[~edge]).mean() > 0.8  # at T = 1e6 nearly every flip is taken
    assert stats[3] == 10 * 10 and stats[1] == new.sum()


@pytest.mark.parametrize("side, regions", [(30, 4), (32, 5), (32, 6), (12, 2)])
def test_regions_that_do_not_fit_are_refused(side, regions):
    with pytest.raises(ConfigError, match="regions"):
        decomposed_ising_chain(ISING, side, 2.0, 10, regions=regions)


@pytest.mark.slow
@pytest.mark.parametrize("temperature, start", [(2.0, "up"), (3.0, "random")])
def test_decomposed_and_serial_agree_at_l256(local_cluster, temperature, start):
    """The issue's check: L = 256 at T = 2.0 and 3.0, a two-worker cluster against one process."""
    split = decomposed_ising_chain(ISING, 256, temperature, 60, regions=2, sweeps_per_phase=2,
                                   thermalize=20, seed=3, start=start,
                                   client=local_cluster).summary()
    spins = np.ones((256, 256), np.float32) if start == "up" else None
    serial = ising_chain(ISING, 256, temperature, 120, thermalize=40, seed=4,
                         spins=spins).summary()
    _agree(split, serial)
    assert split["energy_drift"] == pytest.approx(0, abs=1e-2)


def test_an_interrupted_decomposed_run_continues_bit_for_bit(tmp_path, monkeypatch,
                                                             local_cluster):
    import xarray as xr

    from ednn_dask.mc import domains

    args = (ISING, 32, 2.5, 6)
    options = dict(regions=2, sweeps_per_phase=2, thermalize=2, seed=7, client=local_cluster,
                   checkpoint_seconds=0)
    whole = decomposed_ising_chain(*args, **options, out=tmp_path / "whole.zarr")
    original, calls = domains._LatticeChain._read, [0]

    def killed(self, stats):
        calls[0] += 1
        if calls[0] == 5:  # after four phases were read and committed
            raise KeyboardInterrupt
        return original(self, stats)

    with monkeypatch.context() as patch:
        patch.setattr(domains._LatticeChain, "_read", killed)
        with pytest.raises(KeyboardInterrupt):
            decomposed_ising_chain(*args, **options, out=tmp_path / "cut.zarr")
    opened = [xr.open_zarr(tmp_path / name, zarr_format=3, consolidated=False).load()
              for name in ("whole.zarr", "cut.zarr")]
    assert opened[1].attrs["frames_done"] == 2 and not opened[1].attrs["complete"]
    resumed = decomposed_ising_chain(*args, **options, out=tmp_path / "cut.zarr")
    opened = [xr.open_zarr(tmp_path / name, zarr_format=3, consolidated=False).load()
              for name in ("whole.zarr", "cut.zarr")]
    assert opened[0].identical(opened[1])
    np.testing.assert_array_equal(resumed.energy, whole.energy)
    np.testing.assert_array_equal(opened[0].energy[0], whole.energy)
    assert resumed.moves == whole.moves and resumed.drift == pytest.approx(0, abs=1e-3)
    in_memory = decomposed_ising_chain(*args, **{**options, "checkpoint_seconds": 5})
    np.testing.assert_array_equal(in_memory.energy, whole.energy)  # checkpoints change nothing


def test_a_regions_store_holds_one_temperature(tmp_path, capsys):
    from ednn_dask.cli import main

    assert main(["mc", "ising", "--model", str(ISING), "--L", "32", "--T", "2,3", "--regions",
                 "2", "--out", str(tmp_path / "run.zarr")]) == 2
    assert "stores one temperature" in capsys.readouterr().err
    assert not (tmp_path / "run.zarr").exists()
