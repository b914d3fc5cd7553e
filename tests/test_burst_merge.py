"""``rawlab.burst`` and ``rawlab burst merge``: a static burst merges to nearly the ideal noise reduction, a moving
object is not ghosted, the merged DNG opens in rawpy with its NoiseProfile, and bad input is one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _darktable import darktable_render, needs_darktable
from click.testing import CliRunner

from rawlab.bayer import pack
from rawlab.burst import merge_burst
from rawlab.cli import main
from rawlab.synth.burst import FrameMotion, simulate_burst
from rawlab.synth.sensors import SENSORS

PHONE = SENSORS[1]  # SynthCam MP-2: its black level keeps the noise unclipped at black


def _psnr(x, truth, where=None) -> float:
    err = (x - truth) ** 2
    return float(-10 * np.log10(np.mean(err if where is None else err[where])))


def _noise_only_factor(n: int = 8, bins: float = 4.0) -> float:
    """Expected variance factor (over one frame's) of the merge's first pass on pure noise, by the weight's
    formula (:mod:`rawlab.burst.merge`): ``|R - Z|^2 / s^2`` is ``2 E`` with ``E ~ Exp(1)`` per frequency, and the
    box over ``SMOOTH^2`` frequencies averages about ``bins`` independent ones (the raised-cosine window makes
    neighbouring DFT coefficients correlate: its noise bandwidth is 1.5 bins per axis, so 25 frequencies hold
    about 11; 4 is the pessimistic end), so ``r = 2 Gamma(bins) / bins``, ``A = e / (e + c)`` with ``e = max(r - 2,
    0)``, and the merged variance is ``((1 + sum A)^2 + sum (1 - A)^2) / n^2``. Monte Carlo, fixed seed."""
    from rawlab.burst.merge import ROBUSTNESS

    rng = np.random.default_rng(0)
    r = 2 * rng.gamma(bins, size=(200_000, n - 1)) / bins
    e = np.maximum(r - 2.0, 0.0)
    a = e / (e + ROBUSTNESS)
    return float((((1 + a.sum(axis=1)) ** 2 + ((1 - a) ** 2).sum(axis=1)) / n**2).mean())


def test_static_burst_gains_nearly_the_ideal():
    """8 static frames at ISO 3200, moved by whole Bayer periods (so resampling is exact and only the merge
    is measured): the merge gains 10 log10(8) = 9.0 dB over the reference frame minus the weight's loss on
    pure noise (at most 0.36 dB, :func:`_noise_only_factor`; the second pass only lowers it) minus 0.5 dB for
    the frame borders (tiles whose content a shift moves out of the frame keep the reference; 6% of a 256x192
    frame's tiles) and the sampling error of one burst."""
    rng = np.random.default_rng(4)
    motion = [FrameMotion(0.0, 0.0, 0.0)] + [
        FrameMotion(float(2 * rng.integers(-2, 3)), float(2 * rng.integers(-2, 3)), 0.0) for _ in range(7)
    ]
    burst = simulate_burst(PHONE, "chart", 3200, 8, (256, 192), seed=11, moving=False, motion=motion)
    x, truth = burst.normalized(), np.clip(burst.clean[0], 0, 1)
    a, b = PHONE.noise_params(3200)
    merged = merge_burst(x, a, b)
    gain = _psnr(merged.planes, truth) - _psnr(x[0], truth)
    factor = _noise_only_factor()
    loss = 10 * math.log10(8 * factor)
    assert gain >= 10 * math.log10(8) - loss - 0.5, gain
    # The merge's own estimate of its noise (the DNG's NoiseProfile) against what it achieved: the variance of
    # merged - truth on unclipped pixels over the law's. The estimate takes the weights as given; a frame's own
    # noise raises its rejection, which lowers its weight, so what is achieved is at most the estimate (5%:
    # one burst's sampling error, the mean of ~27,000 squared errors, is under 1%). And the estimate stays near
    # a perfect average: the weight's pure-noise factor (Monte Carlo, 4 independent frequencies, the
    # pessimistic end) plus a quarter of 1 / N for the border tiles and the second pass.
    ok = (truth > 0.05) & (truth < 0.9)
    measured = np.mean((merged.planes - truth)[ok] ** 2) / np.mean(
        (a[:, None, None] * truth + b[:, None, None])[ok]
    )
    estimate = merged.variance_factor.mean()
    assert measured <= 1.05 * estimate, (measured, merged.variance_factor)
    assert estimate <= factor + 0.25 / 8, (measured, merged.variance_factor)


def test_edge_tiles_merge_like_the_interior():
    """8 frames of a chart that did not move (ISO 3200): within 4 packed pixels of the frame's edge the merge
    leaves as little noise as inside. Edge tiles reach beyond the frame, where each frame repeats its own edge
    pixels; counted there, those repeated differences rejected much of every edge tile (the edge's squared
    error was 1.31 to 1.41 times the interior's, over 4 seeds). Now they are left out: measured 1.01 to 1.05.
    Bound 1.15: the band's mean squared error over 6,912 samples has a sampling error under 2 %."""
    motion = [FrameMotion(0.0, 0.0, 0.0)] * 8
    burst = simulate_burst(PHONE, "chart", 3200, 8, (256, 192), seed=30, moving=False, motion=motion)
    x, truth = burst.normalized(), np.clip(burst.clean[0], 0, 1)
    merged = merge_burst(x, *PHONE.noise_params(3200)).planes
    h, w = truth.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    dist = np.broadcast_to(np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx)), truth.shape)

    def ratio(where):  # the merge's squared error over the reference frame's
        return np.mean((merged - truth)[where] ** 2) / np.mean((x[0] - truth)[where] ** 2)

    assert ratio(dist < 4) <= 1.15 * ratio(dist >= 16), (ratio(dist < 4), ratio(dist >= 16))


