"""The pixel pass of ``rawlab stats`` as Dask reductions: exact, lazy until computed, one task per chunk, and
run over a store of 225 real DNG frames (four sensors, nine scenes)."""

from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd
import pytest

from rawlab.catalog.build import build_catalog
from rawlab.catalog.store import FrameStore
from rawlab.cluster import RunOptions
from rawlab.stats import compute_stats, frame_stats
from rawlab.stats.pixels import _NF, HIST_EDGES, frame_stats_graph, level_quantile
from rawlab.stats.table import UNKNOWN_SENSOR
from rawlab.synth import write_dataset


@pytest.fixture(scope="module")
def many(tmp_path_factory, client):
    """225 small frames: 4 sensors x 9 scenes x (2 references + the ISO ladder), 64x48 mosaic px; and one
    file LibRaw cannot read (recorded as failed, with no sensor)."""
    root = tmp_path_factory.mktemp("many")
    summary = write_dataset(root / "data", seed=5, size=(64, 48), n_sensors=4, n_scenes=9)
    (root / "data" / "SynthCam_PG-1" / "chart" / "broken.dng").write_bytes(b"II*\x00" + bytes(500))
    store = root / "store.zarr"
    cat, _ = build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store, cat, summary.truth_path


@pytest.fixture(scope="module")
def big_frame(tmp_path_factory):
    """One frame of 3 x 3 store chunks with ragged edges, known values (white, black, negatives after black)."""
    store = tmp_path_factory.mktemp("big") / "store.zarr"
    fs = FrameStore(store)
    fs.initialise({})
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 4096, size=(4, 600, 700), dtype=np.uint16)
    planes[:, :10, :] = 4095  # saturated
    planes[:, 10:20, :] = 0  # below black: at 0 DN
    planes[:, 20:30, :] = rng.integers(60, 70, size=(4, 10, 700))  # around black (black = 64): x <= 0 too
    black = [64.0, 64.0, 62.0, 66.0]
    fs.write_frame("f" * 20, planes, {"path": "/x/big.dng"})
    cat = pd.DataFrame({"path": ["/x/big.dng"], "frame_id": ["f" * 20], "status": ["ok"], "sensor": ["Big"],
                        "iso": [800.0], "black_level": [black], "white_level": [4095.0]})  # fmt: skip
    return store, cat, planes, np.array(black)


@pytest.fixture(scope="module")
def many_stats(many, client):
    store, _, truth = many
    return compute_stats(str(store), profile=truth, options=RunOptions(client=client))


def test_graph_is_lazy_and_reads_each_chunk_in_its_own_task(big_frame):
    store, cat, _, _ = big_frame

    def no_compute(*args, **kwargs):
        raise AssertionError("the pixel pass computed while its graph was being built")

    with dask.config.set(scheduler=no_compute):
        groups = frame_stats_graph(str(store), cat)
    assert [(g.sensor, g.iso, g.frame_ids) for g in groups] == [("Big", 800.0, ["f" * 20])]
    graph = dict(groups[0].hist.__dask_graph__())
    chunk_tasks = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("_block_stats")]
    assert len(chunk_tasks) == 9  # 600 x 700 packed px in chunks of 256 x 256: 3 x 3, each reduced alone


def test_pixel_pass_is_exact_on_a_multi_chunk_frame(big_frame, client):
    store, cat, planes, black = big_frame
    frames, hists = frame_stats(str(store), cat, options=RunOptions(client=client))
    row = frames.iloc[0]
    x = (planes.astype(np.float64) - black[:, None, None]) / (4095.0 - black[:, None, None])
    assert row["saturated_frac"] == np.mean(planes >= 4095)
    assert row["zero_frac"] == np.mean(planes == 0)
    for c, ch in enumerate(("R", "G1", "G2", "B")):
        assert row[f"mean_{ch}"] == pytest.approx(x[c].mean(), rel=1e-12)
    assert row["mean_level"] == pytest.approx(x.mean(axis=(1, 2)).mean(), rel=1e-12)
    for q in (0.5, 0.99):  # the histogram has quarter-stop bins: quantiles within a quarter stop
        est, true = row[f"level_p{int(q * 100)}"], np.quantile(x, q)
        assert abs(math.log2(est / true)) <= 0.25, (q, est, true)
    h = hists[("Big", 800.0)]
    assert h.shape == (4, _NF + len(HIST_EDGES) - 1)
    np.testing.assert_array_equal(h[:, 0], planes[0].size)
    np.testing.assert_array_equal(h[:, 5], (x <= 2.0**-14).sum(axis=(1, 2)))  # at or below black
    np.testing.assert_array_equal(h[:, 5] + h[:, _NF:].sum(axis=1), h[:, 0])  # every sample in one bin


def test_level_quantile_edges():
    hist = np.zeros(len(HIST_EDGES) - 1)
    assert math.isnan(level_quantile(hist, 0, 0.5))
    assert level_quantile(hist, 10, 0.5) == 0.0
    hist[-1] = 10  # all in the top quarter stop
    assert 2**-0.25 <= level_quantile(hist, 0, 0.5) <= 1.0


def test_pixel_pass_over_225_frames_matches_the_frames(many, many_stats):
    store, cat, _ = many
    assert len(cat) == 226 and (cat["status"] == "failed").sum() == 1
    frames, hists = many_stats.frames, many_stats.hists
    assert len(frames) == 225 and frames["n_samples"].eq(64 * 48).all()
    fs = FrameStore(store)
    for r in frames.sample(12, random_state=0).itertuples():  # a spot check against the plain numpy answer
        meta = cat.set_index("path").loc[r.path]
        p = fs.read_frame(r.frame_id)
        assert r.saturated_frac == np.mean(p >= meta["white_level"])
        x = (p - np.asarray(meta["black_level"], float)[:, None, None]) / (
            meta["white_level"] - np.asarray(meta["black_level"], float)[:, None, None]
        )
        assert r.mean_level == pytest.approx(x.mean(axis=(1, 2)).mean(), rel=1e-9)
    # Per sensor and ISO the histogram holds every sample of every frame there.
    counts = cat[cat["status"] != "failed"].groupby(["sensor", "iso"]).size()
    assert len(hists) == len(counts) == 21
    for (sensor, iso), n in counts.items():
        assert hists[(sensor, iso)][:, 0].sum() == n * 64 * 48


def test_stats_over_225_frames_with_a_profile(many, many_stats):
    _, cat, _ = many
    res = many_stats
    t = res.sensors
    # The unreadable file is counted (as its own row, sensor unknown, no ISO) and breaks nothing else.
    failed = t[t["sensor"] == UNKNOWN_SENSOR]
    assert len(failed) == 1 and failed["n_failed"].iloc[0] == 1 and np.isnan(failed["iso"].iloc[0])
    t = t[t["sensor"] != UNKNOWN_SENSOR]
    assert len(t) == 21 and t["n_frames"].sum() == 225 and t["n_failed"].sum() == 0
    assert t.groupby("sensor")["n_clean"].sum().eq(9).all()  # one reference per scene
    assert np.isfinite(t["snr18_db"]).all() and np.isfinite(t["read_noise_e"]).all()
    assert set(res.ranking["sensor"]) == set(cat["sensor"].dropna())
    assert res.balance["usable"].sum() + res.balance["excluded"].sum() == 225
    assert res.composition["frames"].sum() == 226
    assert any("could not be read" in n for n in res.notes)
    assert res.timings["pixels"] < 60
