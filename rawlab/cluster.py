"""Dask clusters for rawlab jobs: a tuned ``LocalCluster`` by default, or an existing scheduler.

Worker settings follow what we measured (docs/architecture.md, "Known facts about the stack"):

- process workers, one thread each: rawpy releases the GIL while decoding, but Zarr compression and NumPy
  work in Python-heavy code paths scale better across processes on 2-core machines;
- spawned, not forked, worker processes: forked processes can deadlock inside LibRaw;
- ``distributed.nanny.pre-spawn-environ`` replaced: distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in
  workers by default, which nearly doubles per-file CPU time on large arrays, so we leave it out; what we set
  there instead is each worker's thread budget (below);
- a thread budget per worker, ``threads`` (default: cores // workers, so workers x threads <= cores), given
  to the native thread pools a worker process sizes at start-up from its environment: Zarr's codec pool
  (``ZARR_THREADING__MAX_WORKERS``), Blosc (``BLOSC_NTHREADS``) and OpenMP (``OMP_NUM_THREADS``: LibRaw's
  decoders); BLAS gets one thread per worker (``OPENBLAS_NUM_THREADS`` ... = 1, as distributed's own default
  has it): the only BLAS calls in our tasks are the pair QA's small matrix products, which threads do not
  speed up and whose idle OpenBLAS threads spin-wait after each call (QA cost 0.119 CPU-s per file with 2
  BLAS threads, 0.043 with one, the same wall time). Left to themselves each worker sizes every pool to all
  the machine's cores: with 8 workers on 16 cores, 8 x 16 OpenBLAS threads spin and 8 x 20 Zarr threads
  compress at once; a build then cost 8x the CPU per file of a plain loop (issue #18; the profile is
  printed by ``benchmarks/ingest.py``);
- the workers' statistical profiler off: sampling every thread's stack every 10 ms cost ~0.15 s of wall time
  per 12 MP file in ingest (0.39 s vs 0.24 s a task on one worker); the dashboard's profile page stays empty;
- slower background ticks (event-loop health, system and memory monitors): they cost each idle worker 1.6%
  of a core, which 8 workers on a loaded machine notice;
- ``distributed.scheduler.allowed-failures`` = 1: a task whose worker dies (LibRaw is C code and can crash
  on a bad file) is retried once on a fresh worker, then reported as failed instead of killing more workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import RawlabError

__all__ = [
    "BLAS_ENV", "SCHEDULER_ENV", "THREAD_ENV", "ClusterInfo", "RunOptions", "TaskOutcome", "dask_client", "run_tasks",
    "thread_budget", "wait_idle", "worker_threads",
]  # fmt: skip

SCHEDULER_ENV = "RAWLAB_SCHEDULER"

# The variables a worker process's native thread pools are sized from, read once when each library loads:
# these get the worker's thread budget, the BLAS ones a single thread (see the module docstring).
THREAD_ENV = ("ZARR_THREADING__MAX_WORKERS", "BLOSC_NTHREADS", "OMP_NUM_THREADS")
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# Worker processes log only what is critical: a task's error reaches the caller through its future, and what
# else a worker logs on its own stderr is shutdown noise (a heartbeat racing the scheduler's close prints a
# CommClosedError traceback) that a command-line user must not see. The nannies, in this process, still log.
WORKER_LOGGING = {"DASK_LOGGING__DISTRIBUTED": "critical"}

_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ": {},  # no MALLOC_TRIM_THRESHOLD_; dask_client adds THREAD_ENV
    "distributed.worker.multiprocessing-method": "spawn",
    "distributed.scheduler.allowed-failures": 1,
    "distributed.worker.daemon": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.profile.enabled": False,
    # Background ticks, slowed: an idle worker cost 1.6% of a core (50 event-loop ticks a second, system and
    # memory monitors) and the scheduler with its nannies 4.3% at 4 workers; 0.35% and 1.5% now. The memory
    # limit is still checked twice a second, the dashboard's system plots once.
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "500ms",
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


def thread_budget(workers: int, threads: int | None = None) -> int:
    """Threads each of ``workers`` local worker processes may use: ``threads``, else cores // workers (>= 1)."""
    if threads is None:
        return max(1, default_workers() // max(1, workers))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RawlabError(
            f"threads per worker must be a whole number >= 1, got {threads!r}; leave it out for cores // workers"
        )
    return threads


