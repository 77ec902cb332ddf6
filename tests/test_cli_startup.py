"""A signal at any moment of a command's start ends in one line (issue 21).

The command line installs its SIGINT and SIGTERM handlers before it imports dask,
xarray, numba or onnxruntime (seconds of a command's start): ``import ednn_dask`` and
``ednn_dask.cli`` load none of them, and each command imports what it needs inside.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobs import ISING, ising_fields, leftovers, start, wait_for

HEAVY = ("dask", "distributed", "xarray", "numba", "numpy", "pandas", "zarr", "onnx",
         "onnxruntime", "torch", "scipy")


def test_importing_the_command_line_loads_no_heavy_library():
    code = (f"import sys, ednn_dask, ednn_dask.cli; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM: the command line's handlers are in place
    (Python itself catches SIGINT from its start, but leaves SIGTERM alone)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
@pytest.mark.parametrize("sig, name, status", [(signal.SIGINT, "SIGINT", 130),
                                               (signal.SIGTERM, "SIGTERM", 143)])
def test_a_signal_while_the_command_imports_is_one_line(tmp_path, sig, name, status):
    fields = ising_fields(tmp_path, 2)
    started = time.monotonic()
    job = start(["score", *fields, "--model", str(ISING), "--table", str(tmp_path / "t.csv")])
    # 0.3 s after the start, while the command imports its libraries; on a loaded machine
    # that has not reached the handlers by then, as soon as it has (before them a signal
    # ends Python the default way: that is the interpreter's own start, ~0.1 s unloaded)
    wait_for(lambda: _catches_sigterm(job.pid), what="the command line's signal handlers",
             job=job)
    time.sleep(max(0.0, started + 0.3 - time.monotonic()))
    job.send_signal(sig)
    out, err = job.communicate(timeout=120)
    assert job.returncode == status, err
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ednn-dask score: interrupted ({name})"), err
    assert out == ""
    assert leftovers(tmp_path) == []


# A library that loses an interrupt while it is imported, as C code that clears every
# error does (PyObject_HasAttr on a module __getattr__): the signal comes as the command
# imports its first module, and the exception its handler raised is dropped.
_SWALLOWING = """
import builtins, signal, sys
from ednn_dask import cli

real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "ednn_dask.model" and name not in sys.modules:
        builtins.__import__ = real_import
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_interrupt_a_library_swallows_is_raised_again_at_the_next_import(tmp_path):
    fields = ising_fields(tmp_path, 2)
    table = tmp_path / "t.csv"
    job = subprocess.run([sys.executable, "-c", _SWALLOWING, "score", *fields, "--model",
                          str(ISING), "--table", str(table)], capture_output=True, text=True,
                         timeout=120)
    assert job.returncode == 143, job.stderr
    assert job.stderr.startswith("ednn-dask score: interrupted (SIGTERM)"), job.stderr
    assert len(job.stderr.splitlines()) == 1, job.stderr
    assert not table.exists()
    assert leftovers(tmp_path) == []
