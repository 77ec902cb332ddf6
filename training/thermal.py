"""Thermal GFN1-xTB data: snapshots of in-plane molecular dynamics, as a reference store.

The cold data sets (:mod:`training.structure_sets`) hold lattices with small
independent displacements; real sheets at temperature move their atoms together
(phonons). A thermal data set is made of many short runs of in-plane Langevin
GFN1-xTB dynamics (:func:`training.md.run_md`), one per training cell:

- run ``k`` starts from cell ``k`` of the cold generator (seed ``seed``, no
  displacement) at temperature ``temperatures[k % len(temperatures)]``;
- the first ``equilibrate_steps`` steps are dropped, then every ``every``-th
  step is a snapshot, labelled by the MD's own GFN1-xTB energy (the same method,
  settings and convention as :func:`training.reference.xtb_energy`).

The runs live in ``OUT-md/run-KKKKK.zarr`` beside the store ``OUT``; each is
resumable, and they run in parallel on a Dask cluster (one single-threaded
worker process per core by default). After every finished run ``OUT`` is
rewritten atomically from all the finished ones, so ``OUT`` is always a complete
reference store (``ednn-dask train hexagonal --data OUT`` reads it) and is itself
the checkpoint: the same command continues an interrupted job, and a finished
run whose folder is gone (a fresh clone, another machine) is read back from
``OUT`` instead of being run again.

Besides the reference variables, ``OUT`` holds per snapshot ``temperature``
(the thermostat's, K), ``sigma`` (:func:`thermal_sigma`, Å: the quantity the
error-by-displacement tables bin), ``run`` and ``step``.

:func:`build_relaxed_set` makes the same kind of store from GFN1-xTB relaxation
paths of the same cells (:func:`training.md.relax`), in ``OUT-relax/``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr

from ednn_dask.atoms.structure import Structure
from ednn_dask.compute import progress_bar
from ednn_dask.errors import ConfigError, OutputExistsError, StructureError
from ednn_dask.field import write_zarr_atomic
from training.md import RELAX_SETTINGS

TEMPERATURES = (300.0, 600.0, 1000.0, 1500.0)
"""Thermostat temperatures (K) the runs cycle through."""
THERMAL_SEED = 100
"""Default seed: a namespace of its own, so no run starts from a cell of the cold sets
(seeds 0 and 1). Held-out thermal sets use another seed again (e.g. 200)."""
MD_SETTINGS = {"steps": 600, "every": 20, "equilibrate_steps": 200, "timestep_fs": 1.0,
               "friction": 0.01}
"""Per run: 400 fs of production after 200 fs (2 / friction) of equilibration from the
ideal lattice, a snapshot every 20 fs (about one optical-phonon period): 20 snapshots."""
CELLS = {"hexagonal": (5, 3), "porous": (5, 6)}


SIGMA_ATTRS = {"units": "angstrom", "long_name": "per-coordinate RMS in-plane displacement "
               "from the run's mean positions, the structure's mean shift removed"}


def thermal_sigma(displacement: np.ndarray) -> np.ndarray:
    """Per-coordinate RMS in-plane displacement of each structure, its mean shift removed.

    ``displacement`` is ``(structures, atoms, xyz)``, from the run's mean positions
    (the cell relaxed at its temperature), so a vacancy's static relaxation is not
    counted as thermal motion.
    """
    d = displacement[..., :2] - displacement[..., :2].mean(axis=1, keepdims=True)
    return np.sqrt((d ** 2).mean(axis=(1, 2)))


@dataclass(frozen=True)
class ThermalRun:
    """One MD run of a thermal data set: a starting cell, a temperature and a seed."""

    index: int
    structure: Structure
    temperature: float
    seed: int

    @property
    def name(self) -> str:
        return f"run-{self.index:05d}.zarr"


def thermal_runs(system: str, n: int, *, seed: int = THERMAL_SEED,
                 temperatures: Sequence[float] = TEMPERATURES, start: int = 0,
                 max_vacancies: int = 4, cells: tuple[int, int] | None = None,
                 ) -> list[ThermalRun]:
    """Runs ``start .. start + n - 1``: run ``k`` depends only on ``(system, seed, k)``.

    ``cells``: the cell in 4-atom rectangular cells (default :data:`CELLS`, the
    training cells)."""
    from training.structure_sets import hexagonal_structures, porous_structures

    if system not in CELLS:
        raise ConfigError(f"thermal data exist for {sorted(CELLS)}, not {system!r}.")
    if not temperatures or min(temperatures) <= 0:
        raise ConfigError(f"temperatures must be > 0 K, got {list(temperatures)}.")
    cells = tuple(cells or CELLS[system])
    runs = []
    for k in range(start, start + n):
        if system == "hexagonal":
            (cell,) = hexagonal_structures(1, seed=seed, start=k, cells=cells,
                                           max_vacancies=max_vacancies, max_displacement=0.0)
        else:
            (cell,) = porous_structures(1, seed=seed, start=k, cells=cells,
                                        max_displacement=0.0)
        md_seed = int(np.random.default_rng([seed, k, 1]).integers(2**31))
        runs.append(ThermalRun(k, cell, float(temperatures[k % len(temperatures)]), md_seed))
    return runs


def build_thermal_set(
    out: str | Path,
    system: str = "hexagonal",
    *,
    n: int = 96,
    seed: int = THERMAL_SEED,
    temperatures: Sequence[float] = TEMPERATURES,
    steps: int = MD_SETTINGS["steps"],
    every: int = MD_SETTINGS["every"],
    equilibrate_steps: int = MD_SETTINGS["equilibrate_steps"],
    max_vacancies: int = 4,
    cells: tuple[int, int] | None = None,
    workdir: str | Path | None = None,
    client: object = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the ``n`` MD runs of a thermal set, then write the store ``out``.

    Parameters
    ----------
    out : path
        The reference store to write.
    system : {"hexagonal", "porous"}
        The cold generator the starting cells come from (60-atom hexagonal cells or
        porous 5 x 6 cells).
    n : int
        Number of MD runs (each gives ``(steps - equilibrate_steps) / every`` snapshots).
        A larger ``n`` than the store's grows it by the runs after those it holds (run
        ``k`` depends only on ``k``); a smaller one is refused.
    workdir : path, optional
        Where the MD runs live (default ``<out stem>-md/`` beside ``out``). Only
        the store is needed to train; the runs are needed to continue.
    limit : int, optional
        Run at most this many of the pending runs now (the store then holds the
        finished ones; run the same command again to continue).
    client : distributed.Client or address, optional
        Where the runs go (default: a LocalCluster of one single-threaded worker
        process per core).

    Returns
    -------
    dict
        ``store``, ``runs_done``, ``runs_pending``, ``snapshots`` in the store.
    """
    if n < 1 or limit is not None and limit < 0:
        raise ConfigError(f"n must be >= 1 and limit >= 0; got n={n}, limit={limit}.")
    if not (0 <= equilibrate_steps < steps and steps % every == 0
            and equilibrate_steps % every == 0):
        raise ConfigError(f"need 0 <= equilibrate_steps < steps, both multiples of every; got "
                          f"steps={steps}, every={every}, equilibrate_steps={equilibrate_steps}.")
    params = {"generator": f"thermal-{system}", "n": n, "seed": seed,
              "temperatures": [float(t) for t in temperatures], "steps": steps, "every": every,
              "equilibrate_steps": equilibrate_steps, "max_vacancies": max_vacancies,
              "cells": list(cells or CELLS[system]),
              "timestep_fs": MD_SETTINGS["timestep_fs"], "friction": MD_SETTINGS["friction"]}
    out = Path(out)
    runs_dir = Path(workdir) if workdir else runs_folder(out)
    stored = _create_or_check(runs_dir, out, params, overwrite, growable=("n",))
    runs = thermal_runs(system, n, seed=seed, temperatures=temperatures,
                        max_vacancies=max_vacancies, cells=cells)
    return _run_into_store(runs, runs_dir, out, params, stored, client, limit, progress,
                           _run_one, "GFN1-xTB MD")


