"""Contribution maps: where a field's extensive quantity comes from, as Zarr and as a picture.

:func:`write_score` writes a folder with ``result.json``, the contribution map
(``contributions.zarr``, one value per focus block, labelled like the field) and its
picture (``contributions.png``: the map in 2-D, three orthogonal slices through the
centre in 3-D); ``ednn-dask score FIELD --out FOLDER`` is this function on the
command line.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.defaults import MAP_PIXELS
from ednn_dask.storage import atomic_output


def write_score(contributions: xr.DataArray, out: str | os.PathLike, summary: dict[str, Any],
                *, overwrite: bool = False) -> Path:
    """Write ``result.json``, ``contributions.zarr`` and ``contributions.png`` into ``out``.

    The folder is assembled under a temporary name and renamed when complete. The PNG
    needs matplotlib (the ``notebooks`` or ``train`` extra); without it the folder
    holds the other two.
    """
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        (tmp / "result.json").write_text(json.dumps(summary, indent=2, default=str))
        contributions.to_dataset().to_zarr(tmp / "contributions.zarr", zarr_format=3,
                                           consolidated=False)
        with contextlib.suppress(ImportError):
            plot_contributions(contributions, tmp / "contributions.png",
                               title=f"{summary.get('field', '')}: "
                                     f"{summary['energy']:.8g} {summary.get('unit', '')}")
    return Path(out)


def plot_contributions(contributions: xr.DataArray, path: str | os.PathLike,
                       title: str = "") -> None:
    """The map as an image (2-D), three slices through its centre (3-D) or a line (1-D).

    Maps of more than :data:`~ednn_dask.defaults.MAP_PIXELS` per axis are summed over
    blocks first, so every value drawn is still the energy of a region.
    """
    import matplotlib.pyplot as plt

    c, factor = _at_most(contributions, MAP_PIXELS)
    label = f"{contributions.attrs.get('long_name', 'contribution')}" + (
        f" x {factor}^{c.ndim}" if factor > 1 else "")
    units = contributions.attrs.get("units")
    if units:
        label += f" ({units})"
    if c.ndim == 1:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
        c.plot(ax=ax)
        ax.set(ylabel=label, title=title)
    else:
        panels = _slices(c)
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), dpi=120,
                                 squeeze=False, constrained_layout=True)
        scale = _color_scale(c)
        for ax, (name, panel) in zip(axes[0], panels, strict=True):
            image = panel.plot.imshow(ax=ax, add_colorbar=False, **scale)
            ax.set(title=name, aspect="equal")
        fig.colorbar(image, ax=list(axes[0]), label=label, shrink=0.9)
        fig.suptitle(title)
    fig.savefig(path)
    plt.close(fig)


def _at_most(c: xr.DataArray, pixels: int) -> tuple[xr.DataArray, int]:
    """``c`` summed over blocks of ``factor`` per axis so no axis exceeds ``pixels``."""
    factor = max(-(-n // pixels) for n in c.shape)
    if factor == 1:
        return c, 1
    return c.coarsen({d: factor for d in c.dims}, boundary="pad").sum(), factor


def _slices(c: xr.DataArray) -> list[tuple[str, xr.DataArray]]:
    if c.ndim == 2:
        return [("", c)]
    return [(f"{d} = {_position(c, d)}", c.isel({d: c.sizes[d] // 2})) for d in c.dims]


def _position(c: xr.DataArray, dim: str) -> str:
    i = c.sizes[dim] // 2
    return f"{float(c[dim][i]):.4g}" if dim in c.coords else f"{i} (index)"


def _color_scale(c: xr.DataArray) -> dict[str, Any]:
    """A diverging map centred on 0 for signed maps, a sequential one otherwise."""
    values = np.asarray(c)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low < 0 < high:
        bound = max(-low, high)
        return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    return {"cmap": "magma", "vmin": low, "vmax": high}
