"""Pair nets fitted in closed form: exact for pair energies within reach, on every path."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.errors import ConfigError, DataSetError
from training.pair_fit import PairDesign, cross_pair_features, orbit_labels, pair_features


def lattices(n, L, seed):
    rng = np.random.default_rng(seed)
    return rng.choice(np.float32([-1, 0, 1]), size=(n, L, L), p=[0.2, 0.6, 0.2])


def symmetric_kernel(reach, seed):
    """A random kernel with the square's symmetry (flips, transposition)."""
    labels, n = orbit_labels((reach, reach))
    return np.random.default_rng(seed).normal(size=n)[labels]


def pair_energy(x, kernel, b=0.0, mu=0.0):
    """b N + mu sum x + sum_p x_p sum_d kernel(d) x_{p+d}, by rolling (periodic)."""
    x = np.asarray(x, dtype=np.float64)
    c = kernel.shape[0] // 2
    total = b * x[0].size + mu * x.sum(axis=(1, 2))
    for i in range(-c, c + 1):
        for j in range(-c, c + 1):
            shifted = np.roll(x, (-i, -j), axis=(1, 2))  # x_{p+d}
            total = total + kernel[i + c, j + c] * (x * shifted).sum(axis=(1, 2))
    return total


def write_set(path, fields, energies):
    import xarray as xr

    from training.datasets import save_dataset

    save_dataset(xr.Dataset({"field": (("sample", "y", "x"), fields, {"lattice": True}),
                             "target": (("sample",), energies, {"units": "J"})}), path)