def test_a_clipped_reference_is_not_pulled_below_white():
    """Where the reference is clipped at white its samples carry no noise, so an alternate that differs there
    (an interpolated plateau just below white) is rejected, not averaged in: a white block whose alternates
    read 0.995 stays exactly white. With the law's noise at white counted there, as before, it merged to
    0.996."""
    rng = np.random.default_rng(2)
    a, b = PHONE.noise_params(1600)
    frames = 0.5 + np.sqrt(a * 0.5 + b)[:, None, None] * rng.standard_normal((8, 4, 64, 64))
    frames[:, :, 16:48, 16:48] = 0.995
    frames[0, :, 16:48, 16:48] = 1.0
    merged = merge_burst(frames.astype(np.float32), a, b).planes
    np.testing.assert_allclose(merged[:, 24:40, 24:40], 1.0, atol=1e-5)  # tiles wholly inside the block


def test_shaken_burst_meets_the_issue_target():
    """Hand shake (sub-pixel translations and rotations, so each plane is resampled) at ISO 3200: at least
    the +6 dB of issue 14 for 8 frames; and fewer frames gain less, but gain."""
    burst = simulate_burst(PHONE, "chart", 3200, 8, (256, 192), seed=12, moving=False)
    x, truth = burst.normalized(), np.clip(burst.clean[0], 0, 1)
    a, b = PHONE.noise_params(3200)
    gains = [
        _psnr(merge_burst(x[:n], a, b, cfa=PHONE.cfa).planes, truth) - _psnr(x[0], truth) for n in (2, 4, 8)
    ]
    assert gains[2] >= 6.0, gains
    assert 0 < gains[0] < gains[1] < gains[2], gains


@pytest.mark.parametrize("sensor, iso", [(PHONE, 1600), (SENSORS[0], 6400)])
def test_moving_object_is_not_ghosted(sensor, iso):
    """Where the object is in any frame, the merge is no worse than the reference frame alone."""
    burst = simulate_burst(sensor, "coffee", iso, 8, (256, 192), seed=13, moving=True)
    x, truth = burst.normalized(), np.clip(burst.clean[0], 0, 1)
    region = pack(burst.moving_region().astype(np.uint8), sensor.cfa).astype(bool)
    merged = merge_burst(x, *sensor.noise_params(iso), cfa=sensor.cfa).planes
    assert _psnr(merged, truth, region) >= _psnr(x[0], truth, region)
    assert _psnr(merged, truth) > _psnr(x[0], truth) + 2  # and it still denoises the rest


