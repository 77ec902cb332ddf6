"""Benchmark results as data: one JSON file per benchmark, with the machine and the date.

The bench scripts call :func:`write_result` with their summary; ``docs/generate.py``
turns the files under ``bench/results/`` into the tables of the benchmarks page. The
record itself (date, machine, commit, command; atomic write) is
:func:`training.records.write_record`, shared with ``ednn-dask evaluate --json-out``.
"""

from __future__ import annotations

import os
from pathlib import Path

from training.records import write_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def write_result(summary: dict, path: str | os.PathLike, command: list[str]) -> Path:
    """Write ``summary`` with the machine, the UTC date, the commit and the command line."""
    path = write_record(summary, path, "python " + " ".join(command))
    print(f"wrote {path}")
    return path
