"""Defaults shared across ednn-dask: one place to read and change them.

The command line and the library read these; neither copies the numbers.
"""

from __future__ import annotations

CHUNK_PIXELS = {1: 2**16, 2: 2048, 3: 256}
"""Chunk length per axis by number of spatial axes (4-16 M pixels a chunk): dask's
per-task overhead stays a few per cent of the work."""

SPATIAL_DIMS = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
"""Default names of the spatial dimensions, by number of axes."""

CHANNEL_DIM = "channel"
"""Name of the optional leading channel dimension of a field."""

BATCH_PIXELS = 2**17
"""Input pixels (times channels) per onnxruntime call: large enough to amortise the
call, small enough that a wide first layer stays below ~150 MB of activations."""

REREAD_BYTES = 2**28
"""Lazy fields larger than this are scored with halos cut from a second read
(:mod:`ednn_dask.halo`): memory stays flat for the cost of reading the field twice."""

SPACING_RTOL = 1e-4
"""Relative tolerance between a field's pixel spacing and the model's."""

MAX_CHUNKS = 100_000
"""More chunks than this is refused: the graph alone would outgrow the scheduler."""

GAMMA = 0.2
"""Gaussian width γ of eq. (2) in Å (the paper's value)."""

CUTOFF_GAMMAS = 5.0
"""Truncation radius of each Gaussian in units of γ (exp(-12.5) = 4e-6 there)."""

IN_PROCESS_PIXELS = 2**24
"""Atomistic fields up to this many pixels are scored in this process; larger ones on dask."""

MAP_PIXELS = 1024
"""The energy-density map of a sheet is at most this many pixels per axis."""
