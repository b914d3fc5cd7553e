"""`rawlab denoise`: tiles without seams, denoised DNGs that LibRaw reads back exactly, real camera files,
bad files reported while the rest go on, where outputs go (mirrored, never clobbered), damaged models and
unwritable outputs refused up front, and the exit codes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _darktable import darktable_render, needs_darktable, rank_correlation
from _models import TILE, denoise_in_fresh_interpreter, first_sensor_noise, make_model

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

import itertools

from click.testing import CliRunner

from rawlab.cli import main
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError


def _psnr(x, ref) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - ref) ** 2)))


@pytest.fixture(scope="module")
def model(tmp_path_factory, small_synth):
    """A tiny U-Net with every parameter perturbed (non-trivial), knowing the noise law of small_synth's
    SynthCam PG-1 only."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    return path, make_model(path, noise=first_sensor_noise(small_synth.truth_path))


@pytest.fixture(scope="module")
def tflite(model, tmp_path_factory):
    """The model exported to float32 TFLite (with TensorFlow when installed, else skip)."""
    pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
    from rawlab.deploy.export import export_tflite

    out = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    export_tflite(model[0], out, n_eval=2)
    return out


@pytest.fixture(scope="module")
def scene():
    """Clean packed planes several tiles wide (200 x 260: 4 x 5 tiles of 64) and a noisy copy, (h, w, 4)."""
    from rawlab.synth import get_sensors
    from rawlab.synth.scenes import render_scene

    clean = np.clip(render_scene("astronaut", get_sensors(1)[0], 400, 520), 0, 1)
    clean = np.moveaxis(clean, 0, -1).astype(np.float32)
    a, b = np.full(4, 2e-3, np.float32), np.full(4, 1e-5, np.float32)
    rng = np.random.default_rng(0)
    noisy = (clean + np.sqrt(a * clean + b) * rng.standard_normal(clean.shape)).astype(np.float32)
    return clean, noisy, a, b


def test_tiles_blend_to_a_partition_of_unity():
    from rawlab.deploy.tiling import blend_weights, run_tiled, tile_origins

    for length in (64, 65, 100, 111, 200, 257, 1000):
        origins = tile_origins(length, 64, 16)
        assert origins[0] == 0 and origins[-1] == length - 64
        assert all(b - a <= 64 - 16 for a, b in itertools.pairwise(origins))
        total = np.zeros(length)
        for o, w in zip(origins, blend_weights(origins, 64, 16), strict=True):
            total[o : o + 64] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-12)
    x = np.random.default_rng(0).random((150, 97, 3)).astype(np.float32)
    np.testing.assert_allclose(
        run_tiled(lambda t: t * 2, x, 64, 16, batch=3, out_channels=3), 2 * x, rtol=1e-6
    )
    small = run_tiled(lambda t: t, x[:40, :30], 64, 16, out_channels=3)  # smaller than a tile: padded
    np.testing.assert_allclose(small, x[:40, :30])


def test_tiled_jax_has_no_seams(model, scene):
    from rawlab.deploy.runtime import JaxDenoiser

    _, m = model
    clean, noisy, a, b = scene
    whole = m.denoise(noisy, a, b)  # the network on the whole image at once
    d = JaxDenoiser(m)
    d.guard = False  # the network alone: tiling must not change it (the guard is per tile by design)
    tiled = d.denoise(noisy, a, b)
    assert _psnr(whole, clean) < _psnr(noisy, clean) - 3  # the perturbed network really changes the image
    assert abs(_psnr(tiled, clean) - _psnr(whole, clean)) <= 0.01


