"""``rawlab noise-fit`` under hostile conditions (#17): task completion order, unwritable outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rawlab.catalog import open_catalog
from rawlab.catalog.build import build_catalog
from rawlab.cluster import RunOptions, dask_client
from rawlab.noise import pipeline
from rawlab.noise.report import write_outputs
from rawlab.synth import write_dataset

_REAL_PAIR_TASK = pipeline._pair_task
_DELAYS: dict[str, float] = {}  # frame id -> seconds its pair task sleeps first
_FINISHED: list[str] = []  # frame ids in the order their tasks finished
_LOCK = threading.Lock()


def _slowed_pair_task(store_url, storage_options, job):
    """The real pair task, after a chosen delay; module level so that a threaded cluster can run it."""
    time.sleep(_DELAYS[job["frame_id"]])
    out = _REAL_PAIR_TASK(store_url, storage_options, job)
    with _LOCK:
        _FINISHED.append(job["frame_id"])
    return out


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, client):
    """One sensor, two scenes: 12 noisy/clean pairs over 6 ISOs, 256x192 frames."""
    root = tmp_path_factory.mktemp("robust")
    write_dataset(root / "data", seed=11, size=(256, 192), n_sensors=1, n_scenes=2)
    store = root / "store.zarr"
    build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store


def _fit_in_order(store, monkeypatch, rank_to_delay) -> tuple[dict, list[str]]:
    """A fit whose pair tasks finish in an order we choose: each sleeps ``rank_to_delay(k, n)`` seconds,
    where ``k`` is the pair's place among the ``n`` in the input. Threads, not processes, so the patched task
    runs as patched."""
    jobs = pipeline._jobs(open_catalog(str(store)), "SynthCam PG-1", "paired")[0]
    _DELAYS.clear()
    _DELAYS.update({j["frame_id"]: rank_to_delay(k, len(jobs)) for k, j in enumerate(jobs)})
    _FINISHED.clear()
    monkeypatch.setattr(pipeline, "_pair_task", _slowed_pair_task)
    with dask_client(workers=2, processes=False) as (c, _info):
        fit = pipeline.fit_store(
            str(store), sensor="all", method="paired", bootstrap=40, seed=3, options=RunOptions(client=c)
        )
    return fit, list(_FINISHED)


def test_noise_fit_does_not_depend_on_task_completion_order(small_store, tmp_path, monkeypatch):
    """#17.10: results were gathered in completion order, so b's standard errors moved between runs."""
    first, order_1 = _fit_in_order(small_store, monkeypatch, lambda k, n: 0.03 * k)  # input order
    second, order_2 = _fit_in_order(small_store, monkeypatch, lambda k, n: 0.03 * (n - k))  # reversed
    assert len(order_1) == len(order_2) == 12
    assert order_1 != order_2  # the tasks really did finish in different orders

    docs = []
    for name, fit in (("one", first), ("two", second)):
        write_outputs(fit, tmp_path / f"{name}.json")
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        doc.pop("timings_s")
        docs.append(json.dumps(doc, sort_keys=True))
    assert docs[0] == docs[1]  # the whole profile, validation and notes: character for character
    for s1, s2 in zip(first.profiles.sensors, second.profiles.sensors, strict=True):
        for p1, p2 in zip(s1.profiles, s2.profiles, strict=True):
            for field in ("a", "b", "a_stderr", "b_stderr"):  # bit-equal, not merely close
                np.testing.assert_array_equal(getattr(p1, field), getattr(p2, field))
        assert any(p.b_stderr[1] > 0 for p in s1.profiles)  # the bootstrap ran: there was something to move


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_noise_fit_refuses_an_unwritable_out_before_fitting(small_store, tmp_path):
    """#17.5: the output was found unwritable only after the whole fit, with a traceback."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = _cli("noise-fit", small_store, "--sensor", "all", "--out", blocker / "noise.json", "--workers", "1")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "afile" in lines[0] and "not a folder" in lines[0], res.stderr
    assert "dask:" not in res.stderr  # refused before any cluster started, let alone the fit
    assert blocker.read_text() == "not a folder"
