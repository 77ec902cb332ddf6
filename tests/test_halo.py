"""Halos cut from a second read (ednn_dask.halo): the same blocks as da.overlap, the same
energies, and a graph in which no chunk waits for its neighbours."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask import make_field, save_field
from ednn_dask.halo import reread_overlap
from ednn_dask.score import score


@st.composite
def overlap_cases(draw):
    """An array, chunks (the last may be short), a depth within the smallest chunk and a
    boundary per axis."""
    ndim = draw(st.integers(1, 3))
    chunks, depth, boundary = [], {}, {}
    for a in range(ndim):
        size = draw(st.integers(1, 4))
        n = draw(st.integers(1, 3))
        last = draw(st.integers(1, size))
        chunks.append((size,) * (n - 1) + (last,))
        depth[a] = draw(st.integers(0, min(chunks[a])))
        boundary[a] = draw(st.sampled_from(["periodic", 0.0, -2.5]))
    dtype = draw(st.sampled_from([np.float32, np.uint8, np.int8]))
    shape = tuple(map(sum, chunks))
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    return da.from_array(x, chunks=tuple(chunks)), depth, boundary


@settings(max_examples=60, deadline=None)
@given(overlap_cases())
def test_reread_blocks_equal_dask_overlap(case):
    x, depth, boundary = case
    expected = da.overlap.overlap(x, depth, boundary, allow_rechunk=False)
    got = reread_overlap(x, depth, boundary)
    assert got.chunks == expected.chunks
    a, b = dask.compute(expected, got, scheduler="sync")
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rechunk", [False, True])
def test_no_chunk_waits_for_its_neighbours(rechunk):
    """Every chunk of the field feeds exactly one block (its own); every chunk of the second
    read feeds one task that copies the thin edges it lends, and shares no work with the
    first read. No whole chunk waits for another task: that is what keeps memory flat."""
    from dask._task_spec import DataNode, convert_legacy_graph

    x = da.ones((12, 12, 12), chunks=(6, 12, 4), dtype=np.uint8)
    x = x.rechunk(4) if rechunk else x
    first = {k for k, v in convert_legacy_graph(dict(x.dask)).items()
             if not isinstance(v, DataNode)}
    graph = dict(reread_overlap(x, {0: 1, 1: 1, 2: 1}, {a: "periodic" for a in range(3)}).dask)
    dependents = {k: [] for k in graph}
    for key in graph:
        for dep in dask.core.get_dependencies(graph, key):
            dependents[dep].append(key)
    centres = [k for k in graph if isinstance(k, tuple) and k[0] == x.name]
    assert len(centres) == x.npartitions
    assert all(len(dependents[k]) == 1 for k in centres)
    cuts = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("halo-edges-")]
    assert len(cuts) == x.npartitions
    second = {d for k in cuts for d in dask.core.get_dependencies(graph, k)}
    assert all(len(dependents[k]) == 1 for k in second)
    seen, stack = set(), list(second)
    while stack:  # everything the second read is computed from
        key = stack.pop()
        if key not in seen:
            seen.add(key)
            stack.extend(dask.core.get_dependencies(graph, key))
    assert not seen & first


def test_refuses_a_halo_deeper_than_a_chunk_or_on_a_boundary_of_none():
    x = da.zeros((10, 10), chunks=(4, 5))
    with pytest.raises(ValueError, match="deeper than its smallest chunk"):
        reread_overlap(x, {0: 3, 1: 1}, {0: "periodic", 1: "periodic"})
    with pytest.raises(ValueError, match="boundary 'none'"):
        reread_overlap(x, {0: 1}, {0: "none", 1: "periodic"})


@pytest.mark.parametrize("fixture", ["exact_ising2d", "cnn2d", "cnn3d", "multiscale2d"])
def test_scoring_with_reread_halos_changes_no_number(request, fixture, tmp_path):
    _, model, *_ = request.getfixturevalue(fixture)
    spec = model.spec
    rng = np.random.default_rng(3)
    spatial = (32,) * spec.ndim if spec.ndim == 3 else (48, 48)
    shape = (spec.channels, *spatial) if spec.channels > 1 else spatial
    values = rng.normal(size=shape).astype(np.float32)
    path = save_field(make_field(values, dims=spec.spatial_dims, spacing=spec.spacing, name="f"),
                      tmp_path / "f.zarr")
    chunks = 16 if spec.ndim == 3 else 24
    for boundary in ("periodic", 0.5):
        plain = score(path, model, boundary=boundary, chunks=chunks, reread=False)
        twice = score(path, model, boundary=boundary, chunks=chunks, reread=True)
        assert plain.n_chunks == twice.n_chunks > 1
        assert twice.energy == plain.energy
        np.testing.assert_array_equal(twice.contributions.values, plain.contributions.values)
