"""Atomistic EDNNs: rasterize a reference store, fit the residual energy, export, evaluate.

The model learns ``E - Σ_s n_s μ_s`` (the per-species reference energies ``μ``
are fitted by least squares on the training split); the exported ONNX file
records ``μ``, the pixel spacing and the rasterization so
:func:`ednn_dask.energy` returns total energies in the reference's convention.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.atoms.materials import LATTICE_CONSTANT, TRAINING_CELLS
from ednn_dask.atoms.raster import cell_field, grid_shape
from ednn_dask.atoms.total_energy import energy
from ednn_dask.defaults import CUTOFF_GAMMAS, GAMMA
from ednn_dask.errors import ConfigError
from ednn_dask.model import load_model
from ednn_dask.storage import refuse_existing
from ednn_dask.tiling import block_mean
from training import reference
from training.config import TrainConfig, run_dir
from training.datasets import dataset_hash
from training.metrics import parity_plot, split_indices


def cell_spacing(pixels: int) -> tuple[float, float]:
    """(y, x) spacing that puts the 60-atom training cell on ``pixels`` × ``pixels`` px.

    Every multiple of the training cell is then a whole number of pixels.
    """
    return (TRAINING_CELLS[1] * math.sqrt(3) * LATTICE_CONSTANT / pixels,
            TRAINING_CELLS[0] * LATTICE_CONSTANT / pixels)


# The default pixel grid: 128 × 128 px per training cell (0.1015 Å in y, 0.0977 Å in x).
PIXELS = 128
SPACING = cell_spacing(PIXELS)
FOCUS, CONTEXT = 32, 16  # 3.1 × 3.2 Å focus, 1.6 Å context (the paper's 64/32 at 0.05 Å/px)

SYSTEMS = {
    "hexagonal": {"species": [5, 6, 7], "data": "data/hexagonal.zarr"},
    "porous": {"species": [6], "data": "data/porous.zarr"},
}
LOSSES = ("total", "per-atom")  # mean squared error of the energy, or of the energy per atom
DEFAULTS = {"epochs": 60, "batch_size": 32, "lr": 2e-3, "lr_final": 2e-5}


def rasterize_structures(
    ds: xr.Dataset, species: list[int] | None, *, spacing: tuple[float, float] = SPACING,
    gamma: float = GAMMA, cutoff: float | None = None,
) -> np.ndarray:
    """Fields (N, C, ny, nx) float32 of every structure of a data set (all the same cell)."""
    structures = reference.dataset_structures(ds)
    shape = grid_shape(structures[0].cell, spacing)
    out = np.empty((len(structures), len(species or [0]), *shape), np.float32)
    for k, s in enumerate(structures):
        if grid_shape(s.cell, spacing) != shape:
            raise ConfigError(f"all structures of a training set must share one cell size; "
                              f"structure {k} differs from the first. Use one size per store.")
        out[k] = cell_field(s, spacing, gamma=gamma, cutoff=cutoff, species=species)
    return out


# Tile nets: valid-convolution trunks ((out_channels, kernel, stride) per layer), head
# width, non-linearity, and the grid each was designed for (pixels per training cell,
# focus and context in px; all three give a 3.1 x 3.2 A focus and a 1.6 A context).
NETS = {
    "compact": {"trunk": ((16, 4, 2), (32, 3, 2), (32, 3, 2)), "hidden": 64,
                "activation": "relu", "pixels": PIXELS, "focus": FOCUS, "context": CONTEXT},
    # compact with anti-aliased strides: less registry noise (findings), more compute
    "compact-aa": {"trunk": ((16, 4, 2), (32, 3, 2), (32, 3, 2)), "hidden": 64,
                   "activation": "relu", "antialias": "blurpool", "pixels": PIXELS,
                   "focus": FOCUS, "context": CONTEXT},
    # compact with a blur before each strided layer: 1.3x its time, a third of its
    # registry noise at 60 epochs (findings)
    "compact-pf": {"trunk": ((16, 4, 2), (32, 3, 2), (32, 3, 2)), "hidden": 64,
                   "activation": "relu", "antialias": "prefilter", "pixels": PIXELS,
                   "focus": FOCUS, "context": CONTEXT},
    # stride-1 first layer and twice the width: sub-pixel bond lengths reach the trunk
    "fine": {"trunk": ((32, 3, 1), (32, 3, 2), (64, 3, 2), (64, 3, 2)), "hidden": 128,
             "activation": "relu", "pixels": PIXELS, "focus": FOCUS, "context": CONTEXT},
    # SiLU squares small filter responses, so strain energy (quadratic in sub-pixel
    # shifts) is cheap to represent; 0.2 A pixels still resolve gamma = 0.2 A Gaussians
    "smooth": {"trunk": ((32, 5, 1), (32, 3, 2), (64, 3, 2)), "hidden": 64,
               "activation": "silu", "pixels": 64, "focus": 16, "context": 8},
    # smooth with anti-aliased strides, as compact-aa: for a hexagonal net whose
    # energy does not depend on where the stride lattice falls
    "smooth-aa": {"trunk": ((32, 5, 1), (32, 3, 2), (64, 3, 2)), "hidden": 64,
                  "activation": "silu", "antialias": "blurpool", "pixels": 64, "focus": 16,
                  "context": 8},
    # smooth-aa with twice the channels (4x the parameters, 3.3x its CPU time); on MD
    # alone it fits no better than smooth-aa (findings, way 1)
    "smooth-aa-wide": {"trunk": ((64, 5, 1), (64, 3, 2), (128, 3, 2)), "hidden": 128,
                       "activation": "silu", "antialias": "blurpool", "pixels": 64,
                       "focus": 16, "context": 8},
    # smooth-aa with a stride-1 layer after each of its first two (2.4x its CPU time):
    # on MD alone, per-run offsets that carry over to new runs (findings, way 1)
    "smooth-aa-deep": {"trunk": ((32, 5, 1), (32, 3, 1), (64, 3, 2), (64, 3, 1), (64, 3, 2)),
                       "hidden": 64, "activation": "silu", "antialias": "blurpool",
                       "pixels": 64, "focus": 16, "context": 8},
    "paper": {"pixels": PIXELS, "focus": FOCUS, "context": CONTEXT},
}


def net_preset(net: str) -> dict[str, Any]:
    """The :data:`NETS` entry of ``net``, refused with the choices if there is none."""
    if net not in NETS:
        raise ConfigError(f"net must be one of {sorted(NETS)}, got {net!r}.")
    return NETS[net]


def build_net(channels: int, net: str = "compact", focus: int | None = None,
              context: int | None = None):
    """An EDNN with one of the valid CNNs of :data:`NETS` (dense path, exact) or the paper's.

    ``focus`` and ``context`` default to the net's own. With ``focus`` = the whole
    training cell (its ``pixels``) the same net sees each training cell as one tile:
    the non-EDNN baseline.
    """
    from training.ednn import EDNN
    from training.nets import PaperCNN, ValidCNN

    preset = net_preset(net)
    focus, context = focus or preset["focus"], context or preset["context"]
    tile = (focus + 2 * context,) * 2
    if net == "paper":
        return EDNN(PaperCNN(channels, tile), focus, context, "periodic", ndim=2,
                    input_scale=0.2)
    tile_net = ValidCNN(2, channels, (focus, focus), (context, context), trunk=preset["trunk"],
                        hidden=preset["hidden"], activation=preset["activation"],
                        antialias=preset.get("antialias"))
    return EDNN(tile_net, focus, context, "periodic", ndim=2, dense=True, input_scale=0.2)


def build_multiscale_net(channels: int, net: str, scales: Sequence[tuple[int, int, int]]):
    """A multi-scale EDNN: the recipe's ``net`` at factor 1, a small SiLU CNN per coarser branch.

    ``scales`` lists (factor, focus, context) per branch, focus and context in
    coarse pixels; the first is the factor-1 branch (the ``net`` preset with that
    focus and context), so a single-scale model of that net can start it.
    """
    from training.multiscale import MultiScaleEDNN

    factors = [f for f, _, _ in scales]
    if factors[0] != 1 or 1 in factors[1:]:
        raise ConfigError(f"atomistic scales start with the factor-1 branch (the --net), then "
                          f"coarser ones, e.g. 1:16:24,4:4:12; got factors {factors}.")
    if net == "paper":
        raise ConfigError("the paper's net has no dense path; a multi-scale model needs one "
                          "(--net compact, fine or smooth).")
    branches = [build_net(channels, net, scales[0][1], scales[0][2])]
    branches += [coarse_branch(channels, focus, context) for _, focus, context in scales[1:]]
    return MultiScaleEDNN(branches, factors)


def coarse_branch(channels: int, focus: int, context: int):
    """The EDNN of a coarse branch: three valid 3x3 layers whose strides divide the focus."""
    from training.ednn import EDNN
    from training.nets import ValidCNN

    trunk = ((16, 3, 1), (32, 3, 2 if focus % 2 == 0 else 1), (32, 3, 2 if focus % 4 == 0 else 1))
    tile_net = ValidCNN(2, channels, (focus, focus), (context, context), trunk=trunk,
                        hidden=32, activation="silu")
    return EDNN(tile_net, focus, context, "periodic", ndim=2, dense=True, input_scale=0.2)


def start_coarse_branches(ednn) -> None:
    """Coarse branches that add nothing yet: the fine branch's input scaling, zero output.

    The last layer of each coarse net starts at zero, so the model starts as the
    single-scale model in its first branch and the coarse branches grow from there.
    """
    import torch

    fine = ednn.branches[0]
    with torch.no_grad():
        for branch in ednn.branches[1:]:
            branch.input_offset.copy_(fine.input_offset)
            branch.input_scale.copy_(fine.input_scale)
            branch.output_offset.zero_()
            branch.output_scale.copy_(fine.output_scale)
            branch.tile_net.out.weight.zero_()
            branch.tile_net.out.bias.zero_()
        ednn.weights.fill_(1.0)


def recipe_splits(ds: xr.Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, val and test indices of the atomistic recipe (fit's default fractions).

    Each store of a concatenated set (:func:`training.reference.load_reference_sets`)
    is split on its own, so its test split is the one a model trained on that store
    alone holds out; a store of MD snapshots is split by run, so no run, whose
    snapshots are correlated, has some in training and others held out.
    """
    config = TrainConfig()
    n = ds.sizes["structure"]
    source = ds["source"].values if "source" in ds else np.zeros(n, int)
    run = ds["run"].values if "run" in ds else np.full(n, -1)
    parts = []
    for k in np.unique(source):
        rows = np.flatnonzero(source == k)
        runs, members = np.unique(run[rows], return_inverse=True)
        if runs[0] < 0:  # independent structures
            groups = split_indices(len(rows), config.val_fraction, config.test_fraction, seed)
            parts.append([rows[g] for g in groups])
            continue
        groups = split_indices(len(runs), config.val_fraction, config.test_fraction, seed)
        parts.append([rows[np.isin(members, g)] for g in groups])
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


