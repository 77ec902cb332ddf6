"""The context-blur study of the paper's Fig. 6: does the EDNN ignore its context?

Every tile of every structure is scored with part of it blurred (a Gaussian
blur of the tile, pasted into a mask): either a band along the tile's edge (the
context side) or a square in the centre of the focus with the *same area*. If
the network learned to use the context only to place what lies in the focus,
blurring the edge hurts less than blurring the same area of the focus.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.atoms.raster import cell_field
from ednn_dask.atoms.references import reference_sum
from ednn_dask.model import TileModel, load_model
from training import reference


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (reflecting edges)."""
    radius = max(1, math.ceil(3 * sigma))
    k = np.arange(-radius, radius + 1)
    weights = np.exp(-(k**2) / (2 * sigma**2))
    weights /= weights.sum()
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(weights))
    return x


def masks(tile: int, context: int, steps: int = 6) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(blurred fraction, edge-band mask, centre-square mask) of equal areas, growing."""
    out = []
    for width in np.linspace(0, context, steps + 1)[1:]:
        w = int(round(width))
        edge = np.ones((tile, tile), bool)
        edge[w:tile - w, w:tile - w] = False
        side = int(round(math.sqrt(edge.sum())))
        centre = np.zeros((tile, tile), bool)
        lo = (tile - side) // 2
        centre[lo:lo + side, lo:lo + side] = True
        out.append((float(edge.mean()), edge, centre))
    return out


def blur_study(
    model: str, data: str, *, n: int = 200, sigma: float = 3.0, steps: int = 6,
    plot: str | None = None,
) -> dict[str, Any]:
    """Per-atom MAE against the reference with edge or centre blurred, for growing areas."""
    tile_model = load_model(model)
    spec = tile_model.spec
    tiling = spec.tiling
    ds = reference.load_reference(data)
    ds = ds.isel(structure=slice(max(0, ds.sizes["structure"] - n), None))  # the last n
    structures = reference.dataset_structures(ds)
    tiles, offsets = [], []
    for s in structures:
        field = cell_field(s, spec.spacing, **spec.raster)
        t = np.moveaxis(tiling.tiles(field), 0, 2)  # (gy, gx, C, ty, tx)
        tiles.append(np.ascontiguousarray(t).reshape(-1, *t.shape[2:]))
        offsets.append(reference_sum(s.species_counts(), spec.reference_energies))
    true, atoms = ds["energy"].values, ds["n_atoms"].values
    blurred = [gaussian_blur(t, sigma) for t in tiles]

    def mae(mask: np.ndarray | None) -> float:
        predicted = []
        for t, b, offset in zip(tiles, blurred, offsets):
            x = t if mask is None else np.where(mask, b, t)
            predicted.append(_score_tiles(tile_model, x) + offset)
        return float(np.mean(np.abs(np.array(predicted) - true) / atoms) * 1e3)

    rows = [{"fraction": f, "edge_meV": mae(edge), "centre_meV": mae(centre)}
            for f, edge, centre in masks(tiling.tile[0], tiling.context[0], steps)]
    result = {"model": str(model), "n": len(structures), "sigma_px": sigma,
              "no_blur_meV": mae(None), "rows": rows}
    if plot:
        _plot(result, plot)
    return result


def _score_tiles(model: TileModel, tiles: np.ndarray) -> float:
    """Sum of the contributions of a batch of tiles (one focus block each)."""
    return float(model.run(model.scale_input(tiles), 1).sum(dtype=np.float64))


def _plot(result: dict[str, Any], path: str) -> Path:
    import matplotlib.pyplot as plt

    fractions = [r["fraction"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    ax.plot(fractions, [r["edge_meV"] for r in result["rows"]], "o-",
            label="edge (context) blurred")
    ax.plot(fractions, [r["centre_meV"] for r in result["rows"]], "s-",
            label="centre (focus) blurred")
    ax.axhline(result["no_blur_meV"], color="grey", ls="--", label="no blur")
    ax.set_xlabel("blurred fraction of each tile")
    ax.set_ylabel("MAE (meV/atom)")
    ax.set_yscale("log")
    ax.set_title(f"Context blur (Fig. 6), σ = {result['sigma_px']} px, n = {result['n']}")
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
