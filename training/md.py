"""In-plane GFN1-xTB Langevin molecular dynamics of a sheet, resumable, into Zarr; relaxation.

:func:`run_md` integrates Langevin dynamics (ASE's ``Langevin``, forces from
``tblite.ase.TBLite``) of a cell periodic in x and y with every atom's z held
fixed (``FixCartesian``: our fields are 2-D), and appends a snapshot every
``every`` steps to a Zarr store (openable with ``xarray.open_zarr``):

- ``positions`` (frame, atom, xyz), Å, as integrated: *not* wrapped into the cell
  (wrap them, e.g. ``Structure(...).wrapped()``, before rasterizing);
- ``momenta`` (frame, atom, xyz), ASE units (amu Å / ASE time; ``momenta /
  masses * ase.units.fs`` is in Å/fs);
- ``energy`` (frame), eV, the GFN1-xTB total energy;
- ``temperature`` (frame), K, instantaneous, over the 2 in-plane degrees of freedom
  per atom (the z motion is frozen);
- ``step`` (frame); ``numbers`` (atom); ``cell`` (vector, xyz), Å; ``pbc`` (xyz).

Frame 0 is the starting structure at step 0 with its Maxwell-Boltzmann momenta.
The attributes hold the run's configuration, the number of committed ``frames``,
the last ``step`` and the integrator's random-number-generator state
(``rng_state``, JSON of ``numpy.random.PCG64.state``) after that step. The last
frame and that state are the full dynamics state, so running the same call
again continues the run; ``equilibrate_steps`` marks how many leading steps a
reader should drop as equilibration (all frames are kept).

Resuming reproduces an uninterrupted run bit for bit. tblite starts each SCF
from the previous step's wavefunction; to make that history the same for a
resumed run, the SCF at every snapshot step starts from scratch (tblite's
default guess), as the first SCF of a resumed run does. That costs about one
slower SCF in ``every`` steps.

:func:`relax` takes a sheet to its nearest energy minimum under the same forces and
constraint (FIRE) and returns its path, a few minutes per 100-atom cell where a run
of :func:`run_md` takes a quarter of an hour.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ednn_dask.atoms.structure import Structure, as_source
from ednn_dask.errors import ConfigError, OutputExistsError, StructureError
from ednn_dask.field import write_zarr_atomic

METHOD = "GFN1-xTB"
MD_FORMAT = 1
FRAME_VARIABLES = ("positions", "momenta", "energy", "temperature", "step")
_FRAME_CHUNK = 100


def run_md(
    out: str | os.PathLike,
    structure: Any,
    temperature: float,
    steps: int,
    *,
    timestep_fs: float = 1.0,
    friction: float = 0.01,
    every: int = 10,
    seed: int = 0,
    equilibrate_steps: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Run (or continue) in-plane Langevin GFN1-xTB dynamics up to ``steps``, saving to ``out``.

    Parameters
    ----------
    out : path
        Zarr store. An existing store of the same configuration is continued from
        its last frame; one of another configuration (structure, temperature,
        timestep, friction, every, seed) is refused unless ``overwrite``.
    structure : Structure or ase.Atoms
        The starting cell, periodic in x and y; z positions stay as given.
    temperature : float
        Thermostat temperature, K (also of the initial Maxwell-Boltzmann momenta).
    steps : int
        Total number of steps of the run (a multiple of ``every``); a store that
        has reached it is left as it is.
    timestep_fs : float
        Time step, fs.
    friction : float
        Langevin friction, 1/fs.
    every : int
        Steps between snapshots (and between saved dynamics states).
    seed : int
        Seed of the momenta and the Langevin noise.
    equilibrate_steps : int
        Leading steps a reader should treat as equilibration (stored as an attribute).
    overwrite : bool
        Replace an existing store instead of continuing or refusing it.
    progress : bool
        Show a tqdm progress bar (stderr).
    threads : int or None
        OpenMP threads of tblite during the run (None: leave them as they are).
        With more than one, tblite's parallel sums vary in the last bit from run to
        run, so a continued run no longer matches an uninterrupted one bit for bit.

    Returns
    -------
    dict
        ``out``, ``step`` (last step now stored), ``frames``, ``new_steps`` (steps
        run by this call), ``seconds`` and ``steps_per_second`` of this call.
    """
    structure = as_source(structure)
    if not isinstance(structure, Structure) or not all(structure.pbc[:2]):
        raise StructureError("molecular dynamics needs a Structure (or ase.Atoms) periodic in "
                             "x and y.")
    config = _config(structure, temperature, timestep_fs, friction, every, seed)
    if not (int(steps) == steps and steps >= 0 and steps % every == 0):
        raise ConfigError(f"steps must be a whole multiple of every = {every}, got {steps}.")
    if not (int(equilibrate_steps) == equilibrate_steps and 0 <= equilibrate_steps):
        raise ConfigError(f"equilibrate_steps must be an integer >= 0, got {equilibrate_steps}.")
    with _openmp_threads(threads):
        return _run(Path(out), structure, config, temperature, steps, timestep_fs, friction,
                    every, seed, equilibrate_steps, overwrite, progress)


