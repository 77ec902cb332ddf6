"""The dask pipeline: field -> focus-aligned chunks -> map_overlap -> contributions -> sum.

Read top to bottom, :func:`score` is::

    prepare_field     check the field against the model (dims, channels, dtype, spacing)
    align             chunk to multiples of the focus, never smaller than the context
    contribution_map  overlap(depth=context, boundary), then the model on every padded
                      chunk -> one value per focus block (a multi-scale model: one per
                      branch, on a coarsened copy); large lazy fields take their halos
                      from a second read (ednn_dask.halo) so memory stays flat
    reduce            tree sum in float64 (split_every)
    compute           on the given client, the active one, or dask's threaded scheduler

A field of one chunk skips the middle three: one task pads it, scores it and sums
(:func:`one_task`), with the same numbers.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.array.core import slices_from_chunks

from ednn_dask.compute import compute
from ednn_dask.defaults import BATCH_PIXELS, CHANNEL_DIM, REREAD_BYTES, SPACING_RTOL
from ednn_dask.errors import FieldError, GeometryError, NonFiniteFieldError
from ednn_dask.field import as_field, field_spacing
from ednn_dask.halo import reread_overlap
from ednn_dask.inference import Method, block_contributions, coarsen, resolve_method
from ednn_dask.model import TileModel, load_model
from ednn_dask.tiling import Tiling, aligned_chunks, block_sum, check_chunks


@dataclass
class ScoreResult:
    """The outcome of :func:`score`."""

    energy: float
    contributions: xr.DataArray | None
    n_tiles: int
    n_chunks: int
    method: str
    target: str
    unit: str
    model_sha256: str
    n_pixels: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def pixels_per_second(self) -> float:
        return self.n_pixels / self.seconds["compute"] if self.seconds.get("compute") else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the contribution map)."""
        return {
            "energy": self.energy,
            "target": self.target,
            "unit": self.unit,
            "n_tiles": self.n_tiles,
            "n_chunks": self.n_chunks,
            "n_pixels": self.n_pixels,
            "method": self.method,
            "model_sha256": self.model_sha256,
            "seconds": self.seconds,
            "pixels_per_second": self.pixels_per_second,
        }


def prepare_field(
    field_: Any, model: TileModel, *, spacing: float | tuple[float, ...] | None = None,
    variable: str | None = None,
) -> xr.DataArray:
    """Normalize ``field_`` to a DataArray ``([channel,] *spatial)`` that fits ``model``."""
    spec = model.spec
    f = as_field(field_, spec.ndim, spec.spatial_dims, variable=variable)
    if CHANNEL_DIM in f.dims:
        f = f.transpose(CHANNEL_DIM, ...)
    n_spatial = f.ndim - (CHANNEL_DIM in f.dims)
    if n_spatial != spec.ndim:
        raise FieldError(
            f"field has dims {f.dims!r} but model {model.name!r} is {spec.ndim}-d "
            f"({spec.spatial_dims!r}); name a channel axis {CHANNEL_DIM!r} if it has one."
        )
    channels = f.sizes.get(CHANNEL_DIM, 1)
    if channels != spec.channels:
        raise FieldError(
            f"field has {channels} channel(s) but model {model.name!r} takes {spec.channels}."
        )
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)
            or f.dtype == bool):
        raise FieldError(f"field dtype {f.dtype} is not numeric; fields hold real numbers.")
    _check_spacing(f, model, spacing)
    return f


def _check_spacing(f: xr.DataArray, model: TileModel, spacing) -> None:
    want = model.spec.spacing
    if want is None:
        return  # lattice models carry no length scale
    have = field_spacing(f) if spacing is None else tuple(np.broadcast_to(spacing, len(want)))
    unit = model.spec.spacing_unit or ""
    if have is None:
        raise FieldError(
            f"model {model.name!r} was trained at a pixel spacing of {want} {unit}, but the field "
            f"declares none (no 'spacing' attr). Python: score(..., spacing=...) or "
            f"make_field(..., spacing=...); CLI: save the field with its spacing "
            f"(save_field of a field made with spacing=...)."
        )
    if not np.allclose(have, want, rtol=SPACING_RTOL, atol=0):
        raise FieldError(
            f"field spacing {tuple(have)} differs from the model's {want} {unit} "
            f"(relative tolerance {SPACING_RTOL:g}); rasterize the field at the model's spacing."
        )


