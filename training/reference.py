"""GFN1-xTB reference energies for atomistic data sets, computed resumably on Dask.

A data set is a Zarr store of structures padded to the largest one
(``positions`` NaN-padded, ``numbers`` 0-padded) with one ``energy`` per
structure (eV, GFN1-xTB total energy from ``tblite``, periodic in x and y,
tblite's defaults) and a ``status`` (0 pending, 1 done, 2 failed). The store is
created atomically with every energy pending; :func:`compute_energies` then
fills the pending ones on a Dask cluster and writes each result as it arrives,
so an interrupted run loses at most the structures in flight and a re-run
skips what is done.

Several runs may fill one store at once (two machines, each with its own
cluster): a run *claims* the structures it computes, a few at a time, under the
store's lock (:func:`ednn_dask.storage.locked`), and writes each result under
it too. Claims live in ``.NAME.claims/HOST-PID.claim`` beside the store; a run
holds an ``flock`` on its claim file while it lives, so the claims of a run
that died lapse and another run takes those structures. No structure is
computed twice and none is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ednn_dask.atoms.structure import ELEMENTS, Structure
from ednn_dask.compute import dask_client, progress_bar
from ednn_dask.errors import ConfigError, OutputExistsError, StoreNotFoundError
from ednn_dask.field import write_zarr_atomic
from ednn_dask.storage import locked, trace_event
from training.datasets import load_dataset

BOHR = 0.529177210903  # Å (CODATA 2018, tblite's value)
HARTREE = 27.211386245988  # eV
METHOD = "GFN1-xTB"
PENDING, DONE, FAILED = 0, 1, 2
KINDS = ("graphene", "hbn", "hetero", "porous")


def xtb_calculator(structure: Structure, method: str = METHOD):
    """A quiet tblite calculator of one structure (neutral, tblite's defaults)."""
    from tblite.interface import Calculator

    calc = Calculator(
        method,
        structure.numbers,
        structure.positions / BOHR,
        lattice=structure.cell / BOHR,
        periodic=np.array(structure.pbc),
    )
    calc.set("verbosity", 0)
    return calc


def xtb_energy(structure: Structure, method: str = METHOD) -> float:
    """Total energy in eV of one structure with tblite (neutral, tblite's defaults)."""
    return float(xtb_calculator(structure, method).singlepoint().get("energy")) * HARTREE


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
            **({"sigma": ("structure", np.array([s.info.get("sigma", 0.0) for s in structures]),
                          {"units": "angstrom", "long_name": "Gaussian displacement per "
                           "coordinate"})} if any("sigma" in s.info for s in structures) else {}),
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
    lock_timeout: float | None = None,
) -> dict[str, int]:
    """Compute the pending reference energies of a store, writing each as it arrives.

    Runs one tblite calculation per task on the Dask ``client`` (a LocalCluster
    with one single-threaded worker per core when None). Returns counts of
    structures done, failed and still pending (those another run is computing
    count as pending). A store whose ``replicas`` attribute
    is n > 1 stores each structure's energy computed on its n x n replica divided by
    n**2: tblite samples the Brillouin zone at Gamma only, and the replica samples
    n x n k-points of the cell (energies converged towards those of large cells).

    Other runs may fill the same store at once: structures are claimed a few at a
    time (twice the cluster's threads in flight) and each result is written under
    the store's lock, waiting at most ``lock_timeout`` seconds for it (default
    :data:`ednn_dask.storage.LOCK_TIMEOUT`).
    """
    from distributed import as_completed

    store = Path(path)
    if not (store / "zarr.json").exists():
        raise StoreNotFoundError(f"no data-set store at {store}; create it first (ednn-dask data).")
    with xr.open_zarr(store, zarr_format=3, consolidated=False) as ds:
        replicas = int(ds.attrs.get("replicas", 1))
        static = ds[["positions", "numbers", "cell", "pbc", "n_atoms", "kind"]].load()
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    energy, status_arr, seconds = group["energy"], group["status"], group["seconds"]
    budget = len(static["structure"]) if limit is None else limit
    with xtb_client(client) as client_, _Claims(store, lock_timeout) as claims:
        in_flight = 2 * max(1, sum(client_.nthreads().values()))
        futures: dict = {}
        queue = as_completed()

        def claim_and_submit(n: int) -> None:  # under the store's lock
            nonlocal budget
            status = status_arr[:]
            todo = (status == PENDING) | (retry_failed & (status == FAILED))
            taken = claims.taken()
            picked = [int(k) for k in np.flatnonzero(todo) if int(k) not in taken][:min(n, budget)]
            if not picked:
                return
            claims.add(picked)
            budget -= len(picked)
            for s in dataset_structures(static, picked):
                k = s.info["index"]
                future = client_.submit(_energy_task, s.positions, s.numbers, s.cell, s.pbc,
                                        replicas, pure=False)
                futures[future] = k
                queue.add(future)
                trace_event(f"submit {k}", store)

        with locked(store, timeout=lock_timeout):
            claim_and_submit(in_flight)
        with progress_bar(len(futures), progress, "GFN1-xTB", "structure") as bar:
            for future in queue:
                k = futures.pop(future)
                e, sec = future.result()
                with locked(store, timeout=lock_timeout):
                    energy[k], seconds[k] = e, sec
                    status_arr[k] = DONE if np.isfinite(e) else FAILED
                    claims.done(k)
                    before = len(futures)
                    claim_and_submit(in_flight - len(futures))
                bar.total += len(futures) - before
                bar.update(1)
    final = group["status"][:]
    return {
        "done": int((final == DONE).sum()),
        "failed": int((final == FAILED).sum()),
        "pending": int((final == PENDING).sum()),
    }