def _run(path: Path, structure: Structure, config: dict[str, Any], temperature: float,
         steps: int, timestep_fs: float, friction: float, every: int, seed: int,
         equilibrate_steps: int, overwrite: bool, progress: bool) -> dict[str, Any]:
    from ase.md.langevin import Langevin
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if path.exists() and not overwrite:
        _check_store(path, structure, config)
        atoms, rng, step = _resume(path, structure)
        forces = None  # computed afresh at the saved positions, as the first SCF after a save
    else:
        atoms, rng = _initial_state(structure, temperature, seed)
        forces = atoms.get_forces()
        frame = _frame(atoms, 0)
        ds = _initial_dataset(structure, frame, config, rng, equilibrate_steps)
        write_zarr_atomic(ds, path, overwrite=overwrite)
        step = 0
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    if group.attrs.get("equilibrate_steps") != equilibrate_steps:
        group.attrs["equilibrate_steps"] = int(equilibrate_steps)
    dyn = Langevin(atoms, timestep=timestep_fs * _ase_fs(), temperature_K=temperature,
                   friction=friction / _ase_fs(), fixcm=False, rng=rng)
    first = step
    with tqdm(total=max(steps, step), initial=step, unit="step", disable=not progress,
              desc=f"MD {METHOD} {temperature:g} K") as bar:
        while step < steps:
            if (step + 1) % every == 0:
                atoms.calc.reset()  # this SCF starts from scratch, as a resumed run's would
            forces = dyn.step(forces)
            step += 1
            if step % every == 0:
                _append(group, _frame(atoms, step), rng, step)
            bar.update(1)
    seconds = time.perf_counter() - start
    new = step - first
    return {"out": path, "step": step, "frames": int(group.attrs["frames"]), "new_steps": new,
            "seconds": seconds, "steps_per_second": new / seconds if seconds else float("nan")}


@contextlib.contextmanager
def _openmp_threads(threads: int | None) -> Iterator[None]:
    """Set the OpenMP threads of this thread (libgomp, which tblite's wheels use) for a while."""
    import tblite.interface  # noqa: F401  (loads tblite's OpenMP runtime)

    try:
        gomp = ctypes.CDLL("libgomp.so.1") if threads is not None else None
    except OSError:  # another OpenMP runtime: OMP_NUM_THREADS=1 does the same
        gomp = None
    if gomp is None:
        yield
        return
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        gomp.omp_set_num_threads(before)


def _ase_fs() -> float:
    from ase import units

    return units.fs


def _config(structure: Structure, temperature: float, timestep_fs: float, friction: float,
            every: int, seed: int) -> dict[str, Any]:
    if not (temperature > 0 and timestep_fs > 0 and friction >= 0):
        raise ConfigError(f"temperature (K) and timestep_fs must be > 0 and friction (1/fs) "
                          f">= 0; got {temperature}, {timestep_fs} and {friction}.")
    if not (int(every) == every and every >= 1):
        raise ConfigError(f"every must be an integer >= 1, got {every}.")
    return {
        "md_format": MD_FORMAT,
        "method": METHOD,
        "integrator": "Langevin",
        "fixed": "z",
        "temperature_K": float(temperature),
        "timestep_fs": float(timestep_fs),
        "friction_per_fs": float(friction),
        "every": int(every),
        "seed": int(seed),
        "n_atoms": len(structure),
    }