def worker_threads() -> int:
    """The thread budget of this process: what :func:`dask_client` gave it as a local worker (its
    ``THREAD_ENV``), else one thread per core (a worker another scheduler started, or no worker at all)."""
    try:
        return max(1, int(os.environ[THREAD_ENV[0]]))
    except (KeyError, ValueError):
        return default_workers()


@contextmanager
def _environ(values: dict[str, str], restore: dict[str, str | None] | None = None) -> Iterator[None]:
    """Set ``values`` in this process's environment, then put back ``restore`` (default: what was there).

    The nanny copies its pre-spawn variables into its own process's environment (ours, for a local cluster)
    before it spawns a worker, and distributed lets a variable already set here override the config; both are
    undone, so one cluster's budget neither leaks into the next nor into processes the caller starts later.
    """
    saved = {k: os.environ.get(k) for k in values} if restore is None else restore
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
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
    threads
        Local cluster only: threads each worker process's native pools may use (Zarr's codec pool, Blosc,
        OpenMP; BLAS always gets one); default cores // workers. Each worker still runs one task at a time. A
        running scheduler's workers keep their own settings.
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
                with _quiet_shutdown():
                    client.close()
            return
        n_workers = workers or default_workers()
        n_threads = thread_budget(n_workers, threads)
        env = {**dict.fromkeys(THREAD_ENV, str(n_threads)), **dict.fromkeys(BLAS_ENV, "1"), **WORKER_LOGGING}
        before = {k: os.environ.get(k) for k in env}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), _environ(env, before):
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
                echo(
                    f"dask: local cluster, {n_workers} workers x {n_threads} threads; dashboard {info.dashboard}"
                )
            try:
                yield client, info
            finally:
                with _quiet_shutdown():
                    client.close()
        finally:
            with _quiet_shutdown(), _environ(env, before):  # a restarted worker's nanny set them again
                cluster.close()


@contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """Silence distributed's and tornado's loggers while a client or cluster closes.

    Closing races connections that are going away on purpose; distributed then logs ``CommClosedError`` (or
    ``StreamClosedError``) tracebacks that mean nothing went wrong. The client is closed before its cluster.
    """
    import logging

    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
    loggers = [logging.getLogger(n) for n in ("distributed", "tornado", *names)]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