class _Claims:
    """The structures this run computes, in ``.NAME.claims/HOST-PID.claim`` beside the store.

    The run holds an ``flock`` on its claim file while it lives; a claim file
    whose lock is free belongs to a run that died, and its claims lapse. Every
    read and write happens under the store's lock. A structure this run has
    finished (or failed) is not taken again by this run.
    """

    def __init__(self, store: Path, lock_timeout: float | None) -> None:
        self.store, self.lock_timeout = store, lock_timeout
        self.folder = store.with_name(f".{store.name}.claims")
        self.file = self.folder / f"{socket.gethostname()}-{os.getpid()}.claim"
        self.mine: set[int] = set()
        self.finished: set[int] = set()
        self.lock = None

    def __enter__(self) -> _Claims:
        from filelock import FileLock

        with locked(self.store, timeout=self.lock_timeout):
            self.folder.mkdir(exist_ok=True)
            self.lock = FileLock(self.file, timeout=0)
            self.lock.acquire()
            self._write()
        return self

    def __exit__(self, *exc) -> None:
        try:
            with locked(self.store, timeout=self.lock_timeout):
                self.file.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # the last run out removes the folder
        finally:
            self.lock.release()

    def taken(self) -> set[int]:
        """Structures claimed by live runs, this one included, and those this run did."""
        from filelock import FileLock, Timeout

        taken = self.mine | self.finished
        for other in self.folder.glob("*.claim"):
            if other == self.file:
                continue
            probe = FileLock(other, timeout=0)
            try:
                probe.acquire()
            except Timeout:  # its run lives: its claims stand
                with contextlib.suppress(OSError, ValueError):
                    taken |= set(json.loads(other.read_text() or "[]"))
                continue
            except OSError:
                continue
            try:  # its run died: its claims lapse
                other.unlink(missing_ok=True)
            finally:
                probe.release()
        return taken

    def add(self, indices: list[int]) -> None:
        self.mine.update(indices)
        self._write()

    def done(self, index: int) -> None:
        self.mine.discard(index)
        self.finished.add(index)
        self._write()

    def _write(self) -> None:
        self.file.write_text(json.dumps(sorted(self.mine)))


def store_progress(path: str | os.PathLike) -> tuple[int, int | None]:
    """(energies done, structures) of a data-set store; (0, None) when there is none."""
    store = Path(path)
    if not (store / "zarr.json").exists():
        return 0, None
    status = zarr.open_group(store, mode="r", zarr_format=3)["status"][:]
    return int((status == DONE).sum()), int(status.size)


def xtb_client(client: object):
    """Use a given Client; else connect to an address or start one worker process per core."""
    # worker processes: the nanny sets OMP_NUM_THREADS=1, so tblite runs one thread each
    return dask_client(client, processes=True, threads_per_worker=1)


def load_reference(path: str | os.PathLike, *, done_only: bool = True) -> xr.Dataset:
    """Open a data-set store in memory, keeping only the structures with an energy."""
    ds = load_dataset(path)
    return ds.isel(structure=ds["status"].values == DONE) if done_only else ds


REFERENCE_VARIABLES = ("positions", "numbers", "cell", "pbc", "n_atoms", "kind", "vacancies",
                       "displacement", "porosity", "energy", "status", "seconds")