def _run_into_store(runs: list[ThermalRun], runs_dir: Path, out: Path, params: dict,
                    stored: xr.Dataset | None, client: object, limit: int | None,
                    progress: bool, task: Any, what: str) -> dict[str, Any]:
    """Run ``task`` for each run not yet finished (in ``runs_dir`` or ``stored``); after each,
    rewrite the store ``out`` from all the finished ones."""
    in_store = set() if stored is None else set(np.unique(stored["run"].values).tolist())

    def finished(r: ThermalRun) -> bool:
        return r.index in in_store or _finished(runs_dir / r.name, params)

    pending = [r for r in runs if not finished(r)]
    now = pending if limit is None else pending[:limit]

    def write_store() -> dict[str, Any]:  # after every run: a killed job keeps what it made
        done = [r for r in runs if finished(r)]
        snapshots = 0
        if done:  # read and written here, not on the cluster: its workers run the next runs
            with dask.config.set(scheduler="synchronous"):
                ds = thermal_dataset(done, runs_dir, params, stored)
                write_zarr_atomic(ds.chunk({"structure": 1000}), out, overwrite=True)
            snapshots = ds.sizes["structure"]
        return {"store": str(out), "runs_done": len(done),
                "runs_pending": len(runs) - len(done), "snapshots": snapshots}

    if now:
        _run_all(now, runs_dir, params, client, progress, write_store, task, what)
    return write_store()