def test_the_guard_keeps_a_bad_network_from_harming_the_image(model, scene):
    """The perturbed network is over 3 dB worse than its input; guarded (the default), the output is not
    worse than the input. Bound: SURE's error on a tile's weight is about sigma / |r| per tile (a few 1e-3
    on 64 x 64 x 4 tiles, see tests/test_guard.py), which moves PSNR by far less than 0.05 dB."""
    from rawlab.deploy.runtime import JaxDenoiser

    _, m = model
    clean, noisy, a, b = scene
    d = JaxDenoiser(m)
    assert d.guard  # on by default, as `rawlab denoise` runs it
    guarded = d.denoise(noisy, a, b)
    assert _psnr(guarded, clean) >= _psnr(noisy, clean) - 0.05
    assert _psnr(guarded, clean) > _psnr(m.denoise(noisy, a, b), clean) + 3
    assert len(d.guard_weights) >= 20 and max(d.guard_weights) < 0.5  # the bad network is mostly undone


def test_tiled_tflite_matches_the_whole_image_jax(model, tflite, scene):
    from rawlab.deploy import load_denoiser

    _, m = model
    clean, noisy, a, b = scene
    d = load_denoiser(tflite)
    d.guard = False  # the network alone, as in test_tiled_jax_has_no_seams
    assert d.kind == "tflite" and d.tile == TILE
    batch = np.stack(
        [noisy, noisy[::-1]]
    )  # (N, h, w, 4) with per-image noise (N, 1, 1, 4), like TrainedModel
    out = d.denoise(batch, np.broadcast_to(a, (2, 1, 1, 4)), np.broadcast_to(b, (2, 1, 1, 4)))
    assert out.shape == batch.shape
    assert abs(_psnr(out[0], clean) - _psnr(m.denoise(noisy, a, b), clean)) <= 0.01


def test_denoised_dng_round_trips_through_rawpy(model, small_synth, tmp_path):
    import rawpy

    from rawlab.bayer import channel_offsets
    from rawlab.deploy.denoise import denoise_frame, write_denoised_dng
    from rawlab.deploy.runtime import JaxDenoiser
    from rawlab.dng import read_dng_tags
    from rawlab.rawio import read_raw

    # SynthCam MP-2: BGGR, 10 bits, a different black level per channel; the model does not know its law.
    src = sorted((small_synth.out / "SynthCam_MP-2").rglob("*iso800*.dng"))[0]
    frame = read_raw(src)
    result = denoise_frame(frame, JaxDenoiser(model[1]))
    assert result.noise.source == "DNG NoiseProfile"
    out = tmp_path / "out.dng"
    write_denoised_dng(out, frame, result)

    with rawpy.imread(str(out)) as raw:
        assert raw.raw_image_visible.shape == frame.mosaic.shape
        np.testing.assert_array_equal(raw.raw_image_visible, result.mosaic)
        letters = raw.color_desc.decode()
        assert "".join(letters[i] for i in raw.raw_pattern.ravel()) == frame.info.cfa == "BGGR"
        black = [raw.black_level_per_channel[raw.raw_pattern[dy][dx]] for dy, dx in channel_offsets("BGGR")]
        assert black == [64, 65, 63, 64] and raw.white_level == 1023
    back = read_raw(out)
    info, orig = back.info, frame.info
    assert (info.cfa, info.black_level, info.white_level) == (orig.cfa, orig.black_level, orig.white_level)
    assert (info.sensor, info.iso, info.exposure_time) == (orig.sensor, orig.iso, orig.exposure_time)
    np.testing.assert_allclose(info.wb, orig.wb, rtol=1e-5)
    cm = read_dng_tags(src)["color_matrix1"]  # LibRaw reports no matrix for these DNGs: the tag itself
    np.testing.assert_allclose(read_dng_tags(out)["color_matrix1"], cm, atol=1e-4)
    # NoiseProfile: the input's law scaled down by the measured residual factor.
    tags = read_dng_tags(out)
    np.testing.assert_allclose(tags["noise_profile"], result.noise_profile, rtol=1e-9)
    s_in = read_dng_tags(src)["noise_profile"][1][0]
    assert tags["noise_profile"][1][0] == pytest.approx(result.residual_factor * s_in, rel=1e-6)