def align(data: Any, tiling: Tiling, chunks=None, *, channels_first: bool) -> da.Array:
    """Chunk so every chunk holds whole focus blocks and at least the context.

    A dask array is rechunked (only if needed); a numpy array is cut into views.
    """
    spatial = data.shape[1:] if channels_first else data.shape
    explicit = isinstance(chunks, (list, tuple)) and any(
        isinstance(c, (list, tuple)) for c in chunks
    )
    if explicit:
        spatial_chunks = tuple(tuple(int(s) for s in c) for c in chunks)
        if tuple(map(sum, spatial_chunks)) != tuple(spatial):
            raise GeometryError(
                f"chunks {spatial_chunks!r} do not add up to the grid shape {tuple(spatial)!r}."
            )
        check_chunks(spatial_chunks, tiling)
    else:
        spatial_chunks = aligned_chunks(spatial, tiling, chunks)
    target = ((data.shape[0],), *spatial_chunks) if channels_first else spatial_chunks
    if not isinstance(data, da.Array):
        return _numpy_blocks(np.asarray(data), target)
    return data if data.chunks == target else data.rechunk(target)


def _numpy_blocks(x: np.ndarray, chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """A dask array whose blocks are views of ``x``, cut by tasks.

    ``da.from_array`` would first copy the whole field (against later mutation,
    which cannot happen: :func:`score` computes before it returns). Here ``x``
    enters the graph once (on a cluster it pickles without a copy, where views
    would each be copied) and every block is a view of it. Keys are random
    rather than a hash of the data, which would cost a pass over it; they stay
    unique per call, all the graph needs.
    """
    token = uuid.uuid4().hex
    whole, name = f"field-whole-{token}", f"field-{token}"
    blocks = itertools.product(*(range(len(c)) for c in chunks))  # C order, as the slices
    dsk: dict = {whole: x}
    for index, where in zip(blocks, slices_from_chunks(chunks), strict=True):
        dsk[(name, *index)] = (operator.getitem, whole, where)
    return da.Array(dsk, name, chunks, meta=x[(slice(0, 0),) * x.ndim])


def contribution_map(
    data: da.Array,
    model: TileModel,
    tiling: Tiling,
    *,
    method: Method = "auto",
    threads: int = 1,
    batch_pixels: int = BATCH_PIXELS,
    channels_first: bool = False,
    dims: tuple[str, ...] | None = None,
    reread: bool = False,
) -> da.Array:
    """Lazy float32 array of contributions, one per focus block, chunked like ``data``.

    ``dims`` names the spatial axes in errors (default: the model's). ``reread`` cuts
    the halos from a second read of ``data`` (:func:`~ednn_dask.halo.reread_overlap`)
    rather than from the chunks being scored. A multi-scale model runs each branch on
    its own coarsened copy (:func:`_branch_contributions`).
    """
    if model.spec.scales:
        return _branch_contributions(data, model, tiling, method=method, threads=threads,
                                     batch_pixels=batch_pixels, channels_first=channels_first,
                                     dims=dims, reread=reread)
    lead = 1 if channels_first else 0
    _check_context(data.chunks[lead:], tiling.context)
    depth = {lead + i: c for i, c in enumerate(tiling.context)}
    # where each chunk starts in the field: a NaN is reported at its field position
    starts = tuple(tuple(int(v) for v in np.cumsum((0, *sizes[:-1])))
                   for sizes in data.chunks[lead:])
    boundary = {lead + i: tiling.boundary for i in range(tiling.ndim)}
    if channels_first:
        depth[0], boundary[0] = 0, "none"
    out_chunks = tuple(
        tuple(s // f for s in sizes)
        for sizes, f in zip(data.chunks[lead:], tiling.focus, strict=True)
    )
    # The model enters the graph once, as a delayed object: every worker fetches it
    # once and builds its own InferenceSession (cached per process).
    model_key = dask.delayed(model, pure=True)
    padded = (reread_overlap(data, depth, boundary) if reread
              else da.overlap.overlap(data, depth, boundary, allow_rechunk=False))
    return padded.map_blocks(
        _score_block,
        chunks=out_chunks,
        drop_axis=[0] if channels_first else [],
        dtype=np.float32,
        meta=np.empty((0,) * tiling.ndim, np.float32),
        model=model_key,
        method=method,
        threads=threads,
        batch_pixels=batch_pixels,
        starts=starts,
        context=tiling.context,
        field_shape=tuple(map(sum, data.chunks[lead:])),
        dims=dims,
        # the name must change with the inputs, or a scheduler that saw another graph
        # returns that graph's results
        name="ednn-contributions-"
        + dask.base.tokenize(padded.name, model_key.key, method, threads, batch_pixels),
    )


def _check_context(spatial_chunks, context) -> None:
    for axis, (sizes, c) in enumerate(zip(spatial_chunks, context, strict=True)):
        if min(sizes) < c:
            raise GeometryError(
                f"chunk of {min(sizes)} pixels on spatial axis {axis} is smaller than the "
                f"context {c}; rechunk with ednn_dask.score.align first."
            )


def _branch_contributions(data: da.Array, model: TileModel, tiling: Tiling, *, method,
                          threads, batch_pixels, channels_first, dims, reread) -> da.Array:
    """:func:`contribution_map` of a multi-scale model: every branch on its own coarse copy.

    Each branch coarsens the field by its factor (the block mean, chunk by chunk:
    ``data``'s chunks are whole focus blocks of the model, so whole blocks of every
    factor), runs its own ``map_overlap`` with its own context, and sums its
    contributions onto the model's focus blocks; the branches' maps are added.
    """
    spec = model.spec
    lead = 1 if channels_first else 0
    spatial_chunks = data.chunks[lead:]
    starts = tuple(tuple(int(v) for v in np.cumsum((0, *sizes[:-1]))) for sizes in spatial_chunks)
    field_shape = tuple(map(sum, spatial_chunks))
    dims = dims or spec.spatial_dims
    total = None
    for scale, branch in zip(spec.scales, model.branches, strict=True):
        coarse = data
        if max(scale.factor) > 1:
            coarse = data.map_blocks(
                _coarsen_chunk, scale.factor, starts, field_shape, dims, dtype=np.float32,
                chunks=(*data.chunks[:lead], *(tuple(n // f for n in sizes) for sizes, f in
                                               zip(spatial_chunks, scale.factor, strict=True))),
                name=f"ednn-coarsen-{dask.base.tokenize(data.name, scale.factor)}")
        part = contribution_map(
            coarse, branch, Tiling(scale.focus, scale.context, tiling.boundary), method=method,
            threads=threads, batch_pixels=batch_pixels, channels_first=channels_first, dims=dims,
            reread=reread)
        per = tuple(f // b for f, b in zip(spec.focus, scale.block, strict=True))
        summed = part.map_blocks(block_sum, per, dtype=np.float64, chunks=tuple(
            tuple(n // f for n in sizes) for sizes, f in zip(spatial_chunks, spec.focus,
                                                            strict=True)))
        total = summed if total is None else total + summed
    return total.astype(np.float32)


def _coarsen_chunk(block, factor, starts, field_shape, dims, block_id=None):
    spatial_id = block_id[len(block_id) - len(starts):]
    origin = tuple(s[i] for s, i in zip(starts, spatial_id, strict=True))
    return coarsen(block, factor, origin, field_shape, dims)


def _score_block(block, model, *, method, threads, batch_pixels, starts, context,
                 field_shape, dims, block_id=None):
    spatial_id = block_id[len(block_id) - len(starts):] if block_id is not None else None
    origin = None if spatial_id is None else tuple(
        s[i] - c for s, i, c in zip(starts, spatial_id, context, strict=True))
    return block_contributions(
        block, model, method=method, threads=threads, batch_pixels=batch_pixels,
        origin=origin, field_shape=field_shape, dims=dims or None,
    )


def one_task(
    data: da.Array,
    model: TileModel,
    tiling: Tiling,
    *,
    method: Method = "auto",
    threads: int = 1,
    batch_pixels: int = BATCH_PIXELS,
    channels_first: bool = False,
    dims: tuple[str, ...] | None = None,
    keep_contributions: bool = True,
) -> Any:
    """:func:`score`'s graph for a field of one chunk: one task pads, scores and sums.

    The task computes what :func:`contribution_map` and the tree sum compute for one
    chunk, with the same functions, so the same numbers. Returns a ``dask.delayed``
    of ``(energy,)`` or ``(energy, contributions)``. The graph holds the field's
    chunk, the model and this task, where ``map_overlap`` and the reduction make
    some 30 tasks of a periodic 2-D chunk: every task is a key that the scheduler
    and the workers track, and some of that per-key state (dask's ``key_split``
    cache, holding up to 100,000 keys per process) outlives the job, so a batch of
    many small fields on one long-lived cluster grew with each field.
    """
    if data.npartitions != 1:
        raise GeometryError(f"one_task scores a field of one chunk; this one has "
                            f"{data.npartitions}: use contribution_map.")
    (block,) = data.to_delayed().ravel()
    model_key = dask.delayed(model, pure=True)  # as in contribution_map
    options = dict(method=method, threads=threads, batch_pixels=batch_pixels,
                   channels_first=channels_first, dims=dims,
                   keep_contributions=keep_contributions)
    name = "ednn-score-" + dask.base.tokenize(data.name, model_key.key, tiling, options)
    return dask.delayed(_score_one_chunk, pure=True)(block, model_key, tiling,
                                                     dask_key_name=name, **options)


def _score_one_chunk(block, model, tiling, *, keep_contributions, **options) -> tuple:
    values = _chunk_contributions(np.asarray(block), model, tiling, **options)
    # what the tree sum computes for one chunk: the chunk's sum in float64, then the sum
    # of that one value
    axes = tuple(range(values.ndim))
    energy = np.sum(np.sum(values, axis=axes, dtype=np.float64, keepdims=True), axis=axes,
                    dtype=np.float64)
    return (energy, values) if keep_contributions else (energy,)


def _chunk_contributions(block: np.ndarray, model: TileModel, tiling: Tiling, *, method,
                         threads, batch_pixels, channels_first, dims) -> np.ndarray:
    """:func:`contribution_map` of a field that is one chunk, ``block``, in numpy."""
    lead = 1 if channels_first else 0
    shape = block.shape[lead:]
    if model.spec.scales:  # as _branch_contributions
        dims = dims or model.spec.spatial_dims
        origin = (0,) * len(shape)
        total = None
        for scale, branch in zip(model.spec.scales, model.branches, strict=True):
            coarse = block
            if max(scale.factor) > 1:
                coarse = coarsen(block, scale.factor, origin, shape, dims)
            part = _chunk_contributions(
                coarse, branch, Tiling(scale.focus, scale.context, tiling.boundary),
                method=method, threads=threads, batch_pixels=batch_pixels,
                channels_first=channels_first, dims=dims)
            per = tuple(f // b for f, b in zip(model.spec.focus, scale.block, strict=True))
            summed = block_sum(part, per)
            total = summed if total is None else total + summed
        return total.astype(np.float32)
    _check_context([(n,) for n in shape], tiling.context)
    # map_overlap's halo of a single chunk: the periodic wrap, or the constant in the
    # block's dtype
    width = ((0, 0),) * lead + tuple((c, c) for c in tiling.context)
    if tiling.boundary == "periodic":
        padded = np.pad(block, width, mode="wrap")
    else:
        padded = np.pad(block, width, mode="constant",
                        constant_values=np.array(tiling.boundary).astype(block.dtype))
    return _score_block(padded, model, method=method, threads=threads,
                        batch_pixels=batch_pixels, starts=tuple((0,) for _ in shape),
                        context=tiling.context, field_shape=tuple(shape), dims=dims,
                        block_id=(0,) * block.ndim)


def score(
    field: Any,
    model: TileModel | str | os.PathLike,
    *,
    client=None,
    chunks=None,
    boundary: str | float | None = None,
    method: Method = "auto",
    spacing: float | tuple[float, ...] | None = None,
    variable: str | None = None,
    split_every: int = 8,
    threads: int = 1,
    keep_contributions: bool = True,
    progress: bool = False,
    pad: bool = False,
    reread: bool | None = None,
) -> ScoreResult:
    """Score a field with a tile model: the EDNN's extensive prediction.

    Parameters
    ----------
    field : ndarray, dask array, xarray.DataArray or path to a Zarr store
        The grid, ``(*spatial)`` or ``(channel, *spatial)``; each spatial axis a
        multiple of the model's focus.
    model : TileModel or path to an ONNX file
    client : distributed.Client, optional
        Where to compute. ``None`` uses the active client if there is one, else
        dask's threaded scheduler.
    chunks : int, tuple or None
        Wanted chunk length per spatial axis (rounded to whole focus blocks), or
        explicit chunk sizes per axis. ``None`` picks ~2048 px per axis in 2-D.
    boundary : "periodic", float or None
        The outside of the grid; ``None`` uses the model's convention.
    method : {"auto", "dense", "tiles"}
        ``"auto"`` runs whole chunks through fully convolutional models.
    spacing : float or tuple, optional
        Pixel spacing, for fields that do not declare one in their attrs.
    variable : str, optional
        Which data variable of a Zarr store (or ``xarray.Dataset``) to score;
        needed when it holds several.
    split_every : int
        Fan-in of the tree reduction of the energy.
    threads : int
        onnxruntime threads per dask task.
    keep_contributions : bool
        Compute and return the contribution map (one float per focus block).
    progress : bool
        Show a progress bar (dask's, or distributed's with a client).
    pad : bool
        Opt in to scoring a field whose shape is not a multiple of the focus: it is
        extended at the far end of each such axis with the (constant) boundary
        value, as if the outside of the grid began there. Periodic fields are never
        padded: that would change their period.
    reread : bool or None
        Cut the context halos from a second read of the field, so each chunk is freed
        once it is scored and memory stays flat however large the field
        (:mod:`ednn_dask.halo`), for the cost of reading it twice. ``None``: for lazy
        (dask-backed, e.g. Zarr) fields larger than
        :data:`~ednn_dask.defaults.REREAD_BYTES`.

    Returns
    -------
    ScoreResult
        ``.energy`` (float64 sum), ``.contributions`` (DataArray on the focus grid),
        ``.n_tiles``, ``.n_chunks`` and ``.seconds``.
    """
    t0 = time.perf_counter()
    model = load_model(model)
    method_ = resolve_method(method, model)
    tiling = model.spec.tiling.with_boundary(boundary)
    f = prepare_field(field, model, spacing=spacing, variable=variable)
    channels_first = CHANNEL_DIM in f.dims
    if pad:
        f = pad_to_focus(f, tiling)
    spatial_shape = f.shape[1:] if channels_first else f.shape
    tiling.check(spatial_shape)
    data = align(f.data, tiling, chunks, channels_first=channels_first)
    spatial_dims = f.dims[1:] if channels_first else f.dims
    options = dict(method=method_, threads=threads, channels_first=channels_first,
                   dims=tuple(map(str, spatial_dims)))
    if data.npartitions == 1:
        n_chunks = 1
        task = one_task(data, model, tiling, keep_contributions=keep_contributions, **options)
    else:
        if reread is None:
            reread = isinstance(f.data, da.Array) and f.nbytes > REREAD_BYTES
        contrib = contribution_map(data, model, tiling, reread=reread, **options)
        n_chunks = math.prod(len(c) for c in contrib.chunks)
        energy = contrib.sum(dtype=np.float64, split_every=split_every)
    t1 = time.perf_counter()
    try:
        if data.npartitions == 1:
            (values,) = compute((task,), client, progress)
        else:
            values = compute((energy, contrib) if keep_contributions else (energy,), client,
                             progress)
    except NonFiniteFieldError as err:
        raise locate(err, f) from None
    t2 = time.perf_counter()
    contributions = (
        _label_contributions(values[1], f, spatial_dims, tiling, model) if keep_contributions
        else None
    )
    return ScoreResult(
        energy=float(values[0]),
        contributions=contributions,
        n_tiles=math.prod(tiling.grid(spatial_shape)),
        n_chunks=n_chunks,
        method=method_,
        target=model.spec.target,
        unit=model.spec.target_unit,
        model_sha256=model.sha256,
        seconds={"graph": t1 - t0, "compute": t2 - t1, "total": t2 - t0},
        n_pixels=math.prod(spatial_shape),
    )


def locate(err: NonFiniteFieldError, f: xr.DataArray) -> NonFiniteFieldError:
    """``err`` with the coordinates of its position in ``f``, when ``f`` has coords."""
    spatial_dims = [d for d in f.dims if d != CHANNEL_DIM]
    if len(spatial_dims) != len(err.index):
        return err
    dims = tuple(map(str, spatial_dims))
    coords = unit = None
    if all(d in f.coords for d in spatial_dims):
        coords = tuple(float(f[d].values[i]) for d, i in zip(spatial_dims, err.index, strict=True))
        units = {f[d].attrs.get("units") for d in spatial_dims}
        unit = units.pop() if len(units) == 1 else None
        unit = unit or f.attrs.get("spacing_unit")
    return NonFiniteFieldError(err.value, err.index, dims, channel=err.channel, coords=coords,
                               unit=unit)


def pad_to_focus(f: xr.DataArray, tiling: Tiling) -> xr.DataArray:
    """Extend each spatial axis at its far end to whole focus blocks with the boundary value."""
    spatial_dims = [d for d in f.dims if d != CHANNEL_DIM]
    extra = {d: -f.sizes[d] % fo for d, fo in zip(spatial_dims, tiling.focus, strict=True)}
    if not any(extra.values()):
        return f
    if tiling.boundary == "periodic":
        raise GeometryError(
            f"a periodic field of shape {tuple(f.sizes[d] for d in spatial_dims)} cannot be padded "
            f"to whole focus blocks {tiling.focus}: padding would change its period. Crop it, "
            f"or build a cell that is a multiple of the focus."
        )
    padded = f.pad({d: (0, e) for d, e in extra.items() if e}, mode="constant",
                   constant_values=tiling.boundary)
    for d, e in extra.items():
        if e and d in f.coords and f.sizes[d] > 1:  # extend evenly spaced coords
            values = np.asarray(f[d].values, dtype=float)
            step = values[1] - values[0]
            padded = padded.assign_coords({d: values[0] + step * np.arange(padded.sizes[d])})
    padded.attrs = {**f.attrs, "padded": {d: e for d, e in extra.items() if e}}
    return padded


def _label_contributions(values, f, spatial_dims, tiling, model) -> xr.DataArray:
    """Put the contributions on the focus grid, with coords at the focus-block centres."""
    coords = {}
    for dim, focus in zip(spatial_dims, tiling.focus, strict=True):
        if dim in f.coords:
            coords[dim] = np.asarray(f[dim].values, dtype=float).reshape(-1, focus).mean(axis=1)
    return xr.DataArray(
        values,
        dims=spatial_dims,
        coords=coords,
        name="contribution",
        attrs={
            "long_name": f"{model.spec.target} contribution per focus block",
            "units": model.spec.target_unit,
            "focus": list(tiling.focus),
            "context": list(tiling.context),
            "model_sha256": model.sha256,
        },
    )