def _true_alignments(burst, tile=16):
    """Each tile's true displacement (packed pixels) from the burst's motion: where the tile's centre went."""
    from rawlab.burst import Alignment
    from rawlab.burst.align import tile_origins
    from rawlab.synth.burst import _frame_of_scene

    _, _, h, w = burst.clean.shape
    cy, cx = tile_origins(h, tile) + tile / 2 - 0.5, tile_origins(w, tile) + tile / 2 - 0.5
    gy, gx = np.meshgrid(2 * cy + 0.5, 2 * cx + 0.5, indexing="ij")  # mosaic coordinates of the centres
    out = []
    for m in burst.motion:
        fx, fy = _frame_of_scene(m, gx, gy, (2 * w - 1) / 2, (2 * h - 1) / 2)
        out.append(Alignment(np.stack([(fy - gy) / 2, (fx - gx) / 2], axis=-1).astype(np.float32), tile))
    return out


def test_resampling_through_the_demosaic_beats_each_plane_alone():
    """On noise-free frames moved by the true shake, an alternate's tiles resampled through the demosaic are
    closer to the reference's than each plane resampled alone (whose aliasing no interpolation undoes), and
    a whole-period displacement gives the plane's own samples exactly (away from the frame's edges, which
    the two extend differently)."""
    from rawlab.burst.align import tile_origins
    from rawlab.burst.resample import mosaic_tiles, shifted_tiles

    burst = simulate_burst(SENSORS[0], "coffee", 800, 3, (192, 128), seed=21, moving=False)
    y0, x0 = tile_origins(64, 16), tile_origins(96, 16)
    inner = (slice(None), slice(1, -2), slice(1, -2))  # tiles the motion keeps inside the frame
    ref = shifted_tiles(burst.clean[0], y0, x0, 16, np.zeros((len(y0), len(x0), 2)))
    for k, al in enumerate(_true_alignments(burst)[1:], start=1):
        per_plane = shifted_tiles(burst.clean[k], y0, x0, 16, al.displacement)
        demosaic = mosaic_tiles(burst.clean[k], SENSORS[0].cfa, y0, x0, 16, al.displacement)
        e_plane = np.mean((per_plane - ref)[inner] ** 2)
        e_demosaic = np.mean((demosaic - ref)[inner] ** 2)
        assert e_demosaic < 0.7 * e_plane, (k, e_demosaic, e_plane)
    whole = np.full((len(y0), len(x0), 2), [1.0, -2.0], np.float32)  # inside the frame (edges differ)
    got = mosaic_tiles(burst.clean[1], "RGGB", y0, x0, 16, whole)[:, 1:-2, 2:-1]
    np.testing.assert_allclose(
        got, shifted_tiles(burst.clean[1], y0, x0, 16, whole)[:, 1:-2, 2:-1], atol=1e-6
    )


def test_the_resampling_demosaic_is_dht_keeps_each_sample_and_clips_no_noise(monkeypatch):
    """``demosaic_frame`` (what the merge resamples an alternate through) is LibRaw's DHT: every site keeps its own
    sample exactly, the noise below black survives (a frame at 1 % of white with unit-law noise has many samples
    below 0, and so do the interpolated sites), and the same planes give the same RGB. Where a rawpy build has no
    DHT (simulated: this one has it, so the check is patched) it is Malvar-He-Cutler's, exactly."""
    from rawlab.bayer import channel_offsets
    from rawlab.burst import resample

    burst = simulate_burst(SENSORS[0], "coffee", 6400, 1, (128, 96), seed=4, moving=False)
    planes = 0.01 * burst.clean[0] + 0.01 * np.random.default_rng(4).standard_normal(burst.clean[0].shape)
    planes = planes.astype(np.float32)
    cfa = SENSORS[0].cfa
    rgb = resample.demosaic_frame(planes, cfa)
    assert rgb.shape == (3, 96, 128) and rgb.dtype == np.float32
    own = np.zeros(rgb.shape, bool)
    for c, (oy, ox) in enumerate(channel_offsets(cfa)):
        np.testing.assert_array_equal(rgb[(0, 1, 1, 2)[c], oy::2, ox::2], planes[c])
        own[(0, 1, 1, 2)[c], oy::2, ox::2] = True
    assert (
        planes.min() < -0.02 and np.mean(rgb[~own] < 0) > 0.1
    )  # interpolated noise below black, not clipped
    np.testing.assert_array_equal(resample.demosaic_frame(planes, cfa), rgb)
    mhc = resample.demosaic_mhc(planes, cfa)
    assert np.abs(mhc - rgb)[~own].max() > 1e-3  # DHT, not MHC
    import rawlab.demosaic

    monkeypatch.setattr(rawlab.demosaic, "available_demosaics", lambda methods: ([], list(methods)))
    np.testing.assert_array_equal(resample.demosaic_frame(planes, cfa), mhc)


