"""The build's work done once or on a spare thread gives what the plain order gives (#18).

- a reference prepared once (``qa.prepare_frame``) checks a noisy frame exactly as the raw reference does;
- ``frame_stats``' integer sums and its saturation shortcut equal the float64 and mask definitions;
- a file hashed while it decodes (a worker with two threads) gets the row the one-thread order gives, and a bad
  file still fails alone with its reason.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rawlab.catalog.ingest import PROFILE_KEY, ingest_file
from rawlab.catalog.qa import check_pair, frame_stats, prepare_frame
from rawlab.cluster import THREAD_ENV
from rawlab.synth.generate import simulate_frame
from rawlab.synth.sensors import SENSORS

PG1 = SENSORS[0]


def _meta(sensor, iso=100.0, exposure=0.01):
    return {"black_level": list(sensor.black_level), "white_level": sensor.white_level, "iso": iso,
            "exposure_time": exposure}  # fmt: skip


def test_a_prepared_reference_checks_a_pair_as_the_raw_one_does():
    rng = np.random.default_rng(18)
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((96, 128)), 3.0)  # smooth, aperiodic structure to align on
    clean = np.stack([0.2 + 0.05 * field / field.std()] * 4)
    ref = simulate_frame(clean, PG1, 100, rng)
    noisy = [simulate_frame(clean, PG1, iso, rng) for iso in (800, 3200)]
    prepared = prepare_frame(ref, _meta(PG1))
    for mov, iso in zip(noisy, (800, 3200), strict=True):
        plain = check_pair(ref, mov, ref_meta=_meta(PG1), meta=_meta(PG1, iso, 0.01 * 100 / iso))
        again = check_pair(prepared, mov, ref_meta=_meta(PG1), meta=_meta(PG1, iso, 0.01 * 100 / iso))
        assert again == pytest.approx(plain, nan_ok=True)  # the same arithmetic: equal, not close
        assert plain["status"] == "ok", plain["reason"]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_frame_stats_sums_and_saturation_match_their_definitions(dtype):
    rng = np.random.default_rng(7)
    planes = rng.integers(0, 4096, size=(4, 64, 80)).astype(dtype)
    white = 4095
    means = planes.reshape(4, -1).astype(np.float64).mean(axis=1)
    expected_level = float(np.mean((means - 64.0) / (white - 64.0)))
    stats = frame_stats(planes, (64, 64, 64, 64), white)
    assert stats["mean_level"] == pytest.approx(expected_level, rel=1e-12)  # integer sums are exact
    assert stats["saturated_frac"] == np.count_nonzero(planes >= white) / planes.size
    dark = np.minimum(planes, white - 1)  # nothing at the white level: the max shortcut answers 0
    assert frame_stats(dark, (64, 64, 64, 64), white)["saturated_frac"] == 0.0


@pytest.fixture(scope="module")
def dngs(tmp_path_factory):
    from rawlab.synth import write_dataset

    out = tmp_path_factory.mktemp("dngs")
    write_dataset(out, seed=18, size=(128, 96), n_sensors=1, n_scenes=1)
    files = sorted(out.rglob("*.dng"))
    bad = out / "broken.dng"
    bad.write_bytes(files[0].read_bytes()[:2000])  # a truncated DNG: LibRaw cannot decode it
    return files[:2], bad


def _source(path):
    st = path.stat()
    return {"path": str(path), "relpath": path.name, "source_root": str(path.parent), "size": st.st_size,
            "mtime": st.st_mtime, "raw_format": "DNG"}  # fmt: skip


def _rows(dngs, tmp_path, monkeypatch, threads: str) -> list[dict]:
    """Ingest two files, the bad one and a copy of the first into a new store with ``threads`` per worker."""
    files, bad = dngs
    monkeypatch.setenv(THREAD_ENV[0], threads)
    store = str(tmp_path / f"s{threads}.zarr")
    from rawlab.catalog.store import FrameStore

    FrameStore(store, {}).initialise({"sources": [], "recipe": None, "qa_thresholds": {}, "started": ""})
    rows = [ingest_file(_source(f), store) for f in (*files, bad, files[0])]
    for r in rows:
        r.pop(PROFILE_KEY)
    return rows


@pytest.mark.parametrize("threads", ["1", "2"])
def test_hashing_beside_the_decode_gives_the_right_rows(dngs, tmp_path, monkeypatch, threads):
    """With one thread and with two (hashed while decoding), every file gets hashlib's SHA-256, the bad file
    fails alone with its reason, and a second copy of stored content is reused."""
    files, _ = dngs
    rows = _rows(dngs, tmp_path, monkeypatch, threads)
    for f, r in zip(files, rows, strict=False):
        assert r["status"] == "ok" and r["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert not r["reused"]
    assert rows[2]["status"] == "failed" and rows[2]["error"] and rows[2]["error_kind"]
    assert rows[3]["reused"] and rows[3]["frame_id"] == rows[0]["frame_id"]


def test_one_and_two_threads_give_the_same_rows(dngs, tmp_path, monkeypatch):
    assert _rows(dngs, tmp_path, monkeypatch, "1") == _rows(dngs, tmp_path, monkeypatch, "2")