# -- one way to run per-item work -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """Where a Dask job runs, where its data lives, and how it reports: the options every long command takes.

    Parameters
    ----------
    client
        An existing ``distributed.Client`` (a notebook's); else :meth:`session` makes one.
    scheduler
        Address of a running scheduler (else ``$RAWLAB_SCHEDULER``, else a local cluster).
    workers
        Local cluster only: number of worker processes (default: one per core).
    threads
        Local cluster only: threads per worker process for its native pools (default cores // workers; see
        :func:`dask_client`).
    storage_options
        fsspec options for stores given as URLs (``s3://...``).
    progress
        Called with the number of items just finished (a progress bar's ``update``).
    set_total
        Called with the number of items a pass will do (a progress bar's ``reset(total=...)``).
    echo
        Called with notes for the user (one line each).
    """

    client: Any = None
    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    storage_options: dict = field(default_factory=dict)
    progress: Callable[[int], None] | None = None
    set_total: Callable[[int], None] | None = None
    echo: Callable[[str], None] | None = None

    @contextmanager
    def session(self) -> Iterator[tuple[Any, ClusterInfo]]:
        """Yield ``(client, info)``: the given client as it is, else a new one (:func:`dask_client`)."""
        if self.client is not None:
            c = self.client
            try:
                n = len(c.scheduler_info().get("workers", {}))
            except Exception:  # an info call must not stop the job
                n = 0
            yield c, ClusterInfo(str(getattr(c.scheduler, "address", "")), c.dashboard_link, n, local=False)
            return
        with dask_client(self.scheduler, workers=self.workers, threads=self.threads, echo=self.echo) as got:
            yield got

    def note(self, message: str) -> None:
        if self.echo:
            self.echo(message)

    def total(self, n: int) -> None:
        if self.set_total:
            self.set_total(int(n))

    def advance(self, n: int = 1) -> None:
        if self.progress:
            self.progress(int(n))


@dataclass
class TaskOutcome:
    """What one task gave: its ``value``, or the ``error`` it raised; ``killed`` if its worker died."""

    index: int
    value: Any = None
    error: BaseException | None = None
    killed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.killed

    @property
    def why(self) -> str:
        """Why it failed, for a message ("" when it did not)."""
        if self.killed:
            return "its worker died"
        return f"{type(self.error).__name__}: {self.error}" if self.error is not None else ""


def run_tasks(
    client,
    fn: Callable[..., Any],
    args: Sequence[tuple],
    *,
    name: str = "task",
    progress: Callable[[int], None] | None = None,
    on_result: Callable[[TaskOutcome], None] | None = None,
    retry_killed: bool = False,
) -> list[TaskOutcome]:
    """Run ``fn(*a)`` for each ``a`` in ``args`` on ``client``; outcomes in the order of ``args``.

    Every task's exception is caught and returned in its outcome (one bad item never stops the rest), the
    futures are released as they finish (results are not kept on the workers), ``progress(1)`` and
    ``on_result(outcome)`` are called in completion order, and the returned list is in input order, so what a
    caller computes from it does not depend on which task finished first. An exception raised by ``on_result``
    stops the run: the tasks not yet finished are cancelled and the exception propagates.

    With ``retry_killed``, a task whose worker died (``KilledWorker``: C code such as LibRaw can crash a
    process, taking its queued neighbours with it) is run again alone, one at a time; ``killed`` stays set
    only if it kills a worker on its own too.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    def submit(i: int, tag: str = ""):
        return client.submit(fn, *args[i], key=f"{name}{tag}-{i}-{os.urandom(4).hex()}", pure=False)

    def collect(fut, i: int) -> TaskOutcome:
        try:
            return TaskOutcome(i, value=fut.result())
        except KilledWorker as e:
            return TaskOutcome(i, error=e, killed=True)
        except Exception as e:  # the caller decides what a failed item means
            return TaskOutcome(i, error=e)
        finally:
            fut.release()

    outcomes: list[TaskOutcome | None] = [None] * len(args)
    futures = {submit(i): i for i in range(len(args))}
    suspects = []
    try:
        for fut in as_completed(futures):
            out = collect(fut, futures[fut])
            if out.killed and retry_killed:
                suspects.append(out.index)
                continue
            outcomes[out.index] = out
            if progress:
                progress(1)
            if on_result:
                on_result(out)
        for i in suspects:  # alone now: a second death convicts the item
            out = collect(submit(i, "-retry"), i)
            outcomes[i] = out
            if progress:
                progress(1)
            if on_result:
                on_result(out)
    except BaseException:  # on_result stopped the run (or Ctrl-C): cancel what has not run yet
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        raise
    return outcomes  # type: ignore[return-value]


def wait_idle(client, timeout: float = 60.0) -> bool:
    """Wait until no worker of ``client``'s cluster executes a task; ``False`` if some still do after
    ``timeout`` seconds. A cancelled task that had started runs on to its end in its worker thread: wait for
    it before closing the cluster (or reading what it writes)."""
    import time

    def busy(dask_worker) -> int:
        return len(dask_worker.state.executing)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(client.run(busy).values()):
                return True
        except Exception:  # a worker going away is not busy
            return False
        time.sleep(0.1)
    return False
