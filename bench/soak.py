"""Soak: one long-lived LocalCluster scores many small fields in a batch, then many sheets.

    python bench/soak.py [--fields 2000] [--sheets 200] [--size 50nm] [--workers 2]
                         [--json-out bench/results/soak.json]

The batch scores ``--fields`` small Ising fields (32 x 32, shipped 2-D model) into one
results table with :func:`ednn_dask.batch.score_batch`; then ``--sheets`` porous
graphene sheets of ``--size`` (a new seed each) are scored back to back with
:func:`ednn_dask.score_atoms` (shipped porous model), on the same cluster of
``--workers`` single-threaded worker processes. The workers' memory (resident set,
summed over workers, after ``gc.collect()`` and ``malloc_trim(0)`` in each) is taken
after the first 10 % of each phase and at its end (for the batch, after every tenth);
the pass criteria are a change below 10 % between the two, no task that erred (a
scheduler plugin counts transitions to ``erred``), the same worker processes at the
end as at the start, and a table that holds every field exactly once. Prints a table
and one JSON line, and writes the JSON with the machine and the date to ``--json-out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ednn_dask import load_model, make_field, save_field, score_atoms  # noqa: E402
from ednn_dask.atoms import PorousSheet  # noqa: E402
from ednn_dask.batch import read_table, score_batch  # noqa: E402
from ednn_dask.cli import parse_length  # noqa: E402


def worker_memory(client) -> tuple[float, dict]:
    """Summed resident memory of the workers in MB, and their pids.

    Each worker first runs ``gc.collect()`` and glibc's ``malloc_trim(0)``, so the figure
    is the memory in use, not the free memory the allocator keeps for reuse (which
    grows with fragmentation and is returned to the system on demand).
    """

    def rss() -> tuple[int, int]:
        import ctypes
        import os

        import psutil

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass
        return os.getpid(), psutil.Process().memory_info().rss

    found = client.run(rss)
    return sum(r for _, r in found.values()) / 1e6, {w: p for w, (p, _) in found.items()}


class ErredCounter:
    """A scheduler plugin that counts tasks that erred."""

    def __init__(self) -> None:
        self.erred = 0

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "erred":
            self.erred += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=2000)
    parser.add_argument("--sheets", type=int, default=200)
    parser.add_argument("--size", type=parse_length, default=parse_length("50nm"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()

    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Plugin(ErredCounter, SchedulerPlugin):
        pass

    ising, porous = ROOT / "models" / "ising-2d-f1c1.onnx", ROOT / "models" / "porous-f32c16.onnx"
    model = load_model(ising)
    result: dict = {"fields": args.fields, "sheets": args.sheets,
                    "sheet_size_nm": args.size / 10, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        plugin = Plugin()
        cluster.scheduler.add_plugin(plugin, name="erred-counter")
        rng = np.random.default_rng(0)
        fields = []
        for k in range(args.fields):
            spins = rng.choice(np.array([-1, 1], np.int8), (32, 32))
            fields.append(str(save_field(make_field(spins, name="spins"),
                                         Path(tmp, f"f{k:05d}.zarr")).resolve()))
        _, pids = worker_memory(client)
        table = Path(tmp, "soak.csv")
        marks: dict[str, float] = {}
        tenth = max(1, args.fields // 10)
        done = [0]

        curve: list[tuple[int, float]] = []  # (fields done, MB) at every tenth

        def on_field(path, row) -> None:
            done[0] += 1
            if done[0] % tenth == 0:
                curve.append((done[0], worker_memory(client)[0]))
            if done[0] == tenth:
                marks["batch_10"] = curve[-1][1]

        start = time.perf_counter()
        batch = score_batch(fields, model, table, client=client, on_field=on_field)
        result["batch_seconds"] = round(time.perf_counter() - start, 1)
        result["batch_memory_MB_curve"] = [[n, round(mb, 1)] for n, mb in curve]
        marks["batch_100"], _ = worker_memory(client)
        rows = read_table(table)
        result.update(rows=len(rows), unique_rows=int(rows["field"].nunique()),
                      every_field_once=sorted(rows["field"]) == sorted(fields),
                      batch_failed=len(batch.failed))

        start, energies = time.perf_counter(), []
        tenth = max(1, args.sheets // 10)
        for k in range(args.sheets):
            sheet = PorousSheet.square(args.size, porosity=0.1, seed=k)
            energies.append(score_atoms(sheet, porous, client=client).energy)
            if k + 1 == tenth:
                marks["sheets_10"], _ = worker_memory(client)
        result["sheets_seconds"] = round(time.perf_counter() - start, 1)
        marks["sheets_100"], end_pids = worker_memory(client)
        result.update(erred_tasks=plugin.erred, same_workers=end_pids == pids,
                      sheet_energies_finite=bool(np.isfinite(energies).all()))

    phases = ("batch", "sheets") if args.sheets else ("batch",)  # --sheets 0: the batch alone
    for phase in phases:
        at10, at100 = marks[f"{phase}_10"], marks[f"{phase}_100"]
        result[f"{phase}_memory_MB_at_10pct"] = round(at10, 1)
        result[f"{phase}_memory_MB_at_100pct"] = round(at100, 1)
        result[f"{phase}_memory_change"] = round(at100 / at10 - 1, 4)
    result["passed"] = bool(
        all(abs(result[f"{phase}_memory_change"]) < 0.10 for phase in phases)
        and result["erred_tasks"] == 0 and result["batch_failed"] == 0
        and result["every_field_once"] and result["same_workers"])

    print(f"{'phase':<8}{'items':>7}{'seconds':>9}{'MB at 10%':>11}{'MB at 100%':>12}"
          f"{'change':>9}")
    for phase, items in (("batch", args.fields), ("sheets", args.sheets))[:len(phases)]:
        print(f"{phase:<8}{items:>7}{result[f'{phase}_seconds']:>9.1f}"
              f"{result[f'{phase}_memory_MB_at_10pct']:>11.1f}"
              f"{result[f'{phase}_memory_MB_at_100pct']:>12.1f}"
              f"{result[f'{phase}_memory_change']:>+9.1%}")
    print(f"rows {result['rows']} (every field once: {result['every_field_once']}), erred tasks "
          f"{result['erred_tasks']}, same workers {result['same_workers']}: "
          f"{'PASS' if result['passed'] else 'FAIL'}")
    print(json.dumps(result))
    from record import write_result

    write_result(result, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
