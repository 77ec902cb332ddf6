from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ednn_dask.errors import GeometryError
from ednn_dask.tiling import Tiling, aligned_chunks, check_chunks, coerce_axes, coerce_boundary


@pytest.mark.parametrize(
    ("value", "ndim", "expected"),
    [(3, 2, (3, 3)), ((1, 2), 2, (1, 2)), ((1, 2, 3), 3, (1, 2, 3)), (0, 3, (0, 0, 0))],
)
def test_coerce_axes(value, ndim, expected):
    assert coerce_axes(value, ndim, "focus") == expected


@pytest.mark.parametrize(
    ("value", "match"), [((1, 2, 3), "3 values"), (-1, ">= 0"), ((1, -2), ">= 0")]
)
def test_coerce_axes_rejects(value, match):
    with pytest.raises(GeometryError, match=match):
        coerce_axes(value, 2, "focus")


@pytest.mark.parametrize(
    ("value", "expected"), [("periodic", "periodic"), ("wrap", "periodic"), (0, 0.0), ("1.5", 1.5)]
)
def test_coerce_boundary(value, expected):
    assert coerce_boundary(value) == expected


@pytest.mark.parametrize("value", ["reflect", float("nan"), None, True])
def test_coerce_boundary_rejects(value):
    with pytest.raises(GeometryError, match="boundary"):
        coerce_boundary(value)


def test_focus_zero_rejected():
    with pytest.raises(GeometryError, match="focus must be >= 1"):
        Tiling.create(0, 1, ndim=2)


def test_shape_not_multiple_of_focus_names_the_fix():
    t = Tiling.create((4, 2), 1)
    with pytest.raises(GeometryError, match=r"not a multiple of the focus \(4, 2\).*\(8, 6\)"):
        t.grid((6, 5))


def test_periodic_context_wider_than_grid():
    with pytest.raises(GeometryError, match="wider than the periodic grid"):
        Tiling.create(1, 3, ndim=2).check((2, 8))
    Tiling.create(1, 3, boundary=0.0, ndim=2).check((2, 8))  # constant padding is fine


def test_wrong_number_of_axes():
    with pytest.raises(GeometryError, match="2-d tiling"):
        Tiling.create(1, 1, ndim=2).check((4, 4, 4))


def test_tiles_are_views_with_wraparound():
    field = np.arange(16.0).reshape(4, 4)
    t = Tiling.create(2, 1, ndim=2)
    padded = t.pad(field)
    tiles = t.tiles(padded, padded=True)
    assert np.shares_memory(tiles, padded)
    assert tiles.shape == (2, 2, 4, 4)
    # tile (0, 0) starts one pixel before the grid: row -1 wraps to row 3
    np.testing.assert_array_equal(tiles[0, 0, 0], [15, 12, 13, 14])
    np.testing.assert_array_equal(tiles[1, 1, 1:3, 1:3], field[2:4, 2:4])


def test_constant_boundary_pads_with_the_constant():
    tiles = Tiling.create(1, 1, boundary=-7.0, ndim=2).tiles(np.ones((2, 2)))
    assert tiles[0, 0, 0, 0] == -7.0 and tiles[0, 0, 1, 1] == 1.0


def test_leading_channel_axis_passes_through():
    field = np.random.default_rng(0).normal(size=(3, 6, 4))
    t = Tiling.create((3, 2), (1, 2), ndim=2)
    tiles = t.tiles(field)
    assert tiles.shape == (3, 2, 2, 5, 6)
    for ch in range(3):
        np.testing.assert_array_equal(tiles[ch], t.tiles(field[ch]))


@settings(max_examples=40, deadline=None)
@given(
    ndim=st.integers(1, 3),
    data=st.data(),
)
def test_tiles_match_explicit_slicing(ndim, data):
    focus = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
    context = tuple(data.draw(st.integers(0, 2)) for _ in range(ndim))
    grid = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
    shape = tuple(g * f for g, f in zip(grid, focus))
    periodic = data.draw(st.booleans())
    t = Tiling.create(focus, context, "periodic" if periodic else 0.0)
    if periodic and any(c > n for c, n in zip(context, shape)):
        return
    field = np.random.default_rng(1).normal(size=shape)
    tiles = t.tiles(field)
    assert tiles.shape == (*grid, *t.tile)
    index = tuple(data.draw(st.integers(0, g - 1)) for g in grid)
    # explicit: gather each pixel of the tile by index arithmetic
    expected = np.empty(t.tile)
    for offset in np.ndindex(*t.tile):
        pos = [i * f - c + o for i, f, c, o in zip(index, focus, context, offset)]
        if periodic:
            expected[offset] = field[tuple(p % n for p, n in zip(pos, shape))]
        else:
            inside = all(0 <= p < n for p, n in zip(pos, shape))
            expected[offset] = field[tuple(pos)] if inside else 0.0
    np.testing.assert_array_equal(tiles[index], expected)


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.integers(1, 40),
    focus=st.integers(1, 8),
    context=st.integers(0, 10),
    target=st.integers(1, 64),
)
def test_aligned_chunks_are_focus_multiples_and_hold_the_halo(blocks, focus, context, target):
    n = blocks * focus
    t = Tiling.create(focus, context, boundary=0.0, ndim=1)
    if context > n:
        return
    (chunks,) = aligned_chunks((n,), t, target)
    assert sum(chunks) == n
    assert all(c % focus == 0 for c in chunks)
    assert all(c >= context for c in chunks)
    check_chunks((chunks,), t)


def test_check_chunks_rejects():
    t = Tiling.create(4, 3, ndim=1)
    with pytest.raises(GeometryError, match="not multiples of the focus 4"):
        check_chunks(((6, 10),), t)
    with pytest.raises(GeometryError, match="smaller than the context 3"):
        check_chunks(((16, 0),), t)
