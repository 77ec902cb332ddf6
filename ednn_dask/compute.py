"""Where work runs: a client (local cluster or a scheduler address) and computing on it.

The default cluster is an in-process ``distributed.LocalCluster``; a scheduler
address sends the same work to a real cluster. :func:`compute` runs dask
collections on a given client, the active one, or dask's threaded scheduler,
with a progress bar on request.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import dask

from ednn_dask.errors import EDNNError, SchedulerLostError


@contextlib.contextmanager
def dask_client(
    scheduler: Any = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool = False,
) -> Iterator:
    """A ``distributed.Client``: to ``scheduler`` (``tcp://host:port``) or to a new LocalCluster.

    A ``Client`` given as ``scheduler`` is used as it is (and left open). The
    default LocalCluster runs in this process (``processes=False``): one worker
    with one thread per core, no data transfer, and the dashboard on a free port.
    ``processes=True`` starts separate worker processes instead.
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler:
        with _connect(str(scheduler)) as client:
            try:
                yield client
            except Exception as err:
                reason = _lost_scheduler(client, err)
                if reason:
                    raise SchedulerLostError(str(scheduler), reason) from None
                raise
        return
    cores = os.cpu_count() or 1
    if processes:
        n_workers = n_workers or cores
        threads_per_worker = threads_per_worker or 1
    else:
        n_workers = n_workers or 1
        threads_per_worker = threads_per_worker or cores
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            # the HTTP server binds even without a dashboard: a free port, never 8787
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``; one clear error when none answers there."""
    from distributed import Client

    try:
        return Client(address)
    except (OSError, TimeoutError, ValueError) as err:  # refused, timed out, malformed address
        raise SchedulerLostError(address, _first_line(err), connected=False) from None


def _lost_scheduler(client: Any, err: BaseException) -> str | None:
    """Why ``err`` means the scheduler is gone (a short reason), or None if it does not."""
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError

    if isinstance(err, EDNNError):
        return None
    gone = client.status != "running"
    if isinstance(err, FutureCancelledError) and (gone or "connection-lost" in str(err)):
        return "the connection to it closed mid-job"
    if gone and isinstance(err, (CommClosedError, OSError, TimeoutError)):
        return f"no answer from it: {_first_line(err)}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def active_client() -> Any:
    """The ``distributed.Client`` this process uses by default, or ``None``."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def one_span(name: str) -> Iterator[None]:
    """Tag every computation in the block as one distributed span, ``name``.

    Without a span of its own, each computation that finds the cluster idle opens a
    new "default" span (:func:`distributed.span`), and every worker keeps its
    cumulative metrics (``Worker.digests_total`` and ``digests_max``) per span, for as
    long as it lives: a loop of many small computations on a long-lived cluster (a
    batch of fields) would leave about 30 entries, some 8 kB, per computation in each
    worker. Inside this block they share one span, so those metrics stay a fixed
    size. The annotation is ignored where no distributed scheduler runs.
    """
    try:
        from distributed import span
    except ImportError:  # pragma: no cover - distributed is a dependency
        yield
        return
    with span(name):
        yield


def compute(targets: Sequence[Any], client: Any = None, progress: bool = False) -> tuple:
    """Compute dask collections on ``client``, the active client, or dask's threads.

    ``progress`` shows distributed's progress bar with a client, dask's otherwise,
    on stderr.
    """
    if client is not None:
        futures = client.compute(list(targets))
        if progress:
            from distributed import progress as show_progress

            # progress goes to stderr: stdout stays for results (``--json``)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    show_progress(futures)
            except BaseException:  # an interrupt: what follows starts on its own line
                print(file=sys.stderr)
                raise
            # the scheduler's progress feed polls every 100 ms; let it see the closed bar
            # before a cluster shutdown cancels it (and logs a CancelledError)
            time.sleep(0.3)
        return tuple(client.gather(futures))
    if progress and active_client() is None:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(*targets)
    return dask.compute(*targets)


def progress_bar(total: int, enabled: bool = True, desc: str = "", unit: str = "it") -> Any:
    """A tqdm progress bar, or a silent stand-in with the same interface when not ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