def load_reference_sets(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> xr.Dataset:
    """One store, or several concatenated (e.g. cold + thermal) with their energies done.

    Atoms are padded to the largest structure; ``source`` says which store each
    structure came from. ``sigma`` comes from thermal sets or, for cold ones, from
    the displacement radius (:func:`training.atomistic.displacement_sigma`);
    ``temperature`` is NaN and ``run`` (the MD run of a snapshot) -1 for the
    structures of cold sets.
    """
    if isinstance(paths, (str, os.PathLike)):
        return load_reference(paths)
    if not paths:
        raise ConfigError("no data set given.")
    sets = [load_reference(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    _refuse_shared_runs(sets, paths)
    n_max = max(ds.sizes["atom"] for ds in sets)
    parts = []
    for k, ds in enumerate(sets):
        sigma = ds["sigma"].values if "sigma" in ds else ds["displacement"].values / 2
        part = ds[list(REFERENCE_VARIABLES)].pad(
            atom=(0, n_max - ds.sizes["atom"]),
            constant_values={"positions": np.nan, "numbers": 0})
        part["numbers"] = part["numbers"].astype(np.uint8)
        part["sigma"] = ("structure", sigma)
        part["temperature"] = ds["temperature"] if "temperature" in ds else (
            "structure", np.full(ds.sizes["structure"], np.nan))
        part["run"] = ds["run"] if "run" in ds else (
            "structure", np.full(ds.sizes["structure"], -1))
        part["source"] = ("structure", np.full(ds.sizes["structure"], k, np.int16))
        parts.append(part.drop_vars("structure"))
    out = xr.concat(parts, dim="structure", combine_attrs="drop")
    out.attrs = {"method": METHOD, "sources": [str(p) for p in paths]}
    return out.assign_coords(structure=np.arange(out.sizes["structure"]))


def _refuse_shared_runs(sets: Sequence[xr.Dataset], paths: Sequence) -> None:
    """Refuse two stores of one plan (same generator and settings but ``n`` and the
    ``runs`` a selection keeps, :func:`training.thermal.select_runs`) sharing runs.

    A run of a plan is the same structures in either store, and each store is split on
    its own: trained together, a run could sit in one's training split and the other's
    test split.
    """
    seen: dict[tuple, list[tuple[Any, set[int]]]] = {}
    for ds, path in zip(sets, paths):
        if "run" not in ds:
            continue
        plan = tuple(sorted((k, str(v)) for k, v in ds.attrs.items() if k not in ("n", "runs")))
        runs = set(np.unique(ds["run"].values).tolist())
        for other, other_runs in seen.get(plan, []):
            if shared := sorted(runs & other_runs):
                raise ConfigError(f"{path} and {other} are runs of one plan and share "
                                  f"{len(shared)} of them (runs {shared[0]}-{shared[-1]}): "
                                  "train with one of the two; the larger holds the other's runs.")
        seen.setdefault(plan, []).append((path, runs))


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
    max_vacancies: int | None = None, replicas: int = 1, max_sigma: float | None = None,
) -> dict[str, int]:
    """Create (or resume) a reference store of generated structures and compute its energies.

    An existing store with the same generator parameters is resumed: only the
    pending structures are computed. One made with other parameters is refused.
    ``max_vacancies`` (hexagonal only) caps the vacancies per training cell's worth
    of atoms (default 4): GFN1-xTB's SCF on a 540-atom cell with vacancies can take
    over 25 CPU-minutes, on a pristine one about 2. ``replicas`` n > 1 computes each
    energy on the structure's n x n replica (per cell; see :func:`compute_energies`):
    about 40x the GFN1-xTB time of a 60-atom cell at n = 2. ``max_sigma`` (hexagonal
    only) displaces the atoms by independent Gaussians instead of within a disc (see
    :func:`training.structure_sets.hexagonal_structures`). Several runs may fill one
    store at once (see :func:`compute_energies`); the first creates it.
    """
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
    if max_sigma is not None:  # likewise
        if system != "hexagonal" or max_sigma <= 0:
            raise ConfigError(f"max_sigma applies to hexagonal sheets and must be > 0; got "
                              f"{max_sigma} for {system!r}.")
        params["max_sigma"] = max_sigma
    path = Path(out)
    with locked(path):  # two runs started together: one creates the store, the other resumes it
        _create_or_check(path, system, params, seed, cells, overwrite)
    return compute_energies(path, client=client, retry_failed=retry_failed, limit=limit,
                            progress=progress)


def _create_or_check(path: Path, system: str, params: dict, seed: int,
                     cells: tuple[int, int], overwrite: bool) -> None:
    from training.structure_sets import hexagonal_structures, porous_structures

    if path.exists() and not overwrite:
        with xr.open_zarr(path, zarr_format=3, consolidated=False) as ds:
            keys = [*params, *({"max_vacancies", "replicas", "max_sigma"} - set(params))]
            differ = {k: ds.attrs.get(k) for k in keys if ds.attrs.get(k) != params.get(k)}
        if differ:
            raise OutputExistsError(
                f"{str(path)!r} holds a data set made with {differ}, not {params}; choose "
                f"another path or pass --overwrite to replace it."
            )
    else:
        if system == "hexagonal":
            structures = hexagonal_structures(params["n"], seed=seed, cells=cells,
                                              max_vacancies=params.get("max_vacancies", 4),
                                              max_sigma=params.get("max_sigma"))
        else:
            structures = porous_structures(params["n"], seed=seed, cells=cells)
        create_store(path, structures, overwrite=overwrite, **params)
