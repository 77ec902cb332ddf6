"""Metropolis Monte Carlo of atoms in a periodic sheet, with an atomistic EDNN as the energy.

A move displaces one atom in-plane. The field is not rasterized again: the
atom's old Gaussian stamp (eq. 2) is subtracted and its new one added on the
small pixel box the two stamps cover, and :class:`~ednn_dask.mc.local.LocalEnergy`
rescores only the focus blocks that see that box. Species counts never change,
so the reference energies are a constant carried along: :attr:`AtomsChain.energy`
is the total energy in the model's convention (eV).

The step size adapts towards a target acceptance during equilibration only, so
the measured part of the chain is a fixed Metropolis kernel.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ednn_dask.atoms.raster import cell_field, channel_table, grid_shape, stamp
from ednn_dask.atoms.references import (
    reference_sum,
    require_atomistic,
    warn_if_extrapolating,
    warn_if_too_close,
)
from ednn_dask.atoms.structure import Structure, as_source, species_counts
from ednn_dask.compute import progress_bar
from ednn_dask.errors import ConfigError, StructureError
from ednn_dask.mc.local import Change, LocalEnergy, Proposal
from ednn_dask.mc.rdf import InPlaneRDF
from ednn_dask.mc.runs import CHECKPOINT_SECONDS, RunStore, restore_rng, rng_state
from ednn_dask.mc.stats import blocked_mean
from ednn_dask.model import TileModel, load_model

BOLTZMANN_EV = 8.617333262e-5
"""Boltzmann's constant in eV/K (CODATA 2018)."""

ADAPT_EVERY = 50
"""Moves per step-size adjustment during equilibration."""


@dataclass
class AtomsRun:
    """The measured frames of an :class:`AtomsChain` run: energies (eV, total) and g(r)."""

    temperature: float
    n_atoms: int
    energy: np.ndarray
    acceptance: float
    moves: int
    seconds: float
    step: float
    drift: float
    rdf: InPlaneRDF | None  # None for in-memory runs (AtomsChain.run)
    out: Path | None = None

    def summary(self) -> dict[str, Any]:
        mean, sem = blocked_mean(self.energy)
        return {"temperature_K": self.temperature, "atoms": self.n_atoms, "steps": int(self.moves),
                "frames": len(self.energy), "energy_mean": mean, "energy_sem": sem,
                "energy_per_atom_mean": mean / self.n_atoms, "acceptance": self.acceptance,
                "moves_per_second": self.moves / self.seconds if self.seconds else math.nan,
                "step_A": self.step, "energy_drift": self.drift,
                **({"closest_pair_A": self.rdf.closest}
                   if self.rdf and math.isfinite(self.rdf.closest) else {}),
                **({"out": str(self.out)} if self.out else {})}


