"""Peak memory of training on a data set of fields: streamed from Zarr against held in memory.

For 10^4 and 10^5 samples of 16x16 float32 (10 MB and 100 MB of fields) one epoch
of :func:`training.train.fit` runs in a fresh process per case, once on a
:class:`training.field_data.SampleStream` (shuffle buffer of 4,096 samples) and
once on the same samples held in memory (the baseline), and the process's peak
resident memory is read from ``getrusage``. Streamed, the peak should not grow with
the number of samples; in memory it grows with the data.

    .venv/bin/python bench/train_fields_memory.py [--sizes 10000,100000] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
L, BUFFER, CHUNK = 16, 4096, 1024


def make_store(path: Path, n: int) -> None:
    from training.field_data import field_dataset

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, L, L)).astype(np.float32)
    y = (x.astype(np.float64) ** 2).sum(axis=(1, 2))
    ds = field_dataset(x, y, spacing=1.0, spacing_unit="nm", target_unit="1")
    ds.chunk({"sample": CHUNK}).to_zarr(path, zarr_format=3, consolidated=False)


def child(store: str, mode: str) -> None:
    """One epoch on ``store``; prints a JSON line with the peak RSS in MiB."""
    import torch

    from training.config import TrainConfig
    from training.field_data import SampleStream, open_field_data
    from training.fields import build_field_ednn
    from training.train import fit

    torch.set_num_threads(1)
    ds, spec = open_field_data(store, "field", "target")
    inputs = SampleStream(ds, spec, buffer=BUFFER) if mode == "stream" else \
        np.asarray(ds["field"].values, np.float32)[:, None]
    targets = np.asarray(ds["target"].values)
    ednn = build_field_ednn("density", 2, 1, 4, 1, "periodic")
    config = TrainConfig(epochs=1, batch_size=256, threads=1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        fit(ednn, inputs, targets, config, work, progress=False, data_hash="bench")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "seconds": time.perf_counter() - t0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--json-out", help="also write the result here (bench/results/...)")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            store = Path(tmp) / f"d{n}.zarr"
            make_store(store, n)
            for mode in ("stream", "memory"):
                done = subprocess.run([sys.executable, __file__, "--child", str(store), mode],
                                      capture_output=True, text=True, check=True, cwd=ROOT)
                rows.append({"samples": n, "mode": mode,
                             **json.loads(done.stdout.strip().splitlines()[-1])})
    print(f"{'samples':>8} {'mode':>7} {'peak RSS MiB':>13} {'epoch s':>8}")
    for r in rows:
        print(f"{r['samples']:>8} {r['mode']:>7} {r['peak_rss_mib']:>13.0f} {r['seconds']:>8.1f}")
    peak = {(r["samples"], r["mode"]): r["peak_rss_mib"] for r in rows}
    sizes = sorted({r["samples"] for r in rows})
    summary = {"benchmark": "train_fields_memory", "sample_shape": [L, L], "buffer": BUFFER,
               "rows": rows}
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        summary["growth_mib"] = {m: peak[(hi, m)] - peak[(lo, m)] for m in ("stream", "memory")}
    print(json.dumps(summary))
    if args.json_out:
        sys.path.insert(0, str(ROOT / "bench"))
        from record import write_result

        write_result(summary, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
