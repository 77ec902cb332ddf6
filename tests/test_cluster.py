"""A real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1.

The CLI and the Python API take the scheduler's address and give the energies of
the in-process runs; a worker killed (SIGKILL) while a job runs costs only its
tasks, which the scheduler reruns on the other worker: same energy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ednn_dask.atoms.materials import PorousSheet
from ednn_dask.atoms.stream import score_atoms
from ednn_dask.cli import main
from ednn_dask.field import make_field, save_field
from ednn_dask.score import score
from tests.helpers import ising_energy_np

BIN = Path(sys.executable).parent


def _dask(*args: str, **kw) -> subprocess.Popen:
    """`dask ...` from this environment, in its own process group, quiet."""
    return subprocess.Popen([str(BIN / "dask"), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, [worker processes]) of a scheduler and two workers."""
    from distributed import Client

    workdir = tmp_path_factory.mktemp("cluster")
    scheduler_file = workdir / "scheduler.json"
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                      "--scheduler-file", str(scheduler_file))
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    workers = [
        _dask("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
              "--memory-limit", "0", "--local-directory", str(workdir), env=env)
        for _ in range(2)
    ]
    try:
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for proc in (*workers, scheduler):
            _stop(proc)


def _ising_store(path, size, seed):
    spins = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), (size, size))
    save_field(make_field(spins, name="spins"), path, chunks={"y": 256, "x": 256})
    return ising_energy_np(spins.astype(float))


def test_cli_score_and_sheet_through_the_scheduler(cluster, exact_ising2d, atomistic, tmp_path,
                                                   capsys):
    address, _ = cluster
    _, model, _ = exact_ising2d
    expected = _ising_store(tmp_path / "ising.zarr", 512, 1)
    assert main(["score", str(tmp_path / "ising.zarr"), "--model", str(model.path),
                 "--scheduler", address, "--chunks", "128", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy"] == expected

    _, hexagonal = atomistic
    assert main(["sheet", "--size", "6nm", "--porosity", "0.15", "--seed", "4", "--model",
                 str(hexagonal.path), "--out", str(tmp_path / "sheet"), "--chunks", "256",
                 "--scheduler", address, "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    local = score_atoms(PorousSheet.square(60.0, porosity=0.15, seed=4), hexagonal, chunks=256)
    assert remote["energy"] == local.energy
    assert remote["n_atoms"] == local.n_atoms


def test_each_worker_loads_the_model_once(cluster, exact_ising2d, tmp_path):
    from distributed import Client

    address, _ = cluster
    _, model, _ = exact_ising2d
    expected = _ising_store(tmp_path / "ising.zarr", 1024, 2)
    with Client(address) as client:
        result = score(str(tmp_path / "ising.zarr"), model, client=client, chunks=128)
        assert result.n_chunks == 64 and result.energy == expected

        def sessions():
            from ednn_dask.model.runtime import session_keys

            return [sha for sha, _ in session_keys()]

        per_worker = client.run(sessions)
    assert len(per_worker) == 2
    for shas in per_worker.values():
        assert shas.count(model.sha256) == 1


def test_a_worker_killed_mid_job_costs_nothing_but_time(cluster, exact_ising2d, tmp_path):
    """SIGKILL one worker once the job is under way; the energy is still exact."""
    from distributed import Client

    address, workers = cluster
    _, model, _ = exact_ising2d
    expected = _ising_store(tmp_path / "ising.zarr", 3072, 3)
    with Client(address) as client:
        killed_at = []

        def kill_once_under_way():
            deadline = time.monotonic() + 60
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            os.killpg(workers[1].pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

        killer = threading.Thread(target=kill_once_under_way)
        killer.start()
        result = score(str(tmp_path / "ising.zarr"), model, client=client, chunks=256)
        finished_at = time.monotonic()
        killer.join()
        assert workers[1].wait(10) == -signal.SIGKILL
        assert killed_at[0] < finished_at, "the job ended before the worker was killed"
        assert len(client.scheduler_info()["workers"]) == 1
    assert result.energy == expected
    assert result.n_chunks == 144


def test_mc_atoms_in_regions_through_the_scheduler(cluster, tmp_path, capsys):
    """`mc atoms --regions --scheduler`: the regions run on the remote workers, whose running
    total is the energy of the positions they leave (rasterized anew)."""
    import xarray as xr

    from ednn_dask import energy
    from ednn_dask.atoms.structure import Structure

    address, _ = cluster
    porous = Path(__file__).resolve().parents[1] / "models" / "porous-f32c16.onnx"
    sheet = PorousSheet.square(60.0, seed=0).structure()
    structure = tmp_path / "porous.extxyz"
    sheet.to_ase().write(structure)
    assert main(["mc", "atoms", "--model", str(porous), "--structure", str(structure),
                 "--T", "1000", "--regions", "2", "--sweeps", "2", "--sweeps-per-phase", "0.25",
                 "--seed", "3", "--scheduler", address, "--out", str(tmp_path / "run.zarr"),
                 "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["regions"] == [2, 2] and remote["steps"] > 0
    assert remote["energy_drift"] == pytest.approx(0, abs=1e-6)
    stored = xr.open_zarr(tmp_path / "run.zarr", zarr_format=3, consolidated=False).load()
    assert stored.positions.shape == (2, len(sheet), 3) and stored.attrs["complete"]
    last = Structure(stored.positions[-1].values, sheet.numbers, sheet.cell, sheet.pbc)
    assert float(stored.energy[-1]) == pytest.approx(energy(last, porous), abs=2e-3)
