"""GFN1-xTB reference energies for atomistic data sets, computed resumably on Dask.

A data set is a Zarr store of structures padded to the largest one
(``positions`` NaN-padded, ``numbers`` 0-padded) with one ``energy`` per
structure (eV, GFN1-xTB total energy from ``tblite``, periodic in x and y,
tblite's defaults) and a ``status`` (0 pending, 1 done, 2 failed). The store is
created atomically with every energy pending; :func:`compute_energies` then
fills the pending ones on a Dask cluster and writes each result as it arrives,
so an interrupted run loses at most the structures in flight and a re-run
skips what is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from ednn_dask.atoms.structure import ELEMENTS, Structure
from ednn_dask.compute import dask_client, progress_bar
from ednn_dask.errors import ConfigError, OutputExistsError, StoreNotFoundError
from ednn_dask.field import write_zarr_atomic
from training.datasets import load_dataset

BOHR = 0.529177210903  # Å (CODATA 2018, tblite's value)
HARTREE = 27.211386245988  # eV
METHOD = "GFN1-xTB"
PENDING, DONE, FAILED = 0, 1, 2
KINDS = ("graphene", "hbn", "hetero", "porous")


def xtb_energy(structure: Structure, method: str = METHOD) -> float:
    """Total energy in eV of one structure with tblite (neutral, tblite's defaults)."""
    from tblite.interface import Calculator

    calc = Calculator(
        method,
        structure.numbers,
        structure.positions / BOHR,
        lattice=structure.cell / BOHR,
        periodic=np.array(structure.pbc),
    )
    calc.set("verbosity", 0)
    return float(calc.singlepoint().get("energy")) * HARTREE


def structures_dataset(structures: Iterable[Structure], **attrs: object) -> xr.Dataset:
    """Pack structures into a padded data set with every energy pending.

    Positions are stored as float32; the reference energy is computed from
    exactly those stored positions, so the store reproduces its own labels.
    """
    structures = list(structures)
    if not structures:
        raise ConfigError("no structures given.")
    n_max = max(len(s) for s in structures)
    n = len(structures)
    positions = np.full((n, n_max, 3), np.nan, np.float32)
    numbers = np.zeros((n, n_max), np.uint8)
    for k, s in enumerate(structures):
        positions[k, : len(s)] = s.positions
        numbers[k, : len(s)] = s.numbers
    info = {
        key: [s.info.get(key) for s in structures]
        for key in ("kind", "vacancies", "displacement", "porosity")
    }
    ds = xr.Dataset(
        {
            "positions": (("structure", "atom", "xyz"), positions, {"units": "angstrom"}),
            "numbers": (("structure", "atom"), numbers),
            "cell": (("structure", "vector", "xyz"), np.stack([s.cell for s in structures])),
            "pbc": (("structure", "xyz"), np.array([s.pbc for s in structures])),
            "n_atoms": ("structure", np.array([len(s) for s in structures], np.int32)),
            # kinds as codes: fixed-length strings have no Zarr v3 spec yet
            "kind": (
                "structure",
                np.array([KINDS.index(k) for k in info["kind"]], np.int8),
                {"flag_values": list(range(len(KINDS))), "flag_meanings": " ".join(KINDS)},
            ),
            "vacancies": ("structure", np.array([v or 0 for v in info["vacancies"]], np.int16)),
            "displacement": ("structure", np.array([d or 0.0 for d in info["displacement"]])),
            "porosity": ("structure", np.array([p or 0.0 for p in info["porosity"]])),
            "energy": ("structure", np.full(n, np.nan), {"units": "eV", "method": METHOD}),
            "status": ("structure", np.zeros(n, np.int8)),
            "seconds": ("structure", np.full(n, np.nan)),
        },
        coords={"structure": np.arange(n)},
        attrs={"method": METHOD, **{k: _jsonable(v) for k, v in attrs.items()}},
    )
    return ds


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def dataset_structures(ds: xr.Dataset, index: Sequence[int] | None = None) -> list[Structure]:
    """Unpack structures (positions as float64 of the stored float32) from a data set.

    Positions are wrapped into the cell: float32 storage can put an atom that sat
    on the cell's far edge a rounding step outside it.
    """
    index = range(ds.sizes["structure"]) if index is None else index
    positions, numbers = ds["positions"].values, ds["numbers"].values
    cells, pbc, n_atoms = ds["cell"].values, ds["pbc"].values, ds["n_atoms"].values
    kinds = ds["kind"].values
    out = []
    for k in index:
        n = int(n_atoms[k])
        info = {"kind": KINDS[int(kinds[k])], "index": int(k)}
        out.append(
            Structure(
                positions[k, :n].astype(np.float64),
                numbers[k, :n].astype(np.int64),
                cells[k],
                tuple(pbc[k]),
                info,
            ).wrapped()
        )
    return out


def create_store(
    path: str | os.PathLike,
    structures: Iterable[Structure],
    *,
    overwrite: bool = False,
    **attrs: object,
) -> Path:
    """Write a new data-set store with every energy pending (atomically)."""
    ds = structures_dataset(structures, **attrs)
    ds = ds.chunk({"structure": 1000})
    return write_zarr_atomic(ds, path, overwrite=overwrite)


def _energy_task(
    positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: tuple[bool, ...],
    replicas: int = 1,
) -> tuple[float, float]:
    start = time.perf_counter()
    try:
        s = Structure(positions, numbers, cell, pbc).repeat(replicas, replicas)
        energy = xtb_energy(s) / replicas**2
    except Exception:  # tblite raises RuntimeError when the SCF does not converge
        energy = float("nan")
    return energy, time.perf_counter() - start


def compute_energies(
    path: str | os.PathLike,
    *,
    client: object = None,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Compute the pending reference energies of a store, writing each as it arrives.

    Runs one tblite calculation per task on the Dask ``client`` (a LocalCluster
    with one single-threaded worker per core when None). Returns counts of
    structures done, failed and still pending. A store whose ``replicas`` attribute
    is n > 1 stores each structure's energy computed on its n x n replica divided by
    n**2: tblite samples the Brillouin zone at Gamma only, and the replica samples
    n x n k-points of the cell (energies converged towards those of large cells).
    """
    from distributed import as_completed

    store = Path(path)
    if not (store / "zarr.json").exists():
        raise StoreNotFoundError(f"no data-set store at {store}; create it first (ednn-dask data).")
    ds = xr.open_zarr(store, zarr_format=3, consolidated=False)
    status, replicas = ds["status"].values, int(ds.attrs.get("replicas", 1))
    todo = np.flatnonzero((status == PENDING) | (retry_failed & (status == FAILED)))[:limit]
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    energy, status_arr, seconds = group["energy"], group["status"], group["seconds"]
    with _client(client) as client_:
        futures = {}
        for s in dataset_structures(ds, todo):
            future = client_.submit(_energy_task, s.positions, s.numbers, s.cell, s.pbc,
                                    replicas, pure=False)
            futures[future] = s.info["index"]
        bar = progress_bar(len(futures), progress, "GFN1-xTB", "structure")
        for future in as_completed(futures):
            k = futures.pop(future)
            e, sec = future.result()
            energy[k], seconds[k] = e, sec
            status_arr[k] = DONE if np.isfinite(e) else FAILED
            bar.update(1)
        bar.close()
    final = group["status"][:]
    return {
        "done": int((final == DONE).sum()),
        "failed": int((final == FAILED).sum()),
        "pending": int((final == PENDING).sum()),
    }


def _client(client: object):
    """Use a given Client; else connect to an address or start one worker process per core."""
    # worker processes: the nanny sets OMP_NUM_THREADS=1, so tblite runs one thread each
    return dask_client(client, processes=True, threads_per_worker=1)


def load_reference(path: str | os.PathLike, *, done_only: bool = True) -> xr.Dataset:
    """Open a data-set store in memory, keeping only the structures with an energy."""
    ds = load_dataset(path)
    return ds.isel(structure=ds["status"].values == DONE) if done_only else ds


def species_counts(ds: xr.Dataset, elements: Sequence[int]) -> np.ndarray:
    """(n_structures, n_elements) number of atoms of each element."""
    numbers = ds["numbers"].values
    return np.stack([(numbers == z).sum(axis=1) for z in elements], axis=1).astype(np.float64)


def fit_reference_energies(
    ds: xr.Dataset, elements: Sequence[int] | None = None
) -> dict[str, float]:
    """Per-species reference energies (eV/atom) by least squares: E ≈ Σ_s n_s μ_s."""
    if elements is None:
        elements = sorted(set(np.unique(ds["numbers"].values).tolist()) - {0})
    counts = species_counts(ds, elements)
    mu, *_ = np.linalg.lstsq(counts, ds["energy"].values, rcond=None)
    return {ELEMENTS.get(int(z), str(z)): float(m) for z, m in zip(elements, mu)}


def residual_energy(ds: xr.Dataset, reference: dict[str, float]) -> np.ndarray:
    """Energy minus Σ_s n_s μ_s (what a model learns), eV per structure."""
    elements = [next(z for z, sym in ELEMENTS.items() if sym == s) for s in reference]
    return ds["energy"].values - species_counts(ds, elements) @ np.array(list(reference.values()))


GENERATORS = {"hexagonal": ((5, 3), 5000), "porous": ((5, 6), 1000)}


def build_reference_set(
    system: str, out: str | os.PathLike, *, n: int | None = None, seed: int = 0,
    cells: tuple[int, int] | None = None, client: object = None, limit: int | None = None,
    retry_failed: bool = False, overwrite: bool = False, progress: bool = True,
    max_vacancies: int | None = None, replicas: int = 1,
) -> dict[str, int]:
    """Create (or resume) a reference store of generated structures and compute its energies.

    An existing store with the same generator parameters is resumed: only the
    pending structures are computed. One made with other parameters is refused.
    ``max_vacancies`` (hexagonal only) caps the vacancies per training cell's worth
    of atoms (default 4): GFN1-xTB's SCF on a 540-atom cell with vacancies can take
    over 25 CPU-minutes, on a pristine one about 2. ``replicas`` n > 1 computes each
    energy on the structure's n x n replica (per cell; see :func:`compute_energies`):
    about 40x the GFN1-xTB time of a 60-atom cell at n = 2.
    """
    from training.structure_sets import hexagonal_structures, porous_structures

    if system not in GENERATORS:
        raise ConfigError(f"system must be one of {sorted(GENERATORS)}, got {system!r}.")
    default_cells, default_n = GENERATORS[system]
    cells = tuple(cells or default_cells)
    params = {"generator": system, "n": n or default_n, "seed": seed, "cells": list(cells)}
    if max_vacancies is not None:  # only when set: stores made before it keep resuming
        if system != "hexagonal":
            raise ConfigError(f"max_vacancies applies to hexagonal sheets, not {system!r}.")
        if max_vacancies < 0:
            raise ConfigError(f"max_vacancies must be >= 0, got {max_vacancies}.")
        params["max_vacancies"] = max_vacancies
    if replicas != 1:  # likewise
        if replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {replicas}.")
        params["replicas"] = replicas
    path = Path(out)
    if path.exists() and not overwrite:
        with xr.open_zarr(path, zarr_format=3, consolidated=False) as ds:
            keys = [*params, *({"max_vacancies", "replicas"} - set(params))]
            differ = {k: ds.attrs.get(k) for k in keys if ds.attrs.get(k) != params.get(k)}
        if differ:
            raise OutputExistsError(
                f"{str(path)!r} holds a data set made with {differ}, not {params}; choose "
                f"another path or pass --overwrite to replace it."
            )
    else:
        if system == "hexagonal":
            structures = hexagonal_structures(params["n"], seed=seed, cells=cells,
                                              max_vacancies=params.get("max_vacancies", 4))
        else:
            structures = porous_structures(params["n"], seed=seed, cells=cells)
        create_store(path, structures, overwrite=overwrite, **params)
    return compute_energies(path, client=client, retry_failed=retry_failed, limit=limit,
                            progress=progress)
