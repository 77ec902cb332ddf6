"""Data sets on disk: Zarr v3 stores written atomically, read back whole, hashed for provenance."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import xarray as xr

from ednn_dask.errors import StoreNotFoundError
from ednn_dask.field import write_zarr_atomic


def dataset_hash(ds: xr.Dataset) -> str:
    """Short content hash of a data set's data variables, for provenance.

    sha256 over, for every data variable in sorted name order, its name, dtype,
    shape and raw little-endian C-order bytes.  Attrs and coordinates are not
    included, so a data set hashes the same before and after a save/load round trip.

    Returns
    -------
    str
        The first 16 hex characters of the digest.
    """
    digest = hashlib.sha256()
    for name in sorted(map(str, ds.data_vars)):
        values = np.asarray(ds[name].values)
        values = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
        digest.update(f"{name}|{values.dtype.str}|{values.shape}|".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:16]


def save_dataset(ds: xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a data set as a Zarr v3 store, atomically.

    The store is written into a hidden sibling directory and renamed onto
    ``path`` only once complete, so a crash never leaves a half-written store
    under the target name.  With ``overwrite`` the old store is removed only
    after the new one is complete.

    Parameters
    ----------
    ds : xarray.Dataset
        Data set to write.
    path : str or os.PathLike
        Target store (a directory, conventionally ``*.zarr``).
    overwrite : bool, optional
        Replace an existing store.

    Returns
    -------
    pathlib.Path
        The target path.

    Raises
    ------
    OutputExistsError
        (a ``FileExistsError``) if ``path`` exists and ``overwrite`` is False.
    """
    return write_zarr_atomic(ds, path, overwrite=overwrite)


def load_dataset(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a data set written by :func:`save_dataset`, loaded into memory.

    Raises
    ------
    StoreNotFoundError
        (a ``FileNotFoundError``) if ``path`` does not exist.
    """
    store = Path(path)
    if not (store / "zarr.json").exists():
        raise StoreNotFoundError(
            f"no data set at {str(store)!r}; check the path or generate one (ednn-dask data)."
        )
    with xr.open_zarr(store, zarr_format=3, consolidated=False) as ds:
        return ds.load()