def test_noise_comes_from_the_law_then_the_dng_then_the_image(model, small_synth, tmp_path):
    from rawlab.deploy.noiseparams import noise_for_frame
    from rawlab.dng import read_dng_tags, write_dng
    from rawlab.rawio import read_raw

    _, m = model
    known = read_raw(sorted((small_synth.out / "SynthCam_PG-1").rglob("*iso1600*.dng"))[0])
    est = noise_for_frame(m, known.info, known.normalized())
    assert est.source == "model law"
    np.testing.assert_allclose(est.a, m.noise_params("SynthCam PG-1", 1600)[0], rtol=1e-6)

    unknown = read_raw(sorted((small_synth.out / "SynthCam_MP-2").rglob("*iso1600*.dng"))[0])
    assert noise_for_frame(m, unknown.info, unknown.normalized()).source == "DNG NoiseProfile"

    # A larger frame (the single-image fit needs smooth areas) written without a NoiseProfile tag.
    from rawlab.synth import write_dataset

    chart = write_dataset(tmp_path / "big", seed=2, size=(512, 384), n_sensors=2, n_scenes=1).out
    src = sorted((chart / "SynthCam_MP-2").rglob("*iso1600*.dng"))[0]
    info = read_raw(src).info
    bare = tmp_path / "bare.dng"
    levels = {"black_level": list(info.black_level), "white_level": info.white_level}
    write_dng(
        bare, read_raw(src).mosaic, cfa=info.cfa, **levels, make=info.make, model=info.model, iso=info.iso
    )
    frame = read_raw(bare)
    est = noise_for_frame(m, frame.info, frame.normalized())
    assert est.source == "single-image" and "does not know" in est.detail
    s_true = read_dng_tags(src)["noise_profile"][1][0]  # the truth synth wrote
    assert 0.5 < est.a[1] / s_true < 2  # a single-image estimate is rough: the scale is what matters


def test_previews_png_and_tiff(tflite, small_synth, tmp_path):
    import tifffile
    from PIL import Image

    from rawlab.deploy.denoise import denoise_files

    src = sorted((small_synth.out / "SynthCam_PG-1").rglob("*iso400*.dng"))[0]
    for fmt, dtype in (("png", np.uint8), ("tiff", np.uint16)):
        summary = denoise_files([str(src)], tflite, tmp_path, fmt=fmt)
        assert summary.n_ok == 1 and summary.where == "in-process"
        out = summary.results[0].out
        img = np.asarray(Image.open(out)) if fmt == "png" else tifffile.imread(out)
        assert img.shape == (96, 128, 3) and img.dtype == dtype and img.std() > 0


def test_bad_files_are_reported_and_the_rest_go_on(tflite, small_synth, tmp_path, client):
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    src = tmp_path / "in"
    src.mkdir()
    good = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[:2]
    for i, g in enumerate(good):
        (src / f"good{i}.dng").write_bytes(g.read_bytes())
    (src / "notes.CR2").write_text("not a raw file")
    (src / "empty.NEF").write_bytes(b"")
    (src / "readme.txt").write_text("skipped: not a raw by content or extension")
    seen = []
    opts = RunOptions(client=client)
    summary = denoise_files([str(src)], tflite, tmp_path / "out", on_result=seen.append, options=opts)
    assert (summary.n_ok, summary.n_failed) == (2, 2) and len(seen) == 4
    reasons = dict(summary.failures)
    assert "is empty" in reasons[str(src / "empty.NEF")]
    assert "not a raw file" in reasons[str(src / "notes.CR2")]
    for i, g in enumerate(good):
        out = read_raw(tmp_path / "out" / f"good{i}.dng")
        assert out.mosaic.shape == read_raw(g).mosaic.shape
    assert "2 of 4 files denoised" in summary.line() and "2 failed" in summary.line()
    assert "2 model law" in summary.line()


