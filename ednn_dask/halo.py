"""Context halos cut from a second read of the field, so memory stays flat in its size.

``da.overlap.overlap`` cuts each chunk's halo from its neighbours' chunks, so a chunk
stays in memory until its last neighbour has been scored: on a 3-D field that is a
whole layer of chunks at best, and in practice most of the field. :func:`reread_overlap`
gives the same padded blocks from two independent reads of the field
(:func:`second_read`): from the first only the thin edges a neighbour needs are kept
(a chunk is freed once they are cut), from the second each chunk's centre, freed once
it is scored. The price is reading (or generating) the field twice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask._task_spec import Alias, DataNode, convert_legacy_graph
from dask.base import clone_key, tokenize
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
    edges = second_read(data)
    token = tokenize(data.name, depth, boundary)
    cut, name = f"halo-edges-{token}", f"halo-block-{token}"
    steps = [(-1, 0, 1) if depth[a] else (0,) for a in range(data.ndim)]
    offsets = [o for o in itertools.product(*steps) if any(o)]
    dsk: dict = {}
    for index in itertools.product(*(range(len(c)) for c in data.chunks)):
        # all the edges this chunk lends, cut in one task: the read is freed right after
        dsk[(cut, *index)] = (_edges, (edges.name, *index), offsets, depth)
        pieces = np.empty(tuple(map(len, steps)), dtype=object)
        for where in itertools.product(*(range(len(s)) for s in steps)):
            offset = tuple(s[w] for s, w in zip(steps, where, strict=True))
            if not any(offset):
                pieces[where] = (data.name, *index)
                continue
            neighbour = _neighbour(data, index, offset, depth, boundary)
            pieces[where] = neighbour if isinstance(neighbour, _Fill) else [
                (cut, *neighbour), offset]
        dsk[(name, *index)] = (_assemble, pieces.tolist())
    chunks = tuple(tuple(n + 2 * depth[a] for n in c) for a, c in enumerate(data.chunks))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data, edges])
    return da.Array(graph, name, chunks, meta=data._meta)


def second_read(data: da.Array) -> da.Array:
    """``data`` again, computed by tasks of its own (new keys all the way to the roots).

    Literal data in the graph (an in-memory array, a Zarr array's handle) is shared,
    not copied. :func:`dask.graph_manipulation.clone` would be the tool, but it leaves
    task-spec nodes pointing at the original tasks (dask issue 12455), so the "second"
    read would share the first one's work and memory.
    """
    graph = convert_legacy_graph(dict(data.__dask_graph__()))
    seed = tokenize(data.name, "second read")
    subs = {k: k if isinstance(node, DataNode) else clone_key(k, seed)
            for k, node in graph.items()}
    dsk = {subs[k]: node.substitute(subs, key=subs[k]) for k, node in graph.items()}
    name = clone_key(data.name, seed)
    for key in itertools.product([data.name], *map(range, data.numblocks)):
        if subs[key] == key:  # a literal chunk: the second read is the same data
            dsk[(name, *key[1:])] = Alias((name, *key[1:]), key)
    return da.Array(dsk, name, data.chunks, meta=data._meta)


def _neighbour(data: da.Array, index, offset, depth, boundary):
    """The index of the chunk that fills ``offset`` of block ``index``, or the
    :class:`_Fill` of a constant boundary there."""
    neighbour, shape, fill = [], [], None
    for a, (i, o) in enumerate(zip(index, offset, strict=True)):
        j = i + o
        if not 0 <= j < len(data.chunks[a]):
            if boundary[a] != "periodic":
                fill = boundary[a]
            j %= len(data.chunks[a])
        neighbour.append(j)
        shape.append(data.chunks[a][i] if o == 0 else depth[a])
    return _Fill(tuple(shape), fill) if fill is not None else tuple(neighbour)


def _edges(chunk: np.ndarray, offsets, depth) -> dict:
    """The pieces of ``chunk`` that the neighbour at each ``-offset`` takes as its halo.

    Copies, not views: a view would keep the whole chunk alive.
    """
    return {o: np.array(chunk[tuple(
        slice(None) if s == 0 else slice(-depth[a], None) if s < 0 else slice(0, depth[a])
        for a, s in enumerate(o))]) for o in offsets}


def _assemble(pieces: list) -> np.ndarray:
    centre = pieces
    while isinstance(centre, list):
        centre = centre[len(centre) // 2]
    return np.block(_filled(pieces, centre.dtype))


def _filled(pieces, dtype):
    if isinstance(pieces, list) and len(pieces) == 2 and isinstance(pieces[0], dict):
        bundle, offset = pieces
        return bundle[offset]
    if isinstance(pieces, list):
        return [_filled(p, dtype) for p in pieces]
    if isinstance(pieces, _Fill):
        return np.full(pieces.shape, pieces.value, dtype=dtype)
    return pieces