@settings(max_examples=25, deadline=None)
@given(L=st.integers(3, 12), context=st.integers(0, 4), factor=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 100))
def test_pair_features_are_the_pair_sums_per_orbit(L, context, factor, seed):
    x = lattices(2, L * factor, seed)
    labels, n = orbit_labels((context, context))
    got = pair_features(x, (factor, factor), (context, context), labels, n)
    coarse = x.astype(np.float64).reshape(2, L, factor, L, factor).mean(axis=(2, 4))
    want = np.zeros((2, n))
    for i in range(-context, context + 1):
        for j in range(-context, context + 1):
            shifted = np.roll(coarse, (-i, -j), axis=(1, 2))
            want[:, labels[i + context, j + context]] += (coarse * shifted).sum(axis=(1, 2))
    np.testing.assert_allclose(got, want, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(ny=st.integers(3, 10), nx=st.integers(3, 10), cy=st.integers(0, 3), cx=st.integers(0, 3),
       channels=st.integers(1, 3), seed=st.integers(0, 100))
def test_cross_pair_features_are_the_pair_sums_between_channels(ny, nx, cy, cx, channels, seed):
    x = np.random.default_rng(seed).normal(size=(2, channels, ny, nx))
    labels, n = orbit_labels((cy, cx))
    got = cross_pair_features(x, (cy, cx))
    want = [x.sum(axis=(2, 3))]
    for c in range(channels):
        for d in range(c, channels):
            part = np.zeros((2, n))
            for i in range(-cy, cy + 1):
                for j in range(-cx, cx + 1):  # x_c(p) x_d(p + (i, j)), periodic
                    shifted = np.roll(x[:, d], (-i, -j), axis=(1, 2))
                    part[:, labels[i + cy, j + cx]] += (x[:, c] * shifted).sum(axis=(1, 2))
            want.append(part)
    np.testing.assert_allclose(got, np.concatenate(want, axis=1), atol=1e-9)


def test_orbits_have_the_symmetry_of_the_window():
    labels, n = orbit_labels((2, 2))
    assert n == 6  # (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert (labels == labels.T).all() and (labels == labels[::-1]).all()
    rect, m = orbit_labels((1, 2))  # no transposition for a rectangle
    assert m == 6 and rect.shape == (3, 5)


def test_a_pair_energy_is_fitted_exactly_and_every_path_agrees(tmp_path):
    """Bonds of reach 2 with a chemical potential and a constant: the fitted net (torch,
    on the test split) and the ONNX model (numpy and dask, on fresh fields of another
    size) are exact."""
    from ednn_dask import load_model, score
    from ednn_dask.inference import contributions
    from training.fields import build_field_ednn, train_fields

    kernel = symmetric_kernel(2, seed=1)
    fields = lattices(60, 12, seed=2)
    write_set(tmp_path / "pairs.zarr", fields, pair_energy(fields, kernel, b=0.3, mu=-1.2))
    result = train_fields(tmp_path / "pairs.zarr", tmp_path / "pair.onnx", field="field",
                          target="target", focus=4, context=2, net="pair",
                          workdir=tmp_path / "w", progress=False)
    assert result["method"].startswith("closed-form") and result["rank"] == result["unknowns"]
    assert result["test"]["mae"] < 1e-4 * np.abs(pair_energy(fields, kernel)).mean()
    model = load_model(tmp_path / "pair.onnx")
    fresh = lattices(3, 20, seed=3)
    exact = pair_energy(fresh, kernel, b=0.3, mu=-1.2)
    numpy_path = [contributions(x, model).sum(dtype=np.float64) for x in fresh]
    dask_path = [score(x, model, chunks=8).energy for x in fresh]
    np.testing.assert_allclose(numpy_path, exact, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dask_path, numpy_path, rtol=1e-6, atol=1e-4)
    ednn = build_field_ednn("pair", 2, 1, 4, 2, "periodic")
    assert sum(p.numel() for p in ednn.parameters()) == model.spec.provenance["n_parameters"]


def test_two_scales_fit_a_two_scale_pair_energy_exactly(tmp_path):
    """Fine bonds of reach 1 plus bonds of the 2x2 block means of reach 1: the
    multi-scale pair model (1:2:1, 2:1:1) holds both exactly, through numpy and dask."""
    from ednn_dask import load_model, score
    from ednn_dask.inference import contributions
    from training.fields import train_fields

    fine, coarse = symmetric_kernel(1, seed=4), symmetric_kernel(1, seed=5)

    def energy(x):
        blocks = x.reshape(len(x), x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(axis=(2, 4))
        return pair_energy(x, fine) + pair_energy(blocks, coarse)

    fields = lattices(60, 12, seed=6)
    write_set(tmp_path / "two.zarr", fields, energy(fields))
    train_fields(tmp_path / "two.zarr", tmp_path / "two.onnx", field="field", target="target",
                 scales="1:2:1,2:1:1", net="pair", workdir=tmp_path / "w", progress=False)
    model = load_model(tmp_path / "two.onnx")
    assert [s.factor for s in model.spec.scales] == [(1, 1), (2, 2)]
    fresh = lattices(3, 16, seed=7)
    got = [contributions(x, model).sum(dtype=np.float64) for x in fresh]
    np.testing.assert_allclose(got, energy(fresh), rtol=1e-5, atol=1e-4)
    for chunks in (4, 8, (12, 4)):  # whole blocks of both branches
        on_dask = [score(x, model, chunks=chunks).energy for x in fresh]
        np.testing.assert_allclose(on_dask, got, rtol=1e-6, atol=1e-4)


def test_design_columns_match_the_scales():
    design = PairDesign([((1, 1), (2, 2)), ((2, 2), (1, 1))])
    assert design.n_columns == 2 + 6 + 3
    b, mu, kernels = design.kernels(np.arange(11.0))
    assert (b, mu) == (0.0, 1.0) and kernels[0][2, 2] == 2.0 and kernels[1].shape == (3, 3)


@pytest.mark.parametrize("change, error, says", [
    ({"boundary": 0.0}, ConfigError, "periodic"),
    ({"context": 6}, DataSetError, "more samples"),
])
def test_pair_fits_it_cannot_do_are_refused(tmp_path, change, error, says):
    from training.fields import train_fields

    fields = lattices(30, 12, seed=8)
    write_set(tmp_path / "s.zarr", fields, pair_energy(fields, symmetric_kernel(1, 9)))
    kwargs = {"focus": 4, "context": 1, "net": "pair", **change}
    with pytest.raises(error, match=says):
        train_fields(tmp_path / "s.zarr", tmp_path / "m.onnx", field="field", target="target",
                     workdir=tmp_path / "w", progress=False, **kwargs)
    assert not (tmp_path / "m.onnx").exists()
