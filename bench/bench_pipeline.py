"""Dask pipeline vs raw onnxruntime vs a torch-eager EDNN, on the same field and weights.

    python bench/bench_pipeline.py [--system ising|laplacian|atomistic|screened] [--size 4096]
                                   [--repeats 3] [--json-out bench/results/pipeline-SYSTEM.json]

One randomly initialised tile net of the shipped architecture is exported to
ONNX; then, in this one process and on the same field:

- raw onnxruntime: plain ``InferenceSession.run`` (2 threads) over row slabs of
  the padded field, no ednn-dask and no dask;
- the ednn-dask pipeline (``score``) at its default chunking, on dask's threaded
  scheduler and on an in-process ``distributed.LocalCluster`` (1 worker, 2 threads);
- the torch EDNN module, eager, tile path (unfold -> tile net -> sum), 2 threads.

``screened`` scores a screened lattice with the shipped multi-scale model
(``models/screened-multiscale.onnx``): the raw onnxruntime baseline coarsens the
whole field for each branch with numpy and runs that branch's own graph over it (the
same branches, no dask); there is no torch row. For every system the peak memory
the process gains while the LocalCluster scores (sampled every 20 ms) is recorded
next to the size of the field.

Prints a table (median of ``--repeats``) and one JSON line with the ratios, and writes
that JSON with the machine and the date to ``--json-out`` (the docs' benchmarks page
is generated from it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from record import RESULTS, write_result


def build(system: str, tmp: Path):
    if system == "screened":
        from ednn_dask import load_model

        return None, load_model(Path(__file__).resolve().parents[1] / "models"
                                / "screened-multiscale.onnx")
    import torch

    from training.ednn import EDNN
    from training.export import export_onnx
    from training.nets import IsingMLP

    torch.manual_seed(0)
    channels = 1
    if system == "ising":
        ednn = EDNN(IsingMLP((3, 3)), 1, 1, "periodic", ndim=2)
    elif system == "laplacian":
        from training.recipes import laplacian_ednn

        ednn = laplacian_ednn()
    else:  # the shipped hexagonal / porous architecture, 3 species channels
        from training.atomistic import build_net

        ednn, channels = build_net(3), 3
    return ednn.eval(), export_onnx(ednn, tmp / f"{system}.onnx", channels=channels)


def make_field(system: str, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if system == "screened":
        return rng.choice(np.float32([-1, 0, 1]), p=[0.1, 0.8, 0.1], size=(size, size))
    if system == "ising":
        return rng.choice(np.array([-1.0, 1.0], np.float32), size=(size, size))
    shape = (3, size, size) if system == "atomistic" else (size, size)
    return rng.normal(size=shape).astype(np.float32)


def pad_spatial(field, context):
    """Periodic padding of the last two axes; a leading channel axis is kept."""
    return np.pad(field, [(0, 0)] * (field.ndim - 2) + [(context, context)] * 2, mode="wrap")


def raw_onnxruntime(field, model, focus, context, slab_pixels=2**17):
    """The baseline: numpy padding and InferenceSession.run over row slabs, nothing else
    (the input and output scaling of the metadata applied by hand). A multi-scale
    model: each branch's graph on the whole field coarsened by its factor, summed."""
    import onnxruntime as ort

    from ednn_dask.tiling import block_mean

    if model.spec.scales:
        return sum(raw_onnxruntime(block_mean(field, s.factor), branch, s.focus[0], s.context[0],
                                   slab_pixels)
                   for s, branch in zip(model.spec.scales, model.branches, strict=True))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.onnx_bytes, options, providers=["CPUExecutionProvider"])
    spec = model.spec
    padded = (pad_spatial(field, context) - np.float32(spec.input_offset)) * np.float32(
        spec.input_scale)
    padded = padded.reshape(-1, *padded.shape[-2:])
    rows = max(1, slab_pixels // (focus * padded.shape[-1]))
    total = 0.0
    for start in range(0, field.shape[-2] // focus, rows):
        stop = min(field.shape[-2] // focus, start + rows)
        slab = np.ascontiguousarray(padded[None, :, start * focus : stop * focus + 2 * context])
        raw = session.run(None, {session.get_inputs()[0].name: slab})[0].astype(np.float64)
        total += float((raw * spec.output_scale + spec.output_offset).sum())
    return total


def torch_eager(ednn, field, slab_pixels=2**17):
    import torch

    torch.set_num_threads(2)
    f, c = ednn.tiling.focus[0], ednn.tiling.context[0]
    padded = (torch.as_tensor(pad_spatial(field, c)) - ednn.input_offset) * ednn.input_scale
    padded = padded.reshape(-1, *padded.shape[-2:])
    rows = max(1, slab_pixels // (f * padded.shape[-1]))
    total = 0.0
    with torch.no_grad():
        for start in range(0, field.shape[-2] // f, rows):
            stop = min(field.shape[-2] // f, start + rows)
            slab = padded[:, start * f : stop * f + 2 * c][None]
            tiles = ednn._cut(slab)
            raw = ednn.tile_net(tiles.reshape(-1, *tiles.shape[3:]))
            total += float((raw * ednn.output_scale + ednn.output_offset).double().sum())
    return total


class PeakMemory:
    """The most resident memory the process gains over its level at entry (sampled)."""

    def __enter__(self):
        import threading

        import psutil

        self.process, self.stop = psutil.Process(), threading.Event()
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.gained = self.peak - self.start


def timed(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["ising", "laplacian", "atomistic", "screened"],
                        default="ising")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", help="where the JSON summary is written "
                        "(default bench/results/pipeline-SYSTEM.json)")
    args = parser.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    from ednn_dask import score

    with tempfile.TemporaryDirectory() as tmp:
        ednn, model = build(args.system, Path(tmp))
        field = make_field(args.system, args.size)
        f, c = model.spec.focus[0], model.spec.context[0]
        rows = {}
        rows["raw onnxruntime"] = timed(lambda: raw_onnxruntime(field, model, f, c),
                                        args.repeats)
        with dask.config.set(scheduler="threads", num_workers=2):
            rows["ednn-dask, threaded"] = timed(
                lambda: score(field, model, keep_contributions=False).energy, args.repeats)
        with (LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                           dashboard_address=":0") as cluster, Client(cluster) as client):
            warm = 64 * f  # a small field first: the worker builds its session
            score(field[..., :warm, :warm], model, client=client)
            with PeakMemory() as memory:
                rows["ednn-dask, LocalCluster"] = timed(
                    lambda: score(field, model, client=client, keep_contributions=False).energy,
                    args.repeats)
        if ednn is not None:
            rows["torch eager EDNN"] = timed(lambda: torch_eager(ednn, field), args.repeats)

    pixels = field.shape[-1] * field.shape[-2]
    base_t, base_e = rows["raw onnxruntime"]
    print(f"{args.system}: {args.size}x{args.size} field, focus {f}, context {c}, "
          f"{model.spec.kind} model, median of {args.repeats}")
    print(f"{'path':<26}{'seconds':>9}{'Mpx/s':>9}{'vs raw ORT':>12}{'energy':>16}")
    for name, (t, e) in rows.items():
        print(f"{name:<26}{t:>9.3f}{pixels / t / 1e6:>9.2f}{base_t / t:>12.3f}{e:>16.6g}")
    for name, (_, e) in rows.items():
        if abs(e - base_e) > 1e-4 * abs(base_e) + 1e-3:
            raise SystemExit(f"{name} energy {e} differs from raw onnxruntime {base_e}")
    summary = {
        "bench": "pipeline", "system": args.system, "size": args.size, "pixels": pixels,
        "seconds": {k: v[0] for k, v in rows.items()},
        "fraction_of_raw_ort_threaded": base_t / rows["ednn-dask, threaded"][0],
        "fraction_of_raw_ort_localcluster": base_t / rows["ednn-dask, LocalCluster"][0],
        "speedup_vs_torch_eager": rows["torch eager EDNN"][0] / rows["ednn-dask, threaded"][0]
        if "torch eager EDNN" in rows else None,
        "focus": f, "context": c, "kind": model.spec.kind, "repeats": args.repeats,
        "field_MB": field.nbytes / 1e6, "localcluster_peak_gain_MB": memory.gained / 1e6,
        "scales": [[s.factor[0], s.focus[0], s.context[0]] for s in model.spec.scales],
    }
    print(json.dumps(summary))
    write_result(summary, args.json_out or RESULTS / f"pipeline-{args.system}.json",
                 sys.argv if argv is None else [sys.argv[0], *argv])
    return summary


if __name__ == "__main__":
    main()
