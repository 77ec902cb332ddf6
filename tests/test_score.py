"""Equal energies across the torch EDNN, the numpy tile and dense paths, and the dask pipeline.

Tolerances: every path computes the same float32 network on the same float32
inputs; they differ only in how onnxruntime/torch associate sums inside a layer
(batch sizes and conv algorithms), about 1e-6 relative per contribution. Energies
are summed in float64, so two paths differ by at most n_tiles times the worst
per-contribution difference: we allow RTOL * max|contribution| per tile.
The hand-set Ising nets compute in small integers, where float32 is exact: there
we assert exact equality with the exact energy.
"""

from __future__ import annotations

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ednn_dask import contributions, make_field, open_field, save_field, score
from ednn_dask.errors import FieldError, GeometryError
from ednn_dask.score import align, contribution_map
from tests.helpers import ising_energy_np

RTOL = 2e-5


def spins(shape, seed=0):
    return np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), size=shape)


def torch_contributions(ednn, field, dense=False):
    x = torch.as_tensor(np.asarray(field, np.float32))
    x = x[None, None] if x.dim() == ednn.tiling.ndim else x[None]
    with torch.no_grad():
        return ednn.contributions(x, dense=dense)[0].double().numpy()


def assert_same(a, b, scale):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL * scale)


# --- exact answers ----------------------------------------------------------------------


def test_hand_checked_periodic_wraparound(exact_ising2d):
    """4x4 all up with the corner spin flipped: -24 J periodic, -20 J with open edges.

    Periodic: 32 bonds, the flipped corner breaks 4 of them (2 through the wrap):
    -32 + 2*4 = -24. Open (constant 0 outside): 24 bonds, the corner has only 2:
    -24 + 2*2 = -20. Only the wrap-around makes the periodic answer right.
    """
    _, dense, tile = exact_ising2d
    lattice = np.ones((4, 4), np.int8)
    lattice[0, 0] = -1
    for model in (dense, tile):
        assert score(lattice, model).energy == -24.0
        assert score(lattice, model, boundary=0.0).energy == -20.0
        expected = np.full((4, 4), -2.0)
        expected[0, 0] = 2.0  # both forward bonds broken
        expected[3, 0] = expected[0, 3] = 0.0  # one broken bond each, through the wrap
        np.testing.assert_array_equal(contributions(lattice, model), expected)
        assert contributions(lattice, model, boundary=0.0)[3, 0] == -1.0  # nothing below


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ny=st.integers(1, 24), nx=st.integers(1, 24), cy=st.integers(1, 9), cx=st.integers(1, 9),
       seed=st.integers(0, 2**16), periodic=st.booleans())
def test_exact_ising_energy_any_grid_any_chunking(exact_ising2d, ny, nx, cy, cx, seed, periodic):
    _, dense, tile = exact_ising2d
    lattice = spins((ny, nx), seed)
    boundary = "periodic" if periodic else 0.0
    expected = ising_energy_np(lattice.astype(float), open_boundary=not periodic)
    for model in (dense, tile):
        result = score(lattice, model, chunks=(cy, cx), boundary=boundary)
        assert result.energy == expected
        assert result.n_tiles == ny * nx


def test_exact_ising_3d(exact_ising3d):
    _, model = exact_ising3d
    lattice = spins((6, 4, 5), 3)
    assert score(lattice, model, chunks=2).energy == ising_energy_np(lattice.astype(float))
    assert score(lattice, model, boundary=0.0).energy == ising_energy_np(
        lattice.astype(float), open_boundary=True)


# --- all paths agree for random nets ------------------------------------------------------