def test_one_frame_and_the_reference_are_kept():
    """A burst of one frame merges to that frame exactly (the tiles' windows sum to 1), and a reference other
    than the first is the one kept where every frame disagrees."""
    burst = simulate_burst(PHONE, "coffee", 800, 2, (64, 48), seed=1, moving=False)
    x = burst.normalized()
    one = merge_burst(x[:1], *PHONE.noise_params(800))
    np.testing.assert_allclose(one.planes, x[0], atol=1e-5)
    assert np.allclose(one.variance_factor, 1.0)
    noise = np.random.default_rng(0).normal(0, 1, x.shape).astype(np.float32)  # frames nothing alike
    kept = merge_burst(noise, 1e-8, 1e-8, reference=1).planes
    np.testing.assert_allclose(kept, noise[1], atol=1e-3)


# -- the command line -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("burstcli")
    result = CliRunner().invoke(
        main,
        ["synth", str(root / "d"), "--burst", "3", "--size", "128x96", "--sensors", "1", "--scenes", "1"],
    )
    assert result.exit_code == 0, result.output
    return root


def _frames(data, iso=3200):
    return sorted(str(p) for p in (data / "d" / "SynthCam_PG-1" / "chart" / f"burst_iso{iso}").glob("*.dng"))


def test_cli_merges_frames_to_a_dng_rawpy_reads(data, tmp_path):
    import rawpy

    from rawlab.dng import read_dng_tags
    from rawlab.rawio import read_raw

    out = tmp_path / "merged.dng"
    result = CliRunner().invoke(main, ["burst", "merge", *_frames(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "merged: 3 frames" in result.output and "DNG NoiseProfile" in result.output
    with rawpy.imread(str(out)) as raw:
        assert raw.raw_image.shape == (96, 128)
    merged, ref = read_raw(out), read_raw(_frames(data)[0])
    assert (merged.info.iso, merged.info.cfa, merged.info.black_level, merged.info.white_level) == (
        ref.info.iso, ref.info.cfa, ref.info.black_level, ref.info.white_level,
    )  # fmt: skip
    profile, before = read_dng_tags(out)["noise_profile"], read_dng_tags(_frames(data)[0])["noise_profile"]
    assert len(profile) == 3 and all(
        0 < s < s0 and 0 < o < o0 for (s, o), (s0, o0) in zip(profile, before, strict=True)
    )
    # Never replaced silently.
    again = CliRunner().invoke(main, ["burst", "merge", *_frames(data), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output
    assert (
        CliRunner()
        .invoke(main, ["burst", "merge", *_frames(data), "--out", str(out), "--overwrite"])
        .exit_code
        == 0
    )


def test_cli_noise_from_a_profile_or_the_image(data, tmp_path):
    """--noise PROFILE wins for a sensor it knows; a DNG without NoiseProfile falls back on the image."""
    from rawlab.rawio import read_raw
    from rawlab.synth.generate import write_frame

    out = tmp_path / "m.dng"
    truth = data / "d" / "truth.json"
    result = CliRunner().invoke(
        main, ["burst", "merge", *_frames(data), "--out", str(out), "--noise", str(truth)]
    )
    assert result.exit_code == 0 and "noise from --noise profile" in result.output, result.output
    bare = []
    for k, path in enumerate(_frames(data)):  # the same frames without their NoiseProfile
        frame = read_raw(path)
        bare.append(tmp_path / f"bare_{k}.dng")
        write_frame(bare[-1], frame.mosaic, cfa=frame.info.cfa, black_level=list(frame.info.black_level),
                    white_level=frame.info.white_level, make="SynthCam", model="PG-1", iso=3200)  # fmt: skip
    result = CliRunner().invoke(main, ["burst", "merge", *map(str, bare), "--out", str(tmp_path / "b.dng")])
    assert result.exit_code == 0 and "noise from single-image" in result.output, result.output
    assert "no --noise profile" in result.output


def test_cli_folder_mode_through_dask(data, tmp_path):
    out = tmp_path / "merged"
    args = ["burst", "merge", str(data / "d" / "SynthCam_PG-1"), "--out", str(out), "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dng"))
    assert written == [f"chart/burst_iso{iso}.dng" for iso in sorted(SENSORS[0].iso_ladder, key=str)]
    assert f"{len(written)} of {len(written)} bursts merged" in result.output
    rerun = CliRunner().invoke(main, args)  # outputs exist: kept, reported as skipped
    assert rerun.exit_code == 0 and f"{len(written)} skipped" in rerun.output


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_cli_bad_inputs_are_one_line(data, tmp_path):
    run = CliRunner().invoke
    frames = _frames(data)
    text = tmp_path / "notes.dng"
    text.write_text("not a raw file\n")
    line = _one_line_error(
        run(main, ["burst", "merge", frames[0], str(text), "--out", str(tmp_path / "o.dng")])
    )
    assert str(text) in line
    line = _one_line_error(run(main, ["burst", "merge", frames[0], "--out", str(tmp_path / "o.dng")]))
    assert "at least two frames" in line
    other_iso = _frames(data, 800)[1]
    line = _one_line_error(
        run(main, ["burst", "merge", frames[0], other_iso, "--out", str(tmp_path / "o.dng")])
    )
    assert other_iso in line and "ISO" in line
    small = tmp_path / "small.dng"
    burst = simulate_burst(SENSORS[0], "chart", 3200, 1, (64, 48), seed=0, moving=False)
    from rawlab.synth.generate import write_frame

    write_frame(small, burst.mosaics()[0], cfa="RGGB", black_level=0, white_level=4095, make="SynthCam",
                model="PG-1", iso=3200)  # fmt: skip
    line = _one_line_error(
        run(main, ["burst", "merge", frames[0], str(small), "--out", str(tmp_path / "o.dng")])
    )
    assert str(small) in line and "size" in line
    line = _one_line_error(
        run(main, ["burst", "merge", *frames, "--reference", "5", "--out", str(tmp_path / "o.dng")])
    )
    assert "--reference 5" in line
    line = _one_line_error(
        run(main, ["burst", "merge", frames[0], str(data / "d"), "--out", str(tmp_path / "o")])
    )
    assert "not both" in line
    assert not (tmp_path / "o.dng").exists()


@needs_darktable
def test_darktable_opens_the_merged_dng(data, tmp_path):
    """A real client reads the merged Bayer DNG: darktable renders it at the mosaic's size (give or take its
    demosaic border), and the picture is the reference frame's (rank correlation of the two renders)."""
    from scipy.stats import spearmanr

    out = tmp_path / "merged.dng"
    assert CliRunner().invoke(main, ["burst", "merge", *_frames(data), "--out", str(out)]).exit_code == 0
    merged, ref = darktable_render(out, tmp_path), darktable_render(_frames(data)[0], tmp_path)
    assert merged.ndim == 3 and abs(merged.shape[0] - 96) <= 8 and abs(merged.shape[1] - 128) <= 8
    assert merged.std() > 1.0  # not blank
    h, w = min(merged.shape[0], ref.shape[0]), min(merged.shape[1], ref.shape[1])
    grey = lambda img: img[:h, :w].mean(axis=2).ravel()  # noqa: E731
    assert spearmanr(grey(merged), grey(ref)).statistic > 0.9
