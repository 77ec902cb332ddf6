"""Digital rock at scale: periodic rocks of up to 2048³ voxels in Zarr, scored out of core.

    python bench/rock_volume.py [--sizes 256 512 1024 2048] [--chunks 256]
                                [--overlap-max 1024] [--workdir runs/rock-volume] [--keep]

For each size, on one in-process LocalCluster (1 worker, 2 threads):

1. ``training.rock.write_rock_volume``: the rock generated chunk by chunk into Zarr,
   then its exact pore volume, interface area and Euler characteristic counted from
   the store, chunk by chunk;
2. each shipped rock model (``models/rock-{volume,area,euler}.onnx``) scores the store
   through ``ednn_dask.score`` with halos from a second read (``reread=True``):
   relative error, exact after rounding, seconds, voxels per second;
3. up to ``--overlap-max``, the Euler model again with ``reread=False`` (halos cut from
   the chunks being scored, as ``da.overlap`` does): the memory that re-reading saves.

Memory is the most resident memory the process gains over its level at the start of
each phase (sampled every 20 ms; the workers are threads of this process; freed heap
is returned to the system before each phase). Then:

4. raw onnxruntime on the same chunks (the Euler model): each z-slab of chunks read
   once from the same store, padded with its periodic neighbours by numpy, its chunks
   scored by 2 threads, each with its own single-threaded ``InferenceSession``, in calls
   of the pipeline's batch size; no dask and no ednn-dask: the baseline of the
   voxels-per-second ratio, with its reading and padding, and (stricter) with its
   inference time alone.

Writes ``bench/results/rock.json`` (the docs' benchmarks page renders it). The volumes
are deleted after each size unless ``--keep``; 2048³ takes about 1 GB of disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_pipeline import PeakMemory
from record import RESULTS, ROOT, write_result

from ednn_dask import load_model, score
from ednn_dask.compute import dask_client
from ednn_dask.defaults import BATCH_PIXELS
from training.rock import FIELD, TARGETS, write_rock_volume

MODELS = {t: ROOT / "models" / f"rock-{t}.onnx" for t in TARGETS}


def raw_onnxruntime(store: Path, model, chunks: int, threads: int = 2
                    ) -> tuple[float, float, float]:
    """The Euler (or any rock) model over the stored volume with plain onnxruntime.

    Returns the sum, the seconds in all and the seconds of inference alone (reading
    and padding the slabs excluded). Each z-slab of chunks is read once (with one plane
    of each neighbouring slab) and padded periodically by numpy; ``threads`` threads,
    each with its own single-threaded session (as the pipeline's workers have), score
    its chunks in calls of the pipeline's batch size. Every chunk is read once, but for
    slab 0's first plane again at the end (the last slab's periodic neighbour).
    """
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort
    import zarr

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(model.onnx_bytes, options,
                                     providers=["CPUExecutionProvider"])
                for _ in range(threads)]
    name = sessions[0].get_inputs()[0].name
    f = model.spec.focus[0]
    rows = max(1, BATCH_PIXELS // (f * (chunks + 2) ** 2))

    def one_chunk(job) -> float:
        k, block = job
        total = 0.0
        for z in range(0, chunks, rows * f):
            part = block[z : z + rows * f + 2].astype(np.float32)[None, None]
            total += float(sessions[k % threads].run(None, {name: part})[0].sum(
                dtype=np.float64))
        return total

    volume = zarr.open_array(store / FIELD, mode="r")
    n = volume.shape[0]
    warm = np.zeros((1, 1, f + 2, f + 2, f + 2), np.float32)  # first calls set up; untimed
    for session in sessions:
        session.run(None, {name: warm})
    volume[0, 0, 0]
    started = time.perf_counter()
    slabs = n // chunks
    previous = volume[n - 1 : n]
    current = volume[0:chunks]
    total, inference = 0.0, 0.0
    with ThreadPoolExecutor(threads) as pool:
        for k in range(slabs):
            following = (volume[(k + 1) * chunks : (k + 2) * chunks] if k + 1 < slabs
                         else volume[0:1])
            slab = np.pad(np.concatenate([previous, current, following[:1]]),
                          [(0, 0), (1, 1), (1, 1)], mode="wrap")
            blocks = [slab[:, y : y + chunks + 2, x : x + chunks + 2]
                      for y in range(0, n, chunks) for x in range(0, n, chunks)]
            t = time.perf_counter()
            total += sum(pool.map(one_chunk, enumerate(blocks)))
            inference += time.perf_counter() - t
            previous, current = current[-1:], following
    return total, time.perf_counter() - started, inference


def release_heap() -> None:
    """Hand freed heap back to the system, so each phase's gain starts from a low level."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def scored(store: Path, target: str, exact: float, client, reread: bool) -> dict:
    release_heap()
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = score(store, load_model(MODELS[target]), client=client, variable=FIELD,
                       keep_contributions=False, reread=reread)
        seconds = time.perf_counter() - started
    voxels = result.n_pixels
    return {"exact": exact, "predicted": result.energy,
            "relative_error": abs(result.energy - exact) / abs(exact),
            "exact_after_rounding": round(result.energy) == round(exact),
            "seconds": round(seconds, 2), "voxels_per_second": voxels / seconds,
            "peak_gain_MB": round(memory.gained / 2**20, 1)}


