"""Dask clusters for rawlab jobs: a tuned ``LocalCluster`` by default, or an existing scheduler.

Worker settings follow what we measured (DESIGN.md, "Known facts about the stack"):

- process workers, one thread each: rawpy releases the GIL while decoding, but Zarr compression and NumPy
  work in Python-heavy code paths scale better across processes on 2-core machines;
- spawned, not forked, worker processes: forked processes can deadlock inside LibRaw;
- ``distributed.nanny.pre-spawn-environ`` emptied: distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in
  workers by default, which nearly doubles per-file CPU time on large arrays;
- the workers' statistical profiler off: sampling every thread's stack every 10 ms cost ~0.15 s of wall time
  per 12 MP file in ingest (0.39 s vs 0.24 s a task on one worker); the dashboard's profile page stays empty;
- ``distributed.scheduler.allowed-failures`` = 1: a task whose worker dies (LibRaw is C code and can crash
  on a bad file) is retried once on a fresh worker, then reported as failed instead of killing more workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import RawlabError

__all__ = ["SCHEDULER_ENV", "ClusterInfo", "dask_client"]

SCHEDULER_ENV = "RAWLAB_SCHEDULER"

_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ": {},
    "distributed.worker.multiprocessing-method": "spawn",
    "distributed.scheduler.allowed-failures": 1,
    "distributed.worker.daemon": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.profile.enabled": False,
}


@dataclass(frozen=True)
class ClusterInfo:
    """Where the work runs: for the one-line summaries and the dashboard link."""

    address: str
    dashboard: str | None
    n_workers: int
    local: bool


def default_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    processes: bool = True,
    memory_limit: str | None = "auto",
    echo: Callable[[str], None] | None = None,
) -> Iterator[tuple[object, ClusterInfo]]:
    """Yield ``(client, info)``: attached to ``scheduler`` (or ``$RAWLAB_SCHEDULER``), else a new local cluster.

    Parameters
    ----------
    scheduler
        Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``. Overrides ``$RAWLAB_SCHEDULER``.
    workers
        Local cluster only: number of worker processes (default: one per core).
    processes
        Local cluster only: process workers (default) or threads in this process (useful in notebooks).
    echo
        Called with a line giving the dashboard link.

    Raises
    ------
    RawlabError
        If the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    with dask.config.set(_WORKER_CONFIG):
        if address:
            try:
                client = Client(address, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise RawlabError(
                    f"cannot reach the Dask scheduler at {address!r} ({e}); check the address, or drop "
                    f"--scheduler (and unset ${SCHEDULER_ENV}) to run on a local cluster"
                ) from None
            try:
                n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
                info = ClusterInfo(address, client.dashboard_link, n, local=False)
                if echo:
                    echo(f"dask: attached to {address} ({n} workers); dashboard {info.dashboard}")
                yield client, info
            finally:
                client.close()
            return
        n_workers = workers or default_workers()
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=processes,
            memory_limit=memory_limit,
            dashboard_address=":0",
        )
        try:
            client = Client(cluster)
            info = ClusterInfo(cluster.scheduler_address, client.dashboard_link, n_workers, local=True)
            if echo:
                echo(f"dask: local cluster, {n_workers} workers; dashboard {info.dashboard}")
            try:
                yield client, info
            finally:
                client.close()
        finally:
            cluster.close()