def build_relaxed_set(
    out: str | Path,
    system: str = "hexagonal",
    *,
    n: int = 96,
    seed: int = THERMAL_SEED,
    fmax: float = RELAX_SETTINGS["fmax"],
    max_steps: int = RELAX_SETTINGS["max_steps"],
    every: int = RELAX_SETTINGS["every"],
    max_vacancies: int = 4,
    cells: tuple[int, int] | None = None,
    workdir: str | Path | None = None,
    client: object = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Relax (or continue relaxing) ``n`` cells with GFN1-xTB, then write their paths as a store.

    Relaxation ``k`` (:func:`training.md.relax`, z fixed) starts from the cell MD
    run ``k`` of :func:`build_thermal_set` with the same ``system``, ``seed``,
    ``max_vacancies`` and ``cells`` starts from; its frames (the start, every
    ``every``-th FIRE step, the relaxed end) are the structures, labelled by the
    relaxation's own energies, with ``temperature`` 0 and ``sigma`` 0. A relaxed
    pore edge costs a sixth to a tenth of the MD run that reaches it.

    Runs live in ``workdir`` (default ``<out stem>-relax/``); the store is rewritten
    after each, is the checkpoint, and grows with ``n`` as a thermal set does.
    Returns ``store``, ``runs_done``, ``runs_pending`` and ``snapshots``.
    """
    if n < 1 or limit is not None and limit < 0:
        raise ConfigError(f"n must be >= 1 and limit >= 0; got n={n}, limit={limit}.")
    params = {"generator": f"relaxed-{system}", "n": n, "seed": seed, "fmax": float(fmax),
              "max_steps": max_steps, "every": every, "max_vacancies": max_vacancies,
              "cells": list(cells or CELLS[system])}
    out = Path(out)
    runs_dir = Path(workdir) if workdir else out.with_name(out.stem + "-relax")
    stored = _create_or_check(runs_dir, out, params, overwrite, growable=("n",))
    runs = thermal_runs(system, n, seed=seed, max_vacancies=max_vacancies, cells=cells)
    return _run_into_store(runs, runs_dir, out, params, stored, client, limit, progress,
                           _relax_one, "GFN1-xTB relaxation")


def runs_folder(out: Path) -> Path:
    """Where the MD runs of the store ``out`` live: ``<stem>-md`` beside it."""
    return out.with_name(out.stem + "-md")


def _create_or_check(runs_dir: Path, out: Path, params: dict, overwrite: bool,
                     growable: tuple[str, ...] = ()) -> xr.Dataset | None:
    """Refuse runs or a store made with other parameters; the store ``out`` in memory.

    A parameter in ``growable`` may be larger than the store's (more runs of the same
    plan: run ``k`` depends only on ``k``), never smaller; the runs folder keeps every
    run it has either way."""
    plan = runs_dir / "plan.json"
    stored = None
    if overwrite:
        shutil.rmtree(runs_dir, ignore_errors=True)
    else:
        if plan.exists():
            same_plan = {k: v for k, v in params.items() if k not in growable}
            _refuse_others(runs_dir, json.loads(plan.read_text()), same_plan, "thermal runs")
        if out.exists():
            stored = _stored_set(out, params, growable)
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps(params, indent=1))
    return stored


def _stored_set(out: Path, params: dict, growable: tuple[str, ...] = ()) -> xr.Dataset:
    try:
        with xr.open_zarr(out, zarr_format=3, consolidated=False) as ds:
            stored = ds.load()
    except (OSError, ValueError, KeyError) as error:
        raise OutputExistsError(f"{str(out)!r} exists and is not a data set ({error}); choose "
                                f"another path or pass --overwrite to replace it.") from None
    if stored.attrs.get("generator") != params["generator"] or "run" not in stored:
        raise OutputExistsError(f"{str(out)!r} exists and is not a {params['generator']} set; "
                                f"choose another path or pass --overwrite to replace it.")
    _refuse_others(out, stored.attrs, params, "a thermal set", growable)
    return stored


def _refuse_others(path: Path, stored: Any, params: dict, what: str = "a data set",
                   growable: tuple[str, ...] = ()) -> None:
    """Refuse ``path`` when it was made with other parameters, naming each difference.

    Parameters in ``growable`` may grow: only a smaller value than the stored one differs."""
    def same(k: str) -> bool:
        if k in growable and stored.get(k) is not None:
            return params[k] >= stored[k]
        return stored.get(k) == params[k]

    differ = {k: stored.get(k) for k in params if not same(k)}
    if differ:
        raise OutputExistsError(
            f"{str(path)!r} holds {what} made with {differ}, not "
            f"{ {k: params[k] for k in differ} }; choose another path or pass --overwrite "
            f"to replace it.")


def _finished(path: Path, params: dict) -> bool:
    """Whether the run in ``path`` is done: an MD run has reached its steps; a relaxation
    is written only when done."""
    if not (path / "zarr.json").exists():
        return False
    if params["generator"].startswith("relaxed"):
        return True
    attrs = zarr.open_group(path, mode="r", zarr_format=3).attrs
    return int(attrs.get("step", -1)) >= params["steps"]


def _run_one(path: str, structure: Structure, temperature: float, seed: int,
             params: dict) -> str:
    from training.md import run_md

    run_md(path, structure, temperature, params["steps"], every=params["every"], seed=seed,
           timestep_fs=params["timestep_fs"], friction=params["friction"],
           equilibrate_steps=params["equilibrate_steps"], progress=False, threads=1)
    return path


def _relax_one(path: str, structure: Structure, temperature: float, seed: int,
               params: dict) -> str:
    from training.md import relax

    path_ = Path(path)
    ds = relax(structure, fmax=params["fmax"], max_steps=params["max_steps"],
               every=params["every"])
    write_zarr_atomic(ds, path_, overwrite=path_.exists())  # a killed try left nothing
    return path


def _run_all(runs: list[ThermalRun], runs_dir: Path, params: dict, client: object,
             progress: bool, on_done: Any, task: Any, what: str) -> None:
    from distributed import as_completed

    from training.reference import xtb_client

    with xtb_client(client) as client_, \
            progress_bar(len(runs), progress, what, "run") as bar:
        futures = [client_.submit(task, str(runs_dir / r.name), r.structure, r.temperature,
                                  r.seed, params, pure=False,
                                  key=f"{params['generator']}-{r.name}")
                   for r in runs]
        for future in as_completed(futures):
            future.result()  # an SCF that fails stops the job; the finished runs are kept
            on_done()
            bar.update(1)


def thermal_dataset(runs: Sequence[ThermalRun], runs_dir: Path, params: dict,
                    stored: xr.Dataset | None = None) -> xr.Dataset:
    """The production snapshots of finished MD runs (or the frames of finished relaxations,
    ``params["generator"]`` ``relaxed-*``) as a reference data set (energies done).

    ``params`` are the set's parameters (stored as attributes); frames after
    ``params["equilibrate_steps"]`` are the snapshots. A run without a finished
    folder in ``runs_dir`` is taken from ``stored``, an earlier write of the set."""
    from training.reference import DONE, structures_dataset

    relaxed = params["generator"].startswith("relaxed")
    structures, energy, temperature, sigma, run, step = [], [], [], [], [], []
    for r in runs:
        start = r.structure
        if _finished(runs_dir / r.name, params):
            positions, e, s, sig = _run_frames(runs_dir / r.name, params)
        else:
            rows = stored["run"].values == r.index
            positions = stored["positions"].values[rows, : len(start)]
            e, s, sig = (stored[k].values[rows] for k in ("energy", "step", "sigma"))
        for xyz in positions:
            structures.append(Structure(xyz, start.numbers, start.cell, start.pbc,
                                        dict(start.info)).wrapped())
        energy.append(e)
        temperature.append(np.full(len(e), 0.0 if relaxed else r.temperature))
        sigma.append(np.zeros(len(e)) if relaxed else sig)  # a path, not thermal motion
        run.append(np.full(len(e), r.index))
        step.append(s)
    ds = structures_dataset(structures, **params)
    ds["energy"][:] = np.concatenate(energy)
    ds["status"][:] = DONE
    ds["temperature"] = ("structure", np.concatenate(temperature), {"units": "K"})
    ds["sigma"] = ("structure", np.concatenate(sigma), SIGMA_ATTRS)
    ds["run"] = ("structure", np.concatenate(run).astype(np.int32))
    ds["step"] = ("structure", np.concatenate(step).astype(np.int32))
    ds.attrs["labels"] = (f"the {'relaxation' if relaxed else 'MD'}'s own GFN1-xTB energies "
                          "(tblite defaults, Gamma point)")
    return ds


def _run_frames(path: Path, params: dict) -> tuple[np.ndarray, ...]:
    """Positions, energies, steps and sigma of a finished run's frames: an MD run's
    production frames, or every frame of a relaxation path."""
    with xr.open_zarr(path, zarr_format=3, consolidated=False) as md:
        md = md.load()
    keep = md["step"].values > params.get("equilibrate_steps", -1)
    positions = md["positions"].values[keep]
    return (positions, md["energy"].values[keep], md["step"].values[keep],
            thermal_sigma(positions - positions.mean(axis=0)))


def unwrapped(x: np.ndarray, cell: np.ndarray, pbc: Sequence[bool]) -> np.ndarray:
    """Snapshots ``(m, atoms, xyz)`` of one cell, each atom moved by whole cell vectors to
    its image nearest the first snapshot's: a trajectory a mean can be taken of."""
    frac = (x - x[:1]) @ np.linalg.inv(cell)
    return x - np.round(frac * np.array(pbc)) @ cell


