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

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ednn_dask.atoms.raster import cell_field, channel_table, grid_shape, stamp
from ednn_dask.atoms.references import reference_sum, require_atomistic
from ednn_dask.atoms.structure import Structure, as_source, species_counts
from ednn_dask.errors import ConfigError, StructureError
from ednn_dask.mc.local import Change, LocalEnergy, Proposal
from ednn_dask.mc.stats import blocked_mean
from ednn_dask.model import TileModel, load_model

BOLTZMANN_EV = 8.617333262e-5
"""Boltzmann's constant in eV/K (CODATA 2018)."""

ADAPT_EVERY = 50
"""Moves per step-size adjustment during equilibration."""


@dataclass
class AtomsRun:
    """Energies (eV, total) of the measured steps of an :class:`AtomsChain` run."""

    temperature: float
    energy: np.ndarray
    acceptance: float
    moves: int
    seconds: float
    step: float
    drift: float

    def summary(self) -> dict[str, Any]:
        mean, sem = blocked_mean(self.energy)
        return {"temperature_K": self.temperature, "steps": int(self.moves),
                "energy_mean": mean, "energy_sem": sem, "acceptance": self.acceptance,
                "moves_per_second": self.moves / self.seconds if self.seconds else math.nan,
                "step_A": self.step, "energy_drift": self.drift}


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
    """

    def __init__(self, atoms: Any, model: TileModel | str | os.PathLike, temperature: float,
                 *, step: float = 0.05, seed: int = 0, threads: int = 1):
        model = load_model(model)
        require_atomistic(model)
        structure = as_source(atoms)
        if not isinstance(structure, Structure) or not all(structure.pbc[:2]):
            raise StructureError("atoms Monte Carlo needs a Structure (or ase.Atoms) periodic "
                                 "in x and y.")
        if not (temperature > 0 and step > 0):
            raise ConfigError(f"temperature (K) and step (Å) must be > 0; got {temperature} "
                              f"and {step}.")
        spec = model.spec
        self.model, self.spec, self.temperature, self.step = model, spec, temperature, step
        self.rng = np.random.default_rng(seed)
        self.cell = np.array([structure.cell[0, 0], structure.cell[1, 1]])
        self.xy = structure.wrapped().positions[:, :2].copy()
        self.z = structure.positions[:, 2].copy()
        self.numbers = structure.numbers.copy()
        self.pbc = structure.pbc
        self.shape = grid_shape(structure.cell, spec.spacing)
        lut = channel_table(spec.raster["species"])
        self.channel = np.zeros(len(self.numbers), np.int64) if lut is None else lut[self.numbers]
        field = cell_field(structure, spec.spacing, **spec.raster)
        self.local = LocalEnergy(field, model, boundary="periodic", threads=threads)
        self.reference = reference_sum(species_counts(structure), spec.reference_energies)

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

    def propose_move(self, atom: int, displacement: np.ndarray) -> Proposal:
        """Price moving ``atom`` by ``displacement`` (Å, in-plane) without committing it."""
        sy, sx = self.spec.spacing
        raster = self.spec.raster
        cutoff, gamma = raster["cutoff"], raster["gamma"]
        old = self.xy[atom]
        new = old + displacement
        lo = [math.floor((min(old[a], new[a]) - cutoff) / s - 0.5) for a, s in ((1, sy), (0, sx))]
        hi = [math.floor((max(old[a], new[a]) + cutoff) / s - 0.5) + 1
              for a, s in ((1, sy), (0, sx))]
        delta = np.zeros((self.local.field.shape[0], hi[0] - lo[0], hi[1] - lo[1]))
        corner = np.array([lo[1] * sx, lo[0] * sy])
        weight = float(self.numbers[atom])
        for xy, w in ((new, weight), (old, -weight)):
            stamp(delta, (xy - corner)[None], np.array([w]), self.channel[atom:atom + 1],
                  (sy, sx), gamma, cutoff)
        rows = np.arange(lo[0], hi[0]) % self.shape[0]
        cols = np.arange(lo[1], hi[1]) % self.shape[1]
        current = self.local.field[:, rows[:, None], cols[None, :]]
        values = (current + delta).astype(np.float32)
        return self.local.propose([Change((lo[0], lo[1]), values)])[0]

    def accept_move(self, atom: int, displacement: np.ndarray, proposal: Proposal) -> None:
        self.local.accept(proposal)
        self.xy[atom] = (self.xy[atom] + displacement) % self.cell

    def attempt(self) -> bool:
        """One Metropolis move of a random atom; True if accepted."""
        atom = int(self.rng.integers(len(self.numbers)))
        r, phi = self.step * math.sqrt(self.rng.random()), self.rng.uniform(0, 2 * math.pi)
        displacement = np.array([r * math.cos(phi), r * math.sin(phi)])
        proposal = self.propose_move(atom, displacement)
        beta = 1.0 / (BOLTZMANN_EV * self.temperature)
        if self.rng.random() < math.exp(-max(proposal.delta, 0.0) * beta):
            self.accept_move(atom, displacement, proposal)
            return True
        return False

    def run(self, steps: int, *, equilibrate: int = 0, target_acceptance: float = 0.5,
            every: int = 1) -> AtomsRun:
        """``equilibrate`` moves (step size adapted), then ``steps`` measured moves."""
        window = 0
        for k in range(equilibrate):
            window += self.attempt()
            if k % ADAPT_EVERY == ADAPT_EVERY - 1:  # step towards the target acceptance
                self.step *= 1.1 if window / ADAPT_EVERY > target_acceptance else 0.9
                window = 0
        energies, accepted = [], 0
        t0 = time.perf_counter()
        for k in range(steps):
            accepted += self.attempt()
            if k % every == 0:
                energies.append(self.energy)
        seconds = time.perf_counter() - t0
        return AtomsRun(self.temperature, np.array(energies), accepted / max(steps, 1), steps,
                        seconds, self.step, self.local.drift())
