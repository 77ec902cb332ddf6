"""Resumable Monte Carlo runs: a Zarr store of measured frames plus the chain's state.

The store is created atomically with every frame pending (NaN), so it opens
with :func:`xarray.open_zarr` while the chain runs. Frames are written in place
as they are measured; after each write the chain's whole state (field, block
contributions, running energy, positions, counters and the bit generator's
state) is written to the idle one of two slot groups under ``chain_state``, and
rewriting that group's attributes (one atomic file write in Zarr's local
store) commits it. A run killed at any moment continues from the last commit,
rewriting any frame written after it, and so reproduces the
uninterrupted chain bit for bit. The store's ``config`` attribute records the
command's settings; running the same command again continues, another
command is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ednn_dask.errors import OutputExistsError
from ednn_dask.field import write_zarr_atomic

STATE_GROUP = "chain_state"

CHECKPOINT_SECONDS = 5.0
"""Seconds between writes of a run's frames and state (and at its end)."""


class RunStore:
    """The Zarr store of one Monte Carlo run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.group = zarr.open_group(self.path, mode="r+", zarr_format=3)

    @classmethod
    def open(cls, path: str | os.PathLike, template: xr.Dataset, config: dict[str, Any], *,
             overwrite: bool = False) -> RunStore:
        """Continue the run at ``path`` made with ``config``, or create it from ``template``.

        ``template`` is a lazy (dask-backed) data set of the frames, all NaN; only its
        metadata and non-empty chunks are written.
        """
        path = Path(path)
        config = json.loads(json.dumps(config))  # as it will read back
        if path.exists() and not overwrite:
            found = _read_config(path)
            if found is None:
                raise OutputExistsError(f"{str(path)!r} exists and is not a Monte Carlo run; "
                                        f"choose another output or pass --overwrite.")
            if found != config:
                changed = sorted(k for k in config.keys() | found.keys()
                                 if found.get(k) != config.get(k))
                raise OutputExistsError(
                    f"{str(path)!r} holds another run (settings differ: {', '.join(changed)}); "
                    f"give the same settings to continue it, another output, or --overwrite "
                    f"to replace it."
                )
            return cls(path)
        template = template.assign_attrs(config=config, complete=False, frames_done=0)
        write_zarr_atomic(template, path, overwrite=overwrite, write_empty_chunks=False)
        return cls(path)

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    def write_frames(self, start: int, frames: dict[str, np.ndarray], index: tuple = ()) -> None:
        """Write frames ``start, start + 1, ...`` of each named variable (at ``index`` before)."""
        for name, values in frames.items():
            self.group[name][(*index, slice(start, start + len(values)))] = values

    def save_state(self, state: dict[str, Any]) -> None:
        """Commit the chain's state (arrays, numbers and the JSON-able rest) atomically.

        The arrays go to the slot group not in use; rewriting the ``chain_state``
        group's metadata (one atomic file write in Zarr's local store) commits them.
        """
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray) or _is_dask(v)}
        rest = json.loads(json.dumps({k: v for k, v in state.items() if k not in arrays}))
        states = self.group.require_group(STATE_GROUP)
        slot = 1 - int(states.attrs.get("slot", 1))
        group = states.require_group(f"slot{slot}")
        for name, values in arrays.items():
            chunks = values.chunksize if _is_dask(values) else values.shape or None
            if name in group and group[name].shape == values.shape \
                    and group[name].dtype == values.dtype and group[name].chunks == chunks:
                target = group[name]
            else:
                target = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                            chunks=chunks, overwrite=True)
            if _is_dask(values):  # written chunk by chunk where the chunks are (the workers)
                values.store(target, lock=False)
            else:
                target[...] = values
        states.attrs.put({"slot": slot, "state": rest})
        self.group.attrs["frames_done"] = int(rest.get("frames_done", 0))

    def load_state(self, lazy: Collection[str] = ()) -> dict[str, Any] | None:
        """The last committed state, or None for a run that has not saved one.

        The arrays named in ``lazy`` come back as dask arrays of the store's chunks.
        """
        if STATE_GROUP not in self.group or "slot" not in self.group[STATE_GROUP].attrs:
            return None
        states = self.group[STATE_GROUP]
        slot = states[f"slot{states.attrs['slot']}"]
        return {name: _from_zarr(array) if name in lazy else array[...]
                for name, array in slot.arrays()} | dict(states.attrs["state"])

    def finish(self) -> None:
        self.group.attrs["complete"] = True

    def dataset(self) -> xr.Dataset:
        return xr.open_zarr(self.path, zarr_format=3, consolidated=False)


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        return dict(zarr.open_group(path, mode="r", zarr_format=3).attrs).get("config")
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, ValueError):
        return None


def _is_dask(value: Any) -> bool:
    return type(value).__module__.startswith("dask.")


def _from_zarr(array: zarr.Array) -> Any:
    import dask.array as da

    return da.from_zarr(array)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The JSON-able state of a numpy Generator (PCG64 and friends)."""
    return json.loads(json.dumps(rng.bit_generator.state, default=int))


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