class AtomsChain:
    """Single-atom in-plane displacement moves on a periodic cell.

    Parameters
    ----------
    atoms : Structure or ase.Atoms
        A cell periodic in x and y, a whole number of the model's pixels and focus blocks.
    model : TileModel or path
        An atomistic model (``ednn.raster``, ``ednn.reference_energies``).
    temperature : float
        In kelvin.
    step : float
        Largest displacement in Å (uniform in a disc); adapted during equilibration.
    seed : int
    min_distance : float, optional
        A hard core (Å): a move that brings the atom closer than this to any other
        (minimum image) is rejected unpriced, as if the energy there were infinite.
        Keeps chains out of overlaps the model never saw and cannot rasterize apart;
        the proposal stays symmetric, so the chain samples the model's Boltzmann
        distribution restricted to configurations without such pairs.
    """

    def __init__(self, atoms: Any, model: TileModel | str | os.PathLike, temperature: float,
                 *, step: float = 0.05, seed: int = 0, threads: int = 1,
                 min_distance: float | None = None):
        model = load_model(model)
        require_atomistic(model)
        structure = as_source(atoms)
        if not isinstance(structure, Structure) or not all(structure.pbc[:2]):
            raise StructureError("atoms Monte Carlo needs a Structure (or ase.Atoms) periodic "
                                 "in x and y.")
        if not (temperature > 0 and step > 0):
            raise ConfigError(f"temperature (K) and step (Å) must be > 0; got {temperature} "
                              f"and {step}.")
        if min_distance is not None and not min_distance > 0:
            raise ConfigError(f"min_distance (Å) must be > 0, got {min_distance}.")
        warn_if_extrapolating(model, temperature)
        field = cell_field(structure, model.spec.spacing, **model.spec.raster)
        wrapped = structure.wrapped()
        self._bind(model, temperature, step, np.random.default_rng(seed), field,
                   wrapped.positions, structure.numbers, structure.cell, structure.pbc, threads)
        self.reference = reference_sum(species_counts(structure), model.spec.reference_energies)
        self.min_distance = min_distance

    @classmethod
    def on_field(cls, field: np.ndarray, positions: np.ndarray, numbers: np.ndarray,
                 cell: np.ndarray, model: TileModel, temperature: float, *, step: float,
                 rng: np.random.Generator, threads: int = 1) -> AtomsChain:
        """A chain on a field rasterized already (a region of a larger sheet).

        ``field`` must hold the stamps of ``positions`` (Å, inside ``cell``) and of any
        atoms around them; nothing is rasterized. The reference energy is 0: only
        energy changes are meaningful.
        """
        chain = cls.__new__(cls)
        chain._bind(model, temperature, step, rng, field, positions, numbers, cell,
                    (True, True, False), threads)
        chain.reference = 0.0
        chain.min_distance = None
        return chain

    def _bind(self, model, temperature, step, rng, field, positions, numbers, cell, pbc,
              threads) -> None:
        spec = model.spec
        self.model, self.spec, self.temperature, self.step = model, spec, temperature, step
        self.rng = rng
        self.cell = np.array([cell[0, 0], cell[1, 1]])
        self.xy = np.array(positions[:, :2], dtype=np.float64)
        self.z = np.array(positions[:, 2], dtype=np.float64)
        self.numbers = np.array(numbers)
        self.pbc = pbc
        self.shape = grid_shape(cell, spec.spacing)
        lut = channel_table(spec.raster["species"])
        self.channel = np.zeros(len(self.numbers), np.int64) if lut is None else lut[self.numbers]
        self.local = LocalEnergy(field, model, boundary="periodic", threads=threads)

    @property
    def energy(self) -> float:
        """Total energy (eV): the EDNN's running sum plus the reference energies."""
        return self.local.energy + self.reference

    def structure(self) -> Structure:
        """The current configuration."""
        positions = np.column_stack([self.xy, self.z])
        cell = np.diag([*self.cell, 1.0])
        cell[2, 2] = max(1.0, float(np.ptp(self.z)) + 20.0)
        return Structure(positions, self.numbers, cell, self.pbc)

    def change_box(self, atom: int, displacement: np.ndarray) -> tuple[list[int], list[int]]:
        """The pixel box ``[lo, hi)`` (y, x; unwrapped) that moving ``atom`` changes."""
        cutoff = self.spec.raster["cutoff"]
        old = self.xy[atom]
        new = old + displacement
        lo = [math.floor((min(old[a], new[a]) - cutoff) / s - 0.5)
              for a, s in ((1, self.spec.spacing[0]), (0, self.spec.spacing[1]))]
        hi = [math.floor((max(old[a], new[a]) + cutoff) / s - 0.5) + 1
              for a, s in ((1, self.spec.spacing[0]), (0, self.spec.spacing[1]))]
        return lo, hi

    def propose_move(self, atom: int, displacement: np.ndarray) -> Proposal:
        """Price moving ``atom`` by ``displacement`` (Å, in-plane) without committing it."""
        sy, sx = self.spec.spacing
        lo, hi = self.change_box(atom, displacement)
        delta = np.zeros((self.local.field.shape[0], hi[0] - lo[0], hi[1] - lo[1]))
        corner = np.array([lo[1] * sx, lo[0] * sy])
        weight = float(self.numbers[atom])
        old = self.xy[atom]
        for xy, w in ((old + displacement, weight), (old, -weight)):
            stamp(delta, (xy - corner)[None], np.array([w]), self.channel[atom:atom + 1],
                  (sy, sx), self.spec.raster["gamma"], self.spec.raster["cutoff"])
        rows = np.arange(lo[0], hi[0]) % self.shape[0]
        cols = np.arange(lo[1], hi[1]) % self.shape[1]
        current = self.local.field[:, rows[:, None], cols[None, :]]
        values = (current + delta).astype(np.float32)
        return self.local.propose([Change((lo[0], lo[1]), values)])[0]

    def accept_move(self, atom: int, displacement: np.ndarray, proposal: Proposal) -> None:
        self.local.accept(proposal)
        self.xy[atom] = (self.xy[atom] + displacement) % self.cell

    def displacement(self) -> np.ndarray:
        """A displacement (Å; x, y) uniform in the disc of radius ``step``."""
        r, phi = self.step * math.sqrt(self.rng.random()), self.rng.uniform(0, 2 * math.pi)
        return np.array([r * math.cos(phi), r * math.sin(phi)])

    def too_close(self, atom: int, displacement: np.ndarray) -> bool:
        """Whether the moved atom would sit within ``min_distance`` of another (minimum image)."""
        d = self.xy - (self.xy[atom] + displacement)
        d -= np.round(d / self.cell) * self.cell
        r2 = (d * d).sum(axis=1)
        r2[atom] = np.inf
        return bool(r2.min() < self.min_distance**2)

    def metropolis(self, atom: int, displacement: np.ndarray) -> bool:
        """Price the move, accept it with probability min(1, exp(-ΔE/kT)); True if accepted."""
        if self.min_distance is not None and self.too_close(atom, displacement):
            return False
        proposal = self.propose_move(atom, displacement)
        beta = 1.0 / (BOLTZMANN_EV * self.temperature)
        if self.rng.random() < math.exp(-max(proposal.delta, 0.0) * beta):
            self.accept_move(atom, displacement, proposal)
            return True
        return False

    def attempt(self) -> bool:
        """One Metropolis move of a random atom; True if accepted."""
        atom = int(self.rng.integers(len(self.numbers)))
        return self.metropolis(atom, self.displacement())

    def state(self) -> dict[str, Any]:
        """Everything the chain needs to continue bit for bit (see :mod:`ednn_dask.mc.runs`)."""
        return {"field": self.local.field, "contributions": self.local.contributions,
                "xy": self.xy, "local_energy": self.local.energy, "step": self.step,
                "rng": rng_state(self.rng)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of a chain built on the same cell and model."""
        self.local.field[...] = state["field"]
        self.local.contributions[...] = state["contributions"]
        self.local.energy = float(state["local_energy"])
        self.xy[...] = state["xy"]
        self.step = float(state["step"])
        self.rng = restore_rng(state["rng"])

    def run(self, steps: int, *, equilibrate: int = 0, target_acceptance: float = 0.5,
            every: int = 1) -> AtomsRun:
        """``equilibrate`` moves (step size adapted), then ``steps`` measured moves, in memory.

        Measures the energy every ``every`` moves (no g(r): see :func:`run_atoms`).
        """
        return _Run(self, steps, every, equilibrate, target_acceptance, rdf_bins=None).go()


def run_atoms(
    atoms: Any,
    model: TileModel | str | os.PathLike,
    temperature: float,
    steps: int,
    *,
    every: int = 10,
    equilibrate: int | None = None,
    seed: int = 0,
    step: float = 0.05,
    target_acceptance: float = 0.5,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    threads: int = 1,
    rdf_bins: int = 120,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    min_distance: float | None = None,
) -> AtomsRun:
    """Run (or continue) a Metropolis chain of single-atom moves, optionally into a store.

    Parameters
    ----------
    atoms : Structure or ase.Atoms
        A cell periodic in x and y.
    model : TileModel or path
        An atomistic model.
    temperature, steps
        Kelvin; measured moves (attempts).
    every : int
        Moves between frames (energy, positions and g(r) are measured every ``every``).
    equilibrate : int, optional
        Moves before measuring, with the step size adapted; default ``steps // 5``.
    out : path, optional
        A Zarr store (``positions``, ``numbers``, ``cell``, ``energy``, ``g_r``) written
        as the chain goes, with the chain's state: running the same call again continues
        it, bit for bit (:mod:`ednn_dask.mc.runs`). Another run's store is refused
        unless ``overwrite``.
    min_distance : float, optional
        A hard core in Å (:class:`AtomsChain`); part of the run's settings.
    """
    if not (steps >= 1 and 1 <= every <= steps):
        raise ConfigError(f"a run needs steps >= 1 and 1 <= every <= steps; got steps = {steps}, "
                          f"every = {every}.")
    equilibrate = steps // 5 if equilibrate is None else equilibrate
    chain = AtomsChain(atoms, model, temperature, step=step, seed=seed, threads=threads,
                       min_distance=min_distance)
    run = _Run(chain, steps, every, equilibrate, target_acceptance, rdf_bins=rdf_bins,
               progress=progress, checkpoint_seconds=checkpoint_seconds)
    if out is not None:
        template = trajectory_template(chain.structure(), steps // every, every, run.rdf)
        template = template.assign_attrs(temperature_K=chain.temperature)
        settings = {"seed": seed, "step_A": step}
        if min_distance is not None:  # runs made before the option keep their settings
            settings["min_distance_A"] = min_distance
        run.attach(out, template, settings, overwrite)
    result = run.go()
    if result.rdf is not None:
        warn_if_too_close(chain.model, result.rdf.closest, chain.temperature)
    return result


class _Run:
    """The loop of one chain: equilibration, measured moves, frames, checkpoints."""

    def __init__(self, chain: AtomsChain, steps: int, every: int, equilibrate: int,
                 target_acceptance: float, *, rdf_bins: int | None = 120, progress: bool = False,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.chain, self.steps, self.every = chain, steps, every
        self.equilibrate, self.target = equilibrate, target_acceptance
        self.rdf = (None if rdf_bins is None
                    else InPlaneRDF(chain.cell, len(chain.numbers), bins=rdf_bins))
        self.progress, self.checkpoint_seconds = progress, checkpoint_seconds
        self.store: RunStore | None = None
        self.moves = self.accepted = self.window = self.frames_done = 0
        self.seconds = 0.0
        self.energy = np.full(steps // every, np.nan)

    def config(self) -> dict[str, Any]:
        chain = self.chain
        return {"kind": "atoms", "model_sha256": chain.model.sha256,
                "structure_sha256": structure_digest(chain.structure()),
                "temperature_K": chain.temperature,
                "steps": self.steps, "every": self.every, "equilibrate": self.equilibrate,
                "target_acceptance": self.target, "rdf_bins": len(self.rdf.counts)}

    def attach(self, out, template: xr.Dataset, settings: dict, overwrite: bool) -> None:
        """Write frames and checkpoints to the store ``out``, continuing its saved state."""
        config = self.config() | settings
        self.store = RunStore.open(out, template, config, overwrite=overwrite)
        state = self.store.load_state()
        if state is not None:
            self.chain.restore(state)
            self.moves, self.accepted = int(state["moves"]), int(state["accepted"])
            self.window, self.frames_done = int(state["window"]), int(state["frames_done"])
            self.seconds = float(state["seconds"])
            self.rdf.restore(state)
            self.energy[:self.frames_done] = self.store.group["energy"][:self.frames_done]

    def go(self) -> AtomsRun:
        total = self.equilibrate + self.steps
        bar = progress_bar(total, self.progress, "Monte Carlo", "move")
        bar.update(self.moves)
        pending: list[tuple[float, np.ndarray]] = []
        last_save = time.perf_counter()
        while self.moves < total:
            t0 = time.perf_counter()
            burst = min(total - self.moves, ADAPT_EVERY)
            for _ in range(burst):
                self._move(pending)
            self.seconds += time.perf_counter() - t0
            bar.update(burst)
            if self.store is not None and time.perf_counter() - last_save > self.checkpoint_seconds:
                self._save(pending)
                pending, last_save = [], time.perf_counter()
        bar.close()
        if self.store is not None:
            self._save(pending)
            self.store.group["g_r"][:] = self.rdf.g()
            self.store.finish()
        measured = max(self.moves - self.equilibrate, 0)
        return AtomsRun(self.chain.temperature, len(self.chain.numbers), self.energy,
                        self.accepted / max(measured, 1), measured, self.seconds,
                        self.chain.step, self.chain.local.drift(), self.rdf,
                        None if self.store is None else self.store.path)

    def _move(self, pending: list) -> None:
        chain = self.chain
        accepted = chain.attempt()
        self.moves += 1
        if self.moves <= self.equilibrate:  # adapt the step towards the target acceptance
            self.window += accepted
            if self.moves % ADAPT_EVERY == 0:
                chain.step *= 1.1 if self.window / ADAPT_EVERY > self.target else 0.9
                self.window = 0
            return
        self.accepted += accepted
        if (self.moves - self.equilibrate) % self.every == 0:
            frame = (self.moves - self.equilibrate) // self.every - 1
            self.energy[frame] = chain.energy
            if self.rdf is not None:
                self.rdf.add(chain.xy)
            if self.store is not None:  # frames kept only until written
                pending.append((chain.energy, chain.xy.copy()))

    def _save(self, pending: list) -> None:
        """Write the frames measured since the last save, then commit the chain's state."""
        start = self.frames_done
        if pending:
            xyz = np.stack([np.column_stack([xy, self.chain.z]) for _, xy in pending])
            self.store.write_frames(start, {"energy": np.array([e for e, _ in pending]),
                                            "positions": xyz})
        self.frames_done = start + len(pending)
        self.store.save_state(self.chain.state() | {
            "moves": self.moves, "accepted": self.accepted, "window": self.window,
            "frames_done": self.frames_done, "seconds": self.seconds} | self.rdf.state())


def structure_digest(structure: Structure) -> str:
    """A SHA-256 of the positions, numbers and cell: which structure a run started from."""
    digest = hashlib.sha256()
    for array in (structure.positions, structure.numbers, structure.cell):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def trajectory_template(structure: Structure, frames: int, every: int,
                        rdf: InPlaneRDF) -> xr.Dataset:
    """The lazy, all-NaN store of a run: frames of positions and energies, and g(r)."""
    import dask.array as da

    n = len(structure.numbers)
    per_chunk = max(1, min(frames, (8 << 20) // (n * 3 * 8)))
    return xr.Dataset(
        {
            "positions": (("frame", "atom", "xyz"),
                          da.full((frames, n, 3), np.nan, chunks=(per_chunk, n, 3)),
                          {"units": "angstrom"}),
            "energy": ("frame", da.full(frames, np.nan, chunks=max(frames, 1)),
                       {"units": "eV", "long_name": "total energy (model's reference convention)"}),
            "numbers": ("atom", np.asarray(structure.numbers).astype(np.int32)),
            "cell": (("vector", "xyz"), structure.cell, {"units": "angstrom"}),
            "g_r": ("r", da.full(len(rdf.counts), np.nan, chunks=-1),
                    {"long_name": "in-plane radial distribution function"}),
        },
        coords={"frame": np.arange(frames),
                "move": ("frame", (np.arange(frames) + 1) * every,
                         {"long_name": "measured moves before the frame"}),
                "r": ("r", rdf.r, {"units": "angstrom"})},
    )