def thermal_rattles(ds: xr.Dataset, per_run: int, *, seed: int = 0) -> list[Structure]:
    """``per_run`` Gaussian samples of each MD run's in-plane displacements, around its mean.

    A run's snapshots ``x_i`` (``m`` of them, unwrapped against the first) give the
    mean positions ``x̄`` (the cell relaxed at temperature) and the displacements
    ``u_i = x_i - x̄``; a sample is ``x̄ + Σ_i c_i u_i`` with ``c_i ~ N(0, 1/(m-1))``,
    a draw from the Gaussian of the run's sample covariance. The atoms move
    together as in the MD (phonons), at about a fiftieth of the MD's cost per
    labelled structure; anharmonic tails are what only the MD snapshots carry.
    """
    from training.reference import KINDS

    if per_run < 1:
        raise ConfigError(f"per_run must be >= 1, got {per_run}.")
    if "run" not in ds:
        raise ConfigError("rattles are drawn from a thermal set (ednn-dask data thermal): this "
                          "data set has no 'run' variable.")
    rng = np.random.default_rng(seed)
    runs, kinds = ds["run"].values, ds["kind"].values
    out = []
    for run in np.unique(runs):
        idx = np.flatnonzero(runs == run)
        if len(idx) < 2:
            continue
        n = int(ds["n_atoms"].values[idx[0]])
        cell, pbc = ds["cell"].values[idx[0]], tuple(bool(p) for p in ds["pbc"].values[idx[0]])
        x = unwrapped(ds["positions"].values[idx, :n].astype(np.float64), cell, pbc)
        mean = x.mean(axis=0)
        u = x - mean
        info = {"kind": KINDS[int(kinds[idx[0]])],
                "vacancies": int(ds["vacancies"].values[idx[0]]),
                "temperature": float(ds["temperature"].values[idx[0]]), "run": int(run)}
        c = rng.standard_normal((per_run, len(idx))) / np.sqrt(len(idx) - 1)
        samples = np.einsum("sm,mad->sad", c, u)
        for d, sigma in zip(samples, thermal_sigma(samples), strict=True):
            out.append(Structure(mean + d, ds["numbers"].values[idx[0], :n].astype(np.int64),
                                 cell, pbc, {**info, "sigma": float(sigma)}).wrapped())
    return out


