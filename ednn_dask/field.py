"""Fields: labelled grids as ``xarray.DataArray``, stored as Zarr v3.

A field has named spatial dims (``("y", "x")`` or ``("z", "y", "x")``), an
optional leading ``"channel"`` dim, coordinates in physical units when it has a
pixel spacing, and attrs saying how it was made (``spacing``, ``spacing_unit``,
...). Stores are written to a temporary sibling and renamed when complete, so a
store that exists is a store that was finished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ednn_dask.defaults import CHANNEL_DIM, SPATIAL_DIMS
from ednn_dask.errors import FieldError, StoreNotFoundError
from ednn_dask.storage import atomic_output


def make_field(
    data: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    dims: Sequence[str] | None = None,
    spacing_unit: str = "angstrom",
    attrs: dict[str, Any] | None = None,
    name: str = "field",
) -> xr.DataArray:
    """Wrap a numpy or dask array as a field.

    Parameters
    ----------
    data : array-like
        Grid values; a leading axis beyond ``dims`` is taken as channels.
    spacing : float or sequence of float, optional
        Pixel size per spatial axis. Gives the field coordinates (pixel centres,
        from ``spacing / 2``) and the ``spacing`` attr the model is checked against.
        ``None`` for lattice fields (Ising spins), which carry no length scale.
    dims : sequence of str, optional
        Spatial dim names; default ``("y", "x")`` for 2-D, ``("z", "y", "x")`` for 3-D.
        Without ``dims`` the number of spatial axes is ``len(spacing)`` when spacing
        is a sequence, else every axis of ``data`` (give one of them for channels).
    """
    if dims is not None and CHANNEL_DIM in dims:
        raise FieldError(
            f"dims {tuple(dims)!r} name the channel axis; dims are the spatial axes only: a "
            f"leading axis beyond them is taken as {CHANNEL_DIM!r} (e.g. dims=('y', 'x'))."
        )
    if spacing is not None and dims is not None and np.ndim(spacing) == 1 \
            and len(spacing) != len(dims):
        raise FieldError(f"spacing {tuple(spacing)!r} must give one value per spatial dim "
                         f"{tuple(dims)!r}, or one value for all.")
    if dims is not None:
        ndim = len(dims)
    elif spacing is not None and np.ndim(spacing) == 1:
        ndim = len(spacing)
    else:
        ndim = min(np.ndim(data), 3)
    dims = tuple(dims or SPATIAL_DIMS[ndim])
    full_dims = dims if np.ndim(data) == ndim else (CHANNEL_DIM, *dims)
    if np.ndim(data) != len(full_dims):
        raise FieldError(
            f"data of shape {np.shape(data)!r} does not fit dims {dims!r} (plus an optional "
            f"leading {CHANNEL_DIM!r})."
        )
    attrs = dict(attrs or {})
    coords = {}
    if spacing is not None:
        spacing_t = tuple(float(s) for s in np.broadcast_to(spacing, (ndim,)))
        shape = np.shape(data)[-ndim:]
        coords = {
            d: (np.arange(n) + 0.5) * s for d, n, s in zip(dims, shape, spacing_t, strict=True)
        }
        attrs.update(spacing=list(spacing_t), spacing_unit=spacing_unit)
    field = xr.DataArray(data, dims=full_dims, coords=coords, attrs=attrs, name=name)
    for d in coords:
        field[d].attrs["units"] = spacing_unit
    return field


def field_spacing(field: xr.DataArray) -> tuple[float, ...] | None:
    """The pixel spacing a field declares in its attrs, or ``None``."""
    spacing = field.attrs.get("spacing")
    if spacing is None:
        return None
    ndim = field.ndim - (CHANNEL_DIM in field.dims)
    return tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,)))


def open_field(
    path: str | os.PathLike, variable: str | None = None, *, allow_missing_chunks: bool = False
) -> xr.DataArray:
    """Open a field stored in Zarr lazily (dask-backed), with its coords and attrs.

    Parameters
    ----------
    path : str or path-like
        A Zarr store written by :func:`save_field` or by ``xarray.Dataset.to_zarr``.
    variable : str, optional
        Which data variable to open; required when the store holds several.
    allow_missing_chunks : bool
        Zarr reads a missing chunk as the fill value, which would silently change
        an energy, so a store with missing chunks (truncated, copied in part) is
        refused unless its writer skipped chunks equal to the fill value on purpose.
    """
    path = Path(path)
    if not path.exists():
        raise StoreNotFoundError(
            f"field store {str(path)!r} does not exist; give the path of a Zarr store "
            f"(written by save_field or xarray's to_zarr)."
        )
    try:
        ds = xr.open_zarr(path, consolidated=False, chunks={})
    except Exception as err:  # zarr raises several types for "not a store"
        raise StoreNotFoundError(
            f"{str(path)!r} is not a Zarr store that xarray can open "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            f"give the path of a Zarr store (written by save_field or xarray's to_zarr)."
        ) from None
    names = list(ds.data_vars)
    if variable is None:
        if len(names) != 1:
            raise FieldError(
                f"store {str(path)!r} holds variables {names!r}, so which one is the field is "
                f"ambiguous; choose one (Python: variable=...; CLI: --variable NAME)."
            )
        variable = names[0]
    if variable not in ds:
        raise FieldError(f"store {str(path)!r} has no variable {variable!r}; choose one of "
                         f"{names!r}.")
    if not allow_missing_chunks:
        _check_all_chunks(path, variable)
    field = ds[variable]
    field.encoding["source"] = str(path)
    return field


def _check_all_chunks(path: Path, variable: str) -> None:
    import zarr

    array = zarr.open_group(path, mode="r")[variable]
    have, want = array.nchunks_initialized, array.nchunks
    if have < want:
        raise FieldError(
            f"store {str(path)!r} is incomplete: variable {variable!r} has {have} of its {want} "
            f"chunks on disk, and a missing chunk would read as the fill value "
            f"({array.fill_value}). Re-write or re-copy the store; if its writer skipped "
            f"chunks equal to the fill value on purpose, open it in Python with "
            f"open_field(..., allow_missing_chunks=True)."
        )


def save_field(
    field: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    chunks: dict[str, int] | None = None,
    compute: bool = True,
) -> Path:
    """Write a field to a Zarr v3 store, atomically.

    The store is written to a hidden sibling and renamed onto ``path`` once
    complete; a failure leaves no store at ``path``. Dask-backed fields are
    written chunk by chunk and never held in memory whole.
    """
    if not isinstance(field, xr.DataArray):
        raise FieldError(f"save_field expects an xarray.DataArray, got {type(field).__name__}.")
    name = field.name or "field"
    if name in field.dims or name in field.coords:
        raise FieldError(
            f"a field named {name!r} cannot be stored beside its dim or coordinate of that "
            f"name (dims {tuple(field.dims)!r}): the store would hold no data variable to "
            f"open. Rename it, e.g. field.rename({'field' if name != 'field' else 'values'!r})."
        )
    field = field if chunks is None else field.chunk(chunks)
    ds = field.to_dataset(name=name)
    for var in ds.variables.values():
        var.encoding.clear()
    return write_zarr_atomic(ds, path, overwrite=overwrite, write_empty_chunks=True)


def write_zarr_atomic(
    ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False,
    write_empty_chunks: bool | None = None,
) -> Path:
    """Write a Dataset to Zarr v3 at a hidden sibling, then rename it onto ``path``.

    A crash never leaves a half-written store under ``path``; with ``overwrite``
    the old store is parked aside and dropped only once the new one is in place.
    """
    with atomic_output(path, overwrite=overwrite) as tmp:
        # consolidated metadata is not part of the Zarr v3 spec (zarr warns): skip it
        ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False,
                   write_empty_chunks=write_empty_chunks)
    return Path(path)


def as_field(
    obj: Any, ndim: int, dims: Sequence[str] | None = None, *, variable: str | None = None
) -> xr.DataArray:
    """Normalize a numpy array, dask array, DataArray, Dataset or Zarr path to a field.

    ``variable`` chooses the data variable of a Zarr store or Dataset.
    """
    if isinstance(obj, (str, os.PathLike)):
        return open_field(obj, variable)
    if isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if variable is None and len(names) == 1:
            variable = names[0]
        if variable not in obj.data_vars:
            raise FieldError(
                f"the Dataset holds variables {names!r}; choose the field with "
                f"variable=NAME (one of them) or pass that DataArray."
            )
        return obj[variable]
    if variable is not None:
        raise FieldError(
            f"variable={variable!r} chooses a variable of a Zarr store or Dataset, but the "
            f"field is a {type(obj).__name__}; pass the field alone."
        )
    if isinstance(obj, xr.DataArray):
        return obj
    if isinstance(obj, (np.ndarray, da.Array)):
        if obj.ndim not in (ndim, ndim + 1):
            raise FieldError(
                f"the model is {ndim}-d; a field array must have {ndim} axes (or {ndim + 1} "
                f"with channels first), got shape {obj.shape!r}."
            )
        return make_field(obj, dims=dims or SPATIAL_DIMS[ndim])
    raise FieldError(
        f"a field must be a numpy array, a dask array, an xarray.DataArray or a path to a "
        f"Zarr store; got {type(obj).__name__}."
    )
