"""Batch scoring: many stored fields, one model, one resumable results table.

The table is a CSV file with one row per (field, model) pair. It is rewritten
whole after every field, to a temporary sibling that is then renamed onto it, so
it always holds exactly the fields finished so far: an interrupted job loses at
most the field in flight, and running the same command again scores only what
is missing. Fields are identified by their absolute path, models by the SHA-256
of their ONNX bytes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ednn_dask.errors import EDNNError, OutputExistsError, ResultsTableError, StoreNotFoundError
from ednn_dask.model import TileModel, load_model
from ednn_dask.score import score
from ednn_dask.storage import atomic_output

COLUMNS = ("field", "model", "model_sha256", "energy", "target", "unit", "n_tiles",
           "n_chunks", "n_pixels", "method", "seconds", "scored_at")
KEY = ["field", "model_sha256"]


@dataclass
class BatchResult:
    """What one :func:`score_batch` call did."""

    table: pd.DataFrame  # the whole table as written, this run's rows included
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the table already with this model
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
    """Write the table to a hidden sibling, then rename it onto ``path`` (atomic)."""
    with atomic_output(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)  # floats are written with repr: exact


def score_batch(
    fields: Sequence[str | os.PathLike],
    model: TileModel | str | os.PathLike,
    table: str | os.PathLike,
    *,
    overwrite: bool = False,
    on_field: Callable[[str, dict | str], None] | None = None,
    **score_kwargs,
) -> BatchResult:
    """Score every stored field not yet in ``table`` with ``model``; append a row for each.

    A field that fails (bad values, wrong spacing, ...) is reported in
    ``BatchResult.failed`` and left out of the table, so a later run retries it;
    the other fields are scored.

    Parameters
    ----------
    fields : sequence of str or path
        Paths or glob patterns of Zarr fields.
    model : TileModel or path
        The tile model, or the path of its ONNX file.
    table : str or path
        The CSV results table; created if missing, resumed if present.
    overwrite : bool
        Start a new table even if ``table`` exists (the old one is replaced only
        when the first new row is written).
    on_field : callable, optional
        Called with (field, row dict) after each field, or (field, message) when
        a field fails.
    **score_kwargs
        Passed to :func:`ednn_dask.score` (client, chunks, boundary, ...).
    """
    model = load_model(model)
    paths = expand_fields(fields)
    if Path(table).is_dir():
        raise OutputExistsError(f"{str(table)!r} is a directory; give a file path for the table.")
    done = _empty_table() if overwrite else read_table(table)
    done_keys = set(zip(done["field"], done["model_sha256"], strict=True))
    result = BatchResult(table=done)
    for path in paths:
        if (path, model.sha256) in done_keys:
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
        result.table = pd.concat([result.table, pd.DataFrame([row])], ignore_index=True)
        write_table(result.table, table)
        result.scored.append(path)
        if on_field:
            on_field(path, row)
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