@dataclass
class Prepared:
    """What a run needs before :func:`training.train.fit`: splits, targets, fields and net."""

    splits: tuple[np.ndarray, np.ndarray, np.ndarray]  # train, val, test
    reference_energies: dict[str, float]
    target: np.ndarray  # eV per structure, the reference energies taken off
    spacing: tuple[float, float]
    fields: np.ndarray  # (N, C, ny, nx) float32
    ednn: Any


def prepare_run(
    ds: xr.Dataset, system: str, *, net: str = "compact", focus: int | None = None,
    context: int | None = None, pixels: int | None = None, seed: int = 0,
    whiten: bool = True, init_seed: int | None = None, init_from: str | None = None,
    scales: Sequence[tuple[int, int, int]] | None = None,
) -> Prepared:
    """Split, fit the reference energies, rasterize and build the net of a recipe.

    ``seed`` fixes the split (as in :func:`training.train.fit`); ``init_seed``, if
    given, seeds torch before the net is built, so runs differ only in the weights.
    ``init_from``: an exported model of the same net, whose weights, input and
    output scaling and reference energies the run starts from (fine-tuning); the
    first layer is then not whitened again. ``scales``: a multi-scale model
    (:func:`build_multiscale_net`); ``init_from`` is then its factor-1 branch, frozen,
    and the coarse branches, starting from zero, learn what it misses.
    """
    import torch

    from training.precondition import whiten_first_layer

    preset, species = net_preset(net), SYSTEMS[system]["species"]
    splits = recipe_splits(ds, seed)
    train = splits[0]
    start = load_model(init_from).spec if init_from else None
    mu = (dict(start.reference_energies) if start else
          reference.fit_reference_energies(ds.isel(structure=train), species))
    spacing = cell_spacing(pixels or preset["pixels"])
    x = rasterize_structures(ds, species, spacing=spacing)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    if scales:
        ednn = build_multiscale_net(len(species), net, scales)
        branches = list(zip(ednn.branches, ednn.factors, strict=True))
    else:
        ednn = build_net(len(species), net, focus, context)
        branches = [(ednn, (1, 1))]
    if init_from:
        if start.scales:
            raise ConfigError(f"--init-from {init_from!r} is a multi-scale model; start from "
                              f"a single-scale model of the --net (it becomes the first branch).")
        load_weights(branches[0][0], init_from, spacing=spacing, species=species)
        if scales:  # the given model stays as it is; the coarse branches learn what it misses
            branches[0][0].requires_grad_(False)
            start_coarse_branches(ednn)
        return Prepared(splits, mu, reference.residual_energy(ds, mu), spacing, x, ednn)
    # Standardized inputs: at the raw scale the net sits on a constant-output plateau
    # for tens of epochs before it starts to see vacancies and bonds.
    for branch, _ in branches:
        branch.input_offset.fill_(float(x[train].mean()))
        branch.input_scale.fill_(1 / float(x[train].std()))
    if whiten and net != "paper":
        for branch, factor in branches:  # bond lengths are sub-pixel shifts of Gaussians
            whiten_first_layer(branch, block_mean(x[train[:256]], factor))
    return Prepared(splits, mu, reference.residual_energy(ds, mu), spacing, x, ednn)


