"""Jobs that share an output lose nothing: one results table, one reference-data store.

Every job is a real ``ednn-dask`` process. The interleaving is driven through the
storage module's test hooks (environment variables): ``EDNN_DASK_TEST_LOCK_DELAY``
makes a job sleep while it holds the table's lock, widening each read-modify-write,
and ``EDNN_DASK_TEST_TRACE`` has every job log when it waited for, took and released
the lock, so the test can check that no two jobs ever held it at once. To make the
jobs contend from their first row, the test itself holds the table's lock until
every job is waiting for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ednn_dask.batch import read_table
from ednn_dask.score import score
from ednn_dask.storage import locked
from tests.jobs import (
    ISING,
    held_sections,
    ising_fields,
    leftovers,
    scheduler,
    start,
    trace_events,
    wait_for,
)

N_FIELDS = 12


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> dict[str, float]:
    """Twelve small Ising fields and their energies, scored once in this process."""
    paths = ising_fields(tmp_path_factory.mktemp("shared-fields"), N_FIELDS)
    return {p: score(p, str(ISING)).energy for p in paths}


@st.composite
def plans(draw, max_jobs: int):
    """Which job scores which field (every field by one job or more), and each job's timing."""
    jobs = draw(st.integers(2, max_jobs))
    n = draw(st.integers(jobs, N_FIELDS))
    owners = [draw(st.sets(st.integers(0, jobs - 1), min_size=1)) | ({k} if k < jobs else set())
              for k in range(n)]
    delays = draw(st.lists(st.sampled_from([0.0, 0.02, 0.1, 0.25]), min_size=jobs,
                           max_size=jobs))
    return owners, delays


def run_writers(fields: list[str], owners: list[set[int]], delays: list[float], table: Path):
    """Start one job per delay, each scoring its fields into ``table``; all contend at once."""
    trace = table.with_name(table.name + ".trace")
    trace.unlink(missing_ok=True)
    by_job = [[f for f, who in zip(fields, owners) if j in who] for j in range(len(delays))]
    with locked(table):  # held by the test until every job waits for it
        jobs = [start(["score", *mine, "--model", str(ISING), "--table", str(table)],
                      env={"EDNN_DASK_TEST_LOCK_DELAY": str(delay),
                           "EDNN_DASK_TEST_TRACE": str(trace)})
                for mine, delay in zip(by_job, delays)]
        wait_for(lambda: {pid for pid, _, event, _ in trace_events(trace) if event == "wait"}
                 >= {job.pid for job in jobs}, what="every job waiting for the table's lock")
    results = [(job, *job.communicate(timeout=300)) for job in jobs]
    return results, trace_events(trace), by_job


def check_one_table(fields: dict[str, float], owners, delays, table: Path) -> None:
    names = sorted(fields)[: len(owners)]
    results, events, by_job = run_writers(names, owners, delays, table)
    for job, _, err in results:
        assert job.returncode == 0 and err.count("\n") == 1, err  # one line: the summary
    rows = read_table(table)
    assert sorted(rows["field"]) == names  # every field, each exactly once
    assert dict(zip(rows["field"], rows["energy"], strict=True)) == {f: fields[f] for f in names}
    # each job says how many it added and how many another job had added first
    said = [err.strip().splitlines()[-1] for _, _, err in results]
    scored = [int(line.split(": ")[1].split(" scored")[0]) for line in said]
    assert sum(scored) == len(names)
    for line, mine, n in zip(said, by_job, scored):
        assert line == f"{table}: {n} scored, {len(mine) - n} already there, 0 failed"
    # the lock did its work: no two jobs ever held it at once
    sections = held_sections(events)
    assert len({pid for pid, _, _ in sections}) == len(delays)
    for (_, _, end), (_, begin, _) in zip(sections, sections[1:]):
        assert end <= begin
    assert leftovers(table.parent) == []


@example(plan=([{0}] * 6 + [{1}] * 6, [0.1, 0.1]))  # the two jobs, 6 fields each
@given(plan=plans(max_jobs=3))
@settings(max_examples=1, deadline=None, derandomize=True, database=None)
def test_jobs_scoring_into_one_table_keep_every_row_once(fields, tmp_path_factory, plan):
    check_one_table(fields, *plan, tmp_path_factory.mktemp("table") / "t.csv")