def build_rattle_set(out: str | Path, source: str | Path, *, per_run: int = 100,
                     seed: int = 0, client: object = None, limit: int | None = None,
                     retry_failed: bool = False, overwrite: bool = False,
                     progress: bool = True) -> dict[str, int]:
    """Create (or resume) a reference store of :func:`thermal_rattles` and label it with GFN1-xTB.

    The structures are drawn from the thermal set ``source``; their energies are
    computed like any reference store's (:func:`training.reference.compute_energies`:
    resumable, on Dask, several runs may fill one store).
    """
    from ednn_dask.storage import locked
    from training.datasets import dataset_hash
    from training.reference import compute_energies, load_reference, structures_dataset

    thermal = load_reference(source)
    params = {"generator": "thermal-rattles", "source": Path(source).name,
              "source_hash": dataset_hash(thermal[["positions", "numbers", "cell", "energy"]]),
              "per_run": per_run, "seed": seed}
    path = Path(out)
    with locked(path):
        if path.exists() and not overwrite:
            with xr.open_zarr(path, zarr_format=3, consolidated=False) as ds:
                _refuse_others(path, ds.attrs, params)
        else:
            structures = thermal_rattles(thermal, per_run, seed=seed)
            ds = structures_dataset(structures, **params)
            for name in ("temperature", "sigma", "run"):
                ds[name] = ("structure", np.array([s.info[name] for s in structures]))
            ds["temperature"].attrs["units"] = "K"
            ds["sigma"].attrs.update(SIGMA_ATTRS)
            write_zarr_atomic(ds.chunk({"structure": 1000}), path, overwrite=overwrite)
    return compute_energies(path, client=client, retry_failed=retry_failed, limit=limit,
                            progress=progress)


