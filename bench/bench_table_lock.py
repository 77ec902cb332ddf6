"""What the results table's lock costs: adding rows one by one, with and without it.

    python bench/bench_table_lock.py [--rows 200] [--repeats 3] [--json-out PATH]

``locked`` is what a batch job does per field since tables may be shared
(:class:`ednn_dask.batch.SharedTable.add`: take the ``flock``, read the table again,
append, write a temporary file, rename, release); ``unlocked`` is the former single-job
way (append to the table held in memory, write, rename). Both write the same table of
``--rows`` rows to a local disk. The ratio is the price of sharing, per row, against a
field's scoring time (tens of milliseconds for the smallest fields). Prints a table and
one JSON line; ``--json-out`` also writes it with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ednn_dask.batch import COLUMNS, SharedTable, write_table


def rows(n: int) -> list[dict]:
    return [{"field": f"/data/field-{k:05d}.zarr", "model": "m.onnx", "model_sha256": "ab" * 32,
             "energy": -1234.5678901234 + k, "target": "energy", "unit": "J", "n_tiles": 4096,
             "n_chunks": 4, "n_pixels": 4096, "method": "dense", "seconds": 0.01234,
             "scored_at": "2025-01-01T00:00:00+00:00"} for k in range(n)]


def unlocked(path: Path, new: list[dict]) -> None:
    table = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    for row in new:
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        write_table(table, path)


def locked(path: Path, new: list[dict]) -> None:
    shared = SharedTable(path)
    for row in new:
        shared.add(row)


def timed(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            fn(Path(tmp) / "t.csv", rows(n))
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    plain = timed(unlocked, args.rows, args.repeats)
    shared = timed(locked, args.rows, args.repeats)
    result = {"rows": args.rows, "unlocked_s": round(plain, 4), "locked_s": round(shared, 4),
              "ratio": round(shared / plain, 3),
              "extra_ms_per_row": round((shared - plain) / args.rows * 1e3, 3)}
    print(f"{'way':<10}{'seconds':>10}{'ms/row':>10}")
    for name, seconds in (("unlocked", plain), ("locked", shared)):
        print(f"{name:<10}{seconds:>10.3f}{seconds / args.rows * 1e3:>10.2f}")
    print(f"ratio {result['ratio']:.2f}, {result['extra_ms_per_row']:.2f} ms more per row")
    print(json.dumps(result))
    if args.json_out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from record import write_result

        write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