@pytest.mark.slow
@given(plan=plans(max_jobs=4))
@settings(max_examples=12, deadline=None, database=None)
def test_many_interleavings_of_up_to_four_jobs_keep_every_row_once(fields, tmp_path_factory,
                                                                   plan):
    check_one_table(fields, *plan, tmp_path_factory.mktemp("table") / "t.csv")


def test_a_job_that_cannot_get_the_lock_says_so_in_one_line(fields, tmp_path):
    table = tmp_path / "t.csv"
    with locked(table):  # another job (this test) holds the table
        job = start(["score", *sorted(fields)[:2], "--model", str(ISING), "--table", str(table)],
                    env={"EDNN_DASK_LOCK_TIMEOUT": "1"})
        out, err = job.communicate(timeout=300)
    assert job.returncode == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"ednn-dask score: error: could not lock {str(table)!r} within 1 s; "
                          f"another job holds it (pid ")
    assert err.rstrip().endswith("wait for it to finish and run this again, or allow longer "
                                 "with EDNN_DASK_LOCK_TIMEOUT=SECONDS.")
    assert not table.exists()




def test_two_data_runs_fill_one_reference_store_each_structure_once(tmp_path):
    """Two ``ednn-dask data hexagonal`` runs on one store and one scheduler: no structure twice."""
    pytest.importorskip("tblite")
    import zarr

    n, store, trace = 24, tmp_path / "ref.zarr", tmp_path / "trace"
    address, procs = scheduler(threads=2)
    try:
        argv = ["data", "hexagonal", str(store), "--n", str(n), "--cells", "2", "1",
                "--scheduler", address, "--json"]
        env = {"EDNN_DASK_TEST_TRACE": str(trace), "EDNN_DASK_TEST_LOCK_DELAY": "0.02"}
        with locked(store):  # held until both runs wait for it: they start together
            runs = [start(argv, env=env) for _ in range(2)]
            wait_for(lambda: {p for p, _, e, _ in trace_events(trace) if e == "wait"}
                     >= {run.pid for run in runs}, what="both runs waiting for the store")
        outs = [run.communicate(timeout=300) for run in runs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    for run, (_, err) in zip(runs, outs):
        assert run.returncode == 0, err
    submitted = [(pid, int(event.split()[1])) for pid, _, event, _ in trace_events(trace)
                 if event.startswith("submit")]
    assert sorted(k for _, k in submitted) == list(range(n))  # each structure exactly once
    assert len({pid for pid, _ in submitted}) == 2  # and both runs took a share
    status = zarr.open_group(store, mode="r", zarr_format=3)["status"][:]
    assert (status == 1).all()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_the_claims_of_a_killed_data_run_lapse_and_an_interrupted_one_says_what_it_kept(
        tmp_path):
    """SIGKILL leaves a claim file whose flock died with its run; the next run takes over."""
    pytest.importorskip("tblite")
    import signal

    import zarr

    n, store, trace = 16, tmp_path / "ref.zarr", tmp_path / "trace"
    argv = ["data", "hexagonal", str(store), "--n", str(n), "--cells", "2", "1"]
    env = {"EDNN_DASK_TEST_TRACE": str(trace), "EDNN_DASK_TEST_LOCK_DELAY": "0.2"}
    killed = start(argv, env=env)
    wait_for(lambda: any(e.startswith("submit") for _, _, e, _ in trace_events(trace)),
             what="the first submission", job=killed)
    killed.kill()
    killed.wait()
    claims = list((tmp_path / ".ref.zarr.claims").glob("*.claim"))
    assert [c.name.rsplit("-", 1)[1] for c in claims] == [f"{killed.pid}.claim"]

    interrupted = start(argv, env=env)
    wait_for(lambda: sum(e == "locked" and p == interrupted.pid
                         for p, _, e, _ in trace_events(trace)) >= 6,
             what="a few results written", job=interrupted)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=120)
    status = zarr.open_group(store, mode="r", zarr_format=3)["status"][:]
    done = int((status == 1).sum())
    assert interrupted.returncode == 130 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"ednn-dask data: interrupted (SIGINT) with {done} of {n} "
                                    f"energies in {str(store)!r}; run the same command to "
                                    "continue.")
    assert not (tmp_path / ".ref.zarr.claims").exists()  # the dead run's claims lapsed too

    last = start([*argv, "--json"])
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert json.loads(out) == {"store": str(store), "done": n, "failed": 0, "pending": 0}
    assert leftovers(tmp_path) == []