def _grid_for(data, focus, context, boundary, max_blocks=5):
    blocks = [data.draw(st.integers(1, max_blocks)) for _ in focus]
    shape = [b * f for b, f in zip(blocks, focus)]
    if boundary == "periodic":
        shape = [max(s, -(-c // f) * f) for s, f, c in zip(shape, focus, context)]
    return tuple(shape)


def _chunks_for(data, shape, focus, context):
    out = []
    for n, f, c in zip(shape, focus, context):
        step = max(f, -(-c // f) * f)
        out.append(data.draw(st.sampled_from(range(step, n + 1, f))) if n >= step else n)
    return tuple(out)


@pytest.mark.parametrize("fixture", ["cnn2d", "cnn2d_mean", "cnn2d_aa", "cnn2d_pf", "cnn3d",
                                     "mlp2d"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_all_paths_agree(request, fixture, data):
    ednn, model, *tile_model = request.getfixturevalue(fixture)
    spec = model.spec
    shape = _grid_for(data, spec.focus, spec.context, spec.boundary)
    field = np.random.default_rng(data.draw(st.integers(0, 99))).normal(
        size=(spec.channels, *shape) if spec.channels > 1 else shape).astype(np.float32)
    reference = torch_contributions(ednn, field)
    scale = np.abs(reference).max() + 1e-3
    assert_same(torch_contributions(ednn, field, dense=True), reference, scale)
    for m in (model, *tile_model):
        for method in ("tiles", "dense") if m.spec.kind == "dense" else ("tiles",):
            assert_same(contributions(field, m, method=method), reference, scale)
    chunks = _chunks_for(data, shape, spec.focus, spec.context)
    result = score(field, model, chunks=chunks, spacing=spec.spacing)
    assert_same(result.contributions.values, reference, scale)
    assert abs(result.energy - reference.sum()) <= RTOL * scale * reference.size


def test_local_cluster_matches_threaded(local_cluster, cnn2d, mlp2d, multiscale2d):
    for ednn, model, *_ in (cnn2d, mlp2d, multiscale2d):
        spec = model.spec
        shape = (spec.channels, 48, 36) if spec.channels > 1 else (48, 36)
        field = np.random.default_rng(5).normal(size=shape).astype(np.float32)
        threaded = score(field, model, chunks=12, spacing=spec.spacing)
        clustered = score(field, model, chunks=12, spacing=spec.spacing, client=local_cluster)
        assert clustered.n_chunks == threaded.n_chunks > 4
        np.testing.assert_array_equal(clustered.contributions, threaded.contributions)
        assert clustered.energy == pytest.approx(threaded.energy, rel=1e-12, abs=1e-9)
        reference = torch_contributions(ednn, field)
        assert_same(clustered.contributions, reference, np.abs(reference).max())


def test_exact_ising_on_local_cluster_from_zarr(local_cluster, exact_ising2d, tmp_path):
    _, model, _ = exact_ising2d
    lattice = spins((64, 96), 11)
    path = save_field(make_field(lattice, name="spins"), tmp_path / "ising.zarr",
                      chunks={"y": 32, "x": 32})
    result = score(path, model, client=local_cluster, chunks=32)
    assert result.energy == ising_energy_np(lattice.astype(float))
    assert result.n_chunks == 6
    field = open_field(path)
    assert isinstance(field.data, da.Array)


def test_back_to_back_jobs_on_one_cluster_keep_their_own_results(
    local_cluster, exact_ising2d, cnn2d
):
    """Fields of the same block layout, one after the other, on one scheduler.

    A fixed output key made distributed hand a job another job's blocks.
    """
    _, model, tile = exact_ising2d
    _, cnn = cnn2d
    field = np.ones((cnn.spec.channels, 12, 12), np.float32)
    score(field, cnn, chunks=12, spacing=cnn.spec.spacing, client=local_cluster)
    for seed, m in ((21, model), (22, tile), (23, model)):
        lattice = spins((20, 20), seed)
        expected = ising_energy_np(lattice.astype(float))
        assert score(da.from_array(lattice, chunks=7), m, client=local_cluster).energy == expected


# --- structure ------------------------------------------------------------------------------


def test_model_enters_the_graph_once(mlp2d):
    _, model, _ = mlp2d
    data = align(da.zeros((64, 64), chunks=8), model.spec.tiling, 8, channels_first=False)
    graph = dict(contribution_map(data, model, model.spec.tiling).__dask_graph__())
    assert len(data.chunks[0]) * len(data.chunks[1]) == 64
    # 64 blocks, yet the pickled graph holds the model bytes about once
    assert len(cloudpickle.dumps(graph)) < 2 * len(model.onnx_bytes)


def test_chunks_stay_focus_aligned(cnn2d):
    _, model = cnn2d
    field = np.zeros((2, 40, 30), np.float32)
    result = score(field, model, chunks=(16, 6), spacing=0.1)
    assert result.contributions.shape == (10, 15)
    data = align(da.from_array(field, chunks=-1), model.spec.tiling, (16, 6), channels_first=True)
    assert data.chunks[1:] == ((16, 16, 8), (6, 6, 6, 6, 6))


def test_numpy_fields_are_cut_into_views_not_copied(cnn2d):
    """dask's from_array would copy the whole field first (0.2-0.5 s per 200 MB here)."""
    _, model = cnn2d
    field = np.random.default_rng(0).normal(size=(2, 40, 30)).astype(np.float32)
    data = align(field, model.spec.tiling, (16, 6), channels_first=True)
    assert data.chunks == ((2,), (16, 16, 8), (6, 6, 6, 6, 6))
    block = dask.get(data.__dask_graph__(), (data.name, 0, 1, 2))
    assert np.shares_memory(block, field)
    np.testing.assert_array_equal(block, field[:, 16:32, 12:18])
    np.testing.assert_array_equal(data.compute(scheduler="sync"), field)


def test_contributions_carry_coordinates(cnn2d):
    _, model = cnn2d
    field = make_field(np.zeros((2, 8, 6), np.float32), spacing=(0.1, 0.1))
    result = score(field, model)
    c = result.contributions
    assert c.dims == ("y", "x")
    np.testing.assert_allclose(c["y"], [0.2, 0.6])  # centres of 4-pixel focus blocks
    np.testing.assert_allclose(c["x"], [0.1, 0.3, 0.5])
    assert c.attrs["model_sha256"] == model.sha256


def test_dask_and_xarray_inputs(exact_ising2d):
    _, model, _ = exact_ising2d
    lattice = spins((20, 20), 2)
    expected = ising_energy_np(lattice.astype(float))
    assert score(da.from_array(lattice, chunks=7), model).energy == expected
    assert score(xr.DataArray(lattice, dims=("y", "x")), model).energy == expected
    with dask.config.set(scheduler="synchronous"):
        assert score(lattice, model, chunks=5).energy == expected


# --- refusals --------------------------------------------------------------------------------


def test_refusals(exact_ising2d, cnn2d):
    _, ising, tile = exact_ising2d
    _, cnn = cnn2d
    with pytest.raises(GeometryError, match="not a multiple of the focus"):
        score(np.zeros((2, 8, 7), np.float32), cnn, spacing=0.1)
    with pytest.raises(FieldError, match="1 channel.*takes 2"):
        score(np.zeros((8, 6), np.float32), cnn, spacing=0.1)
    with pytest.raises(FieldError, match=r"spacing \(0.2, 0.2\) differs.*\(0.1, 0.1\)"):
        score(make_field(np.zeros((2, 8, 6)), spacing=(0.2, 0.2)), cnn)
    with pytest.raises(FieldError, match="declares none"):
        score(np.zeros((2, 8, 6), np.float32), cnn)
    with pytest.raises(FieldError, match=r"NaN at y=0, x=0 \(pixel index\).*no NaN or Inf"):
        score(np.full((4, 4), np.nan), ising)
    with pytest.raises(FieldError, match="2-d"):
        score(np.zeros((2, 2, 2, 2)), ising)
    with pytest.raises(FieldError, match="not numeric"):
        score(np.array([["a", "b"], ["c", "d"]]), ising)
    with pytest.raises(GeometryError, match="tile-only"):
        score(np.ones((4, 4)), tile, method="dense")
    with pytest.raises(GeometryError, match="smaller than the context|not multiples"):
        score(np.ones((8, 8)), ising, chunks=((4, 4), (8, 0)))


def test_pad_is_an_explicit_opt_in_with_the_boundary_value(cnn2d, cnn3d):
    """A (2, 10, 7) field for focus (4, 2): refused, or padded to (12, 8) with the constant."""
    from ednn_dask.score import score

    _, model = cnn2d
    x = np.random.default_rng(1).random((2, 10, 7)).astype(np.float32)
    field = make_field(x, spacing=(0.1, 0.1), dims=("y", "x"))
    with pytest.raises(GeometryError, match="pad=True"):
        score(field, model)
    padded = np.pad(x, ((0, 0), (0, 2), (0, 1)), constant_values=model.spec.boundary)
    result = score(field, model, pad=True)
    assert result.energy == pytest.approx(score(padded, model, spacing=0.1).energy, rel=1e-6)
    assert result.contributions.shape == (3, 4)
    np.testing.assert_allclose(result.contributions.x.values, [0.1, 0.3, 0.5, 0.7])
    with pytest.raises(GeometryError, match="periodic field .* cannot be padded"):
        score(np.ones((5, 4, 4), np.float32), cnn3d[1], pad=True)


# --- field validation, property-based ------------------------------------------------------


FAULTS = {  # what is wrong with a field -> the error that must name it
    "ndim": FieldError, "channels": FieldError, "dtype": FieldError, "spacing": FieldError,
    "no spacing": FieldError, "bad value": FieldError, "shape": GeometryError,
}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_field_is_scored_or_refused_with_the_right_error(cnn2d, data):
    """A field that fits the model gives a finite energy; one with any mix of faults (dims,
    channels, shape, dtype, spacing, NaN/Inf) raises an EDNNError, of the fault's kind when
    there is one fault, and never another exception."""
    from ednn_dask.errors import EDNNError

    _, model = cnn2d  # 2 channels, focus (4, 2), spacing 0.1 x 0.1, constant boundary
    faults = data.draw(st.sets(st.sampled_from(sorted(FAULTS)), max_size=2), label="faults")
    event(f"{len(faults)} fault(s)")
    ndim = data.draw(st.sampled_from([1, 3])) if "ndim" in faults else 2
    channels = data.draw(st.sampled_from([0, 1, 3])) if "channels" in faults else 2
    if "shape" in faults:
        shape = data.draw(st.tuples(*[st.integers(1, 11)] * ndim).filter(
            lambda s: s[0] % 4 or s[-1] % 2), label="shape")
    else:
        shape = ((4 * data.draw(st.integers(1, 3)),) * (ndim - 1)
                 + (2 * data.draw(st.integers(1, 6)),))
    dtype = (data.draw(st.sampled_from(["complex64", "str"])) if "dtype" in faults
             else data.draw(st.sampled_from(["float32", "float64", "int8", "bool"])))
    if "no spacing" in faults:
        spacing = None
    else:
        scale = data.draw(st.sampled_from([1.01, 0.5, 2.0])) if "spacing" in faults \
            else data.draw(st.sampled_from([1.0, 1 + 5e-5]))
        spacing = (0.1 * scale,) * ndim
    values = np.random.default_rng(0).normal(size=((channels,) if channels else ()) + shape)
    array = values.astype(dtype)
    if "bad value" in faults:
        array = values.astype("float32")
        array.flat[data.draw(st.integers(0, array.size - 1))] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    field = make_field(array, spacing=spacing, dims=("z", "y", "x")[3 - ndim:])

    if not faults:
        assert np.isfinite(score(field, model).energy)
        return
    with pytest.raises(EDNNError) as refused:
        score(field, model)
    if len(faults) == 1:
        assert isinstance(refused.value, FAULTS[next(iter(faults))])