def select_runs(out: str | Path, source: str | Path, runs: Sequence[int], *,
                overwrite: bool = False) -> dict[str, Any]:
    """Copy the MD runs ``runs`` of the thermal set ``source`` into a new store ``out``.

    For leaving runs out of a training set (a cell that reconstructed, say). The copy
    keeps the source's plan and run numbers, so training it beside its source is refused
    like two stores of one plan (:func:`training.reference.load_reference_sets`).
    """
    from training.datasets import load_dataset
    from training.reference import DONE

    ds = load_dataset(source)
    if "run" not in ds:
        raise ConfigError(f"{str(source)!r} has no MD runs; select runs of a thermal set "
                          f"(ednn-dask data thermal).")
    have = np.unique(ds["run"].values)
    wanted = np.unique(np.asarray(runs, dtype=int))
    if missing := sorted(set(wanted.tolist()) - set(have.tolist())):
        raise ConfigError(f"{str(source)!r} has no run {missing}; its runs are "
                          f"{have.min()}-{have.max()}.")
    rows = np.isin(ds["run"].values, wanted)
    if pending := np.unique(ds["run"].values[rows & (ds["status"].values != DONE)]).tolist():
        raise ConfigError(f"runs {pending} of {str(source)!r} have energies still to "
                          f"compute; finish them first (the `data thermal` command that "
                          f"made it).")
    subset = ds.isel(structure=rows)
    subset.attrs = {**ds.attrs, "runs": wanted.tolist()}
    write_zarr_atomic(subset.chunk({"structure": 1000}), out, overwrite=overwrite)
    return {"store": str(out), "runs": len(wanted), "snapshots": int(rows.sum()),
            "left_out": sorted(set(have.tolist()) - set(wanted.tolist()))}


