"""Writing outputs safely: a finished output or none at all, never one overwritten unasked.

Every writer of ednn-dask (fields, atoms tables, results tables, models, sheet
folders) writes into a hidden temporary sibling and renames it onto the target
once complete, so a path that exists holds a finished output. A write that
fails because the disk is full, the folder is not writable or the file system
is read-only removes the temporary sibling and raises
:class:`~ednn_dask.errors.OutputWriteError`, which names the output.

Outputs that several jobs update (a results table, a reference-data store) are
changed only while holding their lock, :func:`locked`: a ``filelock.FileLock``
(``flock``) on the file ``.NAME.lock`` beside them, which the operating system
releases when its holder dies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ednn_dask.errors import LockTimeoutError, OutputExistsError, OutputWriteError

#: seconds a job waits for the lock of a shared output before it gives up with one line;
#: the environment variable ``EDNN_DASK_LOCK_TIMEOUT`` overrides it
LOCK_TIMEOUT = 60.0
#: test hooks (environment variables, read on each use): seconds to sleep while holding a
#: lock, widening every read-modify-write window; a file that receives one line per lock
#: event ("PID MONOTONIC_SECONDS EVENT PATH"), so tests can see how jobs interleaved
TEST_DELAY_ENV, TEST_TRACE_ENV = "EDNN_DASK_TEST_LOCK_DELAY", "EDNN_DASK_TEST_TRACE"

#: errnos meaning "this output cannot be written here", whatever the writer was doing
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_PERMISSION = {errno.EACCES, errno.EPERM}
WRITE_ERRNOS = _DISK_FULL | _PERMISSION | {errno.EROFS, errno.EFBIG}

# temporary outputs of failed writes: tasks that were running on a cluster when the write
# failed can recreate them after their removal; remove_leftovers() sweeps them again
_FAILED: set[Path] = set()


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false."""
    if not overwrite and Path(path).exists():
        raise OutputExistsError(
            f"{str(path)!r} exists already; pass overwrite=True (CLI: --overwrite) to replace it."
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _remove_surely(path: Path) -> None:
    """Remove ``path``; an interrupt arriving meanwhile does not stop the removal."""
    try:
        _remove(path)
    except BaseException:
        _remove(path)
        raise


def _remove_settled(path: Path) -> None:
    """Remove ``path`` and keep removing it while tasks still in flight recreate it."""
    _FAILED.add(path)
    _remove_surely(path)
    deadline = time.monotonic() + 2.0
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.2:
        time.sleep(0.05)
        if path.exists():
            _remove_surely(path)
            quiet_since = time.monotonic()


def remove_leftovers() -> list[Path]:
    """Remove what failed or interrupted writes of this process left; return what was removed.

    A task that was still running on a cluster when its output failed can write
    into the removed temporary folder once more. Call this once the cluster has
    stopped (the command line does, on every exit).
    """
    removed = [p for p in _FAILED if p.exists() or p.is_symlink()]
    for path in removed:
        _remove(path)
    _FAILED.clear()
    return removed


def temporary_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """The hidden sibling ``.NAME.TAG-PID`` that a writer of ``path`` works in."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write a file or folder into; rename it onto ``path`` on success.

    On an error (or an interrupt) the temporary output is removed and ``path`` is
    left as it was. With ``overwrite`` an existing output is parked aside and
    dropped only once the new one is in place; without it, an output that another
    job put at ``path`` meanwhile is kept and this one is refused. A full disk, a
    folder without write permission or a read-only file system raise
    :class:`~ednn_dask.errors.OutputWriteError` naming ``path``.
    """
    target = Path(path)
    refuse_existing(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, target) if err.errno in WRITE_ERRNOS else err from None
    tmp, old = temporary_sibling(target), temporary_sibling(target, "old")
    _remove(tmp)  # left by a crashed run with the same pid
    try:
        yield tmp
    except BaseException as err:
        # the space this output had: what it wrote and what was still free when it failed
        had = _size_of(tmp) + _free(tmp.parent) if _is_write_error(err, tmp) else None
        _remove_settled(tmp)
        if had is not None:
            raise write_error(err, target, available=had) from None
        raise
    try:
        _put_in_place(tmp, target, old, overwrite)
    except BaseException as err:
        _remove_surely(tmp)
        if _is_write_error(err, tmp):
            raise write_error(err, target) from None
        raise


def _put_in_place(tmp: Path, target: Path, old: Path, overwrite: bool) -> None:
    if not tmp.exists():
        raise OutputExistsError(f"nothing was written to {str(target)!r}.")
    if not target.exists():
        os.replace(tmp, target)
        return
    if not overwrite:
        raise OutputExistsError(
            f"{str(target)!r} was written by another job while this one wrote it; it is kept. "
            "Pass overwrite=True (CLI: --overwrite) to replace it."
        )
    _remove(old)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    _remove_surely(old)


def _is_write_error(err: BaseException, tmp: Path) -> bool:
    """An OSError that says the output cannot be written (not, say, a missing input)."""
    if not isinstance(err, OSError) or isinstance(err, OutputWriteError):
        return False
    if err.errno not in WRITE_ERRNOS:
        return False
    if err.errno in _PERMISSION and err.filename is not None:
        # permission denied on an input read inside the block is the input's problem
        where = Path(os.fsdecode(err.filename)).absolute()
        return where.is_relative_to(tmp.absolute().parent)
    return True


def write_error(err: OSError, target: str | os.PathLike, *,
                available: int | None = None) -> OutputWriteError:
    """One actionable :class:`OutputWriteError` for an OSError met writing ``target``.

    The message names ``target`` (never the temporary sibling) and what it needs:
    more than the ``available`` bytes (default: free now) of its file system,
    write permission on its folder, a writable file system.
    """
    target = Path(target)
    folder = _existing_parent(target)
    name = str(target)
    if err.errno in _DISK_FULL:
        usage = shutil.disk_usage(folder)
        had = usage.free if available is None else available
        what = "no space left" if err.errno == errno.ENOSPC else "the disk quota is exceeded"
        message = (f"{what} on the file system of {name!r} while writing it: it needs more than "
                   f"the {_human(had)} free there ({_human(usage.total)} in all); free space "
                   "there or write it elsewhere.")
    elif err.errno == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = ("the largest file its file system holds" if limit == resource.RLIM_INFINITY
               else f"this process's file-size limit of {_human(limit)} (ulimit -f)")
        message = (f"writing {name!r} went over {cap}; raise the limit or write it "
                   "elsewhere.")
    elif err.errno == errno.EROFS:
        message = (f"{name!r} is on a read-only file system; write it elsewhere or remount "
                   "that file system read-write.")
    else:
        try:
            st = folder.stat()
            about = f" (mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid})"
        except OSError:
            about = ""
        message = (f"permission denied writing {name!r}: the folder {str(folder)!r}{about} does "
                   f"not let this user (uid {os.geteuid()}) create files in it; it needs write "
                   "and execute permission there: give another path or change its permissions.")
    return OutputWriteError(message, err.errno, name)


def _existing_parent(path: Path) -> Path:
    path = path.absolute().parent
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(_existing_parent(path / "x")).free
    except OSError:
        return 0


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _human(n: int | None) -> str:
    n = float(n or 0)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file ``.NAME.lock`` of a shared output ``path`` (kept after use)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock of the shared output ``path`` for a read-modify-write.

    Waits at most ``timeout`` seconds (default :data:`LOCK_TIMEOUT`, or the
    environment variable ``EDNN_DASK_LOCK_TIMEOUT``), then raises
    :class:`~ednn_dask.errors.LockTimeoutError` naming the holder. The lock is an
    ``flock`` on ``.NAME.lock`` beside ``path``: the operating system releases it
    when its holder exits, however it exits, so no stale lock outlives a job.
    Not reentrant: one process takes it once at a time.
    """
    from filelock import FileLock, Timeout

    if timeout is None:
        timeout = float(os.environ.get("EDNN_DASK_LOCK_TIMEOUT", LOCK_TIMEOUT))
    file = lock_path(path)
    lock = FileLock(file, timeout=timeout)
    trace_event("wait", path)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeoutError(
            f"could not lock {str(path)!r} within {timeout:g} s; another job holds it "
            f"({_holder(file)}): wait for it to finish and run this again, or allow longer "
            "with EDNN_DASK_LOCK_TIMEOUT=SECONDS."
        ) from None
    except OSError as err:  # the lock file cannot be made: nor can the output be written
        raise write_error(err, path) if err.errno in WRITE_ERRNOS else err from None
    try:
        with contextlib.suppress(OSError):  # who holds it, for the message of a job that waits
            file.write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                            f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: "
                            f"{' '.join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:120]}")
        trace_event("locked", path)
        delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
        if delay:
            time.sleep(delay)
        yield
    finally:
        trace_event("released", path)
        lock.release()


def _holder(file: Path) -> str:
    try:
        text = file.read_text().strip()
    except OSError:
        text = ""
    return text or f"lock file {str(file)!r}"


def trace_event(event: str, path: str | os.PathLike) -> None:
    """Test hook: one line per lock event in the file ``$EDNN_DASK_TEST_TRACE``."""
    trace = os.environ.get(TEST_TRACE_ENV)
    if trace:
        with open(trace, "a") as f:  # one short write per line: lines do not interleave
            f.write(f"{os.getpid()} {time.monotonic():.6f} {event} {path}\n")