def test_cli_exit_codes(tflite, small_synth, tmp_path, client):
    good = str(sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0])
    bad = tmp_path / "bad.dng"
    bad.write_text("not a raw")
    runner = CliRunner()
    base = ["denoise", "--model", str(tflite), "--out", str(tmp_path / "out")]
    sched = ["--scheduler", client.scheduler.address]

    res = runner.invoke(main, [*base, good])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1].startswith("denoise: 1 of 1 files denoised")
    assert "noise from model law" in res.stdout

    res = runner.invoke(main, [*base, *sched, "--overwrite", good, str(bad)])
    assert res.exit_code == 0 and "1 of 2 files denoised" in res.stdout and "1 failed" in res.stdout
    assert f"failed: {bad}:" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(main, [*base, *sched, "--overwrite", "--strict", good, str(bad)])
    assert res.exit_code == 1 and "1 failed" in res.stdout

    # Every file failed: exit 1 without --strict, and the summary says so.
    bad2 = tmp_path / "bad2.dng"
    bad2.write_bytes(b"")
    res = runner.invoke(main, [*base, *sched, str(bad), str(bad2)])
    assert res.exit_code == 1, res.output
    assert res.stdout.strip().splitlines()[-1].startswith("denoise: all 2 files failed, none denoised")
    assert (
        f"failed: {bad}:" in res.stderr and f"failed: {bad2}:" in res.stderr and "Traceback" not in res.output
    )

    for args, needle in [
        (
            ["denoise", good, "--model", str(tmp_path / "nope.tflite"), "--out", str(tmp_path / "o")],
            "does not exist",
        ),
        (["denoise", good, "--model", str(tmp_path), "--out", str(tmp_path / "o")], "not a rawlab model"),
        ([*base, str(tmp_path / "missing.dng")], "does not exist"),
        ([*base, "--format", "jpeg", good], "jpeg"),
    ]:
        res = runner.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.stderr and "Traceback" not in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, [*base, str(empty)])
    assert res.exit_code == 2 and "no raw files found" in res.stderr


def test_running_a_tflite_never_imports_tensorflow(tflite, small_synth, tmp_path):
    src = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]
    stdout = denoise_in_fresh_interpreter(src, tflite, tmp_path, ("tensorflow", "jax", "keras"))
    assert "LOADED []" in stdout and "1 of 1 files denoised" in stdout


@pytest.mark.samples
def test_every_real_bayer_sample_denoises_to_a_dng_of_the_same_shape(samples_dir, tflite, tmp_path, client):
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    files = sorted((samples_dir / "bayer").iterdir())
    # Every sample is read, tiled, guarded, run and written; the first of each camera (one per decoder and
    # size) as `rawlab denoise` runs by default, fused with the classical candidates, the others' repeats with
    # the model alone (--no-fuse): the fusion's NL-means passes over all 70 MP took most of three minutes.
    # One rotation: the rotations are tested on synthetic frames (test_ensemble.py).
    cameras: dict[str, list[str]] = {}
    for f in files:
        cameras.setdefault(f.name.split("_iso")[0], []).append(str(f))
    first = [v[0] for v in cameras.values()]
    repeats = [f for v in cameras.values() for f in v[1:]]
    opts = RunOptions(client=client)
    summaries = [
        denoise_files(group, tflite, tmp_path / name, options=opts, ensemble=1, fuse=fuse)
        for name, group, fuse in (("fused", first, True), ("model", repeats, False))
    ]
    assert len(first) >= 5 and len(first) + len(repeats) == len(files)
    for summary, group in zip(summaries, (first, repeats), strict=True):
        assert summary.n_failed == 0, summary.failures
        assert summary.n_ok == len(group)
    for res in summaries[0].results + summaries[1].results:
        src, out = read_raw(res.path), read_raw(res.out)
        assert out.mosaic.shape == src.mosaic.shape
        levels = [(f.info.cfa, f.info.black_level, f.info.white_level) for f in (src, out)]
        assert levels[0] == levels[1]


@pytest.mark.samples
def test_samples_that_are_not_bayer_raws_fail_clearly(samples_dir, tflite, tmp_path, client):
    from rawlab.deploy.denoise import denoise_files

    bad = [samples_dir / d for d in ("non-bayer", "stubs", "undecodable")]
    summary = denoise_files([str(p) for p in bad], tflite, tmp_path, options=RunOptions(client=client))
    n = sum(len(list(p.iterdir())) for p in bad)
    assert summary.n_ok == 0 and summary.n_failed == n
    kinds = {r.error_kind for r in summary.results}
    assert kinds <= {"non-bayer", "no-pixels", "undecodable", "truncated"} and "non-bayer" in kinds
    assert not list(tmp_path.iterdir())  # nothing half-written
    json.dumps([r.__dict__ for r in summary.results])  # results are plain data (they cross Dask workers)


