"""Errors raised by ednn-dask.

Every error subclasses a builtin so callers can catch ``ValueError``,
``TypeError`` or ``FileNotFoundError`` as usual; the CLI prints the message of
any :class:`EDNNError` without a traceback and exits with status 2.
"""

from __future__ import annotations


class EDNNError(Exception):
    """Base class of every error ednn-dask raises on purpose."""


class GeometryError(EDNNError, ValueError):
    """A grid, focus, context or chunking that cannot be tiled."""


class FieldError(EDNNError, ValueError):
    """A field whose values, dtype, dimensions or spacing do not fit the model."""


class ModelFormatError(EDNNError, ValueError):
    """An ONNX file that is not a valid ednn tile model."""


class StoreNotFoundError(EDNNError, FileNotFoundError):
    """A path that does not exist or is not what was expected there."""


class OutputExistsError(EDNNError, FileExistsError):
    """An output that exists already and was not meant to be overwritten."""


class StructureError(EDNNError, ValueError):
    """Atoms that cannot be turned into a field: outside the cell, overlapping, unknown."""


class ResultsTableError(EDNNError, ValueError):
    """A results table that cannot be read or resumed."""


class ConfigError(EDNNError, ValueError):
    """A setting that cannot work here (e.g. a training device this machine lacks)."""
