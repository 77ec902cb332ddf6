"""Contributions of focus blocks, in numpy: the one code path that runs a tile model.

:func:`block_contributions` takes a block that already carries its context halo
(what ``dask.array.map_overlap`` hands a chunk) and returns one contribution per
focus block inside it, by one of two methods that give the same numbers:

- ``"tiles"``: cut the block into tiles (a zero-copy strided view), copy them in
  batches into a reused buffer and run the model tile by tile;
- ``"dense"``: for fully convolutional models, run the model once over slabs of
  the block (each slab ``k`` focus rows plus the halo), sharing the trunk between
  neighbouring tiles instead of recomputing the overlap.

A multi-scale model's block carries the farthest branch's reach; each branch
takes the part of it that it sees, coarsened by its factor, and its
contributions are summed onto the model's focus blocks.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ednn_dask.defaults import BATCH_PIXELS
from ednn_dask.errors import FieldError, GeometryError, NonFiniteFieldError
from ednn_dask.model import TileModel
from ednn_dask.tiling import block_mean, block_sum

Method = Literal["auto", "dense", "tiles"]


def with_channels(array: np.ndarray, model: TileModel, what: str = "field") -> np.ndarray:
    """``array`` as ``(C, *spatial)`` for ``model`` (a channel axis added to a one-channel grid)."""
    spec = model.spec
    if array.ndim == spec.ndim:
        array = array[np.newaxis]
    if array.ndim != spec.ndim + 1 or array.shape[0] != spec.channels:
        raise FieldError(
            f"a {what} of shape {array.shape!r} does not fit model {model.name!r}: expected "
            f"({spec.channels} channels, {spec.ndim} spatial axes)."
        )
    return array


def resolve_method(method: str, model: TileModel) -> Literal["dense", "tiles"]:
    """``"auto"`` picks the dense path when the model allows it."""
    if method == "auto":
        return "dense" if model.spec.kind == "dense" else "tiles"
    if method == "dense" and model.spec.kind != "dense":
        raise GeometryError(
            f"model {model.name!r} is a tile-only model (ednn.kind='tile'); it cannot run on "
            f"whole chunks. Use method 'tiles' or 'auto' (Python: method='tiles'; CLI: "
            f"--method tiles)."
        )
    if method not in ("dense", "tiles"):
        raise GeometryError(f"method must be 'auto', 'dense' or 'tiles', got {method!r}.")
    return method


def block_contributions(
    block: np.ndarray,
    model: TileModel,
    *,
    method: Method = "auto",
    threads: int = 1,
    batch_pixels: int = BATCH_PIXELS,
    origin: tuple[int, ...] | None = None,
    field_shape: tuple[int, ...] | None = None,
    dims: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Contributions of every focus block of a block padded with its context halo.

    Parameters
    ----------
    block : ndarray
        ``(*spatial)`` or ``(C, *spatial)``, each spatial axis ``m * focus + 2 * context``.
    model : TileModel
    method : {"auto", "dense", "tiles"}
    threads : int
        onnxruntime intra-op threads; keep ``threads * dask threads <= cores``.
    batch_pixels : int
        Input pixels (times channels) per onnxruntime call.
    origin, field_shape, dims
        Where the block lies in its field, to name the position of a NaN or Inf
        (:class:`~ednn_dask.errors.NonFiniteFieldError`) in the field's own terms:
        the field index of the block's first (halo) pixel per spatial axis, the
        field's spatial shape (halo pixels wrap modulo it) and its dim names.
        Default: the block is a whole field padded by its context, with the
        model's dims.

    Returns
    -------
    ndarray
        float32 of shape ``grid`` (``m`` per axis).
    """
    spec = model.spec
    block = with_channels(block, model, "block")
    padded_shape = block.shape[1:]
    grid = tuple(
        n // f for n, f in zip(spec.tiling.unpadded_shape(padded_shape), spec.focus, strict=True)
    )
    if math.prod(grid) == 0:
        return np.zeros(grid, np.float32)
    where = _Where(
        tuple(-c for c in spec.context) if origin is None else tuple(origin),
        tuple(g * f for g, f in zip(grid, spec.focus, strict=True)) if field_shape is None
        else tuple(field_shape),
        spec.spatial_dims if dims is None else tuple(dims),
        spec.context,
    )
    if spec.scales:
        where.check(block, block)
        return _branches(block, model, grid, method, threads, batch_pixels)
    if resolve_method(method, model) == "dense":
        return _dense(block, model, grid, threads, batch_pixels, where)
    x = model.scale_input(block)
    where.check(x, block)
    return _tiles(x, model, grid, threads, batch_pixels)