def test_load_denoiser_errors(tmp_path):
    from rawlab.deploy import load_denoiser

    with pytest.raises(RawlabError, match="does not exist"):
        load_denoiser(tmp_path / "missing.tflite")
    with pytest.raises(RawlabError, match="not a rawlab model directory"):
        load_denoiser(tmp_path)


# -- where outputs go ------------------------------------------------------------------------------------------


def _files_below(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_outputs_mirror_the_inputs_below_their_common_folder(tflite, small_synth, tmp_path, client):
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    g = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[:3]
    src = tmp_path / "in"
    for rel, copy in (("a/x.dng", g[0]), ("b/x.dng", g[1]), ("b/y.dng", g[2])):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(copy, src / rel)
    a, b = src / "a" / "x.dng", src / "b" / "x.dng"

    # Two files of one name in two folders: D/a/x.dng and D/b/x.dng, each line saying where its output went.
    out = tmp_path / "D"
    sched = ["--scheduler", client.scheduler.address]
    res = CliRunner().invoke(
        main, ["denoise", str(a), str(b), "--model", str(tflite), "--out", str(out), *sched]
    )
    assert res.exit_code == 0, res.output
    assert _files_below(out) == ["a/x.dng", "b/x.dng"]
    for name, given in (("a", a), ("b", b)):
        assert f"denoised: {given} -> {out / name / 'x.dng'} (" in res.stdout
        assert read_raw(out / name / "x.dng").mosaic.shape == read_raw(given).mosaic.shape
    assert read_raw(out / "a" / "x.dng").info.iso == read_raw(a).info.iso  # not swapped
    assert read_raw(out / "b" / "x.dng").info.iso == read_raw(b).info.iso

    # Folders: the same mirror below their common folder; png and tiff change the suffix only.
    for fmt in ("png", "tiff"):
        summary = denoise_files(
            [str(src / "a"), str(src / "b")],
            tflite,
            tmp_path / fmt,
            fmt=fmt,
            options=RunOptions(client=client),
        )
        assert summary.n_ok == 3
        assert _files_below(tmp_path / fmt) == [f"a/x.{fmt}", f"b/x.{fmt}", f"b/y.{fmt}"]
        assert [r.out for r in summary.results] == [
            str(tmp_path / fmt / rel) for rel in (f"a/x.{fmt}", f"b/x.{fmt}", f"b/y.{fmt}")
        ]

    # One file, or files of one folder: directly in D.
    summary = denoise_files([str(a)], tflite, tmp_path / "one")
    assert _files_below(tmp_path / "one") == ["x.dng"] and summary.results[0].out == str(
        tmp_path / "one/x.dng"
    )
    both = [str(src / "b" / "x.dng"), str(src / "b" / "y.dng")]
    summary = denoise_files(both, tflite, tmp_path / "same", options=RunOptions(client=client))
    assert summary.n_ok == 2 and _files_below(tmp_path / "same") == ["x.dng", "y.dng"]


def test_existing_outputs_are_kept_unless_overwrite(tflite, small_synth, tmp_path, client):
    from rawlab.rawio import read_raw

    g = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[:2]
    src, out = tmp_path / "in", tmp_path / "D"
    src.mkdir()
    shutil.copy(g[0], src / "x.dng")
    shutil.copy(g[1], src / "y.dng")
    runner = CliRunner()
    base = ["denoise", "--model", str(tflite), "--out", str(out), "--scheduler", client.scheduler.address]
    res = runner.invoke(main, [*base, str(src / "x.dng")])
    assert res.exit_code == 0, res.output
    (out / "x.dng").write_bytes(b"the user's own file")  # e.g. an output edited since

    res = runner.invoke(main, [*base, str(src)])  # x's output exists: kept and reported; y goes on
    assert res.exit_code == 0, res.output
    assert (
        f"skipped: {src / 'x.dng'}: {out / 'x.dng'} exists; kept it (pass --overwrite to replace it)"
        in res.stdout
    )
    assert f"denoised: {src / 'y.dng'} -> {out / 'y.dng'}" in res.stdout
    assert "1 of 2 files denoised" in res.stdout and "1 skipped (output exists), 0 failed" in res.stdout
    assert (out / "x.dng").read_bytes() == b"the user's own file"
    assert read_raw(out / "y.dng").mosaic.shape == read_raw(g[1]).mosaic.shape

    res = runner.invoke(main, [*base, str(src)])  # nothing left to do: not a failure
    assert res.exit_code == 0 and "0 of 2 files denoised" in res.stdout and "2 skipped" in res.stdout

    res = runner.invoke(main, [*base, "--overwrite", str(src)])
    assert res.exit_code == 0 and "2 of 2 files denoised" in res.stdout, res.output
    assert read_raw(out / "x.dng").mosaic.shape == read_raw(g[0]).mosaic.shape
    assert _files_below(out) == ["x.dng", "y.dng"]  # no temporary files left behind


def test_an_output_that_appears_meanwhile_is_not_clobbered(tflite, small_synth, tmp_path):
    """The check before the work is repeated, atomically, when the output is published."""
    from rawlab.deploy.denoise import denoise_file
    from rawlab.deploy.runtime import load_denoiser

    src = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]
    target = tmp_path / "x.dng"
    target.write_bytes(b"written by someone else meanwhile")
    res = denoise_file(str(src), load_denoiser(tflite), target)
    assert res.skipped and not res.failed and str(target) in res.line()
    assert target.read_bytes() == b"written by someone else meanwhile"
    assert _files_below(tmp_path) == ["x.dng"]
    res = denoise_file(str(src), load_denoiser(tflite), target, overwrite=True)
    assert res.ok and target.read_bytes()[:2] in (b"II", b"MM")