def load_weights(ednn: Any, path: str, *, spacing: tuple[float, float],
                 species: Sequence[int]) -> None:
    """Load an exported model's weights and scalings into ``ednn``, a net of the same shape.

    The ONNX initializers carry the tile net's parameter names (a whitened first
    layer is exported folded, as a plain convolution); refused with the
    difference when the geometry, grid, species or any parameter shape differ.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    spec = load_model(path).spec
    wanted = {"focus": tuple(ednn.tiling.focus), "context": tuple(ednn.tiling.context),
              "spacing": tuple(round(s, 9) for s in spacing),
              "species": list(species)}
    found = {"focus": tuple(spec.focus), "context": tuple(spec.context),
             "spacing": tuple(round(s, 9) for s in spec.spacing or ()),
             "species": list((spec.raster or {}).get("species", []))}
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    state = ednn.tile_net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    given = {k: tuple(v.shape) for k, v in weights.items() if k in shapes}
    if wanted != found or given != shapes:
        differ = {k: (found[k], wanted[k]) for k in wanted if found[k] != wanted[k]}
        if given != shapes:
            differ["parameters"] = sorted(set(shapes.items()) ^ set(given.items()))[:4]
        raise ConfigError(f"{path!r} is not a model of this net ({differ}, as (model, net)); "
                          f"start from a model trained with the same --net, --focus and "
                          f"--context.")
    ednn.tile_net.load_state_dict({k: torch.as_tensor(weights[k].copy()) for k in state})
    for name in ("input_offset", "input_scale", "output_offset", "output_scale"):
        getattr(ednn, name).fill_(float(getattr(spec, name)))


def train_atomistic(
    system: str, out: str, *, data: str | Sequence[str] | None = None,
    epochs: int | None = None,
    net: str = "compact", focus: int | None = None, context: int | None = None,
    pixels: int | None = None,
    seed: int = 0, limit: int | None = None, workdir: str | None = None,
    overwrite: bool = False, progress: bool = True, device: str = "cpu", whiten: bool = True,
    loss: str = "total", init_from: str | None = None, lr: float | None = None,
    scales: str | Sequence[tuple[int, int, int]] | None = None, threads: int | None = None,
) -> dict[str, Any]:
    """Train the hexagonal or porous-graphene EDNN on its GFN1-xTB store; export to ONNX.

    ``data``: a reference store, or several trained on together (e.g. the cold set
    and a thermal one); default the system's shipped store. ``init_from``: start
    from the weights of an exported model of the same net (fine-tuning, e.g. the
    shipped model on new data), with a learning rate ``lr`` (default a tenth of
    the recipe's, so the run refines rather than relearns). ``scales``
    (``"1:16:24,4:4:12"``): a multi-scale model, the ``net`` at factor 1 and a small
    CNN on each coarser copy (:func:`build_multiscale_net`); with ``init_from`` the
    factor-1 branch is that model, frozen, and only the coarse branches (and the
    branch weights) train, at the recipe's learning rate. ``threads``: torch CPU
    threads (default :func:`~training.train.default_threads`).
    """
    from training.export import export_onnx
    from training.train import fit

    if system not in SYSTEMS:
        raise ConfigError(f"system must be one of {sorted(SYSTEMS)}, got {system!r}.")
    net_preset(net)  # before any data is read
    if isinstance(scales, str):
        from training.fields import parse_scales

        scales = parse_scales(scales)
    if scales and (focus or context):
        raise ConfigError("give --focus and --context (one scale) or --scales (the factor-1 "
                          "branch's focus and context first), not both.")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}.")
    species = SYSTEMS[system]["species"]
    out_path = Path(out)
    refuse_existing(out_path, overwrite)
    ds = reference.load_reference_sets(data or SYSTEMS[system]["data"])
    if limit:
        ds = ds.isel(structure=slice(0, limit))
    work = run_dir(out_path, workdir)
    refine = init_from and not scales  # a trained net refined, not coarse branches grown
    config = TrainConfig(epochs=epochs or DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"],
                         lr=lr or DEFAULTS["lr"] / (10 if refine else 1),
                         lr_final=DEFAULTS["lr_final"] / (10 if refine else 1), seed=seed,
                         patience=epochs or DEFAULTS["epochs"], augment=True,
                         device=device, threads=threads)
    # the seed fixes the initial weights too: the same command trains the same model
    run = prepare_run(ds, system, net=net, focus=focus, context=context, pixels=pixels,
                      seed=seed, whiten=whiten, init_seed=seed, init_from=init_from,
                      scales=scales)
    ednn, mu, spacing, test = run.ednn, run.reference_energies, run.spacing, run.splits[2]
    x, target = run.fields, run.target
    n_atoms = ds["n_atoms"].values
    atoms = n_atoms if loss == "per-atom" else None
    metrics = fit(ednn, x, target, config, work, atoms=atoms, progress=progress,
                  set_scaling=init_from is None, splits=run.splits)
    raster = {"gamma": GAMMA, "cutoff": CUTOFF_GAMMAS * GAMMA, "species": species}
    model = export_onnx(
        ednn, out_path, channels=len(species), kind="tile" if net == "paper" else "dense",
        target="energy", target_unit="eV",
        spacing=spacing, spacing_unit="angstrom", dims=("y", "x"), raster=raster,
        reference_energies=mu, overwrite=True,
        provenance={"system": system, "net": net, "reference": reference.METHOD,
                    "data_hash": _hash(ds), "n_structures": int(ds.sizes["structure"]),
                    **data_conditions(ds, data or SYSTEMS[system]["data"]),
                    "seed": seed, "epochs": config.epochs,
                    "whiten": whiten and net != "paper" and not init_from,
                    "loss": loss, "lr": config.lr,
                    "scales": [list(v) for v in scales] if scales else None,
                    **({"init_from": f"{Path(init_from).name} "
                        f"(sha256 {load_model(init_from).sha256[:16]})"} if init_from else {}),
                    "metrics": metrics["test"],
                    "device": _device_name(device), "train_seconds": round(metrics["seconds"]),
                    "command": " ".join(sys.argv)},
    )
    test_structures = reference.dataset_structures(ds, test)
    predicted = energy(test_structures, model)
    error = (predicted - ds["energy"].values[test]) / n_atoms[test]
    metrics["test_per_atom"] = {"mae_meV": float(np.abs(error).mean() * 1e3),
                                "median_meV": float(np.median(np.abs(error)) * 1e3),
                                "max_meV": float(np.abs(error).max() * 1e3)}
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    parity_plot(ds["energy"].values[test] / n_atoms[test], predicted / n_atoms[test],
                out_path.with_suffix(".parity.png"), unit="eV/atom",
                title=f"{out_path.name}: held-out test, GFN1-xTB")
    return metrics


def data_conditions(ds: xr.Dataset, data: str | Sequence[str]) -> dict[str, Any]:
    """What a model card says of its training data: stores, temperatures, energy convention.

    ``temperatures_K`` is the range of the thermal structures' thermostats (and
    ``cold_lattices_too`` whether cold sets were mixed in, ``relaxation_paths_too``
    whether relaxation paths, at 0 K, were), or ``"cold"`` where every
    structure is a lattice with independent displacements (per-coordinate RMS up
    to ``sigma_max_angstrom``).
    """
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    out: dict[str, Any] = {"stores": [Path(p).name for p in sources]}
    t = ds["temperature"].values if "temperature" in ds else np.array([np.nan])
    if np.isfinite(t).any():
        out["temperatures_K"] = [float(np.nanmin(t)), float(np.nanmax(t))]
        out["cold_lattices_too"] = bool(np.isnan(t).any())
        out["relaxation_paths_too"] = bool((t == 0).any())
    else:
        out["temperatures_K"] = "cold"
    out["sigma_max_angstrom"] = round(float(displacement_sigma(ds).max()), 4)
    replicas = {int(xr.open_zarr(p, zarr_format=3, consolidated=False).attrs.get("replicas", 1))
                for p in sources}
    out["energy_convention"] = (
        "GFN1-xTB total energy of the periodic cell, Gamma point (tblite defaults)"
        if replicas == {1} else
        f"GFN1-xTB total energy per cell of its n x n replica, n in {sorted(replicas)}")
    return out


def _device_name(device: str) -> str:
    """``device`` with the GPU's name (training times mean little without it)."""
    import torch

    if torch.device(device).type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _hash(ds: xr.Dataset) -> str:
    return dataset_hash(ds[["positions", "numbers", "cell", "energy"]])


