"""A porous graphene sheet from its size to its energy, with outputs a person can look at.

:func:`porous_sheet` builds a :class:`~ednn_dask.atoms.materials.PorousSheet`
of a given side, scores it atoms to energy (:func:`~ednn_dask.atoms.stream.score_atoms`)
and writes a folder with ``result.json``, the energy-density map
(``density.zarr``) and its picture (``density.png``); ``ednn-dask sheet`` is
this function on the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import xarray as xr

from ednn_dask.atoms.materials import PorousSheet
from ednn_dask.atoms.raster import rasterize
from ednn_dask.atoms.stream import AtomsScore, score_atoms
from ednn_dask.field import save_field
from ednn_dask.model import TileModel, load_model
from ednn_dask.storage import atomic_output, refuse_existing


def default_out(side: float, porosity: float, seed: int) -> Path:
    """The output folder's default name: ``sheet-SIDEnm-pPOROSITY-sSEED``."""
    return Path(f"sheet-{side / 10:g}nm-p{porosity:g}-s{seed}")


def porous_sheet(
    side: float,
    model: TileModel | str | os.PathLike,
    *,
    porosity: float = 0.1,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    field: str | os.PathLike | None = None,
    client: Any = None,
    chunks: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a square porous graphene sheet of ``side`` Å and write its outputs folder.

    Parameters
    ----------
    side : float
        Side of the square sheet in Å, rounded up to whole training cells.
    model : TileModel or path
        A porous-graphene atomistic model.
    out : path, optional
        The outputs folder (default :func:`default_out`).
    field : path, optional
        Also write the rasterized field (the model's input) to this Zarr store.
    client : distributed.Client, optional
        Where to compute; default the active client, else dask's threads.

    Returns
    -------
    dict
        The summary written to ``result.json``: the sheet, the total energy (eV,
        reference energies included) beside the raw EDNN sum, counts and timings.
    """
    out = Path(out) if out else default_out(side, porosity, seed)
    refuse_existing(out, overwrite)
    if field:
        refuse_existing(field, overwrite)
    sheet = PorousSheet.square(side, porosity=porosity, seed=seed)
    model = load_model(model)
    result = score_atoms(sheet, model, client=client, chunks=chunks, progress=progress)
    if field:
        spec = model.spec
        grid = rasterize(sheet, spec.spacing, chunks=chunks, **spec.raster)
        save_field(grid, field, overwrite=overwrite)  # on the active client, if any
    summary = {"sheet": {"cells": list(sheet.cells), "size_A": sheet.size.tolist(),
                         "porosity": porosity, "seed": seed},
               **result.to_dict(), "outputs": str(out)}
    write_sheet_outputs(result, out, summary, overwrite=overwrite)
    return summary


def write_sheet_outputs(
    result: AtomsScore, out: str | os.PathLike, summary: dict[str, Any], *,
    overwrite: bool = False,
) -> Path:
    """Write ``result.json``, ``density.zarr`` and ``density.png`` into the folder ``out``.

    The folder is assembled under a temporary name and renamed when complete.
    The PNG needs matplotlib (the ``notebooks`` or ``train`` extra); without it
    the folder holds the other two.
    """
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        (tmp / "result.json").write_text(json.dumps(summary, indent=2, default=str))
        result.density.to_zarr(tmp / "density.zarr", zarr_format=3, consolidated=False)
        with contextlib.suppress(ImportError):
            plot_density(result.density, tmp / "density.png",
                         title=f"{result.n_atoms:,} atoms, E = {result.energy:.6g} eV")
    return Path(out)


def plot_density(density: xr.Dataset, path: str | os.PathLike, title: str = "") -> None:
    """The EDNN energy density (meV/Å², contributions per area) as an image."""
    import matplotlib.pyplot as plt

    per_area = density["contribution"] / density.attrs["pixel_area_A2"] * 1e3
    nm = {"x": density["x"] / 10, "y": density["y"] / 10}
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    image = ax.pcolormesh(nm["x"], nm["y"], per_area, cmap="magma", shading="auto",
                          rasterized=True)
    fig.colorbar(image, ax=ax, label="EDNN energy density (meV/Å²)")
    ax.set(xlabel="x (nm)", ylabel="y (nm)", aspect="equal", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