def test_inputs_that_would_share_an_output_never_collide(tflite, small_synth, tmp_path, client):
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    pg1 = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]
    mp2 = sorted((small_synth.out / "SynthCam_MP-2").rglob("*.dng"))[0]
    src, out = tmp_path / "in", tmp_path / "D"
    src.mkdir()
    shutil.copy(pg1, src / "x.dng")
    shutil.copy(mp2, src / "x.DNG")  # same name but for the case: one output x.dng for both
    # x.dng given twice (once through its folder): one input. x.DNG would write x.dng: refused, with the reason.
    given = [str(src / "x.dng"), str(src), str(src / "x.dng")]
    summary = denoise_files(given, tflite, out, options=RunOptions(client=client))
    assert [r.path for r in summary.results] == [str(src / "x.dng"), str(src / "x.DNG")]
    ok, refused = summary.results
    assert ok.ok and ok.out == str(out / "x.dng")
    assert refused.failed and refused.error_kind == "collision"
    assert f"its output {out / 'x.dng'} is already the output of {src / 'x.dng'}" in refused.line()
    assert read_raw(out / "x.dng").info.sensor == "SynthCam PG-1"  # the first input's, not overwritten
    assert _files_below(out) == ["x.dng"]

    # As png, x.dng and x.DNG collide the same way; with --overwrite too, and --strict makes it exit 1.
    runner = CliRunner()
    args = ["denoise", str(src), "--model", str(tflite), "--format", "png", "--out", str(tmp_path / "P")]
    res = runner.invoke(main, [*args, "--overwrite", "--scheduler", client.scheduler.address])
    assert res.exit_code == 0 and "1 of 2 files denoised" in res.stdout, res.output
    assert f"failed: {src / 'x.dng'}: its output {tmp_path / 'P' / 'x.png'} is already the output of" in (
        res.stderr
    )  # folder order: x.DNG first
    res = runner.invoke(main, [*args, "--overwrite", "--strict", "--scheduler", client.scheduler.address])
    assert res.exit_code == 1

    # An output never replaces an input, even with --overwrite.
    before = (src / "x.dng").read_bytes()
    summary = denoise_files([str(src / "x.dng")], tflite, src, overwrite=True)
    assert summary.all_failed and "is the input file" in summary.results[0].error
    assert (src / "x.dng").read_bytes() == before