SPLITS = ("all", "train", "val", "test")


def evaluate_atomistic(model: str, data: str | Sequence[str], *, plot: str | None = None,
                       split: str = "all", registries: int = 1) -> dict[str, Any]:
    """Per-atom errors of a model on a reference store.

    ``split="all"`` takes every structure (e.g. supercells); ``"train"``, ``"val"``
    or ``"test"`` take that split of the model's training recipe, for the store the
    model was trained on (checked against the data hash in its provenance).
    ``registries``: each energy the mean over that many registries of the cell
    (:func:`ednn_dask.atoms.energy`).
    """
    ds = reference.load_reference_sets(data)
    if split != "all":
        ds = ds.isel(structure=recipe_split(ds, model, split))
    structures = reference.dataset_structures(ds)
    predicted = energy(structures, model, registries=registries)
    n_atoms = ds["n_atoms"].values
    error = (predicted - ds["energy"].values) / n_atoms
    result = {"model": str(model), "data": data if isinstance(data, str) else list(data),
              "split": split, "registries": registries,
              "n": len(structures), "mae_meV_per_atom": float(np.abs(error).mean() * 1e3),
              "median_meV_per_atom": float(np.median(np.abs(error)) * 1e3),
              "max_meV_per_atom": float(np.abs(error).max() * 1e3),
              # a shared offset, not scatter: e.g. the reference's finite-size term
              "mean_signed_meV_per_atom": float(error.mean() * 1e3),
              "atoms": sorted(set(n_atoms.tolist())),
              **({"runs": run_offsets(error * 1e3, ds, ds["energy"].values / n_atoms * 1e3)}
                 if "run" in ds and (ds["run"].values >= 0).any() else {}),
              "groups": error_groups(error * 1e3, ds)}
    if plot:
        parity_plot(ds["energy"].values / n_atoms, predicted / n_atoms, plot,
                    unit="eV/atom", title=f"{Path(model).name} on "
                    f"{', '.join(Path(p).name for p in np.atleast_1d(data))}"
                    + ("" if split == "all" else f", {split} split"))
    return result


