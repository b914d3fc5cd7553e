"""``rawlab.cluster``: the local cluster's worker settings, on a real Dask LocalCluster with spawned workers."""

from __future__ import annotations

import os

import pytest

from rawlab.cluster import BLAS_ENV, THREAD_ENV, dask_client, default_workers, thread_budget
from rawlab.errors import RawlabError


def _worker_settings() -> dict:
    import logging

    import zarr

    env = {k: os.environ.get(k) for k in (*THREAD_ENV, *BLAS_ENV, "MALLOC_TRIM_THRESHOLD_")}
    level = logging.getLogger("distributed.worker").getEffectiveLevel()
    return {"env": env, "zarr_threads": zarr.config.get("threading.max_workers"), "log_level": level}


def test_workers_get_their_thread_budget_and_no_malloc_trim(monkeypatch):
    """An explicit budget reaches every pool a worker sizes from its environment, over a conflicting variable
    in the caller's environment; BLAS gets one thread; distributed's MALLOC_TRIM_THRESHOLD_ is not set; and
    the caller's environment is as it was, during and after the cluster's life."""
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("ZARR_THREADING__MAX_WORKERS", raising=False)
    with dask_client(workers=1, threads=3) as (client, info):
        assert info.local and info.n_workers == 1
        (got,) = client.run(_worker_settings).values()
        assert os.environ["OMP_NUM_THREADS"] == "7" and "ZARR_THREADING__MAX_WORKERS" not in os.environ
    assert got["zarr_threads"] == 3  # Zarr's codec pool, as the worker's zarr reads it
    assert all(got["env"][k] == "3" for k in THREAD_ENV), got
    assert all(got["env"][k] == "1" for k in BLAS_ENV), got
    assert got["env"]["MALLOC_TRIM_THRESHOLD_"] is None
    # worker processes log only critical records: a heartbeat racing the scheduler's close printed a traceback
    assert got["log_level"] == 50
    assert os.environ["OMP_NUM_THREADS"] == "7" and "ZARR_THREADING__MAX_WORKERS" not in os.environ


def test_default_budget_keeps_workers_times_threads_within_the_cores(client):
    """The session cluster (2 workers, no budget given): cores // 2 threads each, at least one."""
    (got, *_) = client.run(_worker_settings).values()
    expected = max(1, default_workers() // 2)
    assert got["zarr_threads"] == expected and got["env"]["OMP_NUM_THREADS"] == str(expected)
    for workers in (1, 2, 3, 8, 64):
        t = thread_budget(workers)
        assert t >= 1 and (workers * t <= default_workers() or t == 1)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_a_bad_thread_budget_is_refused(bad):
    with pytest.raises(RawlabError, match="threads per worker must be a whole number >= 1"):
        thread_budget(2, bad)
