"""Worker memory while a multi-scale model scores Zarr-backed screened lattices of growing size.

    python bench/screened_memory.py [--sizes 4096 8192 16384] [--workers 2]
                                    [--json-out bench/results/screened-memory.json]

Each lattice (sites +1 or -1 with probability 0.1 each, else 0) is written chunk by
chunk to a Zarr store in a temporary folder, never held whole. A LocalCluster of
``--workers`` single-threaded worker processes then scores it with the shipped
``models/screened-multiscale.onnx`` (``score(path, model)``, the default chunking),
while a thread of this process samples every worker's resident memory every 0.1 s.
The table gives each size's peak over the workers, and its gain over the same
worker's memory just before scoring; flat means the peak does not grow with the field.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS, write_result  # noqa: E402

MODEL = ROOT / "models" / "screened-multiscale.onnx"
CHUNK = 2048


def write_lattice(path: Path, size: int, seed: int) -> None:
    import dask.array as da
    import numpy as np
    import xarray as xr

    from ednn_dask.field import save_field
    from training.screened import OCCUPATION

    p = OCCUPATION
    rng = da.random.default_rng(seed)
    sites = rng.choice(np.float32([-1, 0, 1]), size=(size, size), p=[p, 1 - 2 * p, p],
                       chunks=CHUNK)
    save_field(xr.DataArray(sites.astype(np.float32), dims=("y", "x"), name="field",
                            attrs={"lattice": True}), path)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


class Sampler(threading.Thread):
    """Peak resident memory of each worker, sampled until stopped."""

    def __init__(self, client, every: float = 0.1):
        super().__init__(daemon=True)
        self.client, self.every, self.peak = client, every, {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for worker, mb in self.client.run(rss_mb).items():
                self.peak[worker] = max(self.peak.get(worker, 0.0), mb)
            time.sleep(self.every)


def trim() -> None:
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    from distributed import Client, LocalCluster

    from ednn_dask import load_model, score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json-out", default=str(RESULTS / "screened-memory.json"))
    args = parser.parse_args()
    model = load_model(MODEL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                         memory_limit="4GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for k, size in enumerate(args.sizes):
            path = Path(tmp) / f"lattice-{size}.zarr"
            write_lattice(path, size, seed=k)
            client.run(trim)
            before = client.run(rss_mb)
            sampler = Sampler(client)
            sampler.start()
            t0 = time.perf_counter()
            energy = score(path, model, client=client).energy
            seconds = time.perf_counter() - t0
            sampler.stopped.set()
            sampler.join()
            peak = max(sampler.peak.values())
            gain = max(sampler.peak[w] - before[w] for w in before)
            rows.append({"size": size, "field_MB": 4 * size * size / 1e6, "seconds": seconds,
                         "energy": energy, "worker_peak_MB": peak, "worker_gain_MB": gain})
            print(f"{size:>6}² field {rows[-1]['field_MB']:>7.0f} MB  {seconds:6.1f} s  "
                  f"worker peak {peak:7.0f} MB (+{gain:.0f} MB)", flush=True)
    growth = rows[-1]["worker_peak_MB"] / rows[0]["worker_peak_MB"]
    print(f"peak at {args.sizes[-1]}² over peak at {args.sizes[0]}²: {growth:.3f} "
          f"(field {args.sizes[-1] ** 2 / args.sizes[0] ** 2:.0f}x larger)")
    write_result({"model": str(MODEL.relative_to(ROOT)), "workers": args.workers,
                  "chunk": CHUNK, "rows": rows, "peak_growth": growth}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