MC_SETTINGS = {"steps": 6000, "every": 300, "equilibrate": 3000}
"""Per EDNN-MC chain (moves of one atom; a 60-atom cell): 50 sweeps of equilibration,
then a snapshot every 5 sweeps: 20 snapshots."""


def _mc_chain(path: str, run: ThermalRun, model: str, params: dict) -> float:
    """Run (or finish) one chain into ``path``; its closest pair of atoms (Å).

    The chain's warnings (:class:`~ednn_dask.errors.ExtrapolationWarning`) are left to
    the client (:func:`_warn_about_chains`): a worker process would print each of them,
    in Python's several lines, through the progress bar.
    """
    from ednn_dask.errors import ExtrapolationWarning
    from ednn_dask.mc.atoms import run_atoms

    with warnings.catch_warnings():  # process-wide: fine with one thread per worker
        warnings.simplefilter("ignore", ExtrapolationWarning)
        result = run_atoms(run.structure, model, run.temperature, params["steps"],
                           every=params["every"], equilibrate=params["equilibrate"],
                           seed=run.seed, out=path, progress=False,
                           min_distance=params.get("min_distance_A"))
    return float(result.rdf.closest)


def _warn_about_chains(model: Any, runs: Sequence[ThermalRun], closest: Sequence[float]) -> None:
    """The warnings of a set of chains, once each: a temperature outside the model's card,
    and the chains that brought two atoms too close (the closest of them named)."""
    from ednn_dask.atoms.references import (
        CLOSEST_PAIR_A,
        warn_if_extrapolating,
        warn_if_too_close,
    )

    for temperature in sorted({r.temperature for r in runs}):
        warn_if_extrapolating(model, temperature)
    close = sorted((c, r.temperature) for c, r in zip(closest, runs) if c < CLOSEST_PAIR_A)
    if close:
        warn_if_too_close(model, *close[0], of=(len(close), len(runs)))


