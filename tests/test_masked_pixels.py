"""The sensor's optically masked pixels as the measure of its read noise: rawlab.rawio reads them from real
files (Canon's CRWs keep them), rawlab.deploy.noiseparams turns them into ``b`` where no profile knows the
sensor, including sensors that clip their data at black."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from rawlab.deploy.noiseparams import masked_read_noise, noise_for_frame, single_image_noise
from rawlab.noise.masked import MASKED_MIN
from rawlab.rawio import masked_pixel_stats, read_info, read_raw


def strip(sd_dn: float, black: float, n: int, seed: int, white: float = 4095.0) -> np.ndarray:
    """``n`` masked pixels of a sensor whose read noise (rounding included) has sd ``sd_dn`` DN: a normal of
    variance ``sd^2 - 1/12`` at ``black``, rounded to whole DN and clipped to ``[0, white]``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(black, math.sqrt(sd_dn**2 - 1.0 / 12.0), n)
    return np.clip(np.rint(x), 0.0, white)


def info_for(values, black=64.0, white=4095.0):
    return SimpleNamespace(
        black_level=(black,) * 4, white_level=white, masked=masked_pixel_stats(values, black)
    )


def test_unclipped_masked_pixels_give_the_read_noise():
    n, sd = 100_000, 2.5
    b, how = masked_read_noise(info_for(strip(sd, 64.0, n, 0)))
    want = sd**2 / (4095.0 - 64.0) ** 2
    # the sample variance's relative sd is sqrt(2 / n) = 0.45 %; 5 of them
    assert abs(b[1] / want - 1.0) < 5 * math.sqrt(2.0 / n), (b, want)
    np.testing.assert_array_equal(b, b[1])  # one channel, one black level: one b
    assert how == f"b from {n} masked pixels"


def test_outliers_do_not_move_it():
    """A hot pixel and a bright column in the border are left out by the 7-sd clip."""
    n, sd = 100_000, 2.5
    v = strip(sd, 64.0, n, 1)
    v[:300] = 900.0  # a column lit by a leak
    v[500] = 4095.0
    m = masked_pixel_stats(v)
    assert m.count == n - 301
    assert abs(m.variance / sd**2 - 1.0) < 5 * math.sqrt(2.0 / m.count)


@pytest.mark.parametrize("sd", [1.5, 4.0])
def test_pixels_clipped_at_black_are_fitted_as_a_clipped_normal(sd):
    """A sensor that clips its data at 0 DN with black at 0: half the masked pixels sit at 0, and their plain
    variance is a third of the read noise's; the clipped-normal fit recovers it."""
    n = 200_000
    v = strip(sd, 0.0, n, 2)
    m = masked_pixel_stats(v)
    assert 0.4 < m.floor_share < 0.7 and m.variance < 0.5 * sd**2  # what a plain variance would report
    b, how = masked_read_noise(info_for(v, black=0.0))
    want = sd**2 / 4095.0**2
    # censoring about doubles the variance estimate's sd (0.32 % -> ~0.6 %), and the clipped-normal moments are
    # within 1 % of the lattice's from 1 DN of sd (rawlab.noise.fit.clipped_normal): 3 % covers both
    assert abs(b[1] / want - 1.0) < 0.03, (b, want)
    assert "clipped at 0 DN" in how


def test_masked_pixels_that_cannot_stand_for_the_read_noise_are_refused():
    few = masked_read_noise(info_for(strip(2.5, 64.0, MASKED_MIN - 1000, 3)))
    assert few[0] is None and "too few" in few[1]
    offset = masked_read_noise(info_for(strip(2.5, 80.0, 20_000, 4)))  # reads 80 DN, the file says 64
    assert offset[0] is None and "+16.0 DN from the black level 64" in offset[1]
    crushed = masked_read_noise(info_for(strip(0.4, 0.0, 20_000, 5), black=0.0))  # 0.4 DN at 0: 97 % at 0
    assert crushed[0] is None and "clipped" in crushed[1]
    none = SimpleNamespace(black_level=(0,) * 4, white_level=255, masked=None)
    assert masked_read_noise(none) == (None, "")


