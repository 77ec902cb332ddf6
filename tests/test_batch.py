"""Batch scoring into a resumable results table: exact energies, each field once, no lost rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from ednn_dask.batch import COLUMNS, open_table, read_table, score_batch
from ednn_dask.cli import main
from ednn_dask.errors import ResultsTableError, StoreNotFoundError
from ednn_dask.field import make_field, save_field
from tests.helpers import ising_energy_np


def ising_stores(directory, n, size=24, first_seed=0):
    """``n`` Zarr Ising fields and their exact energies."""
    energies = {}
    for seed in range(first_seed, first_seed + n):
        spins = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), (size, size))
        path = save_field(make_field(spins, name="spins"), directory / f"ising-{seed:02d}.zarr",
                          chunks={"y": size // 2, "x": size // 2})
        energies[str(path.resolve())] = ising_energy_np(spins.astype(float))
    return energies


def test_table_holds_exact_energies_and_a_rerun_adds_nothing(exact_ising2d, tmp_path):
    _, model, tile = exact_ising2d
    expected = ising_stores(tmp_path, 3)
    table = tmp_path / "results.csv"
    first = score_batch(sorted(expected), model, table)
    assert (len(first.scored), len(first.skipped), first.failed) == (3, 0, {})
    rows = read_table(table)
    assert list(rows.columns) == list(COLUMNS)
    assert dict(zip(rows["field"], rows["energy"], strict=True)) == expected  # exact
    assert set(rows["model_sha256"]) == {model.sha256}
    before = table.read_bytes()

    again = score_batch(sorted(expected), model, table)
    assert (again.scored, len(again.skipped)) == ([], 3)
    assert table.read_bytes() == before

    # a new field and a second model: only the missing (field, model) pairs are scored
    expected |= ising_stores(tmp_path, 1, first_seed=3)
    more = score_batch([str(tmp_path / "ising-*.zarr")], model, table)
    assert (len(more.scored), len(more.skipped)) == (1, 3)
    other = score_batch([str(tmp_path / "ising-*.zarr")], tile, table)
    assert len(other.scored) == 4
    rows = read_table(table)
    assert len(rows) == 8 and not rows.duplicated(["field", "model_sha256"]).any()
    for _, row in rows.iterrows():
        assert row["energy"] == expected[row["field"]]


def test_a_table_opened_early_sees_rows_written_since(exact_ising2d, tmp_path):
    # the CLI opens the table before its cluster starts; another job may write meanwhile
    _, model, _ = exact_ising2d
    expected = ising_stores(tmp_path, 3)
    table = tmp_path / "results.csv"
    opened = open_table(table)
    score_batch(sorted(expected)[:2], model, table)  # the other job
    result = score_batch(sorted(expected), model, opened)
    assert (len(result.scored), len(result.skipped)) == (1, 2)
    rows = read_table(table)
    assert dict(zip(rows["field"], rows["energy"], strict=True)) == expected


def test_a_signal_right_after_a_row_is_written_comes_after_its_report(exact_ising2d, tmp_path):
    """SIGTERM the moment a row reaches the table: the row is reported, then the job stops."""
    _, model, _ = exact_ising2d
    expected = ising_stores(tmp_path, 3)
    table = open_table(tmp_path / "t.csv")
    add = table.add

    def add_then_signal(row):
        added = add(row)
        signal.raise_signal(signal.SIGTERM)
        return added

    def stop(signum, frame):
        raise InterruptedError

    table.add = add_then_signal
    reported = []
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(InterruptedError):
            score_batch(sorted(expected), model, table,
                        on_field=lambda field, row: reported.append(field))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert reported == list(read_table(tmp_path / "t.csv")["field"]) == sorted(expected)[:1]


def test_a_bad_field_is_reported_and_left_for_a_retry(exact_ising2d, tmp_path, capsys):
    _, model, _ = exact_ising2d
    expected = ising_stores(tmp_path, 2)
    bad = save_field(make_field(np.full((24, 24), np.nan, np.float32)), tmp_path / "nan.zarr")
    table = tmp_path / "results.csv"
    argv = ["score", *sorted(expected), str(bad), "--model", str(model.path), "--table",
            str(table)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nan.zarr: error:" in err and "NaN" in err and "2 scored" in err
    assert set(read_table(table)["field"]) == set(expected)


@pytest.mark.parametrize(
    "content, message",
    [("a,b\n1,2\n", "lacks the columns"), ("\x00\xff\xfe", "not an ednn-dask results table")],
)
def test_a_file_that_is_not_a_results_table_is_refused(exact_ising2d, tmp_path, content,
                                                       message):
    _, model, _ = exact_ising2d
    fields = ising_stores(tmp_path, 1)
    table = tmp_path / "results.csv"
    table.write_bytes(content.encode("latin-1"))
    with pytest.raises(ResultsTableError, match=message):
        score_batch(list(fields), model, table)
    assert table.read_bytes() == content.encode("latin-1")  # untouched
    assert len(score_batch(list(fields), model, table, overwrite=True).scored) == 1


def test_a_pattern_that_matches_nothing_is_refused(exact_ising2d, tmp_path):
    _, model, _ = exact_ising2d
    with pytest.raises(StoreNotFoundError, match="no field matches"):
        score_batch([str(tmp_path / "*.zarr")], model, tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


def _table_rows(path):
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def test_an_interrupted_batch_job_resumes_to_the_uninterrupted_table(exact_ising2d, tmp_path):
    """Kill the CLI (SIGKILL, no clean-up) after its first row; run it again.

    The final table lists every field exactly once, with the energies of a run
    that was never interrupted.
    """
    _, model, _ = exact_ising2d
    n = 8
    expected = ising_stores(tmp_path, n, size=768)
    argv = [sys.executable, "-m", "ednn_dask.cli", "score", *sorted(expected),
            "--model", str(model.path)]
    interrupted, clean = tmp_path / "interrupted.csv", tmp_path / "clean.csv"

    job = subprocess.Popen([*argv, "--table", str(interrupted)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _table_rows(interrupted) == 0 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    partial = _table_rows(interrupted)
    assert 1 <= partial < n, f"the job was not caught part-way ({partial} of {n} rows)"

    subprocess.run([*argv, "--table", str(interrupted)], check=True, capture_output=True)
    subprocess.run([*argv, "--table", str(clean)], check=True, capture_output=True)
    resumed, reference = read_table(interrupted), read_table(clean)
    assert sorted(resumed["field"]) == sorted(expected)  # each once
    assert (resumed.set_index("field")["energy"].sort_index()
            == reference.set_index("field")["energy"].sort_index()).all()
    assert dict(zip(resumed["field"], resumed["energy"], strict=True)) == expected


def test_a_table_of_3d_volumes_holds_their_exact_energies(exact_ising3d, tmp_path, capsys):
    _, model = exact_ising3d
    expected = {}
    for seed, side in enumerate((8, 12, 16)):
        spins = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), (side,) * 3)
        path = save_field(make_field(spins, name="spins"), tmp_path / f"v{seed}.zarr",
                          chunks={d: side // 2 for d in ("z", "y", "x")})
        expected[str(path.resolve())] = ising_energy_np(spins.astype(float))
    table = tmp_path / "volumes.csv"
    assert main(["score", str(tmp_path / "v*.zarr"), "--model", str(model.path),
                 "--table", str(table)]) == 0
    rows = read_table(table)
    assert dict(zip(rows["field"], rows["energy"], strict=True)) == expected
    assert sorted(rows["n_pixels"]) == [8**3, 12**3, 16**3]