def build_mc_set(
    out: str | Path,
    model: str | Path,
    system: str = "hexagonal",
    *,
    n: int = 32,
    seed: int = THERMAL_SEED,
    temperatures: Sequence[float] = TEMPERATURES,
    steps: int = MC_SETTINGS["steps"],
    every: int = MC_SETTINGS["every"],
    equilibrate: int = MC_SETTINGS["equilibrate"],
    max_vacancies: int = 4,
    cells: tuple[int, int] | None = None,
    min_distance: float | None = None,
    workdir: str | Path | None = None,
    client: object = None,
    limit: int | None = None,
    retry_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Snapshots of EDNN Monte Carlo with ``model``, labelled with GFN1-xTB: active learning.

    ``n`` chains (:func:`training.mc.atoms.run_atoms`, single-atom moves at the
    temperatures of :func:`thermal_runs`, from the same cells) run on the Dask
    cluster into ``workdir`` (default ``<out stem>-mc/``); their snapshots become
    the reference store ``out``, whose energies are then computed like any
    reference store's. Where the model is wrong, its chain goes where GFN1-xTB
    would not; labelling those snapshots and training on them is one round of
    active learning. Resumable at every stage: the same command continues.
    ``min_distance`` (Å): the chains' hard core (:class:`~ednn_dask.mc.atoms.AtomsChain`).
    """
    from distributed import as_completed

    from ednn_dask.model import load_model
    from ednn_dask.storage import locked
    from training.reference import compute_energies, xtb_client

    if n < 1 or steps < every or steps % every:
        raise ConfigError(f"need n >= 1 and steps a multiple of every; got n={n}, "
                          f"steps={steps}, every={every}.")
    source = load_model(model)
    params = {"generator": f"mc-{system}", "model": Path(model).name,
              "model_sha256": source.sha256, "n": n, "seed": seed,
              "temperatures": [float(t) for t in temperatures], "steps": steps, "every": every,
              "equilibrate": equilibrate, "max_vacancies": max_vacancies,
              "cells": list(cells or CELLS[system])}
    if min_distance is not None:  # stores made before the option keep their settings
        params["min_distance_A"] = float(min_distance)
    out = Path(out)
    chains_dir = Path(workdir) if workdir else out.with_name(out.stem + "-mc")
    if out.exists() and not overwrite:
        with xr.open_zarr(out, zarr_format=3, consolidated=False) as ds:
            _refuse_others(out, ds.attrs, params)
    else:
        _create_or_check(chains_dir, out, params, overwrite)
        runs = thermal_runs(system, n, seed=seed, temperatures=temperatures,
                            max_vacancies=max_vacancies, cells=cells)
        with xtb_client(client) as client_, \
                progress_bar(len(runs), progress, "EDNN Monte Carlo", "chain") as bar:
            futures = [client_.submit(_mc_chain, str(chains_dir / r.name), r, str(model),
                                      params, pure=False, key=f"mc-{r.name}") for r in runs]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        _warn_about_chains(source, runs, [f.result() for f in futures])
        with locked(out):
            if not out.exists() or overwrite:
                write_zarr_atomic(mc_dataset(runs, chains_dir, params).chunk(
                    {"structure": 1000}), out, overwrite=overwrite)
    return compute_energies(out, client=client, retry_failed=retry_failed, limit=limit,
                            progress=progress)


def mc_dataset(runs: Sequence[ThermalRun], chains_dir: Path, params: dict) -> xr.Dataset:
    """The snapshots of finished EDNN-MC chains as a reference data set, energies pending.

    Frames with two atoms closer than :meth:`Structure.check` allows (a model whose
    chain let atoms overlap) are left out and counted in ``overlapping_frames_skipped``.
    """
    from training.reference import structures_dataset

    structures, temperature, sigma, chain, skipped = [], [], [], [], 0
    for r in runs:
        with xr.open_zarr(chains_dir / r.name, zarr_format=3, consolidated=False) as mc:
            x = unwrapped(mc["positions"].values.astype(np.float64), r.structure.cell,
                          r.structure.pbc)
        keep = []
        for xyz in x:
            s = Structure(xyz, r.structure.numbers, r.structure.cell, r.structure.pbc,
                          dict(r.structure.info)).wrapped()
            try:  # a chain that let two atoms overlap left what no model can rasterize
                structures.append(s.check())
                keep.append(True)
            except StructureError:
                keep.append(False)
        skipped += keep.count(False)
        temperature.append(np.full(sum(keep), r.temperature))
        sigma.append(thermal_sigma(x - x.mean(axis=0))[keep])
        chain.append(np.full(sum(keep), r.index, np.int32))
    ds = structures_dataset(structures, **params, overlapping_frames_skipped=skipped)
    ds["temperature"] = ("structure", np.concatenate(temperature), {"units": "K"})
    ds["sigma"] = ("structure", np.concatenate(sigma), SIGMA_ATTRS)
    ds["run"] = ("structure", np.concatenate(chain))
    return ds
