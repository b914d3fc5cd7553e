"""Builds under stress, as users meet them: SIGKILL midway, crashing workers, an external Dask cluster, S3.

Everything here is real: subprocesses running the `rawlab` CLI, `dask scheduler` and `dask worker` processes on
loopback, a moto S3 server on loopback. The only fault injected is a worker that dies abruptly on one file
(RAWLAB_TEST_CRASH_ON), standing in for a LibRaw segfault, which cannot be produced on demand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rawlab.catalog import open_catalog
from rawlab.catalog.ingest import CRASH_ENV
from rawlab.catalog.store import FrameStore
from rawlab.synth import write_dataset

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _assert_store_consistent(store: Path, files: list[Path]):
    cat = open_catalog(store)
    assert sorted(cat["path"]) == sorted(str(f) for f in files)
    failed = cat[cat["status"] == "failed"]
    assert failed.empty, failed[["path", "error_kind", "error"]].to_dict("records")
    complete, incomplete = FrameStore(store).frames_state()
    assert incomplete == []  # nothing half-written
    assert set(complete) == set(cat["frame_id"])  # every frame present exactly once
    return cat


@pytest.mark.slow
def test_sigkill_midway_then_rerun(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, seed=9, size=(1024, 768), n_sensors=2, n_scenes=3)
    files = sorted(data.rglob("*.dng"))
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawlab", "catalog", "build", str(data), "--out", str(store), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        done = len(FrameStore(store).list_frames()) if (store / "zarr.json").exists() else 0
        if done >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed; use more or larger files"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: CLI, scheduler, nanny and workers
    proc.wait()
    deadline = time.time() + 30  # the re-run starts once every killed process is gone, as after a crash
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    killed_with = len(FrameStore(store).list_frames())
    assert 0 < killed_with < len(files)
    assert not (store / "catalog.parquet").exists()
    res = _cli("catalog", "build", str(data), "--out", str(store), "--workers", "2")
    assert res.returncode == 0, res.stderr
    ingested = int(res.stdout.split(" ingested")[0].rsplit(" ", 1)[-1])
    assert ingested == len(files) - killed_with  # only what was missing
    _assert_store_consistent(store, files)


def test_crashing_worker_is_retried_then_recorded(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, seed=10, size=(128, 96), n_sensors=1, n_scenes=1)
    files = sorted(data.rglob("*.dng"))
    victim = files[3]
    env = {**os.environ, CRASH_ENV: victim.name}
    res = _cli("catalog", "build", str(data), "--out", str(tmp_path / "s.zarr"), "--workers", "2", env=env)
    assert res.returncode == 0, res.stderr
    assert "1 failed" in res.stdout and "Traceback" not in res.stdout
    cat = open_catalog(tmp_path / "s.zarr").set_index("path")
    assert cat.loc[str(victim), "status"] == "failed" and cat.loc[str(victim), "error_kind"] == "crash"
    assert (cat.drop(index=str(victim))["status"] != "failed").all()
    # Without the fault the next run ingests the file that crashed.
    res = _cli("catalog", "build", str(data), "--out", str(tmp_path / "s.zarr"), "--workers", "1")
    assert res.returncode == 0 and " 1 ingested" in res.stdout


@pytest.mark.slow
def test_external_scheduler_and_two_workers(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, seed=11, size=(128, 96), n_sensors=2, n_scenes=1)
    files = sorted(data.rglob("*.dng"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                          "--dashboard-address", ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ]  # fmt: skip
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1", "--name", f"w{i}",
                                  "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        env = {**os.environ, "RAWLAB_SCHEDULER": address}  # the environment variable, not the flag
        res = _cli("catalog", "build", str(data), "--out", str(tmp_path / "s.zarr"), env=env)
        assert res.returncode == 0, res.stderr
        assert f"attached to {address} (2 workers)" in res.stderr
        cat = _assert_store_consistent(tmp_path / "s.zarr", files)
        assert (cat["status"] == "ok").all()
        with Client(address) as c:  # the work really ran on both external workers
            counts = c.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.transition_counter)
        assert len(counts) == 2 and all(v > 0 for v in counts.values())
        res = _cli("catalog", "build", str(data), "--out", str(tmp_path / "s2.zarr"), "--scheduler",
                   "tcp://127.0.0.1:1")  # fmt: skip
        assert res.returncode == 2 and "cannot reach the Dask scheduler" in res.stderr
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_s3_sources_and_store_on_a_local_s3_server(tmp_path):
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint}  # fmt: skip
        import s3fs

        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
        fs.mkdir("raws")
        data = tmp_path / "data"
        write_dataset(data, seed=12, size=(128, 96), n_sensors=1, n_scenes=1)
        files = sorted(data.rglob("*.dng"))
        fs.put(str(data) + "/", "raws/set1/", recursive=True)
        res = _cli(
            "catalog", "build", "s3://raws/set1", "--out", "s3://raws/store.zarr", "--workers", "2", env=env
        )
        assert res.returncode == 0, res.stderr
        assert f"{len(files)} ingested" in res.stdout
        os.environ.update({k: v for k, v in env.items() if k not in os.environ})
        cat = open_catalog("s3://raws/store.zarr", storage_options={"endpoint_url": endpoint})
        assert all(p.startswith("s3://raws/set1/") for p in cat["path"])
        local = {f.name: f for f in files}
        store = FrameStore("s3://raws/store.zarr", {"endpoint_url": endpoint})
        from rawlab.rawio import read_raw

        for row in cat.itertuples():
            np.testing.assert_array_equal(
                store.read_frame(row.frame_id), read_raw(local[row.path.rsplit("/", 1)[1]]).packed()
            )
        res = _cli(
            "catalog", "build", "s3://raws/set1", "--out", "s3://raws/store.zarr", "--workers", "1", env=env
        )
        assert res.returncode == 0 and " 0 ingested" in res.stdout
    finally:
        server.stop()