def _calculator() -> Any:
    from tblite.ase import TBLite

    # cache_api=False: reset() drops tblite's wavefunction, so the next SCF starts from scratch
    return TBLite(method=METHOD, verbosity=0, cache_api=False)


def _atoms(structure: Structure, positions: np.ndarray) -> Any:
    from ase import Atoms
    from ase.constraints import FixCartesian

    atoms = Atoms(numbers=structure.numbers, positions=positions, cell=structure.cell,
                  pbc=structure.pbc)
    atoms.set_constraint(FixCartesian(range(len(atoms)), mask=(False, False, True)))
    atoms.calc = _calculator()
    return atoms


def _initial_state(structure: Structure, temperature: float, seed: int) -> tuple[Any, Any]:
    """Atoms with Maxwell-Boltzmann momenta in x, y (none in z, no drift), and the generator."""
    from ase import units
    from ase.md.velocitydistribution import Stationary

    rng = np.random.Generator(np.random.PCG64(seed))
    atoms = _atoms(structure, structure.positions)
    scale = np.sqrt(atoms.get_masses() * units.kB * temperature)[:, None]
    momenta = rng.standard_normal((len(atoms), 3)) * scale  # as ase's thermalize_momenta
    momenta[:, 2] = 0.0
    atoms.set_momenta(momenta)
    Stationary(atoms)  # no drift of the centre of mass; the in-plane temperature is kept
    return atoms, rng


def _frame(atoms: Any, step: int) -> dict[str, np.ndarray]:
    return {
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "energy": np.array(atoms.get_potential_energy()),
        "temperature": np.array(atoms.get_temperature()),
        "step": np.array(step, np.int64),
    }


def _initial_dataset(structure: Structure, frame: dict[str, np.ndarray], config: dict[str, Any],
                     rng: Any, equilibrate_steps: int) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "positions": (("frame", "atom", "xyz"), frame["positions"][None],
                          {"units": "angstrom", "wrapped": "no: as integrated"}),
            "momenta": (("frame", "atom", "xyz"), frame["momenta"][None],
                        {"units": "amu angstrom / ASE time unit (ase.units.fs per fs)"}),
            "energy": ("frame", frame["energy"][None], {"units": "eV", "method": METHOD}),
            "temperature": ("frame", frame["temperature"][None],
                            {"units": "K", "degrees_of_freedom": "x, y of every atom"}),
            "step": ("frame", frame["step"][None]),
            "numbers": ("atom", structure.numbers),
            "cell": (("vector", "xyz"), structure.cell, {"units": "angstrom"}),
            "pbc": ("xyz", np.array(structure.pbc)),
        },
        attrs={**config, "frames": 1, "step": 0, "rng_state": _rng_json(rng),
               "equilibrate_steps": int(equilibrate_steps)},
    )
    for name in FRAME_VARIABLES:
        ds[name].encoding["chunks"] = (_FRAME_CHUNK, *ds[name].shape[1:])
    return ds


def _rng_json(rng: Any) -> str:
    return json.dumps(rng.bit_generator.state)


def _append(group: zarr.Group, frame: dict[str, np.ndarray], rng: Any, step: int) -> None:
    """Append one frame, then commit it with the state (one atomic write of the attributes)."""
    frames = int(group.attrs["frames"])
    for name in FRAME_VARIABLES:
        array = group[name]
        array.resize((frames + 1, *array.shape[1:]))
        array[frames] = frame[name]
    group.attrs.update({"frames": frames + 1, "step": int(step), "rng_state": _rng_json(rng)})


def _check_store(path: Path, structure: Structure, config: dict[str, Any]) -> None:
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
        attrs = dict(group.attrs)
        same_atoms = (
            np.array_equal(group["numbers"][:], structure.numbers)
            and np.array_equal(group["cell"][:], structure.cell)
            and np.array_equal(group["positions"][0], structure.positions)
        )
    except Exception as err:  # not a Zarr store, or not one of ours
        raise OutputExistsError(
            f"{str(path)!r} exists and is not a molecular-dynamics store ({err}); choose "
            f"another path or pass overwrite=True (--overwrite) to replace it."
        ) from err
    stored = {k: attrs.get(k) for k in config if attrs.get(k) != config[k]}
    asked = {k: config[k] for k in stored}
    if not same_atoms:
        stored["structure"], asked["structure"] = "its own", "another (atoms, cell or positions)"
    if stored:
        raise OutputExistsError(
            f"{str(path)!r} holds a run made with {stored}, not {asked}; choose another path "
            f"or pass overwrite=True (--overwrite) to replace it."
        )


