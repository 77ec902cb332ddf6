"""Digital rock: binary porous volumes and their exact additive functionals.

A rock is a thresholded smooth Gaussian random field: periodic white noise smoothed
by a Gaussian of ``sigma`` voxels, pore (1) where it exceeds the level that leaves the
asked porosity, solid (0) elsewhere. Its exact targets are additive functionals of the
pore space, counted with periodic boundaries on the cubical complex whose vertices
are the pore voxels, with an edge between face neighbours, a square for every 2x2
and a cube for every 2x2x2 block of pore voxels:

- ``volume``: pore voxels x spacing³;
- ``area``: pore/solid voxel faces x spacing²;
- ``euler``: the Euler characteristic of the 6-connected pore space
  (vertices - edges + squares - cubes).

All three are integer combinations of the ``2^d`` cell counts anchored at each voxel
(:func:`cell_counts`): Hadwiger-type additive functionals, the sums of a local
quantity that an EDNN represents exactly. :class:`training.nets.CubicalNet` computes
those counts per voxel and weighs them with a linear head; training it is a least
squares fit of the head (:func:`train_rock`). Volumes larger than memory are generated
and counted chunk by chunk with dask (:func:`rock_volume`, :func:`volume_counts`,
:func:`write_rock_volume`). Torch is imported only to train.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from ednn_dask.compute import compute
from ednn_dask.errors import ConfigError, DataSetError
from ednn_dask.field import make_field, open_field
from ednn_dask.halo import reread_overlap
from ednn_dask.storage import atomic_output
from training.cubical import anchored_counts, cell_counts, functionals

SPACING = 2.0  # µm per voxel, a micro-CT scan's resolution; a power of two keeps sums exact
SPACING_UNIT = "µm"
TARGETS = {"volume": f"{SPACING_UNIT}^3", "area": f"{SPACING_UNIT}^2", "euler": ""}
SIGMA = (1.0, 3.0)  # correlation length range of the training rocks, voxels
POROSITY = (0.1, 0.4)
TRUNCATE = 4.0  # the Gaussian is cut at this many sigma (scipy's default)
FIELD = "pore"
DIMS = {2: ("y", "x"), 3: ("z", "y", "x")}


def radius(sigma: float) -> int:
    """Half-width of the smoothing kernel in voxels (scipy's ``int(truncate sigma + 0.5)``)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def threshold(sigma: float, porosity: float, ndim: int) -> float:
    """The level that smoothed unit white noise exceeds with probability ``porosity``."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.special import ndtri

    r = radius(sigma)
    delta = np.zeros(2 * r + 1)
    delta[r] = 1.0
    kernel = gaussian_filter1d(delta, sigma, mode="constant", truncate=TRUNCATE)
    return float(np.sqrt(np.sum(kernel**2)) ** ndim * ndtri(1.0 - porosity))


def smooth_threshold(noise: np.ndarray, sigma: float, porosity: float) -> np.ndarray:
    """Pore (1) where the Gaussian-smoothed ``noise`` exceeds :func:`threshold`, else 0.

    The smoothing wraps around, which is exact for a periodic sample; a dask chunk
    passed with a halo of :func:`radius` voxels is exact in its interior whatever the
    mode.
    """
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(noise, sigma, mode="wrap", truncate=TRUNCATE)
    return (smooth > threshold(sigma, porosity, noise.ndim)).astype(np.uint8)


def rock_samples(n: int, L: int, *, ndim: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` periodic rocks of ``L^ndim`` voxels with correlation lengths and porosities
    drawn from :data:`SIGMA` and :data:`POROSITY`, and their exact functionals."""
    if L < 2:
        raise ConfigError(f"a rock needs at least 2 voxels per side, not {L}.")
    rng = np.random.default_rng(seed)
    pores = np.empty((n, *(L,) * ndim), np.uint8)
    sigma, porosity = rng.uniform(*SIGMA, n), rng.uniform(*POROSITY, n)
    values: dict[str, list] = {name: [] for name in TARGETS}
    for i in range(n):
        noise = rng.standard_normal((L,) * ndim, dtype=np.float32)
        pores[i] = smooth_threshold(noise, sigma[i], porosity[i])
        for name, value in functionals(cell_counts(pores[i]), SPACING).items():
            values[name].append(value)
    return {FIELD: pores, "sigma": sigma, "porosity": porosity,
            **{name: np.asarray(v, np.float64) for name, v in values.items()}}


def rock_dataset(n: int = 200, L: int = 32, *, ndim: int = 3, seed: int = 0):
    """A data set of rocks in the documented format (:mod:`training.field_data`):
    field ``pore`` (1 = pore) and the targets ``volume``, ``area`` and ``euler``."""
    from training.field_data import field_dataset

    s = rock_samples(n, L, ndim=ndim, seed=seed)
    ds = field_dataset(s[FIELD], s["volume"], spacing=SPACING, spacing_unit=SPACING_UNIT,
                       target_unit=TARGETS["volume"], field=FIELD, target="volume",
                       dims=DIMS[ndim])
    for name in ("area", "euler"):
        ds[name] = ("sample", s[name], {"units": TARGETS[name]})
    ds["sigma"] = ("sample", s["sigma"], {"units": "voxel"})
    ds["porosity"] = ("sample", s["porosity"], {"units": "1"})
    ds.attrs.update(system="rock", generator="thresholded periodic Gaussian random fields",
                    seed=seed)
    return ds


def rock_volume(size: int, *, chunks: int = 256, sigma: float = 2.0, porosity: float = 0.25,
                ndim: int = 3, seed: int = 0) -> da.Array:
    """One periodic rock of ``size^ndim`` voxels as a lazy uint8 dask array.

    The white noise is a pure function of the voxel's position (:func:`white_noise`),
    so every chunk draws the noise of its own smoothing halo itself: no data moves
    between tasks, memory stays flat in ``size``, and the volume is the same for any
    chunking and any scheduler.
    """
    chunks = min(chunks, size)
    sizes = (chunks,) * (size // chunks) + (size % chunks,) * bool(size % chunks)
    return da.map_blocks(_rock_chunk, size, seed, radius(sigma), sigma, porosity,
                         chunks=(sizes,) * ndim, dtype=np.uint8,
                         meta=np.empty((0,) * ndim, np.uint8),
                         name="rock-" + tokenize(size, sizes, sigma, porosity, ndim, seed))


def _rock_chunk(size, seed, r, sigma, porosity, block_info=None) -> np.ndarray:
    where = block_info[None]["array-location"]
    noise = white_noise(seed, size, [(start - r, stop + r) for start, stop in where])
    return smooth_threshold(noise, sigma, porosity)[(slice(r, -r),) * len(where)]


def white_noise(seed: int, size: int, box: list[tuple[int, int]]) -> np.ndarray:
    """Unit Gaussian white noise of a periodic ``size^ndim`` volume on ``box``.

    ``box`` is a ``(start, stop)`` range per axis that may run past the volume's
    faces (it wraps). Each voxel's value depends only on ``seed`` and its position:
    a SplitMix64 hash of its linear index gives two 24-bit uniforms, Box-Muller one
    normal (float32, tails cut at 5.9 sigma). Computed a plane at a time, so the
    temporaries stay small.
    """
    axes = [(np.arange(a, b) % size).astype(np.uint64) for a, b in box]
    inner = np.zeros((), np.uint64)
    for axis in axes[1:]:  # the linear index within a plane
        inner = inner[..., None] * np.uint64(size) + axis
    plane_size = np.uint64(size ** (len(axes) - 1))
    offset = np.uint64((seed * 0x632BE59BD9B4E019 + 1) % 2**64)
    out = np.empty(tuple(b - a for a, b in box), np.float32)
    with np.errstate(over="ignore"):
        for i, plane in enumerate(axes[0]):
            z = (plane * plane_size + inner + offset) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z ^= z >> np.uint64(31)
            u1 = ((z >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2**-24)
            u2 = (z & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2**-24)
            out[i] = np.sqrt(np.float32(-2) * np.log(u1)) * np.cos(np.float32(2 * np.pi) * u2)
    return out


def volume_counts(pore: da.Array) -> da.Array:
    """:func:`cell_counts` of a periodic dask volume, chunk by chunk: a lazy int64 array.

    Each chunk is counted with the first plane of its upper neighbours, cut from a
    second read of ``pore`` (:func:`ednn_dask.halo.reread_overlap`): count a stored
    volume, not one being generated, or it is generated twice.
    """
    nd = pore.ndim
    padded = reread_overlap(pore, {a: 1 for a in range(nd)}, {a: "periodic" for a in range(nd)})
    parts = padded.map_blocks(
        _chunk_counts, dtype=np.int64, new_axis=nd,
        chunks=(*((1,) * len(c) for c in pore.chunks), (2**nd,)))
    return parts.sum(axis=tuple(range(nd)))


def _chunk_counts(block: np.ndarray) -> np.ndarray:
    nd = block.ndim
    counts = anchored_counts(block[(slice(1, None),) * nd])  # the high halo only
    return counts.reshape((1,) * nd + (-1,))


def write_rock_volume(out: str | os.PathLike, size: int, *, chunks: int = 256,
                      sigma: float = 2.0, porosity: float = 0.25, ndim: int = 3, seed: int = 0,
                      client=None, overwrite: bool = False, progress: bool = True
                      ) -> dict[str, Any]:
    """Generate a rock volume into a Zarr field, then measure it from the store.

    Two passes over the chunks, each with memory flat in ``size``: the rock is
    generated into the store (:func:`rock_volume`), then counted from it (reading
    twice is far cheaper than generating twice). The exact functionals are stored in
    the field's ``exact`` attribute; the store appears at ``out`` only once both are
    complete.
    """
    import zarr

    pore = rock_volume(size, chunks=chunks, sigma=sigma, porosity=porosity, ndim=ndim,
                       seed=seed)
    field = make_field(pore, spacing=SPACING, spacing_unit=SPACING_UNIT, dims=DIMS[ndim],
                       name=FIELD, attrs={"sigma": sigma, "porosity": porosity, "seed": seed,
                                          "generator": "ednn_dask rock_volume"})
    started = time.perf_counter()
    with atomic_output(out, overwrite=overwrite) as tmp:
        store = field.to_dataset().to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False,
                                           write_empty_chunks=True, compute=False)
        compute([store], client=client, progress=progress)
        stored = zarr.open_array(Path(tmp) / FIELD, mode="r+")
        (counts,) = compute([volume_counts(da.from_zarr(stored))], client=client,
                            progress=progress)
        exact = functionals(counts, SPACING)
        stored.attrs.update(exact=exact, cell_counts=[int(c) for c in counts])
    return {"store": str(out), "shape": [size] * ndim, "chunks": chunks, **exact,
            "porosity": float(counts[0]) / size**ndim,
            "seconds": round(time.perf_counter() - started, 1)}


def exact_of(path: str | os.PathLike) -> dict[str, float]:
    """The exact functionals stored with a volume by :func:`write_rock_volume`."""
    field = open_field(path, FIELD)
    if "exact" not in field.attrs:
        raise DataSetError(f"{str(path)!r} holds no exact functionals (attribute 'exact' of "
                           f"{FIELD!r}); make it with `ednn-dask data rock OUT --volume SIZE`.")
    return dict(field.attrs["exact"])


def train_rock(out: str | os.PathLike, *, target: str, data: str | os.PathLike | None = None,
               n: int = 200, L: int = 32, focus: int = 8, seed: int = 0,
               workdir: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Fit a :class:`~training.nets.CubicalNet` EDNN to one functional and export it.

    The data set is ``data`` (made if missing) or ``n`` fresh rocks of ``L³``; the head
    is fitted by least squares on the training split, and the errors are reported on
    every split in the target's units.
    """
    import torch

    from ednn_dask.storage import refuse_existing
    from training.config import run_dir
    from training.datasets import dataset_hash, load_dataset, save_dataset
    from training.export import export_onnx
    from training.metrics import error_metrics, parity_plot, split_indices

    if target not in TARGETS:
        raise ConfigError(f"rock targets are {sorted(TARGETS)}, not {target!r}.")
    refuse_existing(Path(out), overwrite)
    work = run_dir(Path(out), workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(data) if data else work / "rocks.zarr"
    if not path.exists():
        save_dataset(rock_dataset(n, L, seed=seed), path)
    ds = load_dataset(path)
    if FIELD not in ds or target not in ds:
        raise DataSetError(f"{str(path)!r} is not a rock data set (needs {FIELD!r} and "
                           f"{target!r}); make one with `ednn-dask data rock OUT`.")
    x = torch.from_numpy(ds[FIELD].values.astype(np.float32)).unsqueeze(1)
    y = ds[target].values.astype(np.float64)
    ednn = rock_ednn(x.dim() - 2, focus)
    train, val, test = split_indices(len(y), 0.1, 0.1, seed)
    fit = ednn.tile_net.fit_head(ednn, x[train], y[train])
    predicted = ednn(x).detach().double().numpy()
    voxels = math.prod(x.shape[2:])
    metrics = {split: error_metrics(predicted[idx], y[idx], voxels)
               for split, idx in (("train", train), ("val", val), ("test", test))}
    parity_plot(y[test], predicted[test], work / "parity.png", sites=voxels,
                unit=TARGETS[target], title=f"rock {target}, test split")
    spec = ds[FIELD].attrs
    # the export check feeds random normal tiles: float32 sums of f^d weighted cells,
    # so its tolerance scales with the block and the weights
    scale = focus ** (x.dim() - 2) * (sum(map(abs, fit["weights"])) + abs(fit["bias"]))
    model = export_onnx(
        ednn, out, target=target, target_unit=TARGETS[target], spacing=tuple(spec["spacing"]),
        spacing_unit=spec["spacing_unit"], dims=DIMS[x.dim() - 2], overwrite=overwrite,
        provenance={"system": "rock", "data": str(path), "data_hash": dataset_hash(ds),
                    "seed": seed, "head": fit, "splits": {"val": 0.1, "test": 0.1},
                    "metrics": metrics["test"], "command": " ".join(sys.argv)},
        atol=1e-5 * max(scale, 1.0))
    shutil.copy(work / "parity.png", Path(out).with_suffix(".parity.png"))
    return {"model": str(out), "target": target, "head": fit, "metrics": metrics,
            "n_parameters": model.spec.provenance.get("n_parameters")}


def rock_ednn(ndim: int, focus: int):
    """An untrained EDNN of a :class:`~training.nets.CubicalNet` (context 1, periodic)."""
    from training.ednn import EDNN
    from training.nets import CubicalNet

    return EDNN(CubicalNet(ndim, (focus,) * ndim), focus, 1, "periodic", ndim=ndim, dense=True)


def evaluate_rock(model: str, *, data: str | None = None, L: int = 64, n: int = 8,
                  seed: int = 1234, client=None, progress: bool = True) -> dict[str, Any]:
    """The model's relative error on fresh rocks of ``L³``, or on one stored volume
    (``data``, written by :func:`write_rock_volume`) scored chunk by chunk."""
    from ednn_dask.model import TileModel
    from ednn_dask.score import score
    from training.evaluation import score_samples
    from training.metrics import error_metrics

    m = TileModel.load(model)
    target = m.spec.target
    if target not in TARGETS:
        raise ConfigError(f"{model!r} predicts {target!r}, not a rock functional "
                          f"({', '.join(TARGETS)}).")
    if data:
        exact = exact_of(data)[target]
        started = time.perf_counter()
        result = score(data, m, client=client, variable=FIELD, progress=progress,
                       keep_contributions=False)
        seconds = time.perf_counter() - started
        return {"model": str(model), "data": str(data), "target": target,
                "exact": exact, "predicted": result.energy,
                "relative_error": abs(result.energy - exact) / abs(exact) if exact else None,
                "exact_after_rounding": round(result.energy) == round(exact),
                "seconds": round(seconds, 1)}
    s = rock_samples(n, L, ndim=m.spec.ndim, seed=seed)
    predicted = score_samples(s[FIELD], m)
    return {"model": str(model), "target": target, "L": L, "n": n,
            **error_metrics(predicted, s[target], L**m.spec.ndim),
            "max_relative_error": float(np.max(np.abs(predicted - s[target])
                                               / np.maximum(np.abs(s[target]), 1)))}
