"""Context halos cut from a second read of the field, so memory stays flat in its size.

``da.overlap.overlap`` cuts each chunk's halo from its neighbours' chunks, so a chunk
stays in memory until its last neighbour has been scored: on a 3-D field that is a
whole layer of chunks at best, and in practice most of the field. :func:`reread_overlap`
gives the same padded blocks from two independent reads of the field
(:func:`dask.graph_manipulation.clone`): from the first only the thin edges a
neighbour needs are kept (a chunk is freed once they are cut), from the second each
chunk's centre, freed once it is scored. The price is reading (or generating) the
field twice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.graph_manipulation import clone
from dask.highlevelgraph import HighLevelGraph


@dataclass(frozen=True)
class _Fill:
    """A piece of a constant boundary, made where the block is assembled."""

    shape: tuple[int, ...]
    value: float


def reread_overlap(data: da.Array, depth: dict[int, int], boundary: dict[int, object]
                   ) -> da.Array:
    """The blocks of ``da.overlap.overlap(data, depth, boundary)``, from two reads of ``data``.

    ``depth`` gives the halo per axis (at most the smallest chunk on that axis);
    ``boundary`` is ``"periodic"``, ``"none"`` or a constant per axis (``"none"`` only
    where the depth is 0).
    """
    depth = {a: int(depth.get(a, 0)) for a in range(data.ndim)}
    for a, d in depth.items():
        if d and boundary.get(a) == "none":
            raise ValueError(f"axis {a} has a halo of {d} but boundary 'none'")
        if d > min(data.chunks[a]):
            raise ValueError(f"a halo of {d} on axis {a} is deeper than its smallest chunk "
                             f"({min(data.chunks[a])})")
    edges = clone(data, seed=tokenize(data.name, "halo"))
    token = tokenize(data.name, depth, boundary)
    cut, name = f"halo-edge-{token}", f"halo-block-{token}"
    steps = [(-1, 0, 1) if depth[a] else (0,) for a in range(data.ndim)]
    dsk: dict = {}
    for index in itertools.product(*(range(len(c)) for c in data.chunks)):
        pieces = np.empty(tuple(map(len, steps)), dtype=object)
        for where in itertools.product(*(range(len(s)) for s in steps)):
            offset = tuple(s[w] for s, w in zip(steps, where, strict=True))
            if not any(offset):
                pieces[where] = (data.name, *index)
                continue
            piece = _neighbour_piece(data, index, offset, depth, boundary)
            if isinstance(piece, _Fill):
                pieces[where] = piece
                continue
            neighbour, slices = piece
            key = (cut, *index, *offset)
            dsk[key] = (_copy_of, (edges.name, *neighbour), slices)
            pieces[where] = key
        dsk[(name, *index)] = (_assemble, pieces.tolist())
    chunks = tuple(tuple(n + 2 * depth[a] for n in c) for a, c in enumerate(data.chunks))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data, edges])
    return da.Array(graph, name, chunks, meta=data._meta)


def _neighbour_piece(data: da.Array, index, offset, depth, boundary):
    """Which neighbour chunk and which slice of it fill ``offset`` of block ``index``,
    or the :class:`_Fill` of a constant boundary there."""
    neighbour, slices, shape, fill = [], [], [], None
    for a, (i, o) in enumerate(zip(index, offset, strict=True)):
        sizes, d = data.chunks[a], depth[a]
        j = i + o
        if not 0 <= j < len(sizes):
            if boundary[a] != "periodic":
                fill = boundary[a]
            j %= len(sizes)
        neighbour.append(j)
        slices.append(slice(None) if o == 0 else slice(-d, None) if o < 0 else slice(0, d))
        shape.append(sizes[i] if o == 0 else d)
    if fill is not None:
        return _Fill(tuple(shape), fill)
    return tuple(neighbour), tuple(slices)


def _assemble(pieces: list) -> np.ndarray:
    centre = pieces
    while isinstance(centre, list):
        centre = centre[len(centre) // 2]
    return np.block(_filled(pieces, centre.dtype))


def _filled(pieces, dtype):
    if isinstance(pieces, list):
        return [_filled(p, dtype) for p in pieces]
    if isinstance(pieces, _Fill):
        return np.full(pieces.shape, pieces.value, dtype=dtype)
    return pieces


def _copy_of(chunk: np.ndarray, slices) -> np.ndarray:
    # a copy, not a view: a view would keep the whole chunk alive
    return np.array(chunk[slices])
