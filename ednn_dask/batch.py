"""Batch scoring: many stored fields, one model, one resumable results table.

The table is a CSV file with one row per (field, model) pair. Each finished field
is added in one read-modify-write under the table's lock
(:func:`ednn_dask.storage.locked`): the table is read again, the row added unless
another job added it meanwhile, and the whole table written to a temporary
sibling that is then renamed onto it. So any number of jobs may fill one table at
once, it always holds exactly the fields finished so far, each once; an
interrupted job loses at most the field in flight, and running the same command
again scores only what is missing. Fields are identified by their absolute path,
models by the SHA-256 of their ONNX bytes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ednn_dask.compute import one_span
from ednn_dask.errors import EDNNError, OutputExistsError, ResultsTableError, StoreNotFoundError
from ednn_dask.interrupts import deferred
from ednn_dask.model import TileModel, load_model
from ednn_dask.score import score
from ednn_dask.storage import atomic_output, locked

COLUMNS = ("field", "model", "model_sha256", "energy", "target", "unit", "n_tiles",
           "n_chunks", "n_pixels", "method", "seconds", "scored_at")
KEY = ["field", "model_sha256"]


@dataclass
class BatchResult:
    """What one :func:`score_batch` call did."""

    table: pd.DataFrame  # the whole table as last written or read, this run's rows included
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the table already (or added meanwhile)
    failed: dict[str, str] = field(default_factory=dict)  # field -> error message

    def to_dict(self) -> dict:
        return {"scored": len(self.scored), "skipped": len(self.skipped),
                "failed": len(self.failed), "rows": len(self.table)}


def expand_fields(patterns: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute field paths from paths and glob patterns, in order, each once.

    A pattern is globbed only when no path of that exact name exists, so store
    names with ``[`` or ``*`` in them still work.
    """
    paths: list[str] = []
    for pattern in map(str, patterns):
        if os.path.exists(pattern) or not glob.has_magic(pattern):
            matches = [pattern]
        else:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise StoreNotFoundError(f"no field matches {pattern!r}; check the pattern.")
        paths += [os.path.abspath(m) for m in matches]
    return list(dict.fromkeys(paths))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """The results table at ``path``; an empty one when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return _empty_table()
    try:
        # pandas >= 3 parses floats exactly: energies read back bit for bit
        table = pd.read_csv(path, dtype={"model_sha256": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsTableError(
            f"{str(path)!r} is not an ednn-dask results table ({err}); "
            "give another --table path or move the file away."
        ) from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ResultsTableError(
            f"{str(path)!r} is not an ednn-dask results table: it lacks the columns "
            f"{missing}; give another --table path or move the file away."
        )
    if table.duplicated(KEY).any():
        raise ResultsTableError(f"{str(path)!r} lists a field twice for one model; "
                                "it was edited by hand: remove the duplicate rows.")
    return table


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the table to a hidden sibling, then rename it onto ``path`` (atomic).

    Jobs that share a table call this only under its lock (see :class:`SharedTable`).
    """
    with atomic_output(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)  # floats are written with repr: exact


class SharedTable:
    """A results table that other jobs may be filling at the same time.

    :meth:`keys` reads the table again only when the file changed (every write
    renames a new file onto it); :meth:`add` appends one row in a locked
    read-modify-write and leaves the table alone when another job added that
    (field, model) meanwhile. ``fresh`` starts a new table: the first :meth:`add`
    replaces whatever the file held.
    """

    def __init__(self, path: str | os.PathLike, *, fresh: bool = False,
                 lock_timeout: float | None = None) -> None:
        self.path, self.fresh, self.lock_timeout = Path(path), fresh, lock_timeout
        self._seen = None if fresh else _signature(self.path)
        self._hold(_empty_table() if fresh else read_table(self.path))
        with locked(self.path, timeout=lock_timeout):  # a folder we cannot write: say so now
            pass

    def _hold(self, table: pd.DataFrame) -> None:
        self.table = table
        self._keys = set(zip(table["field"], table["model_sha256"], strict=True))

    def _refresh(self) -> None:
        """Read the table again if another job wrote it since we last did."""
        if not self.fresh and (seen := _signature(self.path)) != self._seen:
            self._seen = seen  # taken before the read: a write in between is read next time
            self._hold(read_table(self.path))

    def keys(self) -> set[tuple[str, str]]:
        """(field, model SHA-256) of every row, as the file holds them now."""
        self._refresh()
        return set(self._keys)

    def add(self, row: dict) -> bool:
        """Append ``row`` unless its key is there already; ``False`` if it was."""
        with locked(self.path, timeout=self.lock_timeout):
            self._refresh()
            if (row["field"], row["model_sha256"]) in self._keys:
                return False
            table = pd.concat([self.table, pd.DataFrame([row])], ignore_index=True)
            write_table(table, self.path)
            self.fresh, self._seen, self.table = False, _signature(self.path), table
            self._keys.add((row["field"], row["model_sha256"]))
        return True


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def table_progress(fields: Sequence[str | os.PathLike], model: TileModel | str | os.PathLike,
                   table: str | os.PathLike) -> tuple[int, int]:
    """(fields the table holds for ``model``, fields given): how far a batch job got."""
    paths = expand_fields(fields)
    sha = load_model(model).sha256
    try:
        rows = read_table(table)
    except ResultsTableError:
        return 0, len(paths)
    have = set(rows.loc[rows["model_sha256"] == sha, "field"])
    return sum(p in have for p in paths), len(paths)


