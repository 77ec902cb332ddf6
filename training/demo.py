"""The demo: a large Ising lattice sampled, stored as a Zarr field and scored on a cluster."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ednn_dask.compute import dask_client
from ednn_dask.defaults import CHUNK_PIXELS
from ednn_dask.errors import StoreNotFoundError
from ednn_dask.field import make_field, open_field, save_field
from ednn_dask.score import score
from training.ising import sample_ising

SHIPPED_MODEL = "ising-2d-f1c1.onnx"


def shipped_model() -> Path:
    """The shipped 2-D Ising model: in the checkout this package runs from, else in ./models."""
    for folder in (Path(__file__).resolve().parents[1] / "models", Path.cwd() / "models"):
        if (folder / SHIPPED_MODEL).is_file():
            return folder / SHIPPED_MODEL
    raise StoreNotFoundError(
        f"the shipped model models/{SHIPPED_MODEL} was not found: run from a checkout of "
        f"ednn-dask, pass a model (--model M.onnx), or train one (ednn-dask train ising --out "
        f"M.onnx)."
    )


def demo_ising(
    model: str | Path | None = None,
    *,
    size: int = 4096,
    temperature: float = 2.8,
    sweeps: int = 20,
    scheduler: str | None = None,
    chunks: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Sample a ``size x size`` Ising lattice, store it as a Zarr field and score it on a cluster.

    ``model`` defaults to :func:`shipped_model`. Prints the dashboard link and a
    progress bar; returns the EDNN energy beside the exact one and the throughput.
    """
    model = shipped_model() if model is None else Path(model)
    if not model.is_file():
        raise StoreNotFoundError(
            f"model {str(model)!r} not found; check the path, or train one with "
            f"`ednn-dask train ising --out {model}`."
        )
    t0 = time.perf_counter()
    ds = sample_ising(1, size, temperatures=temperature, sweeps=sweeps, seed=seed)
    spins = ds["spins"].values[0]
    exact = float(ds["energy"].values[0])
    t_sample = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ednn-demo-") as tmp:
        field = make_field(spins, attrs={"temperature": temperature}, name="spins")
        path = save_field(field, Path(tmp) / "ising.zarr",
                          chunks=dict.fromkeys(field.dims, CHUNK_PIXELS[2]))
        with dask_client(scheduler) as client:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            result = score(open_field(path), model, client=client, chunks=chunks,
                           keep_contributions=False, progress=True)
    return {
        "lattice": f"{size}x{size}",
        "temperature": temperature,
        "ednn_energy_J": result.energy,
        "exact_energy_J": exact,
        "error_per_spin_J": abs(result.energy - exact) / spins.size,
        "relative_error": abs(result.energy - exact) / abs(exact),
        "tiles": result.n_tiles,
        "chunks": result.n_chunks,
        "sample_seconds": t_sample,
        "score_seconds": result.seconds["total"],
        "spins_per_second": spins.size / result.seconds["compute"],
    }
