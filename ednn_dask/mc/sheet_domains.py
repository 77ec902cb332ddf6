"""Domain-decomposed Monte Carlo of atom sheets too large for one process, on a Dask cluster.

The sheet's field is a dask array cut into regions (``regions`` per axis), and
its atoms are split by position into one list per region. A *phase* shifts the
region boundaries by a random whole number of focus blocks (``da.roll`` for
the field; the atom lists are split again by position, so atoms cross region
boundaries through dask), and every region then runs single-atom Metropolis
moves on its own worker, priced by its own
:class:`~ednn_dask.mc.atoms.AtomsChain` on the region's part of the field.

**Which atoms move.** A move changes the pixel box its old and new Gaussian
stamps cover. Within a phase a region moves only its *interior* atoms, those
whose box lies at least ``focus + 2 context`` pixels inside the region's edges,
and rejects (without pricing) a move whose box would leave that interior. Every
focus block whose tile sees such a box then has its whole tile inside the
region, so the region prices the move exactly as the whole sheet would, and no
block sees the moves of two regions: the regions' energy changes add up to the
sheet's. Atoms near the edges stay fixed for the phase and are interior in
later ones.

**Why it samples the Boltzmann distribution.** Fix a phase's shift, drawn
independently of the configuration. No atom enters or leaves an interior
during the phase, so each region draws its moving atom uniformly from a fixed
set and its displacement uniformly in a disc: the proposal is symmetric and
each region's kernel is a Metropolis kernel in detailed balance. The regions
act on disjoint atoms with additive energy changes, so the phase's kernel is
their product and keeps the distribution; a mixture over shifts keeps it too.

Random numbers come from ``(seed, phase, region)``, so a run does not depend
on which worker ran which region, and the client holds only the shift and a
few numbers per region: the field and the atoms stay on the workers.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ednn_dask.atoms.raster import grid_shape, rasterize
from ednn_dask.atoms.references import (
    reference_sum,
    require_atomistic,
    warn_if_extrapolating,
    warn_if_too_close,
)
from ednn_dask.atoms.structure import Structure, as_source, species_counts
from ednn_dask.compute import dask_client, progress_bar
from ednn_dask.defaults import CHANNEL_DIM
from ednn_dask.errors import ConfigError, StructureError
from ednn_dask.field import make_field
from ednn_dask.mc.atoms import AtomsChain, structure_digest, trajectory_template
from ednn_dask.mc.domains import assemble_regions, region_size
from ednn_dask.mc.rdf import InPlaneRDF
from ednn_dask.mc.runs import RunStore, restore_rng, rng_state
from ednn_dask.mc.stats import blocked_mean
from ednn_dask.model import TileModel, load_model
from ednn_dask.score import score

__all__ = ["SheetRun", "decomposed_atoms_chain"]


@dataclass
class SheetRun:
    """The phases of a decomposed atoms run: total energies (eV), moves, worker memory."""

    temperature: float
    n_atoms: int
    energy: np.ndarray  # after each measured phase, total (model's reference convention)
    accepted: int
    moves: int
    seconds: float
    drift: float  # running total minus a full rescoring of the final field (eV)
    structure: Structure  # the final configuration
    worker_memory: np.ndarray  # after every phase: the workers' memory in use, summed (bytes)
    rdf: InPlaneRDF
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.moves if self.moves else math.nan

    def summary(self) -> dict[str, Any]:
        mean, sem = blocked_mean(self.energy) if len(self.energy) else (math.nan, math.nan)
        return {"temperature_K": self.temperature, "atoms": self.n_atoms,
                "steps": int(self.moves), "phases": len(self.worker_memory),
                "energy_mean": mean, "energy_sem": sem,
                "energy_per_atom_mean": mean / self.n_atoms, "acceptance": self.acceptance,
                "moves_per_second": self.moves / self.seconds if self.seconds else math.nan,
                "energy_drift": self.drift,
                "worker_memory_MiB": (self.worker_memory / 2**20).round(1).tolist(),
                **({"closest_pair_A": self.rdf.closest} if math.isfinite(self.rdf.closest) else {}),
                **({"out": str(self.out)} if self.out else {}), **self.extra}


def decomposed_atoms_chain(
    atoms: Any,
    model: TileModel | str | os.PathLike,
    temperature: float,
    phases: int,
    *,
    regions: int | tuple[int, int] = 2,
    sweeps_per_phase: float = 1.0,
    thermalize: int = 0,
    step: float = 0.05,
    seed: int = 0,
    rdf_bins: int = 120,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    client: Any = None,
    progress: bool = False,
) -> SheetRun:
    """Single-atom Metropolis moves on a periodic sheet split into regions, one task each.

    Parameters
    ----------
    atoms : Structure, ase.Atoms or PorousSheet
        A sheet periodic in x and y, a whole number of the model's focus blocks.
    model : TileModel or path
        An atomistic model.
    temperature : float
        Kelvin.
    phases : int
        Measured phases; the total energy, the positions and g(r) are recorded after each.
    regions : int or (ry, rx)
        Regions per axis (y, x); each a whole number of focus blocks and more than
        twice ``focus + 2 context`` pixels.
    sweeps_per_phase : float
        Move attempts per phase, in sweeps: a region attempts this many moves per
        atom it holds, all on its interior atoms.
    thermalize : int
        Phases before measuring.
    step : float
        Largest displacement in Å (uniform in a disc); fixed.
    out : path, optional
        A Zarr store of the run (``positions``, ``numbers``, ``cell``, ``energy`` and
        ``g_r``; one frame per measured phase) with the chain's state after every
        phase, the field written by the workers: running the same call again
        continues the run bit for bit. Another run's store is refused unless
        ``overwrite``.
    client : distributed.Client, scheduler address or None
        None starts a LocalCluster of one single-threaded worker process per core.
    """
    model = load_model(model)
    require_atomistic(model)
    sheet = _periodic_sheet(atoms)
    if not (temperature > 0 and step > 0 and phases >= 1 and sweeps_per_phase > 0
            and thermalize >= 0):
        raise ConfigError(f"a run needs temperature > 0, step > 0, phases >= 1, "
                          f"sweeps_per_phase > 0 and thermalize >= 0; got {temperature}, {step}, "
                          f"{phases}, {sweeps_per_phase}, {thermalize}.")
    warn_if_extrapolating(model, temperature)
    run = _SheetChain(sheet, model, temperature, phases, _Geometry.of(sheet, model.spec, regions),
                      sweeps_per_phase, thermalize, step, seed, rdf_bins)
    if out is not None:
        run.attach(out, overwrite)
    with dask_client(client, processes=True, threads_per_worker=1) as client_:
        result = run.go(client_, progress)
    warn_if_too_close(model, result.rdf.closest, temperature)
    return result


class _SheetChain:
    """The phase loop of one decomposed run: state on the cluster, counters here."""

    def __init__(self, sheet: Structure, model: TileModel, temperature: float, phases: int,
                 geometry: _Geometry, sweeps: float, thermalize: int, step: float, seed: int,
                 rdf_bins: int):
        self.sheet, self.model, self.temperature = sheet, model, temperature
        self.phases, self.geometry, self.sweeps = phases, geometry, sweeps
        self.thermalize, self.step, self.seed = thermalize, step, seed
        self.rng = np.random.default_rng(seed)
        self.rdf = InPlaneRDF(geometry.cell, len(sheet.numbers), bins=rdf_bins)
        self.reference = reference_sum(species_counts(sheet), model.spec.reference_energies)
        self.energies = np.full(phases, np.nan)
        self.counts = {"phase": 0, "accepted": 0, "attempted": 0, "interior": 0,
                       "seconds": 0.0, "memory": []}
        self.store: RunStore | None = None
        self.state: dict[str, Any] | None = None

    def attach(self, out, overwrite: bool) -> None:
        """Write frames and the state after every phase to ``out``, continuing its state."""
        every = max(1, round(self.sweeps * len(self.sheet.numbers)))  # nominal moves per phase
        template = trajectory_template(self.sheet, self.phases, every, self.rdf)
        config = {"kind": "atoms-decomposed", "model_sha256": self.model.sha256,
                  "structure_sha256": structure_digest(self.sheet),
                  "temperature_K": self.temperature, "phases": self.phases,
                  "thermalize": self.thermalize, "regions": list(self.geometry.grid),
                  "sweeps_per_phase": self.sweeps, "step_A": self.step, "seed": self.seed,
                  "rdf_bins": len(self.rdf.counts)}
        self.store = RunStore.open(out, template.assign_attrs(temperature_K=self.temperature),
                                   config, overwrite=overwrite)
        self.state = self.store.load_state(lazy=("field",))

    def go(self, client, progress: bool) -> SheetRun:
        sheet_field, energy, xy = self._start(client)
        parts = client.scatter(self.geometry.split(_atoms_of(self.sheet, xy), (0, 0)))
        counts, total = self.counts, self.thermalize + self.phases
        bar = progress_bar(total, progress, "Monte Carlo", "phase")
        bar.update(counts["phase"])
        while counts["phase"] < total:
            phase, t0 = counts["phase"], time.perf_counter()
            shift = tuple(int(self.rng.integers(0, s // f)) * f
                          for s, f in zip(self.geometry.size, self.model.spec.focus, strict=True))
            sheet_field, parts, stats = _phase(client, sheet_field, parts, shift, self.geometry,
                                               self.model, self.temperature, self.step,
                                               self.sweeps, (self.seed, phase))
            energy += float(stats[:, 0].sum())
            for key, column in (("accepted", 1), ("attempted", 2), ("interior", 3)):
                counts[key] += int(stats[:, column].sum())
            counts["phase"] = phase + 1
            counts["memory"].append(sum(client.run(_memory_in_use).values()))
            counts["seconds"] += time.perf_counter() - t0
            self._record(client, sheet_field, parts, energy)
            bar.update(1)
        bar.close()
        full = self._full_energy(client, sheet_field)
        final = _merge_atoms(client.gather(parts))
        if self.store is not None:
            self.store.group["g_r"][:] = self.rdf.g()
            self.store.finish()
        return self._result(final, energy - full)

    def _start(self, client) -> tuple[Any, float, np.ndarray]:
        """The field on the cluster, the running EDNN energy and the positions to start from."""
        spec = self.model.spec
        if self.state is None:
            planes = _planes(rasterize(self.sheet, spec.spacing, chunks=self.geometry.size,
                                       **spec.raster))
            sheet_field = client.persist(planes)
            energy = self._full_energy(client, sheet_field)
            return sheet_field, energy, self.sheet.positions[:, :2]
        state = self.state
        self.rng = restore_rng(state["rng"])
        self.counts = {k: state[k] for k in self.counts}
        self.rdf.restore(state)
        measured = max(0, self.counts["phase"] - self.thermalize)
        self.energies[:measured] = self.store.group["energy"][:measured]
        return client.persist(state["field"]), float(state["energy"]), state["xy"]

    def _full_energy(self, client, sheet_field) -> float:
        """The EDNN energy of the whole field, scored on the cluster."""
        return float(score(_as_field(sheet_field, self.model.spec), self.model, client=client,
                           keep_contributions=False).energy)

    def _record(self, client, sheet_field, parts, energy: float) -> None:
        """Measure a phase (energy, positions, g(r)) and commit the state to the store."""
        frame = self.counts["phase"] - self.thermalize - 1
        if frame < 0 and self.store is None:
            return
        xy = _merge_atoms(client.gather(parts))["xy"]
        if frame >= 0:
            self.energies[frame] = energy + self.reference
            self.rdf.add(xy)
        if self.store is None:
            return
        if frame >= 0:
            positions = np.column_stack([xy, self.sheet.positions[:, 2]])
            self.store.write_frames(frame, {"energy": self.energies[frame:frame + 1],
                                            "positions": positions[None]})
        self.store.save_state({"field": sheet_field, "xy": xy, "energy": energy,
                               "rng": rng_state(self.rng), "frames_done": max(frame + 1, 0),
                               **self.counts} | self.rdf.state())

    def _result(self, final: dict[str, np.ndarray], drift: float) -> SheetRun:
        counts, geometry = self.counts, self.geometry
        positions = np.column_stack([final["xy"], self.sheet.positions[:, 2]])
        structure = Structure(positions, self.sheet.numbers, self.sheet.cell, self.sheet.pbc,
                              dict(self.sheet.info))
        n_atoms = len(self.sheet.numbers)
        return SheetRun(
            self.temperature, n_atoms, self.energies, counts["accepted"], counts["attempted"],
            counts["seconds"], drift, structure, np.array(counts["memory"], dtype=float),
            self.rdf, None if self.store is None else self.store.path,
            {"regions": geometry.grid, "region_pixels": geometry.size,
             "interior_margin": geometry.margin, "sweeps_per_phase": self.sweeps,
             "step_A": self.step,
             "interior_fraction": counts["interior"] / (n_atoms * max(counts["phase"], 1))})


@dataclass(frozen=True)
class _Geometry:
    """The sheet's pixels, the regions' size and fixed edge (pixels, (y, x)), and the cell."""

    shape: tuple[int, int]
    size: tuple[int, int]
    margin: tuple[int, int]
    spacing: tuple[float, float]
    cell: np.ndarray  # (x, y) Å

    @classmethod
    def of(cls, sheet: Structure, spec: Any, regions: int | tuple[int, int]) -> _Geometry:
        """The regions of ``sheet`` for a model of ``spec``, checked."""
        shape = grid_shape(sheet.cell, spec.spacing)
        grid = tuple(int(r) for r in np.broadcast_to(regions, (2,)))
        sizes = [region_size(n, r, (f,), (c,)) for n, r, f, c
                 in zip(shape, grid, spec.focus, spec.context, strict=True)]
        return cls(shape, tuple(s for s, _ in sizes), tuple(m for _, m in sizes),
                   tuple(spec.spacing), np.array([sheet.cell[0, 0], sheet.cell[1, 1]]))

    @property
    def grid(self) -> tuple[int, int]:
        return (self.shape[0] // self.size[0], self.shape[1] // self.size[1])

    def origins(self, shift: tuple[int, int]) -> list[tuple[int, int]]:
        """The first pixel (y, x) of every region, in row-major order, under ``shift``."""
        return [((iy * self.size[0] + shift[0]) % self.shape[0],
                 (ix * self.size[1] + shift[1]) % self.shape[1])
                for iy, ix in np.ndindex(*self.grid)]

    def corner(self, origin: tuple[int, int]) -> np.ndarray:
        """A region's first pixel as a position (x, y) in Å."""
        return np.array([origin[1] * self.spacing[1], origin[0] * self.spacing[0]])

    def split(self, atoms: dict[str, np.ndarray], shift: tuple[int, int]) -> list[dict]:
        """``atoms`` divided among the regions under ``shift``, by position."""
        local = (atoms["xy"] - self.corner(shift)) % self.cell
        extent = np.array([self.size[1] * self.spacing[1], self.size[0] * self.spacing[0]])
        ix, iy = np.minimum((local // extent).astype(np.int64).T,
                            np.array([self.grid[1] - 1, self.grid[0] - 1])[:, None])
        owner = iy * self.grid[1] + ix
        return [{k: v[owner == r] for k, v in atoms.items()}
                for r in range(self.grid[0] * self.grid[1])]


def _phase(client, sheet_field, parts, shift, geometry, model, temperature, step, sweeps, key):
    """One phase on the cluster: regions shifted, moved, and put back; returns the new
    field (persisted), the new atom lists (futures) and the regions' statistics."""
    import dask.array as da
    from dask import delayed

    regions = len(parts)
    splits = [delayed(geometry.split, nout=regions, pure=True)(part, shift) for part in parts]
    rolled = da.roll(sheet_field, [-s for s in shift], axis=(1, 2))
    blocks = rolled.rechunk((sheet_field.shape[0], *geometry.size), method="tasks").to_delayed()
    tasks = [delayed(_sweep_region, pure=True)(
        block, delayed(_merge_atoms, pure=True)([s[r] for s in splits]), origin, geometry, model,
        temperature, step, sweeps, (*key, r))
        for r, (block, origin) in enumerate(zip(blocks.ravel(), geometry.origins(shift),
                                                strict=True))]
    updated = client.compute(tasks)
    new = assemble_regions(updated, geometry.grid, (sheet_field.shape[0], *geometry.size))
    back = da.roll(new, list(shift), axis=(1, 2))
    sheet_field = client.persist(back.rechunk(sheet_field.chunksize, method="tasks"))
    parts = client.map(operator.itemgetter(1), updated, pure=False)
    stats = np.array(client.gather(client.map(operator.itemgetter(2), updated, pure=False)))
    return sheet_field, parts, stats


def _sweep_region(block: np.ndarray, atoms: dict, origin: tuple[int, int], geometry: _Geometry,
                  model: TileModel, temperature: float, step: float, sweeps: float,
                  key: tuple) -> tuple[np.ndarray, dict, np.ndarray]:
    """Metropolis moves of one region's interior atoms; every other atom stays put."""
    corner = geometry.corner(origin)
    local = (atoms["xy"] - corner) % geometry.cell
    size = geometry.size
    cell = np.diag([size[1] * geometry.spacing[1], size[0] * geometry.spacing[0], 1.0])
    chain = AtomsChain.on_field(block, np.column_stack([local, atoms["z"]]), atoms["numbers"],
                                cell, model, temperature, step=step,
                                rng=np.random.default_rng(list(key)))
    margin = geometry.margin

    def inside(lo, hi) -> bool:
        return all(a >= m and b <= n - m for a, b, m, n in zip(lo, hi, margin, size, strict=True))

    still = np.zeros(2)
    interior = np.array([k for k in range(len(local)) if inside(*chain.change_box(k, still))],
                        dtype=np.int64)
    start, accepted, attempts = chain.local.energy, 0, 0
    if len(interior):
        attempts = int(round(sweeps * len(local)))
        for _ in range(attempts):
            atom = int(interior[chain.rng.integers(len(interior))])
            displacement = chain.displacement()
            if inside(*chain.change_box(atom, displacement)):
                accepted += chain.metropolis(atom, displacement)
    moved = dict(atoms, xy=(chain.xy + corner) % geometry.cell)
    stats = np.array([chain.local.energy - start, accepted, attempts, len(interior)])
    return chain.local.field, moved, stats


def _merge_atoms(parts: list[dict]) -> dict[str, np.ndarray]:
    """Atom lists joined, in the order of their ids."""
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(joined["id"], kind="stable")
    return {k: v[order] for k, v in joined.items()}


def _atoms_of(sheet: Structure, xy: np.ndarray) -> dict[str, np.ndarray]:
    """The sheet's atoms at positions ``xy``, as the regions' lists hold them."""
    return {"id": np.arange(len(sheet.numbers)), "xy": np.array(xy, dtype=np.float64),
            "z": sheet.positions[:, 2].copy(), "numbers": np.asarray(sheet.numbers)}


def _periodic_sheet(atoms: Any) -> Structure:
    """A periodic Structure of ``atoms`` (a PorousSheet is built whole), wrapped into its cell."""
    source = as_source(atoms)
    if hasattr(source, "structure") and not isinstance(source, Structure):
        source = source.structure()
    if not isinstance(source, Structure) or not all(source.pbc[:2]):
        raise StructureError("a decomposed atoms run needs a Structure, ase.Atoms or "
                             "PorousSheet periodic in x and y.")
    return source.wrapped()


def _planes(field) -> Any:
    """The rasterized field's data as ``(C, y, x)``."""
    data = field.data
    return data if data.ndim == 3 else data[None]


def _as_field(planes, spec):
    """``(C, y, x)`` planes as the field the scorer reads: ``(y, x)`` without species."""
    species = spec.raster["species"]
    field = make_field(planes if species else planes[0], spacing=spec.spacing, dims=("y", "x"))
    return field.assign_coords({CHANNEL_DIM: list(species)}) if species else field


def _memory_in_use() -> int:
    """This process's resident memory after a garbage collection and glibc's ``malloc_trim``,
    so that free memory the allocator keeps for reuse does not count."""
    import ctypes
    import gc

    import psutil

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss
