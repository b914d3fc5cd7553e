"""Colour truth and demosaic scoring (issue 13): synth's RGB truth, the catalog's link to it, LibRaw's linear
output, the chroma-artefact measure, and the raw-first vs RGB-after chains on a small frame."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from rawlab.catalog.pairing import pair_frames
from rawlab.deploy.classical import denoise_baseline
from rawlab.evaluation.demosaic import (
    MARGIN,
    available_demosaics,
    chroma_edge_error,
    demosaic_all,
    denoise_raw,
    joint_model,
    model_denoiser,
    run_chains,
    score_rgb,
)
from rawlab.noise.moments import clip_bounds
from rawlab.noise.profile import load_profiles
from rawlab.synth import SENSORS
from rawlab.synth.generate import simulate_frame
from rawlab.synth.procedural import mosaic
from rawlab.synth.scenes import render_scene, render_scene_rgb


def _rows(root):
    """Catalog rows of a synth OUT (what a build scans), for pairing."""
    rows = []
    for p in sorted(root.rglob("*.dng")):
        rel = p.relative_to(root).as_posix()
        iso = int(p.stem.split("_iso")[1].split("_")[0])
        rows.append({"path": str(p), "relpath": rel, "sensor": rel.split("/")[0], "iso": iso,
                     "exposure_time": 1.0 / iso, "status": "ok"})  # fmt: skip
    return pd.DataFrame(rows)


def test_truth_tiff_round_trips_and_is_the_mosaic_before_noise(small_synth):
    root = small_synth.out
    truth = load_profiles(small_synth.truth_path)  # the noise-profile reader still reads truth.json
    assert "rgb_truth" in truth.extra
    for sp, sensor in zip(truth.sensors, SENSORS, strict=False):
        scenes = sp.extra["scenes"]
        assert {s["scene"] for s in scenes} == {p.name for p in (root / scenes[0]["frames"]).parent.iterdir()}
        for s in scenes:
            rgb = tifffile.imread(root / s["rgb_truth"])
            assert rgb.dtype == np.float32 and rgb.shape == (96, 128, 3)
            # Exactly the re-rendered scene at the frame's brightness (float32 in the file).
            expected = render_scene_rgb(s["scene"], sensor, 96, 128) * s["brightness"]
            np.testing.assert_array_equal(rgb, expected.astype(np.float32))
            # Its mosaic is the noise-free planes every frame of the scene was drawn from.
            np.testing.assert_array_equal(
                mosaic(expected, sensor.cfa), render_scene(s["scene"], sensor, 96, 128) * s["brightness"]
            )
    # A catalog build of OUT does not see the truth files (hidden folder): every raw candidate is a DNG.
    from rawlab.catalog.scan import scan_sources

    assert all(f.path.endswith(".dng") for f in scan_sources([str(root)]).files)


def test_catalog_links_each_frame_to_its_scene_truth(small_synth, tmp_path):
    root = small_synth.out
    cat = pair_frames(_rows(root))
    assert cat["truth_path"].notna().all()
    data = json.loads(small_synth.truth_path.read_text())
    where = {s["frames"]: str(root / s["rgb_truth"]) for sp in data["sensors"] for s in sp["scenes"]}
    for path, got in zip(cat["path"], cat["truth_path"], strict=True):
        assert got == where[path[len(str(root)) + 1 :].rsplit("/", 1)[0]]
    # A frame away from any truth.json, and a remote one, have none.
    lone = tmp_path / "lone" / "x.dng"
    lone.parent.mkdir()
    shutil.copy(cat["path"].iloc[0], lone)
    other = pd.DataFrame([{"path": str(lone), "relpath": "x.dng", "sensor": "s", "iso": 100,
                           "exposure_time": 0.01, "status": "ok"},
                          {"path": "s3://bucket/a/b.dng", "relpath": "a/b.dng", "sensor": "s", "iso": 100,
                           "exposure_time": 0.01, "status": "ok"}])  # fmt: skip
    assert pair_frames(other)["truth_path"].isna().all()


def test_catalog_build_keeps_truth_path(tmp_path, client):
    from rawlab.catalog import open_catalog
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions
    from rawlab.synth import write_dataset

    write_dataset(tmp_path / "d", seed=2, size=(64, 48), n_sensors=1, n_scenes=2)
    cat, _ = build_catalog([str(tmp_path / "d")], str(tmp_path / "s.zarr"), options=RunOptions(client=client))
    stored = open_catalog(tmp_path / "s.zarr")
    for c in (cat, stored):
        assert c["truth_path"].map(lambda p: p.endswith("_rgb.tiff")).all()
        assert (
            c["truth_path"].str.rsplit("/", n=1).str[1] == c["scene"].str.split("/").str[1] + "_rgb.tiff"
        ).all()


def _smooth_rgb(h=96, w=128):
    """Smooth linear camera RGB: slow sinusoids per channel, between 0.05 and 0.85 of white."""
    y, x = np.mgrid[0:h, 0:w] / 64.0
    return np.stack(
        [0.45 + 0.4 * np.sin(2 * np.pi * (x + 0.3 * y + k / 3)) * np.cos(np.pi * y / 2) for k in range(3)], -1
    )


def test_libraw_output_is_linear_in_the_normalised_raw():
    methods, missing = available_demosaics()
    assert {"LINEAR", "AHD", "PPG"} <= set(methods), missing
    rgb = _smooth_rgb()
    # Bilinear interpolation over 2-px spacing errs by at most h^2/8 (|f_xx| + |f_yy|) = 0.5 max(|f_xx| + |f_yy|)
    # on a smooth field; writing 16 bits and LibRaw's integer scaling add at most 1.5 / 65535.
    curv = np.abs(np.gradient(np.gradient(rgb, axis=0), axis=0)) + np.abs(
        np.gradient(np.gradient(rgb, axis=1), axis=1)
    )
    bound = 0.5 * curv.max() + 1.5 / 65535
    for cfa, scale in (
        ("RGGB", 1.0),
        ("GBRG", 0.7),
    ):  # 0.7: a dim frame (LibRaw's adjust_maximum must be off)
        truth = rgb * scale
        out = demosaic_all(np.moveaxis(mosaic(truth, cfa), 0, -1), cfa, methods)
        for m, est in out.items():
            err = (est - truth)[MARGIN:-MARGIN, MARGIN:-MARGIN]
            if m == "LINEAR":  # exactly bilinear: every pixel within the bound
                assert np.abs(err).max() < scale * bound, m
            # Edge-directed demosaics pick directions, but on a smooth field their mean error stays within the
            # bilinear bound, and they add no bias (a gain error as small as 0.3 % would show).
            assert np.abs(err).mean() < scale * bound, m
            assert np.abs(err.mean(axis=(0, 1))).max() < 0.003 * truth.mean(), m


def test_libraw_demosaics_run_on_one_openmp_thread_and_repeat_to_the_bit():
    """LibRaw's DHT races between OpenMP threads (rawlab.demosaic, "One OpenMP thread"): every demosaic runs
    with the runtime held to one thread, which is restored after, and the same planes give the same RGB."""
    import rawpy

    from rawlab.demosaic import _openmp_runtime, one_openmp_thread

    lib = _openmp_runtime()
    if rawpy.flags.get(
        "OPENMP"
    ):  # the wheels this project installs are built with OpenMP: the runtime is found
        assert lib is not None
        lib.omp_set_num_threads(2)
        with one_openmp_thread() as before:
            assert before == 2 and lib.omp_get_max_threads() == 1
        assert lib.omp_get_max_threads() == 2
    # Repeats of the racing method on a frame large enough for its rows to be split between threads (2 threads
    # changed about 1 in 70 000 values of a 12 MP frame from run to run): identical, every time.
    rng = np.random.default_rng(3)
    planes = np.clip(rng.random((384, 512, 4), np.float32) * 0.6 + 0.1, 0.0, 1.0)
    first = demosaic_all(planes, "RGGB", ["DHT"])["DHT"]
    for _ in range(3):
        np.testing.assert_array_equal(demosaic_all(planes, "RGGB", ["DHT"])["DHT"], first)


def test_chroma_error_is_zero_for_the_truth_and_grows_with_a_fringe():
    _, x = np.mgrid[0:64, 0:64]
    truth = np.where((x >= 32)[..., None], [0.6, 0.5, 0.4], [0.1, 0.1, 0.1]).astype(np.float64)
    assert chroma_edge_error(truth, truth) == 0.0
    # A brightness error shared by R, G and B is not a colour error.
    assert chroma_edge_error(truth + 0.05, truth) == pytest.approx(0.0, abs=1e-12)
    # A colour fringe: red raised on the edge's pixels by `amp` (of white); the error is amp / sqrt(2) there.
    band = (np.abs(x - 31.5) < 2)[..., None] * np.array([1.0, 0.0, 0.0])
    fringes = [chroma_edge_error(truth + amp * band, truth) for amp in (0.01, 0.02, 0.04)]
    np.testing.assert_allclose(fringes, np.array([0.01, 0.02, 0.04]) / np.sqrt(2), rtol=1e-9)
    shifted = truth.copy()
    shifted[..., 0] = np.roll(truth[..., 0], 1, axis=1)  # red displaced by a pixel
    assert chroma_edge_error(shifted, truth) > 0
    flat = np.full((32, 32, 3), 0.3)
    assert np.isnan(chroma_edge_error(flat, flat))  # no edges, nothing to measure


def test_raw_first_and_rgb_after_run_and_beat_the_noisy_demosaic():
    sensor = SENSORS[0]  # RGGB, black clipped at 0
    truth = render_scene_rgb("coffee", sensor, 96, 128) * 0.6
    iso = sensor.iso_ladder[-1]
    dn = simulate_frame(mosaic(truth, sensor.cfa), sensor, iso, np.random.default_rng(11))
    from rawlab.bayer import normalise

    noisy = np.moveaxis(normalise(dn, sensor.black_level, sensor.white_level), 0, -1)
    a, b = sensor.noise_params(iso)
    lower = clip_bounds(sensor.black_level, sensor.white_level)[0]
    # At the baseline's strength, the raw-first denoiser is the vst-nlm baseline exactly.
    np.testing.assert_array_equal(
        denoise_raw(noisy, a, b, lower), denoise_baseline("vst-nlm", noisy, a, b, lower)
    )
    rows = run_chains(
        noisy, sensor.cfa, a, b, truth, methods=["PPG", "AHD"], rgb_after=["AHD"], lower=lower,
        joint={"oracle": lambda x, cfa, a_, b_: truth}, denoiser=model_denoiser("builtin"),
    )  # fmt: skip
    got = {(r["chain"], r["method"]): r for r in rows}
    assert set(got) == {("noisy", "PPG"), ("noisy", "AHD"), ("raw-first", "PPG"), ("raw-first", "AHD"),
                        ("model-first", "PPG"), ("model-first", "AHD"), ("rgb-after", "AHD"),
                        ("joint", "oracle")}  # fmt: skip
    # The oracle returns the truth, through float32 (a relative error of 6e-8, so about 140 dB and more).
    assert got[("joint", "oracle")]["cpsnr"] > 120 and got[("joint", "oracle")]["chroma"] < 1e-6
    # At ISO 6400 the noise (PSNR about 10 log10(1 / (a * 0.2)) = 32 dB at a mean level of 0.2) dominates the
    # demosaic error of this scene (about 38 dB noise-free): both denoising chains must gain on the noisy one.
    # The built-in denoiser (model-first) is guarded, so never expected worse than its input; it must gain too.
    for chain in ("raw-first", "model-first", "rgb-after"):
        assert got[(chain, "AHD")]["cpsnr"] > got[("noisy", "AHD")]["cpsnr"] + 1.0, chain
        assert got[(chain, "AHD")]["ssim"] > got[("noisy", "AHD")]["ssim"], chain
    assert score_rgb(truth, truth)["ssim"] == pytest.approx(1.0)


def test_model_denoiser_and_joint_model_refuse_the_other_kind(tmp_path):
    from _models import make_joint_model

    from rawlab.errors import RawlabError

    make_joint_model(tmp_path / "joint")
    with pytest.raises(RawlabError, match="joint demosaic model"):
        model_denoiser(str(tmp_path / "joint"))
    with pytest.raises(RawlabError, match="Bayer denoiser"):
        joint_model("builtin")
    planes = np.random.default_rng(4).random((40, 56, 4), dtype=np.float32)
    rgb = joint_model(str(tmp_path / "joint"))(planes, "GRBG", np.full(4, 2e-3), np.full(4, 1e-5))
    assert rgb.shape == (80, 112, 3) and rgb.dtype == np.float32
