"""A fixed pool of denoising worker processes with a time limit per job.

Each worker is a spawned process that loads every served model once (:func:`rawlab.deploy.runtime.load_denoiser`)
and then runs jobs sent over its own pipe: :func:`rawlab.deploy.denoise.denoise_file` on a file in the
service's temporary folder, writing beside it. The event loop never runs a job: :meth:`WorkerPool.run` waits
for an idle worker (an ``asyncio.Queue``), sends the job and waits for the answer in a thread, so ``/health``
and new uploads are answered while every worker is busy. A job that runs past the time limit has its worker
killed and replaced (the only way to stop native code mid-call) and is answered as timed out.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import RawlabError

__all__ = ["JobResult", "WorkerPool"]

READY_TIMEOUT = 300.0  # seconds a new worker may take to import its runtime and load the models


@dataclass
class JobResult:
    """What became of one job; ``status`` is ``ok``, ``failed`` (the file's fault), ``timeout`` or ``internal``."""

    status: str
    error: str | None = None
    error_kind: str | None = None
    noise_source: str | None = None
    noise: str | None = None
    shape: tuple[int, int] | None = None
    seconds: float = 0.0
    fuse_weights: tuple[float, float] | None = (
        None  # median weights of the network and of the classical denoisers
    )


def _worker_main(conn, models: dict[str, str], num_threads: int) -> None:
    """The worker process: load the models, say ready (or why not), then run jobs until told to stop."""
    try:
        from ..deploy.denoise import denoise_file
        from ..deploy.runtime import load_denoiser

        denoisers = {}
        for name, path in models.items():
            den = load_denoiser(path, num_threads=num_threads)
            den.check()
            denoisers[name] = den
    except Exception as e:  # reported to the service, which refuses to start with the reason
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        t0 = time.perf_counter()
        try:
            res = denoise_file(job["path"], denoisers[job["model"]], job["out"], job["fmt"], overwrite=True)
            if res.failed:
                out = JobResult("failed", res.error, res.error_kind)
            else:
                out = JobResult("ok", None, None, res.noise_source, res.noise, res.shape,
                                fuse_weights=res.fuse_weights)  # fmt: skip
        except Exception as e:  # a bug for this file: answered as an internal error, the worker goes on
            out = JobResult("internal", f"{type(e).__name__}", "internal")
        out.seconds = time.perf_counter() - t0
        conn.send(out)


class _Worker:
    def __init__(self, ctx, models: dict[str, str], num_threads: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, models, num_threads), daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise RawlabError(f"a serve worker did not load the models within {timeout:.0f} s")
        try:
            kind, detail = self.conn.recv()
        except EOFError:
            kind, detail = "error", f"the worker process exited (code {self.proc.exitcode})"
        if kind != "ready":
            self.kill()
            raise RawlabError(f"a serve worker could not load the models: {detail}")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=5)
        self.kill()


class WorkerPool:
    """``workers`` processes, each running one job at a time for at most ``job_timeout`` seconds."""

    def __init__(self, models: dict[str, str], *, workers: int, num_threads: int, job_timeout: float):
        self.models, self.n, self.num_threads, self.job_timeout = (
            dict(models),
            workers,
            num_threads,
            job_timeout,
        )
        self._ctx = mp.get_context("spawn")  # never fork a process that runs threads (uvicorn, runtimes)
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._threads = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="rawlab-serve-wait")
        self.busy = 0
        self.done = 0
        self.restarts = 0

    def _spawn(self) -> _Worker:
        w = _Worker(self._ctx, self.models, self.num_threads)
        self._all.append(w)
        return w

    async def start(self) -> None:
        """Start the workers and wait until each has loaded the models (raises the reason if one cannot)."""
        loop = asyncio.get_running_loop()
        self._idle = asyncio.Queue()
        workers = [self._spawn() for _ in range(self.n)]
        try:
            await asyncio.gather(
                *(loop.run_in_executor(self._threads, w.wait_ready, READY_TIMEOUT) for w in workers)
            )
        except BaseException:
            await self.close()
            raise
        for w in workers:
            self._idle.put_nowait(w)

    async def run(self, job: dict[str, Any]) -> JobResult:
        """Run one job on the next idle worker; waits (without blocking the loop) while all are busy."""
        assert self._idle is not None, "start() the pool first"
        loop = asyncio.get_running_loop()
        worker = await self._idle.get()
        self.busy += 1
        t0 = time.perf_counter()
        try:
            answer = await loop.run_in_executor(self._threads, self._exchange, worker, job)
        finally:
            self.busy -= 1
        if answer is None:  # past the time limit, or the process died: replace the worker
            self.restarts += 1
            died = not worker.proc.is_alive()
            await loop.run_in_executor(self._threads, worker.kill)
            self._all.remove(worker)
            fresh = self._spawn()
            await loop.run_in_executor(self._threads, fresh.wait_ready, READY_TIMEOUT)
            self._idle.put_nowait(fresh)
            if died:
                return JobResult("internal", "the worker process died while denoising this file", "crash")
            return JobResult("timeout", f"the job ran past the {self.job_timeout:g} s limit and was stopped",
                             "timeout", seconds=time.perf_counter() - t0)  # fmt: skip
        self._idle.put_nowait(worker)
        self.done += 1
        return answer

    def _exchange(self, worker: _Worker, job: dict[str, Any]) -> JobResult | None:
        try:
            worker.conn.send(job)
            if not worker.conn.poll(self.job_timeout):
                return None
            return worker.conn.recv()
        except (EOFError, OSError):
            return None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, w.stop) for w in list(self._all)))
        self._all.clear()
        self._threads.shutdown(wait=False)
