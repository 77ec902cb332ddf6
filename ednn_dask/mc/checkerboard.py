"""Batched atom moves: one move per cell of a shifted checkerboard, priced in one onnxruntime call.

A *round* on an :class:`~ednn_dask.mc.atoms.AtomsChain` cuts the periodic
field into a grid of cells, ``side`` pixels per axis (whole focus blocks, the
grid dividing the field, at least two cells per axis), shifted by a random
whole number of focus blocks. In every cell one atom of its *interior* is
drawn uniformly and displaced uniformly in a disc of radius ``chain.step``;
the moves of all cells are priced by one
:meth:`~ednn_dask.mc.local.LocalEnergy.propose` call (every change box is
padded to one shape, so every window has one shape and onnxruntime runs once)
and each is accepted or rejected by its own Metropolis test.

**Why the moves do not interact.** A focus block contributes to the energy
through its tile only (the block and ``context`` pixels around it). The cell
edges lie on block boundaries, so every block belongs to exactly one cell. The
interior of a cell is chosen so that every block whose tile sees a move of one
of its atoms (old and new Gaussian stamp, ``cutoff`` around both positions,
the box padded to whole blocks) belongs to that cell: per axis, an atom at
``u`` pixels from the cell's lower edge and ``D - u`` from its upper edge is
interior when::

    u     >= context + cutoff/spacing + step/spacing + 1/2          (margin_lo)
    D - u >  (B - 1) focus - context - cutoff/spacing - 1/2         (margin_hi)

with ``B`` the largest number of blocks per axis one move can affect,
``ceil((focus - 1 + n + 2 context) / focus)`` for a stamp box of at most
``n = ceil(2 (cutoff + step) / spacing) + 1`` pixels. Two moves in different
cells therefore rescore disjoint sets of blocks, and neither's changed pixels
lie under the other's tiles: each ΔE is the same whether the other moves are
committed or not, and committing the accepted ones one after the other is
committing them together. Each round checks that the affected blocks are
disjoint and refuses to go on otherwise.

**Why it samples the Boltzmann distribution.** Fix the shift; it is drawn
independently of the configuration. Atoms outside every interior do not
move. In cell ``c`` the proposal picks one of the ``n_c`` interior atoms
(probability ``1 / n_c``) and a displacement uniform in a disc; a move that
would leave the interior is rejected, so the atom stays interior, no atom
enters or leaves any interior during the round, and ``n_c`` is the same
before and after: the proposal is symmetric. The cells' energy changes add
(see above), so ``π(x') / π(x) = Π_c exp(-β ΔE_c)`` over the moved cells and
the round's kernel is a product of Metropolis kernels, each in detailed
balance: ``π(x) K(x → x') = π(x') K(x' → x)``. A mixture over shifts of
kernels that each keep ``π`` keeps ``π``. The interior is at least one focus
block wide per axis, so every position is interior for some shift and every
atom can move (the chain stays irreducible, like
:meth:`~ednn_dask.mc.atoms.AtomsChain.attempt`, whose kernel differs only in
how atoms are drawn). A *sweep* is rounds until as many moves were attempted
as there are atoms; the step size is fixed (no adaptation here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ednn_dask.atoms.raster import stamp
from ednn_dask.errors import ConfigError
from ednn_dask.mc.atoms import BOLTZMANN_EV, AtomsChain
from ednn_dask.mc.local import Change, Proposal

__all__ = ["Checkerboard", "CheckerboardRun", "Geometry", "Round", "moves_per_second"]


@dataclass(frozen=True)
class Geometry:
    """Per axis (y, x) in pixels: the cells, their interiors and the padded change box."""

    side: tuple[int, int]  # cell side D
    cells: tuple[int, int]  # cells per axis (field / side)
    margin_lo: tuple[int, int]  # interior: u >= margin_lo from the cell's lower edge
    margin_hi: tuple[int, int]  # ... and side - u >= margin_hi from its upper edge
    blocks: tuple[int, int]  # B: focus blocks one move can affect
    box: tuple[int, int]  # the padded change box, B focus - 2 context

    @property
    def interior(self) -> tuple[int, int]:
        """Width of a cell's interior (at least one focus block)."""
        return tuple(d - lo - hi for d, lo, hi in zip(self.side, self.margin_lo, self.margin_hi,
                                                      strict=True))


