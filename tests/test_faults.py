"""Every interruption ends in one line and a clean state.

Real ``ednn-dask`` processes meet real faults: SIGINT and SIGTERM, a full file
system (a 3 MB tmpfs mounted in a private mount namespace with ``unshare``; where
that is not allowed, the file-size limit ``RLIMIT_FSIZE`` stands in, which makes a
write fail with EFBIG as a full disk fails with ENOSPC), a read-only file system, a
folder without write permission, and a ``dask scheduler`` process killed mid-job.
Each must print one line naming what happened, exit with its status and leave no
temporary output behind.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from ednn_dask.batch import read_table
from tests.jobs import CLI, ISING, POROUS, ising_fields, leftovers, scheduler, start, wait_for


def rows(table: Path) -> int:
    try:
        return len(pd.read_csv(table))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.fixture(scope="module")
def big_fields(tmp_path_factory) -> list[str]:
    """Eight 384 x 384 fields: a job over them runs long enough to be interrupted."""
    return ising_fields(tmp_path_factory.mktemp("fields"), 8, size=384)


@pytest.mark.parametrize("sig, name, status", [(signal.SIGINT, "SIGINT", 130),
                                               (signal.SIGTERM, "SIGTERM", 143)])
def test_a_signal_stops_a_batch_job_with_one_line_and_the_table_kept(big_fields, tmp_path,
                                                                     sig, name, status):
    table = tmp_path / "t.csv"
    argv = ["score", *big_fields, "--model", str(ISING), "--table", str(table)]
    job = start(argv)
    wait_for(lambda: rows(table) >= 1, what="the first row", job=job)
    job.send_signal(sig)
    out, err = job.communicate(timeout=120)
    kept = rows(table)
    assert job.returncode == status
    assert err == (f"ednn-dask score: interrupted ({name}) after {kept} of 8 fields, kept in "
                   f"{str(table)!r}; run the same command to continue.\n")
    assert 1 <= kept < 8 and len(out.splitlines()) == kept
    assert leftovers(tmp_path) == []
    if sig == signal.SIGTERM:  # the same command continues where it stopped
        again = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert sorted(read_table(table)["field"]) == sorted(big_fields)


def test_sigterm_stops_a_sheet_and_removes_its_temporary_outputs(tmp_path):
    out, field = tmp_path / "sheet", tmp_path / "f.zarr"
    job = start(["sheet", "--size", "60nm", "--model", str(POROUS), "--out", str(out),
                 "--field", str(field)], cwd=tmp_path)
    seen = []
    # the progress bar on stderr says the cluster is at work
    wait_for(lambda: seen.append(job.stderr.read(1)) or "Completed" in "".join(seen[-40:]),
             what="the progress bar", job=job)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143
    assert err.splitlines()[-1] == ("ednn-dask sheet: interrupted (SIGTERM); nothing written "
                                    "(temporary files removed); run the same command to start "
                                    "again.")
    assert "Traceback" not in err and sorted(os.listdir(tmp_path)) == []


def _namespaces() -> str | None:
    """The ``unshare`` flags that give this user a private mount namespace, if any do."""
    if not shutil.which("unshare"):
        return None
    for flags in ("-m", "-rm"):
        try:
            done = subprocess.run(["unshare", flags, "sh", "-c",
                                   "mount -t tmpfs -o size=1m tmpfs /mnt"],
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return flags
    return None


UNSHARE = _namespaces()
needs_tmpfs = pytest.mark.skipif(UNSHARE is None, reason="no private mount namespace here "
                                 "(unshare -m needs root, unshare -rm user namespaces)")


def in_tmpfs(options: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``ednn-dask ARGV`` with a fresh tmpfs (``mount -o OPTIONS``) at ``cwd/mnt``.

    The tmpfs lives in a private mount namespace, so it vanishes with the command;
    what was left in it is listed after the command, on stdout's last line.
    """
    mnt = cwd / "mnt"
    mnt.mkdir()
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; "$@"; rc=$?; '
              'echo; echo "left: $(ls -A "$MNT")"; exit $rc')
    return subprocess.run(["unshare", UNSHARE, "sh", "-c", script, "sh", options, str(mnt),
                           *CLI, *argv], cwd=cwd, env={**os.environ, "MNT": str(mnt)},
                          capture_output=True, text=True, timeout=300)


