"""Cluster helpers: an in-process LocalCluster by default, a real scheduler on request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool = False,
) -> Iterator:
    """A ``distributed.Client``: to ``scheduler`` (``tcp://host:port``) or to a new LocalCluster.

    The default LocalCluster runs in this process (``processes=False``): one
    worker with one thread per core, no data transfer, and the dashboard on a
    free port. ``processes=True`` starts separate worker processes instead.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
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