def one_size(size: int, chunks: int, workdir: Path, keep: bool, overlap_max: int,
             client) -> dict:
    store = workdir / f"rock-{size}.zarr"
    if store.exists():
        shutil.rmtree(store)
    release_heap()
    with PeakMemory() as memory:
        made = write_rock_volume(store, size, chunks=chunks, client=client, progress=False)
    voxels = size**3
    row = {"size": size, "voxels": voxels, "chunks": chunks, "porosity": made["porosity"],
           "generate_seconds": made["seconds"],
           "generate_peak_gain_MB": round(memory.gained / 2**20, 1),
           "store_MB": round(sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
                             / 1e6, 1)}
    print(f"{size}^3 generated and counted in {made['seconds']:.1f} s, "
          f"+{row['generate_peak_gain_MB']} MB", flush=True)
    for target in MODELS:
        row[target] = scored(store, target, made[target], client, reread=True)
        print(f"{size}^3 {target}: {row[target]['predicted']:.10g} vs exact "
              f"{made[target]:.10g} ({row[target]['relative_error']:.2e}), "
              f"{row[target]['seconds']:.1f} s, "
              f"{row[target]['voxels_per_second'] / 1e6:.1f} Mvox/s, "
              f"+{row[target]['peak_gain_MB']} MB", flush=True)
    if size <= overlap_max:
        row["euler_overlap"] = scored(store, "euler", made["euler"], client, reread=False)
        print(f"{size}^3 euler, halos from the scored chunks: "
              f"{row['euler_overlap']['seconds']:.1f} s, "
              f"+{row['euler_overlap']['peak_gain_MB']} MB", flush=True)
    raw_total, raw_seconds, inference = raw_onnxruntime(store, load_model(MODELS["euler"]),
                                                        chunks)
    row["raw_onnxruntime"] = {"model": "euler", "sum": raw_total,
                              "seconds": round(raw_seconds, 2),
                              "inference_seconds": round(inference, 2),
                              "voxels_per_second": voxels / raw_seconds}
    row["speed_vs_raw"] = raw_seconds / row["euler"]["seconds"]
    # against inference alone: the pipeline's reading, halos and scheduling all count
    row["speed_vs_raw_inference"] = inference / row["euler"]["seconds"]
    print(f"{size}^3 raw onnxruntime: {raw_seconds:.1f} s, inference alone {inference:.1f} s; "
          f"ednn-dask/raw {row['speed_vs_raw']:.2f} ({row['speed_vs_raw_inference']:.2f} "
          "against inference alone)", flush=True)
    if not keep:
        shutil.rmtree(store)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--overlap-max", type=int, default=1024,
                        help="largest size also scored with halos cut from the scored chunks")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "rock-volume"))
    parser.add_argument("--keep", action="store_true", help="keep the Zarr volumes")
    parser.add_argument("--json-out", default=str(RESULTS / "rock.json"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with dask_client() as client:
        for size in args.sizes:
            rows.append(one_size(size, args.chunks, workdir, args.keep, args.overlap_max,
                                 client))
    largest = rows[-1]
    summary = {
        "rows": rows,
        "largest": largest["size"],
        "relative_errors": {t: largest[t]["relative_error"] for t in TARGETS},
        "euler_exact_after_rounding": largest["euler"]["exact_after_rounding"],
        "speed_vs_raw": largest["speed_vs_raw"],
        "speed_vs_raw_inference": largest["speed_vs_raw_inference"],
        "peak_gain_MB": {r["size"]: max(r[t]["peak_gain_MB"] for t in TARGETS) for r in rows},
        "generate_peak_gain_MB": {r["size"]: r["generate_peak_gain_MB"] for r in rows},
        "overlap_peak_gain_MB": {r["size"]: r["euler_overlap"]["peak_gain_MB"]
                                 for r in rows if "euler_overlap" in r},
    }
    write_result(summary, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