# -- a damaged model, an unwritable output: one line, exit 2, before the work ----------------------------------


def test_a_truncated_or_corrupt_model_is_one_line_and_exit_2(tflite, model, small_synth, tmp_path):
    good = str(sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0])
    data = tflite.read_bytes()
    out = tmp_path / "out"
    runner = CliRunner()
    broken_dir = tmp_path / "broken-model"
    shutil.copytree(model[0], broken_dir)
    params = broken_dir / "model.msgpack"
    params.write_bytes(params.read_bytes()[:1000])
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(200))
    cases = [
        (100, "truncated or corrupt"),  # the flatbuffer's tables point past the end (struct.error before)
        (len(data) // 2, "truncated or corrupt"),
        (len(data) - 64, "truncated or corrupt"),  # the description reads; the interpreter refuses
    ]
    models = []
    for n, needle in cases:
        path = tmp_path / f"cut{n}.tflite"
        path.write_bytes(data[:n])
        models.append((path, needle, str(path)))
    # a foreign .onnx runs through ONNX Runtime (#16), which refuses this one
    models += [
        (onnx, "cannot be loaded by ONNX Runtime", str(onnx)),
        (broken_dir, "model.msgpack", str(params)),
    ]
    for path, needle, named in models:
        res = runner.invoke(main, ["denoise", good, "--model", str(path), "--out", str(out)])
        assert res.exit_code == 2, (path, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
        assert named in lines[0] and "Traceback" not in res.output
        assert not out.exists() or not any(out.iterdir())  # nothing written


def test_an_unwritable_out_is_refused_before_the_model_is_loaded(model, small_synth, tmp_path):
    good = str(sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0])
    # A model that fails only when loaded: if it were loaded first, its error would be the one reported.
    broken = tmp_path / "model"
    shutil.copytree(model[0], broken)
    (broken / "model.msgpack").write_bytes(b"\x81")
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("a regular file")  # root can write anywhere chmod allows nothing; not below a file
    runner = CliRunner()
    for out, needle in [
        (blocker / "out", f"{blocker} is a file, not a folder"),
        (blocker, "is a file"),
        ("/proc/rawlab-test-out", "cannot create the folder /proc/rawlab-test-out"),
    ]:
        res = runner.invoke(main, ["denoise", good, "--model", str(broken), "--out", str(out)])
        assert res.exit_code == 2, (out, res.output)
        assert needle in res.stderr and "msgpack" not in res.stderr and "Traceback" not in res.output
    assert blocker.read_text() == "a regular file"


@pytest.mark.samples
@needs_darktable
def test_darktable_renders_the_denoised_dng_of_a_real_raw(samples_dir, tmp_path):
    """A real client reads what `rawlab denoise` writes with no model argument (the built-in model, guarded
    and fused): darktable renders the denoised DNG at the input's size, and the picture is the input's (the
    rank correlation of the two renders, whose ranks a wrong orientation or a blank render would scramble)."""
    src = samples_dir / "bayer" / "nikon_d1_iso200_raw-nikon-d1.NEF"
    if not src.exists():
        pytest.skip(f"{src.name} is not among the samples")
    res = CliRunner().invoke(main, ["denoise", str(src), "--out", str(tmp_path / "out"), "--ensemble", "1"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / f"{src.stem}.dng"
    before, after = darktable_render(src, tmp_path), darktable_render(out, tmp_path)
    assert after.shape == before.shape and after.std() > 1.0
    # measured 1.00 (0.9995+): the same scene, rendered alike, less its noise
    assert rank_correlation(after.mean(axis=-1), before.mean(axis=-1)) > 0.95
