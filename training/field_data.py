"""Your own training data: a documented data-set format, checked on load, streamed in chunks.

The format (``docs/guide/your-own-data.md``) is an xarray Dataset in Zarr (or any
store xarray opens) holding

- a *field* variable of dims ``("sample", *spatial)`` or ``("sample", "channel",
  *spatial)`` with 2 or 3 spatial dims, finite values;
- its pixel spacing: 1-D coordinates on the spatial dims, evenly spaced, with a
  ``units`` attr (or the field's attrs ``spacing`` and ``spacing_unit``); or, for
  lattice models with no length scale (spins, occupations), the field attr
  ``lattice = True`` and no spacing;
- a *target* variable of dims ``("sample",)``, finite, with a ``units`` attr.

:func:`open_field_data` checks all of this without reading the fields (the
targets, small, are read); :class:`SampleStream` then reads the fields a slab of
samples at a time, through a shuffle buffer, so training memory does not grow with
the number of samples. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.defaults import CHANNEL_DIM, SPATIAL_DIMS
from ednn_dask.errors import DataSetError, StoreNotFoundError

SAMPLE_DIM = "sample"
SPACING_RTOL = 1e-6  # coordinates evenly spaced to this relative tolerance
READ_BYTES = 32 * 2**20  # one read of the stream: a slab of about this many bytes of field
BUFFER_BYTES = 256 * 2**20  # the shuffle buffer holds at most about this many bytes


@dataclass(frozen=True)
class FieldDataSpec:
    """What a checked data set holds: the names, the geometry and the units.

    ``shape`` is ``(samples, channels, *spatial)``; ``spacing`` is per spatial dim,
    in ``spacing_unit``; ``chunk`` is the store's chunk length along ``sample``.
    """

    path: str
    field: str
    target: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    has_channel: bool
    spacing: tuple[float, ...] | None
    spacing_unit: str | None
    target_unit: str
    chunk: int

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]


def field_dataset(
    fields: Any,
    targets: Any,
    *,
    spacing: float | Sequence[float],
    spacing_unit: str,
    target_unit: str,
    field: str = "field",
    target: str = "target",
    dims: Sequence[str] | None = None,
    channels: bool = False,
) -> xr.Dataset:
    """Numpy arrays as a data set in the documented format.

    Parameters
    ----------
    fields : array-like or sequence of arrays
        ``(samples, *spatial)``, or ``(samples, channels, *spatial)`` with
        ``channels=True``; a list of per-sample arrays must all have one shape.
    targets : array-like
        ``(samples,)``, the extensive label of each sample.
    spacing : float or sequence of float
        Pixel size per spatial axis, in ``spacing_unit``.
    dims : sequence of str, optional
        Spatial dim names, default ``("y", "x")`` or ``("z", "y", "x")``.

    Examples
    --------
    >>> ds = field_dataset(np.zeros((4, 8, 8)), np.zeros(4), spacing=0.5,
    ...                    spacing_unit="nm", target_unit="eV")
    >>> dict(ds.sizes), ds["x"].values[:2].tolist(), ds["target"].attrs["units"]
    ({'sample': 4, 'y': 8, 'x': 8}, [0.25, 0.75], 'eV')
    """
    if isinstance(fields, (list, tuple)):
        shapes = sorted({np.shape(f) for f in fields})
        if len(shapes) > 1:
            raise DataSetError(
                f"the fields have different shapes {shapes[:3]!r}"
                f"{' ...' if len(shapes) > 3 else ''}; every sample must have one shape: crop "
                f"or pad them to one size (a multiple of the focus), or make one data set per "
                f"size.")
    x = np.asarray(fields)
    lead = 2 if channels else 1
    nd = x.ndim - lead
    if nd not in (2, 3):
        raise DataSetError(
            f"fields of shape {x.shape!r} have {nd} spatial axes; give (samples, *spatial) or, "
            f"with channels=True, (samples, channels, *spatial), with 2 or 3 spatial axes.")
    dims = tuple(dims or SPATIAL_DIMS[nd])
    step = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (nd,)))
    coords = {d: ((d,), (np.arange(n) + 0.5) * s, {"units": spacing_unit})
              for d, n, s in zip(dims, x.shape[lead:], step, strict=True)}
    lead_dims = (SAMPLE_DIM, CHANNEL_DIM) if channels else (SAMPLE_DIM,)
    return xr.Dataset(
        {field: ((*lead_dims, *dims), x, {"spacing": list(step), "spacing_unit": spacing_unit}),
         target: ((SAMPLE_DIM,), np.asarray(targets, dtype=np.float64), {"units": target_unit})},
        coords=coords,
    )


def open_field_data(
    path: str | os.PathLike, field: str, target: str
) -> tuple[xr.Dataset, FieldDataSpec]:
    """Open a data set lazily and check it against the format; the fields stay on disk.

    Returns the Dataset (lazily indexed, no dask) and its :class:`FieldDataSpec`.

    Raises
    ------
    StoreNotFoundError
        No store at ``path``.
    DataSetError
        A rule of the format is broken; the message names the variable, the value and the fix.
    """
    store = Path(path)
    if not store.exists():
        raise StoreNotFoundError(
            f"no data set at {str(store)!r}; check the path (a Zarr store, or any file "
            f"xarray opens, e.g. netCDF).")
    ds = _open(store)
    names = sorted(map(str, ds.data_vars))
    for role, name in (("field", field), ("target", target)):
        if name not in ds.data_vars:
            raise DataSetError(
                f"data set {str(store)!r} has no {role} variable {name!r}; its variables are "
                f"{names!r}: choose one (--{role} NAME).")
    f, y = ds[field], ds[target]
    if y.dims != (SAMPLE_DIM,):
        raise DataSetError(
            f"target {target!r} has dims {y.dims!r}; it must have dims ('sample',): "
            f"one value per sample.")
    dims = tuple(map(str, f.dims))
    has_channel = len(dims) > 1 and dims[1] == CHANNEL_DIM
    spatial = dims[2:] if has_channel else dims[1:]
    if dims[:1] != (SAMPLE_DIM,) or len(spatial) not in (2, 3) or CHANNEL_DIM in spatial:
        raise DataSetError(
            f"field {field!r} has dims {dims!r}; it must have dims ('sample', *spatial) or "
            f"('sample', 'channel', *spatial) with 2 or 3 spatial dims: transpose or rename "
            f"them (xarray: .transpose('sample', ...), .rename(...)).")
    if not (np.issubdtype(f.dtype, np.number) or f.dtype == bool):
        raise DataSetError(f"field {field!r} has dtype {f.dtype}; it must be numeric.")
    if "units" not in y.attrs:
        raise DataSetError(
            f"target {target!r} has no 'units' attr; say its unit (e.g. "
            f"ds[{target!r}].attrs['units'] = 'eV', or '1' for a pure number).")
    values = np.asarray(y.values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataSetError(
            f"target {target!r} holds {bad.size} non-finite value(s) ({float(values[bad[0]])!r} at "
            f"sample {int(bad[0])}); every label must be finite: drop those samples "
            f"(ds.isel(sample=...)) or recompute them.")
    spacing, unit = _spacing(f, spatial, field)
    shape = (f.sizes[SAMPLE_DIM], f.sizes[CHANNEL_DIM] if has_channel else 1,
             *(f.sizes[d] for d in spatial))
    if shape[0] < 3:
        raise DataSetError(
            f"data set {str(store)!r} holds {shape[0]} sample(s); training needs at least 3 "
            f"(train, validation and test splits).")
    chunk = _sample_chunk(f)
    spec = FieldDataSpec(str(store), field, target, spatial, shape, has_channel, spacing, unit,
                         str(y.attrs["units"]), chunk)
    return ds, spec


def _open(store: Path) -> xr.Dataset:
    try:
        if store.is_dir():
            with warnings.catch_warnings():  # a store without consolidated metadata is fine
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
                return xr.open_zarr(store, consolidated=None, chunks=None)
        return xr.open_dataset(store, chunks=None)
    except ValueError as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "conflicting sizes" in text or "size" in text:
            raise DataSetError(
                f"data set {str(store)!r} has ragged sizes ({text}); the field and the target "
                f"must have the same number of samples, and every sample one shape.") from None
        raise DataSetError(f"{str(store)!r} is not a data set xarray can open ({text}).") from None
    except Exception as err:  # stores raise many types for "not a store"
        text = str(err).splitlines()[0][:200] if str(err) else ""
        raise DataSetError(
            f"{str(store)!r} is not a data set xarray can open ({type(err).__name__}: {text}); "
            f"give a Zarr store or a netCDF file.") from None


def _spacing(f: xr.DataArray, spatial: tuple[str, ...], name: str
             ) -> tuple[tuple[float, ...] | None, str | None]:
    """Pixel spacing and unit: from the coordinates, else from the attrs, else refused.

    A lattice (attr ``lattice`` true) has none: its models carry no length scale.
    """
    if f.attrs.get("lattice"):
        return None, None
    if all(d in f.coords for d in spatial):
        steps, units = [], []
        for d in spatial:
            c = np.asarray(f[d].values, dtype=np.float64)
            diffs = np.diff(c) if c.size > 1 else np.array([np.nan])
            if c.size > 1 and not np.allclose(diffs, diffs[0], rtol=SPACING_RTOL, atol=0):
                raise DataSetError(
                    f"coordinate {d!r} of field {name!r} is not evenly spaced (steps from "
                    f"{diffs.min():g} to {diffs.max():g}); EDNN fields are regular grids: "
                    f"resample the fields onto an even grid.")
            if not diffs[0] > 0:
                if "spacing" in f.attrs:
                    break  # one-pixel or constant coords: fall back to the attrs
                raise DataSetError(
                    f"coordinate {d!r} of field {name!r} does not increase ({c[:2].tolist()!r}); "
                    f"give increasing coordinates in physical units.")
            steps.append(float(diffs[0]))
            units.append(f[d].attrs.get("units", f.attrs.get("spacing_unit")))
        else:
            if any(u is None for u in units):
                missing = [d for d, u in zip(spatial, units, strict=True) if u is None]
                raise DataSetError(
                    f"coordinates {missing!r} of field {name!r} have no 'units' attr; say the "
                    f"unit of length (e.g. ds[{missing[0]!r}].attrs['units'] = 'nm').")
            if len(set(units)) > 1:
                raise DataSetError(
                    f"coordinates {spatial!r} of field {name!r} have different units {units!r}; "
                    f"give them in one unit of length.")
            return tuple(steps), str(units[0])
    if "spacing" in f.attrs:
        spacing = np.broadcast_to(np.asarray(f.attrs["spacing"], float), (len(spatial),))
        unit = f.attrs.get("spacing_unit")
        if unit is None or not all(s > 0 and math.isfinite(s) for s in spacing):
            raise DataSetError(
                f"field {name!r} attrs spacing={f.attrs['spacing']!r}, "
                f"spacing_unit={unit!r}; the spacing must be positive and the unit given.")
        return tuple(float(s) for s in spacing), str(unit)
    raise DataSetError(
        f"field {name!r} has no pixel spacing: no coordinates on {spatial!r} and no 'spacing' "
        f"attr; add coordinates in physical units (training.field_dataset(..., spacing=...)) "
        f"or attrs spacing=[...] and spacing_unit='...'.")


def _sample_chunk(f: xr.DataArray) -> int:
    chunks = f.encoding.get("chunks") or f.encoding.get("preferred_chunks", {})
    if isinstance(chunks, dict):
        return int(chunks.get(SAMPLE_DIM, 0)) or 1
    return int(chunks[0]) if chunks else 1


def stream_hash(ds: xr.Dataset, names: Sequence[str], samples: int = 256) -> str:
    """Short content hash of ``ds[names]`` (a field data set), read a slab at a time.

    sha256 of name, dtype, shape and C-order bytes per variable, in sorted name
    order, first 16 hex digits, as :func:`training.datasets.dataset_hash`, except
    that float64 values are hashed at float32 precision: a data set regenerated on
    another CPU, whose vectorised ``exp``, sums and FFTs differ in the last bits,
    is the same data set (the test split stays defined on it). A variable is never
    held in memory whole.
    """
    digest = hashlib.sha256()
    for name in sorted(names):
        var = ds[name]
        dtype = np.dtype(var.dtype).newbyteorder("<")
        digest.update(f"{name}|{dtype.str}|{tuple(var.shape)}|".encode())
        hashed = np.dtype("<f4") if dtype == np.dtype("<f8") else dtype
        n = var.shape[0] if var.ndim else 1
        for start in range(0, n, samples):
            part = np.asarray(var[start : start + samples].values if var.ndim else var.values)
            digest.update(np.ascontiguousarray(part.astype(hashed, copy=False)).tobytes())
    return digest.hexdigest()[:16]


class SampleStream:
    """Samples of a field variable read from its store in slabs, through a shuffle buffer.

    Memory holds one slab (about ``READ_BYTES``) and the buffer (at most
    ``buffer`` samples, about ``BUFFER_BYTES``), whatever the number of samples.
    Values are returned as float32 ``(batch, channels, *spatial)``; a non-finite
    value is refused, naming its sample.
    """

    def __init__(self, ds: xr.Dataset, spec: FieldDataSpec, *, buffer: int | None = None,
                 slab: int | None = None):
        self.var, self.spec = ds[spec.field], spec
        per_sample = 4 * math.prod(spec.shape[1:])
        if slab is None:  # whole store chunks, about READ_BYTES
            slab = max(spec.chunk, max(1, READ_BYTES // per_sample) // spec.chunk * spec.chunk)
        self.slab = int(slab)
        self.buffer = buffer or max(1, BUFFER_BYTES // per_sample)
        self.shape = spec.shape

    def __len__(self) -> int:
        return self.spec.n

    def _read(self, start: int, stop: int) -> np.ndarray:
        x = np.asarray(self.var[start:stop].values, dtype=np.float32)
        if not self.spec.has_channel:
            x = x[:, None]
        finite = np.isfinite(x)
        if not finite.all():
            first = int(np.argwhere(~finite)[0][0]) + start
            raise DataSetError(
                f"field {self.spec.field!r} holds NaN or Inf in sample {first}; fields must "
                f"be finite: drop or repair that sample (ragged samples padded with NaN "
                f"must be cropped to one size).")
        return x

    def _slabs(self, members: np.ndarray, order: Sequence[int]):
        """(indices, fields) of the members in each slab, slabs in ``order``."""
        for k in order:
            start = int(k) * self.slab
            stop = min(start + self.slab, self.spec.n)
            lo, hi = np.searchsorted(members, [start, stop])
            if hi > lo:
                idx = members[lo:hi]
                yield idx, self._read(start, stop)[idx - start]

    def ordered(self, indices: np.ndarray,
                batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, fields) batches of ``indices`` in store order (one pass, no shuffle)."""
        members = np.unique(np.asarray(indices, dtype=np.int64))
        for idx, x in self._slabs(members, range(-(-self.spec.n // self.slab))):
            for i in range(0, len(idx), batch_size):
                yield idx[i : i + batch_size], x[i : i + batch_size]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The fields of ``indices``, in that order, in memory (keep it small)."""
        indices = np.asarray(indices, dtype=np.int64)
        parts = list(self.ordered(indices, batch_size=len(indices) or 1))
        if not parts:
            return np.zeros((0, *self.shape[1:]), np.float32)
        idx = np.concatenate([p[0] for p in parts])
        x = np.concatenate([p[1] for p in parts])
        return x[np.searchsorted(idx, indices)]

    def batches(self, indices: np.ndarray, batch_size: int,
                rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled (indices, fields) mini-batches covering ``indices`` once.

        Slabs are read in random order into a buffer of ``self.buffer`` samples;
        each batch is drawn at random from the buffer. A data set that fits the
        buffer is shuffled completely.
        """
        members = np.unique(np.asarray(indices, dtype=np.int64))
        n_slabs = -(-self.spec.n // self.slab)
        buf_i: list[np.ndarray] = []
        buf_x: list[np.ndarray] = []
        held = 0
        for idx, x in self._slabs(members, rng.permutation(n_slabs)):
            buf_i.append(idx)
            buf_x.append(x)
            held += len(idx)
            if held >= self.buffer + batch_size:
                all_i, all_x = np.concatenate(buf_i), np.concatenate(buf_x)
                perm = rng.permutation(len(all_i))
                n_out = (held - self.buffer) // batch_size * batch_size
                for s in range(0, n_out, batch_size):
                    pick = perm[s : s + batch_size]
                    yield all_i[pick], all_x[pick]
                keep = perm[n_out:]
                buf_i, buf_x, held = [all_i[keep]], [all_x[keep]], len(keep)
        if held:
            all_i, all_x = np.concatenate(buf_i), np.concatenate(buf_x)
            perm = rng.permutation(len(all_i))
            for s in range(0, len(perm), batch_size):
                pick = perm[s : s + batch_size]
                yield all_i[pick], all_x[pick]

    def statistics(self, indices: np.ndarray, samples: int = 1024) -> tuple[float, float]:
        """Mean and standard deviation of the field over (up to ``samples`` of) ``indices``."""
        indices = np.asarray(indices)
        pick = np.random.default_rng(0).permutation(len(indices))[:samples]
        x = self.take(np.sort(indices[pick]))
        return float(x.mean()), float(x.std())