def _resume(path: Path, structure: Structure) -> tuple[Any, Any, int]:
    """The atoms (positions, momenta), generator and step of the last committed frame."""
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    frames = int(group.attrs["frames"])
    for name in FRAME_VARIABLES:  # drop a frame written but not committed
        array = group[name]
        if array.shape[0] < frames:
            raise OutputExistsError(f"{str(path)!r} is damaged: {name!r} has {array.shape[0]} "
                                    f"frames, the store says {frames}; pass overwrite=True.")
        if array.shape[0] > frames:
            array.resize((frames, *array.shape[1:]))
    atoms = _atoms(structure, group["positions"][frames - 1])
    atoms.set_momenta(group["momenta"][frames - 1])
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = json.loads(group.attrs["rng_state"])
    return atoms, rng, int(group["step"][frames - 1])


RELAX_SETTINGS = {"fmax": 0.05, "max_steps": 500, "every": 20}
"""FIRE to 0.05 eV/Å: a porous 5 x 6 cell takes 80-270 steps (1-3 min on one core)."""


def relax(structure: Any, *, fmax: float = RELAX_SETTINGS["fmax"],
          max_steps: int = RELAX_SETTINGS["max_steps"], every: int = RELAX_SETTINGS["every"],
          threads: int | None = 1) -> xr.Dataset:
    """Relax a sheet in plane (z fixed) with FIRE and GFN1-xTB forces; its path as frames.

    Parameters
    ----------
    structure : Structure or ase.Atoms
        The starting cell, periodic in x and y.
    fmax : float
        Converged when no atom feels more than this force, eV/Å.
    max_steps : int
        At most this many FIRE steps (the ``converged`` attribute says whether it was
        reached first).
    every : int
        Steps between kept frames.
    threads : int or None
        OpenMP threads of tblite (None: leave them as they are).

    Returns
    -------
    xarray.Dataset
        ``positions`` (frame, atom, xyz), Å; ``energy`` (frame), eV; ``step`` (frame):
        the start, every ``every``-th step and the last step; ``numbers``, ``cell``,
        ``pbc``; attributes ``method``, ``fmax``, ``max_steps``, ``every``,
        ``converged`` and ``steps``.
    """
    from ase.optimize import FIRE

    structure = as_source(structure)
    if not isinstance(structure, Structure) or not all(structure.pbc[:2]):
        raise StructureError("relaxation needs a Structure (or ase.Atoms) periodic in x and y.")
    if not (fmax > 0 and int(max_steps) == max_steps >= 0 and int(every) == every >= 1):
        raise ConfigError(f"need fmax > 0 eV/Å, integers max_steps >= 0 and every >= 1; got "
                          f"{fmax}, {max_steps} and {every}.")
    frames: list[tuple[int, np.ndarray, float]] = []
    with _openmp_threads(threads):
        atoms = _atoms(structure, structure.positions)
        opt = FIRE(atoms, logfile=None)

        def keep() -> None:
            frames.append((opt.nsteps, atoms.get_positions(), atoms.get_potential_energy()))

        opt.attach(keep, interval=every)  # also at step 0
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        if frames[-1][0] != opt.nsteps:
            keep()
    step, positions, energy = zip(*frames, strict=True)
    return xr.Dataset(
        {"positions": (("frame", "atom", "xyz"), np.stack(positions), {"units": "angstrom"}),
         "energy": ("frame", np.array(energy), {"units": "eV", "method": METHOD}),
         "step": ("frame", np.array(step, np.int64)),
         "numbers": ("atom", structure.numbers),
         "cell": (("vector", "xyz"), structure.cell, {"units": "angstrom"}),
         "pbc": ("xyz", np.array(structure.pbc))},
        attrs={"method": METHOD, "optimizer": "FIRE", "fixed": "z", "fmax": float(fmax),
               "max_steps": int(max_steps), "every": int(every), "converged": int(converged),
               "steps": int(opt.nsteps)})