class _Where:
    """Where a block lies in its field: turns a block index into a field position."""

    def __init__(self, origin: tuple[int, ...], shape: tuple[int, ...], dims: tuple[str, ...],
                 context: tuple[int, ...]):
        self.origin, self.shape, self.dims, self.context = origin, shape, dims, context

    def check(self, x: np.ndarray, block: np.ndarray, offset: int = 0) -> None:
        """Refuse NaN/Inf in ``x`` ``(C, *spatial)``, the scaled input of ``block`` from
        ``offset`` pixels on along the block's first spatial axis."""
        finite = np.isfinite(x)
        if finite.all():
            return
        # the first bad pixel of the block's own focus region, else of its halo
        inner = (slice(None), *(slice(c, n - c) for c, n in zip(self.context, x.shape[1:],
                                                                 strict=True)))
        bad_inner = np.argwhere(~finite[inner])
        if len(bad_inner):
            bad = (int(bad_inner[0][0]), *(int(i) + c for i, c in zip(bad_inner[0][1:],
                                                                       self.context, strict=True)))
        else:
            bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        spatial = (bad[1] + offset, *bad[2:])
        index = tuple((o + i) % n for o, i, n in zip(self.origin, spatial, self.shape,
                                                     strict=True))
        raise NonFiniteFieldError(float(block[(bad[0], *spatial)]), index, self.dims,
                                  channel=bad[0] if x.shape[0] > 1 else None)


def coarsen(block: np.ndarray, factor: tuple[int, ...], origin: tuple[int, ...],
            field_shape: tuple[int, ...], dims: tuple[str, ...]) -> np.ndarray:
    """:func:`~ednn_dask.tiling.block_mean` of a chunk ``([C,] *spatial)`` that starts at
    ``origin`` in its field; a NaN or Inf is reported at its full-resolution position."""
    coarse = block_mean(block, factor)
    if not np.isfinite(coarse).all():
        x = block if block.ndim > len(factor) else block[np.newaxis]
        _Where(origin, field_shape, dims, (0,) * len(factor)).check(x, x)
    return coarse


def _branches(block, model, grid, method, threads, batch_pixels):
    """A multi-scale model: each branch on its coarsened part of the block, summed per block.

    ``method`` ``"auto"`` lets every branch take its own best path.
    """
    spec = model.spec
    total = np.zeros(grid, np.float64)
    for scale, branch in zip(spec.scales, model.branches, strict=True):
        trim = tuple(r - own for r, own in zip(spec.context, scale.reach, strict=True))
        part = block[(slice(None), *(slice(t, n - t) for t, n in zip(trim, block.shape[1:],
                                                                     strict=True)))]
        if max(scale.factor) > 1:
            part = block_mean(part, scale.factor)
        values = block_contributions(part, branch, method=method, threads=threads,
                                     batch_pixels=batch_pixels)
        total += block_sum(values, [f // b for f, b in zip(spec.focus, scale.block,
                                                             strict=True)])
    return total.astype(np.float32)


def _dense(block, model, grid, threads, batch_pixels, where):
    """Run the model over slabs of ``rows`` focus rows (plus halo) along the first axis.

    Each slab is scaled straight into one small reused buffer, because a scaled
    copy of the whole block would be fresh memory every chunk, and page faults
    on fresh memory serialize the worker threads.
    """
    f0, c0 = model.spec.focus[0], model.spec.context[0]
    row_pixels = block.shape[0] * f0 * math.prod(block.shape[2:])
    rows = max(1, min(grid[0], batch_pixels // row_pixels))
    out = np.empty(grid, np.float32)
    buffer = np.empty((1, block.shape[0], rows * f0 + 2 * c0, *block.shape[2:]), np.float32)
    for start in range(0, grid[0], rows):
        stop = min(grid[0], start + rows)
        height = (stop - start) * f0 + 2 * c0
        slab = buffer if height == buffer.shape[2] else np.empty(
            (1, block.shape[0], height, *block.shape[2:]), np.float32)
        model.scale_input(block[:, start * f0 : start * f0 + height], out=slab[0])
        where.check(slab[0], block, start * f0)
        out[start:stop] = model.run(slab, threads)[0]
    return out


def _tiles(x, model, grid, threads, batch_pixels):
    """Copy tiles in batches of whole grid rows into one reused buffer and run them."""
    spec = model.spec
    tiling = spec.tiling
    tiles = np.moveaxis(tiling.tiles(x, padded=True), 0, spec.ndim)  # (*grid, C, *tile)
    tile_pixels = x.shape[0] * math.prod(tiling.tile)
    row_tiles = math.prod(grid[1:])
    rows = max(1, min(grid[0], batch_pixels // (tile_pixels * row_tiles)))
    buffer = np.empty((rows, *tiles.shape[1:]), np.float32)
    out = np.empty(grid, np.float32)
    for start in range(0, grid[0], rows):
        stop = min(grid[0], start + rows)
        batch = buffer[: stop - start]
        np.copyto(batch, tiles[start:stop])
        flat = batch.reshape(-1, x.shape[0], *tiling.tile)
        out[start:stop] = model.run(flat, threads).reshape(stop - start, *grid[1:])
    return out


def contributions(
    field: np.ndarray,
    model: TileModel,
    *,
    boundary: str | float | None = None,
    method: Method = "auto",
    threads: int = 1,
) -> np.ndarray:
    """Contributions of a whole in-memory grid, without dask (the numpy reference).

    ``field`` is ``(*spatial)`` or ``(C, *spatial)``; it is padded by the context
    following ``boundary`` (default: the model's).
    """
    field = np.asarray(field)
    tiling = model.spec.tiling.with_boundary(boundary)
    padded = tiling.pad(field)
    return block_contributions(padded, model, method=method, threads=threads)
