"""Results as data: a JSON record of a result with where, when and how it was measured.

The bench scripts (``bench/record.py``) and ``ednn-dask evaluate --json-out`` write their
results through :func:`write_record`; ``docs/generate.py`` turns the files under
``bench/results/`` into the tables of the documentation. Torch-free.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ednn_dask.storage import atomic_output

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: platform, CPU, core count, memory, Python."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                   / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; empty where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def commit() -> str | None:
    """The short commit of the checkout this package runs from, or None outside git."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(command: str) -> dict[str, Any]:
    """The UTC date, the machine, the commit, the package version and ``command``."""
    import ednn_dask

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit(),
        "ednn_dask_version": ednn_dask.__version__,
        "command": command,
    }


def write_record(result: dict[str, Any], path: str | os.PathLike, command: str) -> Path:
    """Write ``result`` plus :func:`provenance` as indented JSON, atomically, replacing ``path``."""
    record = {**result, **provenance(command)}
    path = Path(path)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