def open_table(table: str | os.PathLike, *, overwrite: bool = False,
               lock_timeout: float | None = None) -> SharedTable:
    """The results table ``table``, read and its lock taken once.

    Raises what a job would meet at its first row (a directory in the way, a table
    that is not ours, a lock another job holds, a folder we cannot write), so a
    caller can check before it starts a cluster.
    """
    if Path(table).is_dir():
        raise OutputExistsError(f"{str(table)!r} is a directory; give a file path for the table.")
    return SharedTable(table, fresh=overwrite, lock_timeout=lock_timeout)


def score_batch(
    fields: Sequence[str | os.PathLike],
    model: TileModel | str | os.PathLike,
    table: str | os.PathLike | SharedTable,
    *,
    overwrite: bool = False,
    on_field: Callable[[str, dict | str], None] | None = None,
    lock_timeout: float | None = None,
    **score_kwargs,
) -> BatchResult:
    """Score every stored field not yet in ``table`` with ``model``; append a row for each.

    A field that fails (bad values, wrong spacing, ...) is reported in
    ``BatchResult.failed`` and left out of the table, so a later run retries it;
    the other fields are scored. Several jobs may fill one table at once: each row
    is added under the table's lock, and a field another job finished meanwhile is
    skipped (its row is kept, not duplicated).

    Parameters
    ----------
    fields : sequence of str or path
        Paths or glob patterns of Zarr fields.
    model : TileModel or path
        The tile model, or the path of its ONNX file.
    table : str, path or SharedTable
        The CSV results table; created if missing, resumed if present. Or a table
        :func:`open_table` opened, which then carries its own ``overwrite`` and
        ``lock_timeout``.
    overwrite : bool
        Start a new table even if ``table`` exists (the old one is replaced only
        when the first new row is written).
    on_field : callable, optional
        Called with (field, row dict) after each field, or (field, message) when
        a field fails. A row added to the table is reported here before a SIGINT or
        SIGTERM stops the job.
    lock_timeout : float, optional
        Seconds to wait for another job's write of the table before giving up with
        :class:`~ednn_dask.errors.LockTimeoutError` (default
        :data:`ednn_dask.storage.LOCK_TIMEOUT`).
    **score_kwargs
        Passed to :func:`ednn_dask.score` (client, chunks, boundary, ...).
    """
    model = load_model(model)
    paths = expand_fields(fields)
    shared = (table if isinstance(table, SharedTable)
              else open_table(table, overwrite=overwrite, lock_timeout=lock_timeout))
    result = BatchResult(table=shared.table)
    # one span for the whole batch: the workers' per-span metrics stay one entry per
    # task prefix, instead of growing with every field (see compute.one_span)
    with one_span("ednn-batch"):
        for path in paths:
            if (path, model.sha256) in shared.keys():
                result.skipped.append(path)
                continue
            try:
                scored = score(path, model, keep_contributions=False, **score_kwargs)
            except EDNNError as err:
                result.failed[path] = str(err)
                if on_field:
                    on_field(path, str(err))
                continue
            row = _row(path, model, scored)
            with deferred():  # a row in the table is a row reported
                if not shared.add(row):  # another job scored it meanwhile: its row stands
                    result.skipped.append(path)
                    continue
                result.scored.append(path)
                if on_field:
                    on_field(path, row)
    result.table = shared.table
    return result


def _row(path: str, model: TileModel, scored) -> dict:
    return {
        "field": path,
        "model": model.name,
        "model_sha256": model.sha256,
        "energy": scored.energy,
        "target": scored.target,
        "unit": scored.unit,
        "n_tiles": scored.n_tiles,
        "n_chunks": scored.n_chunks,
        "n_pixels": scored.n_pixels,
        "method": scored.method,
        "seconds": round(scored.seconds["total"], 6),
        "scored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
