"""Local energy differences: a change in a small box rescores only the focus blocks that see it.

A focus block ``b`` (per axis) has the tile ``[b f - c, (b + 1) f + c)``; it sees
a change in the pixel box ``[lo, hi)`` exactly when its tile overlaps the box,
that is for ``floor((lo - c) / f) <= b < ceil((hi + c) / f)``. Those blocks are
rescored on the smallest window that holds their tiles, by the same
onnxruntime code as scoring (:func:`~ednn_dask.inference.block_contributions`),
so a move costs the same on a 60-atom cell and on a 100 nm sheet.

:class:`LocalEnergy` keeps the field, the contribution of every focus block and
their float64 total; :meth:`LocalEnergy.propose` prices changes (one
onnxruntime call for a whole batch of windows of one shape) and
:meth:`LocalEnergy.accept` commits the ones a Monte Carlo step keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ednn_dask.errors import FieldError, GeometryError
from ednn_dask.inference import block_contributions, contributions, with_channels
from ednn_dask.model import TileModel


@dataclass(frozen=True)
class Change:
    """New values for the pixel box starting at ``lo``: ``values`` is ``(C, *box)`` or ``box``."""

    lo: tuple[int, ...]
    values: np.ndarray


@dataclass
class Proposal:
    """A priced change: the blocks it affects, their new contributions and the energy change."""

    change: Change
    blocks: tuple[np.ndarray, ...]  # block indices per axis (an open mesh)
    contributions: np.ndarray  # float32, the affected blocks' new contributions
    delta: float  # float64: new minus old, summed over the affected blocks


class LocalEnergy:
    """The EDNN energy of a field under local changes.

    Parameters
    ----------
    field : ndarray
        ``(*spatial)`` or ``(C, *spatial)``, each axis a multiple of the focus.
    model : TileModel
    boundary : "periodic", float or None
        The outside of the field; default the model's.
    threads : int
        onnxruntime intra-op threads.
    """

    def __init__(self, field: np.ndarray, model: TileModel, *, boundary=None, threads: int = 1):
        spec = model.spec
        field = with_channels(np.asarray(field, dtype=np.float32), model)
        self.model, self.threads = model, threads
        self.tiling = spec.tiling.with_boundary(boundary)
        self.tiling.check(field.shape[1:])
        self.field = field.copy()
        self.contributions = contributions(self.field, model, boundary=self.tiling.boundary,
                                           threads=threads)
        self.energy = float(self.contributions.sum(dtype=np.float64))
        self._sites = None  # the last propose_sites, for accept_sites

    @property
    def shape(self) -> tuple[int, ...]:
        return self.field.shape[1:]

    def affected_blocks(self, lo: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Block indices per axis whose tiles overlap the box ``[lo, lo + size)``."""
        axes = []
        for low, n, f, c, pixels in zip(lo, size, self.tiling.focus, self.tiling.context,
                                        self.shape, strict=True):
            grid = pixels // f
            first, stop = math.floor((low - c) / f), math.ceil((low + n + c) / f)
            if self.tiling.boundary == "periodic":
                blocks = np.arange(first, first + min(stop - first, grid)) % grid
            else:
                blocks = np.arange(max(first, 0), min(stop, grid))
            axes.append(blocks)
        return tuple(axes)

    def window(self, blocks: tuple[np.ndarray, ...], change: Change | None = None) -> np.ndarray:
        """The field ``(C, *window)`` under the tiles of the given consecutive blocks.

        With ``change``, the window shows the field as the change would leave it.
        """
        channels = np.arange(self.field.shape[0])
        index, hits, targets = [channels], [channels], [channels]
        outside = np.zeros((1,) * (len(blocks) + 1), bool)
        values = None if change is None else self._values(change)
        for axis, (b, f, c, n) in enumerate(zip(blocks, self.tiling.focus, self.tiling.context,
                                                self.shape, strict=True)):
            pixels = np.arange(int(b[0]) * f - c, int(b[0]) * f + len(b) * f + c)
            shape = [1] * (len(blocks) + 1)
            shape[axis + 1] = len(pixels)
            if self.tiling.boundary == "periodic":
                index.append(pixels % n)
            else:
                index.append(np.clip(pixels, 0, n - 1))
                outside = outside | ((pixels < 0) | (pixels >= n)).reshape(shape)
            if values is not None:
                offset = pixels - change.lo[axis]
                if self.tiling.boundary == "periodic":
                    offset %= n
                inside = (offset >= 0) & (offset < values.shape[axis + 1])
                hits.append(np.nonzero(inside)[0])
                targets.append(offset[inside])
        window = self.field[np.ix_(*index)]
        if values is not None and all(len(h) for h in hits):
            window[np.ix_(*hits)] = values[np.ix_(*targets)]
        if outside.any():
            window = np.where(outside, np.float32(self.tiling.boundary), window)
        return window

    def _values(self, change: Change) -> np.ndarray:
        """The change's values as float32 ``(C, *box)``, checked to fit the field."""
        values = np.asarray(change.values, dtype=np.float32)
        if values.ndim == len(self.shape):
            values = values[np.newaxis]
        if values.shape[0] != self.field.shape[0] or len(change.lo) != len(self.shape):
            raise GeometryError(
                f"a change of shape {values.shape} at {tuple(change.lo)} does not fit a field "
                f"of {self.field.shape[0]} channel(s) and shape {self.shape}."
            )
        for low, box, size in zip(change.lo, values.shape[1:], self.shape, strict=True):
            if box > size or (self.tiling.boundary != "periodic"
                              and (low < 0 or low + box > size)):
                raise GeometryError(
                    f"a change of size {values.shape[1:]} at {tuple(change.lo)} does not fit "
                    f"the field {self.shape}; it must lie inside (periodic fields wrap)."
                )
        return values

    def propose(self, changes: Sequence[Change]) -> list[Proposal]:
        """Price each change alone, against the current field (which is not modified).

        The windows of one shape go through onnxruntime in one call.
        """
        priced: list[Proposal | None] = [None] * len(changes)
        groups: dict[tuple[int, ...], list[tuple[int, tuple, np.ndarray]]] = {}
        for k, change in enumerate(changes):
            blocks = self.affected_blocks(change.lo, self._values(change).shape[1:])
            trial = self.window(blocks, change)
            groups.setdefault(trial.shape, []).append((k, blocks, trial))
        for members in groups.values():
            new = self._score([trial for _, _, trial in members])
            for (k, blocks, _), values in zip(members, new, strict=True):
                old = self.contributions[np.ix_(*blocks)]
                delta = float(values.sum(dtype=np.float64) - old.sum(dtype=np.float64))
                priced[k] = Proposal(changes[k], blocks, values, delta)
        return priced  # type: ignore[return-value]

    def _score(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._score_batch(np.stack(windows)))

    def accept(self, proposal: Proposal) -> None:
        """Commit a priced change: the field, its blocks' contributions and the total."""
        change = proposal.change
        values = self._values(change)
        index = [np.arange(low, low + box) % size
                 for low, box, size in zip(change.lo, values.shape[1:], self.shape, strict=True)]
        self.field[np.ix_(np.arange(self.field.shape[0]), *index)] = values
        self.contributions[np.ix_(*proposal.blocks)] = proposal.contributions
        self.energy += proposal.delta

    def site_geometry(self, offset: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """For single-pixel changes at pixels ``offset`` (mod the focus): per axis, the
        first affected block relative to the pixel's own, the window's first pixel relative
        to the pixel, and the number of affected blocks."""
        first, start, count = [], [], []
        for o, f, c in zip(offset, self.tiling.focus, self.tiling.context, strict=True):
            lo_block = math.floor((o - c) / f)  # relative to block 0, pixel o inside it
            stop = math.ceil((o + 1 + c) / f)
            first.append(lo_block)
            start.append(lo_block * f - c - o)
            count.append(stop - lo_block)
        return np.array(first), np.array(start), tuple(count)

    def propose_sites(self, sites: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Energy changes of setting each pixel ``sites[k]`` to ``values[k]`` alone (periodic).

        ``sites`` is ``(K, ndim)``, all with the same position within their focus block;
        ``values`` ``(K, C)``. One onnxruntime call; returns float64 ``(K,)`` and keeps the
        new contributions for :meth:`accept_sites`.
        """
        if self.tiling.boundary != "periodic":
            raise GeometryError("propose_sites needs a periodic field; use propose() for fields "
                                "with a constant boundary.")
        sites = np.asarray(sites, dtype=np.int64)
        focus = np.array(self.tiling.focus)
        offset = sites[0] % focus
        if np.any(sites % focus != offset):
            raise GeometryError("propose_sites takes sites at one position within their focus "
                                "blocks; group the sites by position first.")
        first, start, count = self.site_geometry(offset)
        context, ndim = np.array(self.tiling.context), len(self.shape)
        size = np.array(count) * focus + 2 * context
        k = len(sites)
        # gather every window at once: (C, K, *window) by broadcast indices per axis
        index = [np.arange(self.field.shape[0]).reshape((-1,) + (1,) * (ndim + 1))]
        block_index = []
        for axis in range(ndim):
            shape = [1] * (ndim + 1)
            shape[0], shape[axis + 1] = k, -1
            pixels = sites[:, axis, None] + start[axis] + np.arange(size[axis])
            index.append((pixels % self.shape[axis]).reshape([1] + shape))
            blocks = sites[:, axis, None] // focus[axis] + first[axis] + np.arange(count[axis])
            block_shape = [1] * (ndim + 1)
            block_shape[0], block_shape[axis + 1] = k, -1
            block_index.append((blocks % (self.shape[axis] // focus[axis])).reshape(block_shape))
        windows = np.moveaxis(self.field[tuple(index)], 0, 1)  # (K, C, *window)
        centre = tuple(-start)
        windows[(slice(None), slice(None), *centre)] = values
        new = self._score_batch(windows)  # (K, *count)
        old = self.contributions[tuple(block_index)]
        axes = tuple(range(1, ndim + 1))
        delta = new.sum(axis=axes, dtype=np.float64) - old.sum(axis=axes, dtype=np.float64)
        self._sites = (sites, np.asarray(values, np.float32), tuple(block_index), new, delta)
        return delta

    def accept_sites(self, accepted: np.ndarray) -> None:
        """Commit the changes of the last :meth:`propose_sites` where ``accepted`` is true.

        The sites of one call must not share a block (a colour class), so they commit
        together exactly as one after the other.
        """
        sites, values, block_index, new, delta = self._sites
        accepted = np.asarray(accepted, bool)
        where = (slice(None), *sites[accepted].T)
        self.field[where] = values[accepted].T
        blocks = tuple(np.broadcast_to(b, new.shape)[accepted] for b in block_index)
        self.contributions[blocks] = new[accepted]
        self.energy += float(delta[accepted].sum())

    def _score_batch(self, windows: np.ndarray) -> np.ndarray:
        # one batched run for a single-scale dense model; a multi-scale one runs each
        # branch on its coarsened part of every window
        if self.model.spec.kind == "dense" and not self.model.spec.scales:
            batch = self.model.scale_input(windows)
            if not np.isfinite(batch).all():
                raise FieldError("a proposed change holds NaN or Inf; moves must stay finite.")
            return self.model.run(batch, self.threads)
        return np.stack([block_contributions(w, self.model, threads=self.threads)
                         for w in windows])

    def drift(self) -> float:
        """Running total minus a full rescoring of the current field (float rounding only)."""
        full = contributions(self.field, self.model, boundary=self.tiling.boundary,
                             threads=self.threads)
        return self.energy - float(full.sum(dtype=np.float64))
