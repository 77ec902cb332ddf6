"""Tests of training.datasets: exact targets, Monte Carlo sampler, Zarr storage."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from training.datasets import dataset_hash, load_dataset, save_dataset
from training.ising import TC_2D, TC_3D, ising_energy, sample_ising
from training.laplacian import laplacian_dataset, laplacian_images, laplacian_target

# ------------------------------------------------------------------ ising_energy


def _energy_by_loop(spins: np.ndarray, J: float = 1.0) -> float:
    """Energy of one periodic configuration, one bond per site and axis (i -> i+1)."""
    energy = 0.0
    for site in itertools.product(*(range(n) for n in spins.shape)):
        for axis in range(spins.ndim):
            neighbour = list(site)
            neighbour[axis] = (neighbour[axis] + 1) % spins.shape[axis]
            energy -= J * spins[site] * spins[tuple(neighbour)]
    return energy


def _random_spins(shape: tuple[int, ...], seed: int, dtype: type = np.int8) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=dtype), size=shape)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.sampled_from([2, 3]),
    L=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
    J=st.sampled_from([1.0, -1.0, 0.5]),
    dtype=st.sampled_from([np.int8, np.int64, np.float32, np.float64]),
)
def test_ising_energy_matches_loop_over_bonds(dim, L, seed, J, dtype):
    spins = _random_spins((L,) * dim, seed, dtype)
    energy = ising_energy(spins, J=J)
    assert energy.dtype == np.float64 and energy.shape == ()
    assert energy == pytest.approx(_energy_by_loop(spins.astype(np.int64), J))


def test_ising_energy_rectangular_and_batched():
    spins = _random_spins((6, 3, 5), seed=1)
    energies = ising_energy(spins, dim=2)
    assert energies.shape == (6,)
    np.testing.assert_allclose(energies, [_energy_by_loop(s) for s in spins])


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("L", [2, 4, 6])
def test_ising_energy_ground_state_and_checkerboard(dim, L):
    up = np.ones((L,) * dim, dtype=np.int8)
    assert ising_energy(up) == -dim * L**dim
    assert ising_energy(-up) == -dim * L**dim
    checkerboard = np.where(np.indices(up.shape).sum(axis=0) % 2 == 0, 1, -1).astype(np.int8)
    assert ising_energy(checkerboard) == dim * L**dim


@pytest.mark.parametrize("bad", [0, 2, 0.5])
def test_ising_energy_rejects_values_other_than_plus_minus_one(bad):
    spins = np.ones((4, 4))
    spins[1, 2] = bad
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        ising_energy(spins)


def test_ising_energy_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim"):
        ising_energy(np.ones((4, 4)), dim=3)


# ------------------------------------------------------------------ sample_ising


def _magnetisation(ds: xr.Dataset) -> np.ndarray:
    lattice = tuple(range(1, ds.spins.ndim))
    return ds.spins.values.astype(np.float64).mean(axis=lattice)


def test_sample_ising_dataset_layout_2d():
    ds = sample_ising(12, 6, seed=3, sweeps=5)
    assert ds.spins.dims == ("sample", "y", "x") and ds.spins.shape == (12, 6, 6)
    assert ds.spins.dtype == np.int8
    assert ds.energy.dims == ("sample",) and ds.energy.dtype == np.float64
    assert ds.temperature.dims == ("sample",) and ds.temperature.dtype == np.float64
    assert set(np.unique(ds.spins.values)) <= {-1, 1}
    np.testing.assert_array_equal(ds.energy.values, ising_energy(ds.spins.values, dim=2))
    assert np.all((ds.temperature >= 1.0) & (ds.temperature <= 5.0))
    for key, value in {
        "L": 6,
        "dim": 2,
        "seed": 3,
        "sweeps": 5,
        "J": 1.0,
        "target": "energy",
        "target_unit": "J",
        "boundary": "periodic",
    }.items():
        assert ds.attrs[key] == value
    assert "sample_ising" in ds.attrs["generator"]


def test_sample_ising_dataset_layout_3d():
    ds = sample_ising(5, 3, dim=3, seed=0, sweeps=5)
    assert ds.spins.dims == ("sample", "z", "y", "x") and ds.spins.shape == (5, 3, 3, 3)
    np.testing.assert_array_equal(ds.energy.values, ising_energy(ds.spins.values, dim=3))


def test_sample_ising_is_deterministic_per_seed():
    a = sample_ising(30, 8, seed=7, sweeps=20)
    b = sample_ising(30, 8, seed=7, sweeps=20)
    c = sample_ising(30, 8, seed=8, sweeps=20)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.spins.values, c.spins.values)
    assert not np.array_equal(a.temperature.values, c.temperature.values)


def test_sample_ising_chains_do_not_depend_on_batching():
    # Each chain has its own random stream: a prefix of a run equals a shorter run
    # with the same per-sample temperatures.
    temps = np.linspace(1.0, 4.0, 40)
    long = sample_ising(40, 6, temperatures=temps, seed=2, sweeps=10)
    short = sample_ising(10, 6, temperatures=temps[:10], seed=2, sweeps=10)
    np.testing.assert_array_equal(long.spins.values[:10], short.spins.values)


def test_sample_ising_progress_bar_does_not_change_samples():
    quiet = sample_ising(40, 6, seed=9, sweeps=10)
    xr.testing.assert_identical(sample_ising(40, 6, seed=9, sweeps=10, progress=True), quiet)


@pytest.mark.parametrize(
    "dim, L, cold, hot", [(2, 8, 1.0, 5.0), (2, 16, 1.5, 6.0), (3, 4, 2.5, 9.0)]
)
def test_sample_ising_low_t_ordered_high_t_disordered(dim, L, cold, hot):
    m_cold = _magnetisation(sample_ising(100, L, dim=dim, temperatures=cold, seed=1, sweeps=50))
    m_hot = _magnetisation(sample_ising(100, L, dim=dim, temperatures=hot, seed=1, sweeps=50))
    assert np.mean(np.abs(m_cold) > 0.9) >= 0.95
    assert np.any(m_cold > 0) and np.any(m_cold < 0)  # both signs of the ordered state
    assert np.mean(np.abs(m_hot)) < 0.2


def _exact_averages(L: int, dim: int, T: float) -> tuple[float, float]:
    """Boltzmann averages of E and m**2 by enumerating every configuration of a small lattice."""
    n_sites = L**dim
    codes = np.arange(2**n_sites)[:, None] >> np.arange(n_sites) & 1
    spins = (2 * codes - 1).astype(np.int8).reshape((-1,) + (L,) * dim)
    energies = ising_energy(spins, dim=dim)
    weights = np.exp(-(energies - energies.min()) / T)
    weights /= weights.sum()
    m2 = spins.reshape(len(spins), -1).mean(axis=1) ** 2
    return float(np.sum(weights * energies)), float(np.sum(weights * m2))


@pytest.mark.parametrize(
    "dim, L, T",
    [
        (2, 4, 1.8),  # Metropolis + Wolff, ordered
        (2, 4, TC_2D),  # Metropolis + Wolff, critical
        (2, 3, 2.0),  # odd L: the checkerboard is not bipartite
        (2, 4, 3.5),  # Metropolis only
        (3, 2, 3.0),  # L = 2: doubled periodic bonds, Metropolis + Wolff
        (3, 2, 6.0),  # L = 2, Metropolis only
    ],
)
def test_sample_ising_matches_exact_enumeration(dim, L, T):
    # Independent chains: the sample means of E and m**2 must agree with the exact
    # Boltzmann averages within 4 standard errors (a biased update fails this).
    n = 3000
    ds = sample_ising(n, L, dim=dim, temperatures=T, seed=11, sweeps=30)
    exact_energy, exact_m2 = _exact_averages(L, dim, T)
    for values, exact in [(ds.energy.values, exact_energy), (_magnetisation(ds) ** 2, exact_m2)]:
        stderr = values.std() / math.sqrt(n)
        assert abs(values.mean() - exact) < 4 * stderr + 1e-9


def test_sample_ising_temperature_forms():
    assert np.all(sample_ising(4, 4, temperatures=2.0, sweeps=1).temperature == 2.0)
    per_sample = [1.0, 2.0, 3.0]
    ds = sample_ising(3, 4, temperatures=per_sample, sweeps=1)
    np.testing.assert_array_equal(ds.temperature, per_sample)
    ranged = sample_ising(50, 4, temperatures=(2.0, 3.0), sweeps=1).temperature
    assert np.all((ranged >= 2.0) & (ranged <= 3.0)) and np.ptp(ranged.values) > 0.5
    for dim, tc in [(2, TC_2D), (3, TC_3D)]:
        ds = sample_ising(50, 4, dim=dim, temperatures=1.0, near_critical=True, sweeps=1)
        assert np.all(np.abs(ds.temperature - tc) <= 0.1)
        assert ds.attrs["near_critical"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperatures": [1.0, 2.0]},  # wrong length
        {"temperatures": -1.0},
        {"temperatures": (3.0, 2.0)},
        {"dim": 4},
        {"L": 1},
    ],
)
def test_sample_ising_rejects_bad_arguments(kwargs):
    args = {"n": 3, "L": 4, "sweeps": 1} | kwargs
    with pytest.raises(ValueError):
        sample_ising(**args)


# --------------------------------------------------------------------- Laplacian


def _laplacian_by_loop(image: np.ndarray) -> float:
    H, W = image.shape
    total = 0.0
    for i in range(H):
        for j in range(W):
            total += abs(
                image[(i - 1) % H, j]
                + image[(i + 1) % H, j]
                + image[i, (j - 1) % W]
                + image[i, (j + 1) % W]
                - 4 * image[i, j]
            )
    return total


@settings(max_examples=25, deadline=None)
@given(H=st.integers(1, 9), W=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_laplacian_target_matches_loop(H, W, seed):
    image = np.random.default_rng(seed).standard_normal((H, W))
    target = laplacian_target(image)
    assert target.shape == () and target.dtype == np.float64
    assert target == pytest.approx(_laplacian_by_loop(image), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("L, k, q", [(20, 1, 3), (30, 2, 5), (64, 7, 1)])
def test_laplacian_target_of_plane_waves(L, k, q):
    # The 5-point Laplacian of sin(2 pi k x / L) is sin(2 pi k x / L) * (2 cos(2 pi k / L) - 2).
    y, x = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    sx, cy = np.sin(2 * np.pi * k * x / L), np.cos(2 * np.pi * q * y / L)
    image = sx + cy
    exact = sx * (2 * np.cos(2 * np.pi * k / L) - 2) + cy * (2 * np.cos(2 * np.pi * q / L) - 2)
    assert laplacian_target(image) == pytest.approx(np.abs(exact).sum(), rel=1e-10)
    assert laplacian_target(np.ones((L, L))) == 0.0


def test_laplacian_target_batched():
    images = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(np.float32)
    targets = laplacian_target(images)
    assert targets.shape == (4,) and targets.dtype == np.float64
    np.testing.assert_allclose(
        targets, [_laplacian_by_loop(im.astype(np.float64)) for im in images]
    )
    with pytest.raises(ValueError):
        laplacian_target(np.zeros(5))


def test_laplacian_images_are_normalised_smooth_and_deterministic():
    images = laplacian_images(8, 40, seed=5)
    assert images.shape == (8, 40, 40) and images.dtype == np.float32
    np.testing.assert_allclose(images.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(images.std(axis=(1, 2)), 1, rtol=1e-4)
    # Smooth: far smaller Laplacian than white noise of the same variance (~ 4.4 per pixel).
    assert np.all(laplacian_target(images) / 40**2 < 1.5)
    np.testing.assert_array_equal(images, laplacian_images(8, 40, seed=5))
    assert not np.array_equal(images, laplacian_images(8, 40, seed=6))


def test_laplacian_images_correlation_length_controls_smoothness():
    rough = laplacian_target(laplacian_images(6, 40, seed=0, correlation_length=1.5))
    smooth = laplacian_target(laplacian_images(6, 40, seed=0, correlation_length=6.0))
    assert np.all(smooth < rough)
    with pytest.raises(ValueError):
        laplacian_images(2, 10, correlation_length=0.0)


def test_laplacian_dataset_layout():
    ds = laplacian_dataset(5, 20, seed=4)
    assert ds.image.dims == ("sample", "y", "x") and ds.image.dtype == np.float32
    assert ds.target.dims == ("sample",) and ds.target.dtype == np.float64
    np.testing.assert_array_equal(ds.target.values, laplacian_target(ds.image.values))
    np.testing.assert_array_equal(ds.image.values, laplacian_images(5, 20, seed=4))
    assert ds.attrs["target"] == "sum_abs_laplacian" and ds.attrs["target_unit"] == "1"
    assert ds.attrs["boundary"] == "periodic" and ds.attrs["L"] == 20 and ds.attrs["seed"] == 4


# ----------------------------------------------------------------------- storage


@pytest.fixture(scope="module")
def ising_ds() -> xr.Dataset:
    ds = sample_ising(20, 4, seed=0, sweeps=5)
    # A zero must come back as zero, not as NaN (the Zarr fill value of float arrays).
    ds.energy.values[0] = 0.0
    return ds


def test_save_load_round_trip(tmp_path, ising_ds):
    path = save_dataset(ising_ds, tmp_path / "ising.zarr")
    assert path == tmp_path / "ising.zarr"
    loaded = load_dataset(path)
    xr.testing.assert_identical(loaded, ising_ds)
    assert loaded.spins.dtype == np.int8
    assert dataset_hash(loaded) == dataset_hash(ising_ds)
    assert [p.name for p in tmp_path.iterdir()] == ["ising.zarr"]


def test_save_refuses_to_overwrite_and_overwrite_replaces(tmp_path, ising_ds):
    path = tmp_path / "data.zarr"
    save_dataset(ising_ds, path)
    other = laplacian_dataset(3, 10, seed=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_dataset(other, path)
    xr.testing.assert_identical(load_dataset(path), ising_ds)
    save_dataset(other, path, overwrite=True)
    xr.testing.assert_identical(load_dataset(path), other)
    assert [p.name for p in tmp_path.iterdir()] == ["data.zarr"]


def test_failed_write_leaves_old_store_and_no_temporaries(tmp_path, ising_ds):
    path = tmp_path / "data.zarr"
    save_dataset(ising_ds, path)
    broken = ising_ds.assign_attrs(not_json=object())
    with pytest.raises(Exception):  # noqa: B017 - whatever zarr raises for the bad attr
        save_dataset(broken, path, overwrite=True)
    xr.testing.assert_identical(load_dataset(path), ising_ds)
    assert [p.name for p in tmp_path.iterdir()] == ["data.zarr"]


def test_save_creates_missing_parent(tmp_path, ising_ds):
    path = save_dataset(ising_ds, tmp_path / "a" / "b" / "set.zarr")
    xr.testing.assert_identical(load_dataset(path), ising_ds)


def test_load_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data set"):
        load_dataset(tmp_path / "nothing.zarr")


def test_dataset_hash(ising_ds):
    digest = dataset_hash(ising_ds)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert dataset_hash(ising_ds.copy(deep=True)) == digest
    assert dataset_hash(ising_ds.assign_attrs(extra=1)) == digest  # attrs are not content
    changed = ising_ds.copy(deep=True)
    changed.spins.values[0, 0, 0] *= -1
    assert dataset_hash(changed) != digest
    assert dataset_hash(ising_ds.assign(energy=ising_ds.energy.astype(np.float32))) != digest
