"""Tiling geometry: focus blocks, context halos and tiles on an N-d grid.

A grid is cut into non-overlapping *focus* blocks of ``f`` pixels per axis; each
block is padded with a *context* halo of ``c`` pixels on every side, giving a
*tile* of ``f + 2c`` pixels per axis. Halos overlap, focus blocks do not. Outside
the grid the field is either periodic or a constant (the *boundary*)::

        <-- c --><----- f -----><-- c -->
        +--------+-------------+--------+
        |        :   context   :        |
        |  . . . +-------------+ . . .  |   one tile, (f + 2c) per axis
        |        |    focus    |        |
        |  . . . +-------------+ . . .  |   the next tile starts f further on
        |        :             :        |
        +--------+-------------+--------+

All functions here are pure: they take shapes and numpy arrays and never touch
dask, xarray or a model. Spatial axes are always the *last* ``ndim`` axes of an
array, so a leading channel axis (or batch axis) passes through untouched.

>>> t = Tiling.create(focus=2, context=1, ndim=2)
>>> t.tile
(4, 4)
>>> t.grid((4, 6))
(2, 3)
>>> t.tiles(np.arange(24.0).reshape(4, 6)).shape
(2, 3, 4, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from ednn_dask.defaults import CHUNK_PIXELS, MAX_CHUNKS
from ednn_dask.errors import GeometryError

Boundary = Literal["periodic"] | float


def coerce_axes(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """Normalize an int or a per-axis sequence to one non-negative int per axis.

    >>> coerce_axes(3, 2, "focus")
    (3, 3)
    >>> coerce_axes((1, 2, 3), 3, "context")
    (1, 2, 3)
    """
    if isinstance(value, (int, np.integer)):
        values = (int(value),) * ndim
    else:
        values = tuple(int(v) for v in value)
        if len(values) != ndim:
            raise GeometryError(
                f"{name} has {len(values)} values {values!r} for a {ndim}-d grid; "
                f"give one value per axis or a single int."
            )
    if any(v < 0 for v in values):
        raise GeometryError(f"{name} must be >= 0 on every axis, got {values!r}.")
    return values


def coerce_boundary(boundary: str | float | int) -> Boundary:
    """Normalize a boundary: the string ``"periodic"`` or a finite constant fill."""
    if isinstance(boundary, str):
        if boundary.lower() in ("periodic", "wrap"):
            return "periodic"
        try:
            boundary = float(boundary)
        except ValueError:
            raise GeometryError(
                f"boundary must be 'periodic' or a number (the constant outside the grid), "
                f"got {boundary!r}."
            ) from None
    if isinstance(boundary, bool) or not isinstance(boundary, (int, float, np.number)):
        raise GeometryError(f"boundary must be 'periodic' or a number, got {boundary!r}.")
    if not math.isfinite(float(boundary)):
        raise GeometryError(f"a constant boundary must be finite, got {boundary!r}.")
    return float(boundary)


@dataclass(frozen=True)
class Tiling:
    """Focus, context and boundary of an EDNN, per spatial axis.

    Build it with :meth:`Tiling.create`, which accepts ints or per-axis tuples.
    """

    focus: tuple[int, ...]
    context: tuple[int, ...]
    boundary: Boundary = "periodic"

    @classmethod
    def create(
        cls,
        focus: int | Sequence[int],
        context: int | Sequence[int],
        boundary: str | float = "periodic",
        ndim: int | None = None,
    ) -> Tiling:
        """Normalize flexible arguments once; everything after assumes tuples."""
        if ndim is None:
            ndim = next((len(v) for v in (focus, context) if not isinstance(v, int)), 2)
        focus_ = coerce_axes(focus, ndim, "focus")
        if any(f == 0 for f in focus_):
            raise GeometryError(f"focus must be >= 1 on every axis, got {focus_!r}.")
        return cls(focus_, coerce_axes(context, ndim, "context"), coerce_boundary(boundary))

    def with_boundary(self, boundary: str | float | None) -> Tiling:
        """The same tiling with another boundary (``None`` keeps this one)."""
        if boundary is None:
            return self
        return Tiling(self.focus, self.context, coerce_boundary(boundary))

    @property
    def ndim(self) -> int:
        return len(self.focus)

    @cached_property
    def tile(self) -> tuple[int, ...]:
        """Tile size per axis, ``f + 2c``."""
        return tuple(f + 2 * c for f, c in zip(self.focus, self.context, strict=True))

    def check(self, shape: Sequence[int]) -> None:
        """Raise :class:`GeometryError` unless a grid of ``shape`` can be tiled."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.ndim:
            raise GeometryError(
                f"a {self.ndim}-d tiling cannot tile a grid of shape {shape!r} "
                f"({len(shape)} spatial axes)."
            )
        bad = [i for i, (n, f) in enumerate(zip(shape, self.focus, strict=True)) if n % f or n == 0]
        if bad:
            padded = tuple(-(-n // f) * f for n, f in zip(shape, self.focus, strict=True))
            raise GeometryError(
                f"grid shape {shape!r} is not a multiple of the focus {self.focus!r} "
                f"on axes {bad}; crop the field, or (constant-boundary models) pad it to "
                f"{padded!r} (Python: score(..., pad=True); CLI: ednn-dask score --pad)."
            )
        if self.boundary == "periodic":
            short = [i for i, (n, c) in enumerate(zip(shape, self.context, strict=True)) if c > n]
            if short:
                raise GeometryError(
                    f"context {self.context!r} is wider than the periodic grid {shape!r} on axes "
                    f"{short}: a tile would see the same pixel twice through the boundary. "
                    f"Use a larger grid (a supercell) or a constant boundary."
                )

    def grid(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Number of focus blocks per axis for a grid of ``shape``."""
        self.check(shape)
        return tuple(n // f for n, f in zip(shape, self.focus, strict=True))

    def pad_width(self, shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """``np.pad`` widths for an array whose last ``ndim`` axes are the grid."""
        lead = len(shape) - self.ndim
        return ((0, 0),) * lead + tuple((c, c) for c in self.context)

    def pad(self, field: np.ndarray) -> np.ndarray:
        """Pad the last ``ndim`` axes by the context, following the boundary rule."""
        self.check(field.shape[-self.ndim :])
        width = self.pad_width(field.shape)
        if self.boundary == "periodic":
            return np.pad(field, width, mode="wrap")
        return np.pad(field, width, mode="constant", constant_values=self.boundary)

    def tiles(self, field: np.ndarray, padded: bool = False) -> np.ndarray:
        """All tiles of ``field`` as a zero-copy strided view.

        Parameters
        ----------
        field : ndarray
            Array whose last ``ndim`` axes are the grid; leading axes pass through.
        padded : bool, optional
            ``True`` when ``field`` already carries its context halo (a chunk
            handed out by ``map_overlap``), so no padding is added here.

        Returns
        -------
        ndarray
            View of shape ``(*lead, *grid, *tile)``: tile ``i`` starts at
            ``i * focus`` in the padded grid.
        """
        if not padded:
            field = self.pad(field)
        axes = tuple(range(field.ndim - self.ndim, field.ndim))
        windows = np.lib.stride_tricks.sliding_window_view(field, self.tile, axis=axes)
        lead = (slice(None),) * (field.ndim - self.ndim)
        step = lead + tuple(slice(None, None, f) for f in self.focus)
        return windows[step]

    def unpadded_shape(self, padded_shape: Sequence[int]) -> tuple[int, ...]:
        """Grid shape of a block that carries a context halo on every side."""
        shape = tuple(
            n - 2 * c for n, c in zip(padded_shape[-self.ndim :], self.context, strict=True)
        )
        if any(n <= 0 for n in shape):
            raise GeometryError(
                f"block of shape {tuple(padded_shape)!r} is smaller than its context halo "
                f"{self.context!r}."
            )
        return shape


def aligned_chunks(
    shape: Sequence[int],
    tiling: Tiling,
    target: int | Sequence[int] | None = None,
) -> tuple[tuple[int, ...], ...]:
    """Chunk sizes per spatial axis that are multiples of the focus and >= the context.

    dask's ``overlap`` silently rechunks when the depth exceeds a chunk, which
    would break focus alignment; chunks made here never trigger that.

    Parameters
    ----------
    shape : sequence of int
        Grid shape (multiples of the focus).
    tiling : Tiling
    target : int or sequence of int, optional
        Wanted chunk length per axis in pixels; rounded to a multiple of the
        focus. Default :data:`~ednn_dask.defaults.CHUNK_PIXELS` (about 4-16 M
        pixels a chunk, where dask's per-block overhead is below 10 %).

    Examples
    --------
    >>> aligned_chunks((10, 7), Tiling((5, 7), (1, 1)), target=5)
    ((5, 5), (7,))
    """
    grid = tiling.grid(shape)
    if target is None:
        target = CHUNK_PIXELS[tiling.ndim]
    target = coerce_axes(target, tiling.ndim, "chunks")
    chunks = []
    for n_blocks, f, c, want in zip(grid, tiling.focus, tiling.context, target, strict=True):
        per_chunk = max(1, want // f, -(-c // f))  # a chunk must hold at least its halo
        per_chunk = min(per_chunk, n_blocks)
        sizes = [per_chunk * f] * (n_blocks // per_chunk)
        rest = n_blocks % per_chunk
        if rest:
            if rest * f < c:  # fold a too-thin last chunk into its neighbour
                sizes[-1] += rest * f
            else:
                sizes.append(rest * f)
        chunks.append(tuple(sizes))
    check_chunk_count(chunks, tiling)
    return tuple(chunks)


def check_chunk_count(chunks: Sequence[Sequence[int]], tiling: Tiling) -> None:
    """Refuse a chunking with more than :data:`~ednn_dask.defaults.MAX_CHUNKS` chunks.

    Such a graph would take longer to build and schedule than to compute, and
    its bookkeeping alone can fill the memory; the error names the smallest
    chunk length that fits.
    """
    n_chunks = math.prod(len(c) for c in chunks)
    if n_chunks <= MAX_CHUNKS:
        return
    shape = tuple(sum(c) for c in chunks)
    side = (math.prod(shape) / MAX_CHUNKS) ** (1 / len(shape))
    least = max(math.ceil(side / f) * f for f in tiling.focus)
    raise GeometryError(
        f"chunks of {max(max(c) for c in chunks)} px make {n_chunks:,} chunks of the "
        f"{' × '.join(map(str, shape))} grid, more than the {MAX_CHUNKS:,} a task graph "
        f"can carry; use chunks of at least {least} px (default "
        f"{CHUNK_PIXELS[tiling.ndim]})."
    )


def check_chunks(chunks: Sequence[Sequence[int]], tiling: Tiling) -> None:
    """Raise unless every chunk is a multiple of the focus and at least the context."""
    check_chunk_count(chunks, tiling)
    for axis, (sizes, f, c) in enumerate(zip(chunks, tiling.focus, tiling.context, strict=True)):
        if any(s % f for s in sizes):
            raise GeometryError(
                f"chunks {tuple(sizes)!r} on spatial axis {axis} are not multiples of the focus "
                f"{f}; pass chunks=None to let ednn-dask choose focus-aligned chunks."
            )
        if any(s < c for s in sizes):
            raise GeometryError(
                f"a chunk of {min(sizes)} pixels on spatial axis {axis} is smaller than the "
                f"context {c}; dask would silently rechunk. Use chunks of at least {c} pixels."
            )



def block_mean(x: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """float32 mean over blocks of ``factor`` pixels on the last ``len(factor)`` axes.

    The coarsening of a multi-scale model's branches; every path (numpy, dask,
    torch's average pooling) coarsens the same blocks, aligned to the field's origin.

    >>> block_mean(np.arange(8.0).reshape(2, 4), (2, 2))
    array([[2.5, 4.5]], dtype=float32)
    """
    blocks, axes = _blocks(x, factor)
    return blocks.mean(axis=axes, dtype=np.float32)


def block_sum(x: np.ndarray, block: Sequence[int], dtype=np.float64) -> np.ndarray:
    """Sum over blocks of ``block`` values on the last ``len(block)`` axes, in ``dtype``.

    >>> block_sum(np.ones((4, 6), np.float32), (2, 3))
    array([[6., 6.],
           [6., 6.]])
    """
    blocks, axes = _blocks(x, block)
    return blocks.sum(axis=axes, dtype=dtype)


def _blocks(x: np.ndarray, block: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` reshaped so each block has axes of its own, and those axes."""
    lead = x.shape[: x.ndim - len(block)]
    split = [v for n, b in zip(x.shape[len(lead):], block, strict=True) for v in (n // b, b)]
    axes = tuple(len(lead) + 2 * i + 1 for i in range(len(block)))
    return np.asarray(x).reshape(*lead, *split), axes