@dataclass
class Round:
    """One round's moves: chosen atoms, displacements (Å), their prices and the outcome."""

    shift: tuple[int, int]  # pixels, whole focus blocks
    interior: np.ndarray  # bool (atoms,): in some cell's interior
    atoms: np.ndarray  # one per non-empty cell
    displacements: np.ndarray  # (len(atoms), 2) Å, (x, y)
    inside: np.ndarray  # bool: the new position is still interior (else rejected unpriced)
    proposals: list[Proposal | None]  # None where not inside
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def deltas(self) -> np.ndarray:
        """ΔE (eV) of each move priced alone; NaN where the move left the interior."""
        return np.array([math.nan if p is None else p.delta for p in self.proposals])


@dataclass
class CheckerboardRun:
    """Attempted and accepted moves of some rounds and the seconds they took."""

    moves: int
    accepted: int
    rounds: int
    seconds: float

    @property
    def acceptance(self) -> float:
        return self.accepted / self.moves if self.moves else math.nan

    @property
    def moves_per_second(self) -> float:
        return self.moves / self.seconds if self.seconds else math.nan


class Checkerboard:
    """Batched single-atom moves of an :class:`~ednn_dask.mc.atoms.AtomsChain`.

    Parameters
    ----------
    chain : AtomsChain
        Moved in place; its ``rng``, ``step`` and ``temperature`` are used.
    side : int or (int, int), optional
        Cell side in pixels per axis (y, x): a multiple of the focus dividing the field
        into at least two cells, wide enough for an interior of one focus block. Default
        the smallest such side per axis.

    Notes
    -----
    Cell sizes depend on ``chain.step``; changing the step later is fine while the
    interiors still fit (checked every round).
    """

    def __init__(self, chain: AtomsChain, side: int | Sequence[int] | None = None):
        self.chain = chain
        tiling = chain.local.tiling
        self.focus, self.context = tuple(tiling.focus), tuple(tiling.context)
        self.pixels = tuple(chain.local.shape)
        if side is not None:
            side = (side, side) if np.ndim(side) == 0 else tuple(side)
            if len(side) != 2:
                raise ConfigError(f"side is one int or two (y, x); got {side!r}.")
        self._side = side
        self.blocks = tuple(n // f for n, f in zip(self.pixels, self.focus, strict=True))
        self._geometry: dict[float, Geometry] = {}
        self._geometry[float(chain.step)] = self._build(float(chain.step))  # refused here
        self.total = CheckerboardRun(0, 0, 0, 0.0)

    @property
    def geometry(self) -> Geometry:
        """The cells for the chain's current step (cached per step)."""
        step = float(self.chain.step)
        if step not in self._geometry:
            self._geometry[step] = self._build(step)
        return self._geometry[step]

    def _build(self, step: float) -> Geometry:
        spacing = self.chain.spec.spacing
        cutoff = self.chain.spec.raster["cutoff"]
        lo, hi, blocks, box, sides = [], [], [], [], []
        for axis in range(2):
            f, c, n_pixels = self.focus[axis], self.context[axis], self.pixels[axis]
            r, s = cutoff / spacing[axis], step / spacing[axis]
            box_pixels = math.ceil(2 * (r + s) + 1e-9) + 1  # the stamp box of one move
            b = math.ceil((f - 1 + box_pixels + 2 * c) / f)
            m_lo = math.ceil(c + r + s + 0.5 + 1e-9)
            m_hi = math.floor((b - 1) * f - c - r - 0.5) + 1
            least = m_lo + m_hi + f  # an interior of one focus block
            if self._side is None:
                fits = [d for d in range(f, n_pixels // 2 + 1, f)
                        if n_pixels % d == 0 and d >= least]
                side = fits[0] if fits else None
            else:
                side = int(self._side[axis])
            if side is None or side < least or side % f or n_pixels % side \
                    or n_pixels // side < 2:
                name = "yx"[axis]
                raise ConfigError(
                    f"the sheet cannot be batched along {name}: {n_pixels} pixels do not split "
                    f"into at least two cells of a whole number of focus blocks ({f} px) of at "
                    f"least {least} px each (interior margins {m_lo} + {m_hi} px for context "
                    f"{c}, cutoff {cutoff} Å and step {step:.3g} Å, plus one focus block)"
                    + ("" if self._side is None else f"; got side {side}")
                    + ". Use a larger sheet (at least "
                    f"{2 * f * math.ceil(least / f)} px per axis), or AtomsChain.attempt for "
                    "single moves (the 60-atom training cell cannot be batched)."
                )
            lo.append(m_lo)
            hi.append(m_hi)
            blocks.append(b)
            box.append(b * f - 2 * c)
            sides.append(side)
        cells = tuple(n // d for n, d in zip(self.pixels, sides, strict=True))
        return Geometry(tuple(sides), cells, tuple(lo), tuple(hi), tuple(blocks), tuple(box))

    def _local(self, shift: Sequence[int]) -> tuple[np.ndarray, np.ndarray, Geometry]:
        """Each atom's cell index per axis and pixel position within it, (atoms, 2) (y, x)."""
        g = self.geometry
        spacing = np.array(self.chain.spec.spacing)
        pixels = np.array(self.pixels)
        u = (self.chain.xy[:, ::-1] / spacing - np.array(shift)) % pixels
        cell = np.floor(u / np.array(g.side)).astype(np.int64)
        cell = np.minimum(cell, np.array(g.cells) - 1)  # u == pixels after rounding
        return cell, u - cell * np.array(g.side), g

    @staticmethod
    def _is_interior(local: np.ndarray, g: Geometry) -> np.ndarray:
        return np.all((local >= np.array(g.margin_lo))
                      & (np.array(g.side) - local >= np.array(g.margin_hi)), axis=-1)

    def interior(self, shift: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """For the grid shifted by ``shift`` pixels: which atoms are interior, and each
        atom's cell (a flat index, row-major over the cells)."""
        cell, local, g = self._local(shift)
        return self._is_interior(local, g), cell[:, 0] * g.cells[1] + cell[:, 1]

    def propose_round(self, shift: Sequence[int] | None = None) -> Round:
        """Draw the shift, one interior atom per cell and its move; price all moves at once.

        Nothing is committed. ``shift`` (pixels per axis, whole focus blocks) is drawn
        from ``chain.rng`` unless given.
        """
        chain, rng = self.chain, self.chain.rng
        g = self.geometry
        if shift is None:
            shift = tuple(int(rng.integers(0, d // f)) * f
                          for d, f in zip(g.side, self.focus, strict=True))
        shift = tuple(int(s) for s in shift)
        if any(s % f for s, f in zip(shift, self.focus, strict=True)):
            raise ConfigError(f"a shift is whole focus blocks {self.focus}; got {shift}.")
        cell, local, g = self._local(shift)
        interior = self._is_interior(local, g)
        candidates = np.flatnonzero(interior)
        ids = cell[candidates, 0] * g.cells[1] + cell[candidates, 1]
        order = np.argsort(ids, kind="stable")
        candidates, ids = candidates[order], ids[order]
        _, starts, counts = np.unique(ids, return_index=True, return_counts=True)
        atoms = candidates[starts + rng.integers(0, counts)]
        radius = chain.step * np.sqrt(rng.random(len(atoms)))
        phi = rng.uniform(0, 2 * math.pi, len(atoms))
        displacements = np.column_stack([radius * np.cos(phi), radius * np.sin(phi)])
        moved = local[atoms] + displacements[:, ::-1] / np.array(chain.spec.spacing)
        inside = self._is_interior(moved, g)
        changes = [self._change(int(a), d) for a, d, ok in zip(atoms, displacements, inside,
                                                               strict=True) if ok]
        priced = iter(chain.local.propose(changes))
        proposals = [next(priced) if ok else None for ok in inside]
        self._check_disjoint([p for p in proposals if p is not None])
        return Round(shift, interior, atoms, displacements, inside, proposals)

    def _change(self, atom: int, displacement: np.ndarray) -> Change:
        """The move as a change on a box padded to whole blocks (one shape for every move).

        The box starts ``context`` pixels after a block boundary and spans ``B focus -
        2 context`` pixels, so its affected blocks are exactly ``B`` per axis.
        """
        chain = self.chain
        spacing, raster = chain.spec.spacing, chain.spec.raster
        cutoff, gamma = raster["cutoff"], raster["gamma"]
        g = self.geometry
        old = chain.xy[atom]
        new = old + displacement
        lo = []
        for axis, a in ((0, 1), (1, 0)):  # (y, x) pixel axes; xy is (x, y)
            s, f, c = spacing[axis], self.focus[axis], self.context[axis]
            first = math.floor((min(old[a], new[a]) - cutoff) / s - 0.5)  # as propose_move
            last = math.floor((max(old[a], new[a]) + cutoff) / s - 0.5) + 1
            start = math.floor((first - c) / f) * f + c
            if last > start + g.box[axis]:
                raise RuntimeError(f"a move's stamp box [{first}, {last}) overruns its padded "
                                   f"box at {start} + {g.box[axis]} (axis {axis}).")
            lo.append(start)
        delta = np.zeros((chain.local.field.shape[0], *g.box))
        corner = np.array([lo[1] * spacing[1], lo[0] * spacing[0]])
        weight = float(chain.numbers[atom])
        stamp(delta, np.stack([new, old]) - corner, np.array([weight, -weight]),
              np.repeat(chain.channel[atom], 2), spacing, gamma, cutoff)
        rows = np.arange(lo[0], lo[0] + g.box[0]) % self.pixels[0]
        cols = np.arange(lo[1], lo[1] + g.box[1]) % self.pixels[1]
        current = chain.local.field[:, rows[:, None], cols[None, :]]
        return Change((lo[0], lo[1]), (current + delta).astype(np.float32))

    def _check_disjoint(self, proposals: list[Proposal]) -> None:
        """The moves rescore disjoint blocks, so they commit independently."""
        counts = np.zeros(self.blocks, np.int32)
        for p in proposals:
            np.add.at(counts, np.ix_(*p.blocks), 1)
        if (counts > 1).any():
            raise RuntimeError("two moves of one round affect the same focus block; their "
                               "cells' interiors are too close (a bug in the margins).")

    def commit(self, batch: Round, accepted: np.ndarray) -> None:
        """Commit the moves of ``batch`` where ``accepted`` (one after the other: they
        do not interact)."""
        accepted = np.asarray(accepted, bool) & batch.inside
        for atom, d, p, ok in zip(batch.atoms, batch.displacements, batch.proposals, accepted,
                                  strict=True):
            if ok:
                self.chain.accept_move(int(atom), d, p)
        batch.accepted = accepted

    def round(self, shift: Sequence[int] | None = None) -> Round:
        """One round: propose, a Metropolis test per move, commit the accepted ones."""
        t0 = time.perf_counter()
        batch = self.propose_round(shift)
        beta = 1.0 / (BOLTZMANN_EV * self.chain.temperature)
        delta = np.nan_to_num(batch.deltas, nan=np.inf)  # moves out of the interior: rejected
        u = self.chain.rng.random(len(batch.atoms))
        with np.errstate(over="ignore"):
            accept = u < np.exp(-np.maximum(delta, 0.0) * beta)
        self.commit(batch, accept)
        self.total.moves += len(batch.atoms)
        self.total.accepted += int(batch.accepted.sum())
        self.total.rounds += 1
        self.total.seconds += time.perf_counter() - t0
        return batch

    def sweep(self, sweeps: float = 1.0) -> CheckerboardRun:
        """Rounds until ``sweeps`` × (number of atoms) moves were attempted."""
        target = math.ceil(sweeps * len(self.chain.numbers))
        before = CheckerboardRun(self.total.moves, self.total.accepted, self.total.rounds,
                                 self.total.seconds)
        while self.total.moves - before.moves < target:
            self.round()
        return CheckerboardRun(self.total.moves - before.moves,
                               self.total.accepted - before.accepted,
                               self.total.rounds - before.rounds,
                               self.total.seconds - before.seconds)

    @property
    def moves_per_second(self) -> float:
        """Attempted moves per second over every round so far."""
        return self.total.moves_per_second


def moves_per_second(board: Checkerboard, moves: int, *, warmup: int = 0) -> float:
    """Attempted moves per second of batched rounds, after ``warmup`` moves (not timed)."""
    if warmup:
        board.sweep(warmup / len(board.chain.numbers))
    run = board.sweep(moves / len(board.chain.numbers))
    return run.moves_per_second