SIGMA_BINS = (0.03, 0.05, 0.07)
"""Edges (Å) of the per-coordinate displacement bins the errors are reported in."""


def displacement_sigma(ds: xr.Dataset) -> np.ndarray:
    """Per-coordinate RMS in-plane displacement (Å) of every structure of a reference set.

    A thermal set stores it (``sigma``); a cold set's displacements are uniform in
    a disc of radius ``displacement``, whose per-coordinate RMS is half the radius.
    """
    return ds["sigma"].values if "sigma" in ds else ds["displacement"].values / 2


def error_groups(error: np.ndarray, ds: xr.Dataset) -> dict[str, dict[str, dict[str, float]]]:
    """MAE and mean signed error (units of ``error``) by temperature, store, σ bin, kind x
    vacancies and size, each group with its count; a grouping with one group is left out."""
    bins = [f"< {SIGMA_BINS[0]:g}", *(f"{a:g}-{b:g}" for a, b in zip(SIGMA_BINS, SIGMA_BINS[1:])),
            f">= {SIGMA_BINS[-1]:g}"]
    labels = {
        "sigma_angstrom": [bins[k] for k in np.digitize(displacement_sigma(ds), SIGMA_BINS)],
        "kind_vacancies": [f"{reference.KINDS[int(k)]}, {int(v)} vac" for k, v in
                           zip(ds["kind"].values, ds["vacancies"].values, strict=True)],
        "atoms": [str(int(n)) for n in ds["n_atoms"].values],
    }
    if "source" in ds:
        names = [Path(p).name for p in ds.attrs["sources"]]
        labels = {"store": [names[k] for k in ds["source"].values], **labels}
    if "temperature" in ds:
        labels = {"temperature_K": ["cold" if np.isnan(t) else f"{t:g}"
                                    for t in ds["temperature"].values], **labels}
    groups = {}
    for name, values in labels.items():
        values = np.array(values)
        keys = sorted(set(values), key=lambda v: (bins.index(v), "") if name == "sigma_angstrom"
                      else (len(v), v))
        if len(keys) > 1:
            groups[name] = {k: {"n": int((values == k).sum()),
                                "mae": float(np.abs(error[values == k]).mean()),
                                "mean_signed": float(error[values == k].mean())} for k in keys}
    return groups


