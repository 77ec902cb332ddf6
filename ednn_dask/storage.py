"""Writing outputs safely: a finished output or none at all, never one overwritten unasked.

Every writer of ednn-dask (fields, atoms tables, results tables, models, sheet
folders) writes into a hidden temporary sibling and renames it onto the target
once complete, so a path that exists holds a finished output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ednn_dask.errors import OutputExistsError


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
        path.unlink(missing_ok=True)


def temporary_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """The hidden sibling ``.NAME.TAG-PID`` that a writer of ``path`` works in."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write a file or folder into; rename it onto ``path`` on success.

    On an error (or an interrupt) the temporary output is removed and ``path`` is
    left as it was. With ``overwrite`` an existing output is parked aside and
    dropped only once the new one is in place.
    """
    target = Path(path)
    refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = temporary_sibling(target), temporary_sibling(target, "old")
    _remove(tmp)  # left by a crashed run with the same pid
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise OutputExistsError(f"nothing was written to {str(target)!r}.")
    if target.exists():
        _remove(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            _remove(tmp)
            raise
        _remove(old)
    else:
        os.replace(tmp, target)
