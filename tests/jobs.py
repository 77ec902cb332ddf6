"""Helpers of the fault and concurrency tests: real ``ednn-dask`` processes and their leftovers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ednn_dask.field import make_field, save_field

ROOT = Path(__file__).resolve().parents[1]
ISING = ROOT / "models" / "ising-2d-f1c1.onnx"
POROUS = ROOT / "models" / "porous-f32c16.onnx"
CLI = [sys.executable, "-m", "ednn_dask.cli"]


def ising_fields(directory: Path, n: int, size: int = 32, prefix: str = "ising") -> list[str]:
    """``n`` Zarr Ising fields (absolute paths, as the results table names them)."""
    paths = []
    for seed in range(n):
        spins = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), (size, size))
        path = save_field(make_field(spins, name="spins"), directory / f"{prefix}-{seed:02d}.zarr")
        paths.append(str(path.resolve()))
    return paths


def start(argv: list[str], *, env: dict | None = None, **kw) -> subprocess.Popen:
    """An ``ednn-dask`` process (``python -m ednn_dask.cli``) with pipes for its output."""
    return subprocess.Popen([*CLI, *argv], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(condition, timeout: float = 120.0, what: str = "the condition",
             job: subprocess.Popen | None = None) -> None:
    """Poll ``condition()`` every 10 ms; fail the test after ``timeout`` s or if ``job`` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and job.poll() is not None:
            out, err = job.communicate()
            raise AssertionError(f"the job exited ({job.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def leftovers(*folders: Path) -> list[str]:
    """Temporary outputs (``.NAME.tmp-PID``, ``.NAME.old-PID``, claim folders) under ``folders``."""
    found = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            found += [os.path.join(root, n) for n in dirs + files
                      if n.startswith(".") and (".tmp-" in n or ".old-" in n or
                                                n.endswith(".claims"))]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trace_events(path: Path) -> list[tuple[int, float, str, str]]:
    """(pid, monotonic time, event, path) from the lock trace, in time order."""
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, t, rest = line.split(" ", 2)
        event, _, where = rest.partition(" ")
        if event == "submit":  # "submit K PATH"
            k, _, where = where.partition(" ")
            event = f"submit {k}"
        events.append((int(pid), float(t), event, where))
    return sorted(events, key=lambda e: e[1])


def held_sections(events) -> list[tuple[int, float, float]]:
    """(pid, locked at, released at) of every locked section in the trace."""
    open_, sections = {}, []
    for pid, t, event, _ in events:
        if event == "locked":
            open_[pid] = t
        elif event == "released" and pid in open_:
            sections.append((pid, open_.pop(pid), t))
    return sections


def scheduler(threads: int = 1) -> tuple[str, list[subprocess.Popen]]:
    """A real ``dask scheduler`` on 127.0.0.1 and one ``dask worker``: (address, processes)."""
    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stderr=subprocess.DEVNULL),
             subprocess.Popen([dask, "worker", address, "--nthreads", str(threads),
                               "--no-dashboard"], stderr=subprocess.DEVNULL)]
    return address, procs
