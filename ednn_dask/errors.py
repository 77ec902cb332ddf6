"""Errors raised by ednn-dask, and the warning it gives.

Every error subclasses a builtin so callers can catch ``ValueError``,
``TypeError`` or ``FileNotFoundError`` as usual; the CLI prints the message of
any :class:`EDNNError` without a traceback and exits with status 2.
"""

from __future__ import annotations


class EDNNError(Exception):
    """Base class of every error ednn-dask raises on purpose."""


class ExtrapolationWarning(UserWarning):
    """A run outside the conditions a model was trained in (its card says which)."""


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


class DataSetError(EDNNError, ValueError):
    """A training data set (fields and targets) that does not follow the documented format."""


class CheckpointMismatchError(EDNNError, ValueError):
    """A training checkpoint made from other data, another net or other settings."""


class OutputWriteError(EDNNError, OSError):
    """An output that cannot be written: a full disk, a folder without write permission,
    a read-only file system or a file-size limit.

    The message names the output; ``errno`` and ``filename`` are those of the
    failed write, with ``filename`` the output (never its temporary sibling).
    """

    def __init__(self, message: str, errno: int | None = None,
                 filename: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.message, self.errno, self.filename))


class LockTimeoutError(EDNNError, TimeoutError):
    """A shared output (a results table, a reference store) that another job kept locked."""


class SchedulerLostError(EDNNError, ConnectionError):
    """The dask scheduler of a job cannot be reached, or stopped answering during the job.

    ``address`` is the scheduler's address and ``reason`` what was seen, so the
    command line can say what its job kept.
    """

    def __init__(self, address: str, reason: str, *, connected: bool = True) -> None:
        self.address, self.reason, self.connected = str(address), reason, connected
        if connected:
            what = f"lost the dask scheduler at {self.address!r} during the job ({reason})"
            remedy = "finished outputs are kept: start it again and re-run to continue"
        else:
            what = f"could not reach a dask scheduler at {self.address!r} ({reason})"
            remedy = "check the address and that the scheduler runs, or leave out --scheduler"
        super().__init__(f"{what}; {remedy}.")

    def __reduce__(self):
        return (_rebuild_scheduler_lost, (self.address, self.reason, self.connected))


def _rebuild_scheduler_lost(address, reason, connected) -> SchedulerLostError:
    return SchedulerLostError(address, reason, connected=connected)


class NonFiniteFieldError(FieldError):
    """A field holding NaN or Inf, located at the first such pixel found.

    ``index`` is the pixel index in the field's own spatial dims ``dims``;
    ``coords`` (with ``unit``) the field's coordinates there, when it has them.
    """

    def __init__(
        self,
        value: float,
        index: tuple[int, ...],
        dims: tuple[str, ...],
        *,
        channel: int | None = None,
        coords: tuple[float, ...] | None = None,
        unit: str | None = None,
    ) -> None:
        self.value, self.index, self.dims = float(value), tuple(index), tuple(dims)
        self.channel, self.coords, self.unit = channel, coords, unit
        where = ", ".join(f"{d}={i}" for d, i in zip(self.dims, self.index, strict=True))
        if channel is not None:
            where = f"channel={channel}, {where}"
        if coords is not None:
            at = ", ".join(f"{d} = {c:.6g}" for d, c in zip(self.dims, coords, strict=True))
            where += f" (pixel index; {at}{' ' + unit if unit else ''})"
        else:
            where += " (pixel index)"
        if self.value != self.value:
            name = "NaN"
        elif abs(self.value) == float("inf"):
            name = "Inf" if self.value > 0 else "-Inf"
        else:  # finite, but beyond float32 once scaled to the model's input
            name = f"{self.value:g} (infinite in the model's float32 input)"
        super().__init__(
            f"the field holds {name} at {where}, the first non-finite value found; "
            f"a field must be finite (no NaN or Inf) to be scored: clean or mask it first."
        )

    def __reduce__(self):  # travels from a dask worker with its position intact
        return (_rebuild_non_finite, (self.value, self.index, self.dims, self.channel,
                                      self.coords, self.unit))


def _rebuild_non_finite(value, index, dims, channel, coords, unit) -> NonFiniteFieldError:
    return NonFiniteFieldError(value, index, dims, channel=channel, coords=coords, unit=unit)