def test_single_image_noise_takes_the_measured_b_and_keeps_its_a():
    rng = np.random.default_rng(6)
    ramp = np.linspace(0.02, 0.9, 192)[None, :, None] + np.zeros((4, 192, 192))  # smooth: a and b both fit
    planes = ramp + rng.normal(0.0, 1.0, ramp.shape) * np.sqrt(2e-4 * ramp + 1e-5)
    a0, b0 = single_image_noise(planes, 0.0, 4095.0)
    measured = np.array([3e-6, 2e-6, 2.1e-6, 4e-6])
    a1, b1 = single_image_noise(planes, 0.0, 4095.0, read_noise=measured)
    np.testing.assert_array_equal(a1, a0)
    np.testing.assert_array_equal(b1, measured)
    assert not np.allclose(b0, measured)


S40 = [f"canon_powershot-s40_iso50_crw-{k}.CRW" for k in ("0101", "0104", "0105", "0112", "0113", "0117",
                                                        "0118", "0119")]  # fmt: skip


def test_real_crws_masked_border_measures_one_read_noise(samples_dir):
    """Eight frames of one Canon PowerShot S40 at ISO 50: their masked border reads at the black level LibRaw
    reports, and gives one read noise for all eight, where the image alone cannot (its b spreads many times
    wider over the same frames)."""
    bayer = samples_dir / "bayer"
    masked, single = [], []
    for name in S40:
        frame = read_raw(bayer / name)
        info = frame.info
        assert info.masked is not None and info.masked.count > 100_000
        assert abs(info.masked.offset) < 0.5 and abs(info.masked.mean - info.black_level[1]) < 0.5
        est = noise_for_frame(None, info, frame.normalized())
        assert est.source == "single-image" and f"b from {info.masked.count} masked pixels" in est.detail
        span = info.white_level - np.asarray(info.black_level)
        np.testing.assert_allclose(est.b, np.asarray(info.masked.channel_variance) / span**2, rtol=1e-9)
        masked.append(est.b[1])
        single.append(single_image_noise(frame.normalized(), info.black_level, info.white_level)[1][1])
    cv = lambda v: float(np.std(v) / np.mean(v))  # noqa: E731
    # frame to frame the masked b varies by a few percent (the sensor's temperature), the image-alone b by tens
    assert cv(masked) < 0.1 and cv(single) > 3 * cv(masked), (cv(masked), cv(single))


def test_a_file_without_a_masked_border_has_none(samples_dir):
    nef = samples_dir / "bayer" / "nikon_d1_iso200_raw-nikon-d1.NEF"
    assert read_info(nef).masked is None


@pytest.mark.parametrize("black", [64, 0])
def test_a_dng_with_a_masked_border_gives_its_read_noise_end_to_end(tmp_path, black):
    """A DNG whose ActiveArea leaves a 16-px border around the image (read noise of sd 3 DN at the black level,
    clipped at 0 DN as the sensor's data are; at black 0 half of it is), through rawio and the noise order of
    ``rawlab denoise``: ``b`` is the border's, within 5 sd of its sampling error (a channel's quarter of the
    pixels; censored, all of them at about twice the error), whatever the image."""
    from rawlab.dng import write_dng

    rng = np.random.default_rng(7)
    h, w, m, sd, white = 256, 384, 16, 3.0, 4095
    dn = lambda x: np.clip(np.rint(x), 0, white).astype(np.uint16)  # noqa: E731
    mosaic = dn(black + rng.normal(0.0, math.sqrt(sd**2 - 1 / 12), (h + 2 * m, w + 2 * m)))
    ramp = black + np.linspace(200, 3000, w)[None, :] + np.zeros((h, 1))
    mosaic[m : m + h, m : m + w] = dn(ramp + rng.normal(0.0, 1.0, ramp.shape) * np.sqrt(ramp - black + sd**2))
    path = tmp_path / "bordered.dng"
    write_dng(path, mosaic, cfa="RGGB", black_level=black, white_level=white, make="Nobody", model="Bordered",
              extra_tags=[(50829, "LONG", 4, (m, m, m + h, m + w))])  # fmt: skip
    frame = read_raw(path)
    border = (
        2 * (m - 2) * (w + 2 * m) + 2 * (m - 2) * h
    )  # less the 2 lines next to the image (rawio.MASK_GUARD)
    assert frame.mosaic.shape == (h, w) and border - 5 <= frame.info.masked.count <= border
    est = noise_for_frame(None, frame.info, frame.normalized())
    want = sd**2 / (white - black) ** 2
    n = frame.info.masked.count / 4  # unclipped, each channel's own variance: a quarter of the pixels
    assert abs(est.b[1] / want - 1.0) < 5 * math.sqrt(2.0 / n), (est.b[1], want)
    assert "masked pixels" in est.detail and ("clipped at 0 DN" in est.detail) == (black == 0)