def run_offsets(error: np.ndarray, ds: xr.Dataset,
                reference: np.ndarray | None = None) -> dict[str, float]:
    """How much of the error on MD snapshots is one offset per run.

    Snapshots of one run share its defects and their reconstruction, so their errors
    are correlated: ``mae_of_run_means`` is the MAE of each run's mean error, and
    ``mae_within_runs`` the MAE left once each run's mean is taken off (units of
    ``error``). Structures outside any run (``run`` -1: cold cells) are left out.

    With ``reference`` (the reference energies, in the units of ``error``), also how
    well the model follows the energy as it fluctuates within a run:
    ``reference_within_runs`` is the MAE of the reference about its run means (the
    scale ``mae_within_runs`` is to be read against), and ``slope_within_runs`` and
    ``r2_within_runs`` the least-squares slope and squared correlation of the
    predicted energies' deviations from their run means against the reference's
    (slope 1 and r² 1: every fluctuation followed).
    """
    source = ds["source"].values if "source" in ds else np.zeros(ds.sizes["structure"], int)
    in_run = ds["run"].values >= 0
    _, run = np.unique(np.stack([source, ds["run"].values])[:, in_run], axis=1,
                       return_inverse=True)
    run = run.ravel()

    def about_run_means(values: np.ndarray) -> np.ndarray:
        return values - (np.bincount(run, values) / np.bincount(run))[run]

    error = error[in_run]
    means = np.bincount(run, error) / np.bincount(run)
    out = {"n_runs": int(len(means)), "mae_of_run_means": float(np.abs(means).mean()),
           "mae_within_runs": float(np.abs(error - means[run]).mean())}
    truth = None if reference is None else about_run_means(reference[in_run])
    if truth is not None and truth.any():  # runs of one snapshot each have nothing to follow
        predicted = truth + about_run_means(error)
        out |= {"reference_within_runs": float(np.abs(truth).mean()),
                "slope_within_runs": float(truth @ predicted / (truth @ truth)),
                "r2_within_runs": float(np.corrcoef(truth, predicted)[0, 1] ** 2)}
    return out


def recipe_split(ds: xr.Dataset, model: str, split: str) -> np.ndarray:
    """Indices of one split (train/val/test) of the recipe that trained ``model`` on ``ds``."""
    if split not in SPLITS[1:]:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}.")
    provenance = load_model(model).spec.provenance
    data_hash = _hash(ds)
    if provenance.get("data_hash") != data_hash:
        raise ConfigError(
            f"the {split} split is only defined on the data set {model!r} was trained on "
            f"(data hash {provenance.get('data_hash')}), not on this one ({data_hash}); "
            "evaluate the whole store with split 'all' (--split all).")
    return recipe_splits(ds, provenance["seed"])[SPLITS.index(split) - 1]