@needs_tmpfs
def test_a_full_disk_is_one_line_naming_the_output(tmp_path):
    field = tmp_path / "mnt" / "f.zarr"
    done = in_tmpfs("size=3m", ["sheet", "--size", "20nm", "--model", str(POROUS), "--out",
                                str(tmp_path / "mnt" / "sheet"), "--field", str(field), "--json"],
                    tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"ednn-dask sheet: error: no space left on the file system of "
                           f"{str(field)!r} while writing it: it needs more than the 3.1 MB "
                           "free there (3.1 MB in all); free space there or write it "
                           "elsewhere.\n")
    assert done.stdout.splitlines()[-1] == "left: "  # no temporary folder survives


def test_a_file_size_limit_is_one_line_naming_the_output(tmp_path):
    """Where no tmpfs can be mounted, too: ``ulimit -f`` makes the same write fail (EFBIG)."""
    field = tmp_path / "f.zarr"

    def limit():  # in the child only; Python ignores SIGXFSZ, so the write raises EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    done = subprocess.run([*CLI, "sheet", "--size", "20nm", "--model", str(POROUS), "--out",
                           str(tmp_path / "sheet"), "--field", str(field), "--json"],
                          preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"ednn-dask sheet: error: writing {str(field)!r} went over this "
                           "process's file-size limit of 1.0 MB (ulimit -f); raise the limit or "
                           "write it elsewhere.\n")
    assert os.listdir(tmp_path) == []


@needs_tmpfs
def test_a_read_only_file_system_is_one_line_naming_the_table(tmp_path):
    (field,) = ising_fields(tmp_path, 1)
    table = tmp_path / "mnt" / "t.csv"
    done = in_tmpfs("size=1m,ro", ["score", field, "--model", str(ISING), "--table", str(table)],
                    tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"ednn-dask score: error: {str(table)!r} is on a read-only file "
                           "system; write it elsewhere or remount that file system "
                           "read-write.\n")


def test_a_folder_without_write_permission_is_one_line_naming_the_table(tmp_path):
    (field,) = ising_fields(tmp_path, 1)
    # a folder this user may not write to; root may write anywhere, so it runs as nobody
    base = Path(tempfile.mkdtemp(prefix="ednn-perm-"))
    try:
        base.chmod(0o755)
        locked_out, home = base / "locked", base / "home"
        locked_out.mkdir(mode=0o555)
        home.mkdir()
        uid, run_as = os.geteuid(), []
        if uid == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv to drop to an unprivileged user")
            uid = 65534  # nobody
            os.chown(home, uid, uid)
            run_as = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        table = locked_out / "t.csv"
        done = subprocess.run([*run_as, *CLI, "score", field, "--model", str(ISING), "--table",
                               str(table)], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HOME": str(home)})
        assert done.returncode == 2
        assert done.stderr == (
            f"ednn-dask score: error: permission denied writing {str(table)!r}: the folder "
            f"{str(locked_out)!r} (mode dr-xr-xr-x, owner uid {os.geteuid()}) does not let this "
            f"user (uid {uid}) create files in it; it needs write and execute permission "
            "there: give another path or change its permissions.\n")
        assert os.listdir(locked_out) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_lost_scheduler_is_one_line_naming_its_address(big_fields, tmp_path):
    table = tmp_path / "t.csv"
    address, (sched, worker) = scheduler()
    try:
        # distributed waits this long for a lost scheduler to come back before giving up
        job = start(["score", *big_fields, "--model", str(ISING), "--table", str(table),
                     "--scheduler", address],
                    env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"})
        wait_for(lambda: rows(table) >= 1, what="the first row", job=job)
        sched.kill()
        sched.wait()
        out, err = job.communicate(timeout=120)
    finally:
        for proc in (sched, worker):
            proc.kill()
            proc.wait()
    kept = rows(table)
    assert job.returncode == 2
    assert err.startswith(f"ednn-dask score: error: lost the dask scheduler at {address!r} (")
    assert err.endswith(f") after {kept} of 8 fields, kept in {str(table)!r}; start it again "
                        "and run the same command to continue.\n")
    assert err.count("\n") == 1 and 1 <= kept < 8
    assert leftovers(tmp_path) == []