def test_synth_masked_border_holds_each_sensors_read_noise(tmp_path):
    """``rawlab synth --masked-border``: the frames' pixels are those written without it (same seed), and their
    masked border gives each sensor's true ``b`` per channel (MP-2's read noise differs between channels; PG-1
    clips at 0 DN, so half its border is clipped), within 5 sd of the sampling error."""
    from click.testing import CliRunner

    from rawlab.cli import main
    from rawlab.noise.profile import load_profiles

    args = ["--size", "512x384", "--sensors", "4", "--scenes", "1", "--clean-frames", "1"]
    for out, extra in (("plain", []), ("bordered", ["--masked-border", "16"])):
        res = CliRunner().invoke(main, ["synth", str(tmp_path / out), *args, *extra])
        assert res.exit_code == 0, res.output
    truth = load_profiles(tmp_path / "bordered" / "truth.json")
    frames = sorted((tmp_path / "bordered").glob("*/*/*.dng"))
    assert len(frames) == 21
    clipped = 0
    for path in frames:
        frame = read_raw(path)
        plain = read_raw(tmp_path / "plain" / path.relative_to(tmp_path / "bordered"))
        np.testing.assert_array_equal(frame.mosaic, plain.mosaic)
        assert plain.info.masked is None
        b, how = masked_read_noise(frame.info)
        want = np.asarray(truth.noise_at(frame.info.sensor, frame.info.iso).b)
        n = frame.info.masked.count
        if "clipped" in how:  # all pixels together, censored: about twice the error
            clipped += 1
            tol = 2 * 5 * math.sqrt(2.0 / n)
        else:
            tol = 5 * math.sqrt(2.0 / (n / 4))
        assert np.all(np.abs(b / want - 1.0) < tol), (path.name, b / want, tol)
    assert clipped == 6  # PG-1's six ISOs


def test_synth_masked_border_refuses_odd_or_other_modes(tmp_path):
    from click.testing import CliRunner

    from rawlab.cli import main

    odd = CliRunner().invoke(main, ["synth", str(tmp_path / "a"), "--masked-border", "3"])
    assert odd.exit_code == 2 and "must be even" in odd.output
    burst = CliRunner().invoke(main, ["synth", str(tmp_path / "b"), "--burst", "2", "--masked-border", "4"])
    assert burst.exit_code == 2 and "not with --burst" in burst.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_noise_fit_single_takes_b_from_the_catalogued_borders(tmp_path, client):
    """``rawlab synth --masked-border`` -> ``rawlab catalog build`` (which records each frame's border) ->
    ``noise-fit --method single``: ``b`` per ISO and channel is the frames' border's, within 5 sd of the truth
    (one frame per ISO: a channel's quarter of the 25,984 border pixels, 1.75 %, or all of them censored at about
    twice that per pixel on PG-1, the same), on both sensors."""
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions
    from rawlab.noise.pipeline import fit_store
    from rawlab.noise.profile import load_profiles
    from rawlab.synth import write_dataset

    summary = write_dataset(
        tmp_path / "data", seed=3, size=(512, 384), n_sensors=2, n_scenes=1, n_clean=1, masked_border=16
    )
    store = tmp_path / "store.zarr"
    build_catalog([str(tmp_path / "data")], str(store), options=RunOptions(client=client))
    fitted = fit_store(str(store), method="single", bootstrap=0, options=RunOptions(client=client))
    truth = load_profiles(summary.truth_path)
    assert any("masked border" in n for n in fitted.notes), fitted.notes
    for st in truth.sensors:
        sf = fitted.profiles.sensor(st.sensor)
        for p in st.profiles:
            got = np.asarray(sf.at_iso(p.iso).b)
            assert np.all(np.abs(got / np.asarray(p.b) - 1.0) < 5 * 0.0175), (st.sensor, p.iso, got / p.b)
