"""`rawlab export`: jax2tf -> TFLite at a fixed tile, builtin ops only, parity with JAX, self-describing file.

One tiny U-Net with perturbed weights (an untrained one is the identity, which would hide any conversion error),
trained-on store recorded in its config as the trainer does, exported once per format for the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _models import TILE, make_model

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

from click.testing import CliRunner

from rawlab.cli import main
from rawlab.errors import RawlabError

# What the U-Net family may lower to (docs/architecture.md, "Known facts about the stack"), plus int8's (de)quantisation at the edges.
BUILTIN = {
    "CONV_2D",
    "TRANSPOSE_CONV",
    "CONCATENATION",
    "ADD",
    "LEAKY_RELU",
    "SLICE",
    "QUANTIZE",
    "DEQUANTIZE",
}


@pytest.fixture(scope="module")
def trained_on_store(tmp_path_factory, learn_store):
    """A model 'trained' on the shared paired store (conftest: 2 sensors x 2 scenes, one held out each)."""
    from rawlab.noise.profile import load_profiles

    store, truth_path = learn_store
    model_dir = tmp_path_factory.mktemp("export") / "model"
    model = make_model(model_dir, noise=load_profiles(truth_path).to_dict(), store=store)
    return model_dir, model, store


@pytest.fixture(scope="module")
def exported(trained_on_store, tmp_path_factory):
    """``{quantize: (path, ExportResult)}``, each format exported once (lazily)."""
    from rawlab.deploy.export import export_tflite

    model_dir, _, _ = trained_on_store
    out = tmp_path_factory.mktemp("tflite")
    cache = {}

    def get(quantize):
        if quantize not in cache:
            lines = []
            path = out / f"tiny-{quantize}.tflite"
            result = export_tflite(model_dir, path, quantize=quantize, echo=lines.append)
            result.lines = lines
            cache[quantize] = (path, result)
        return cache[quantize]

    return get


def test_fp32_export_matches_jax_on_held_out_store_crops(exported, trained_on_store):
    path, result = exported("none")
    _, _, store = trained_on_store
    assert result.parity["max_abs"] <= 1e-4
    assert f"store {store}" in result.parity["crops"] and "eval scenes" in result.parity["crops"]
    # Clean references exist in a paired store, so the PSNR cost is measured (and ~0 for float32).
    assert abs(result.parity["psnr_cost_db"]) < 1e-3
    assert not any("synthetic" in line for line in result.lines)  # the training store was found and used
    assert path.stat().st_size == result.nbytes and result.sidecar.exists()
    assert "max |TFLite - JAX|" in result.summary()


def test_only_builtin_ops_in_the_flatbuffer_and_the_interpreter(exported):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from rawlab.deploy.runtime import builtin_op_names

    for q in ("none", "int8"):
        path, result = exported(q)
        ops = builtin_op_names(path.read_bytes())
        assert set(ops) <= BUILTIN, ops
        assert {"CONV_2D", "TRANSPOSE_CONV"} <= set(ops)
        assert result.ops == ops
        # Without XNNPACK every op runs as its own builtin kernel: none is Flex / custom.
        it = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        it.allocate_tensors()
        names = {op["op_name"] for op in it._get_ops_details()}
        assert names <= BUILTIN and not any("Flex" in n for n in names)
        it.invoke()


def test_int8_export_is_full_integer_and_reports_its_psnr_cost(exported):
    _path, result = exported("int8")
    meta = json.loads(result.sidecar.read_text())
    io = meta["export"]["input"], meta["export"]["output"]
    assert [d["dtype"] for d in io] == ["int8", "int8"]
    assert all(d["scale"] > 0 and -128 <= d["zero_point"] <= 127 for d in io)
    assert io[0]["shape"] == [1, 64, 64, 8] and io[1]["shape"] == [1, 64, 64, 4]
    assert meta["export"]["calibration"]["n_crops"] == 16
    assert "train scenes" in meta["export"]["calibration"]["source"]
    p = result.parity
    assert np.isfinite(p["psnr_cost_db"]) and np.isfinite(p["psnr_vs_jax"])
    assert p["psnr_vs_jax"] > 30  # quantised, but the same network
    assert any("cost" in line for line in result.lines) and "PSNR cost" in result.summary()


@pytest.mark.parametrize("quantize", ["fp16", "dynamic"])
def test_fp16_and_dynamic_range_exports(exported, quantize):
    path, result = exported(quantize)
    assert result.parity["max_abs"] < 0.05 and result.parity["psnr_cost_db"] is not None
    assert path.stat().st_size < exported("none")[0].stat().st_size


def test_int8_calibration_from_a_folder_of_raw_files(trained_on_store, small_synth, tmp_path):
    from rawlab.deploy.export import export_tflite

    model_dir, _, _ = trained_on_store
    res = export_tflite(model_dir, tmp_path / "m.tflite", quantize="int8", calibration=str(small_synth.out))
    assert res.calibration["source"] == f"raw files in {small_synth.out}"
    assert res.parity["psnr_cost_db"] is None  # raws have no clean reference: only the PSNR against JAX
    assert res.parity["psnr_vs_jax"] > 30


def test_the_tflite_describes_itself(exported, trained_on_store, tmp_path):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from rawlab.deploy import load_denoiser
    from rawlab.deploy.runtime import read_metadata

    path, result = exported("int8")
    _, model, _ = trained_on_store
    meta = read_metadata(path)
    assert meta == json.loads(result.sidecar.read_text())
    assert meta["schema"] == "rawlab.tflite/1" and meta["export"]["quantize"] == "int8"
    assert meta["config"]["normalisation"] == model.config["normalisation"]
    assert meta["config"]["noise"] == model.config["noise"]

    # The file alone is enough (embedded metadata) ...
    alone = tmp_path / "alone.tflite"
    alone.write_bytes(path.read_bytes())
    d = load_denoiser(alone)
    assert d.kind == "tflite" and d.quantize == "int8"
    assert d.tile == TILE and d.normalisation.kind == "noisemap"
    sensor = model.config["noise"]["sensors"][0]["sensor"]
    np.testing.assert_allclose(d.noise_params(sensor, 800)[0], model.noise_params(sensor, 800)[0])
    assert d.noise_params("Unknown Camera", 800) is None
    assert d.config["training"]["store"] == model.config["training"]["store"]

    # ... and a .tflite without embedded metadata is described by its FILE.json sidecar.
    m = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    m.metadata = [e for e in m.metadata if e.name != b"rawlab"]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(bytes(b.Output()))
    with pytest.raises(RawlabError, match="no rawlab description"):
        load_denoiser(bare)
    (tmp_path / "bare.tflite.json").write_text(result.sidecar.read_text())
    assert load_denoiser(bare).tile == TILE

    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(RawlabError, match="not a TFLite model"):
        load_denoiser(not_tflite)


def test_a_failed_parity_check_writes_nothing(trained_on_store, tmp_path, monkeypatch):
    from rawlab.deploy import export

    model_dir, _, _ = trained_on_store
    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)
    with pytest.raises(RawlabError, match="parity check failed"):
        export.export_tflite(model_dir, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_export_cli(tmp_path):
    make_model(tmp_path / "m")  # no training store recorded: synthetic crops, with a warning
    runner = CliRunner()
    m, out = str(tmp_path / "m"), str(tmp_path / "m.tflite")
    res = runner.invoke(main, ["export", m, "--out", out, "--quantize", "dynamic"])
    assert res.exit_code == 0, res.output
    assert "warning: no training store" in res.stderr and "synthetic crops" in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith(f"export: {out} (dynamic")

    x = ["--out", str(tmp_path / "x.tflite")]
    for args, needle in [
        ([m, *x, "--tile", "62"], "multiple of 4"),
        ([m, *x, "--tile", "32"], "twice the tile"),
        ([str(tmp_path / "nope"), *x], "not a rawlab model directory"),
        ([m, *x, "--quantize", "int4"], "int4"),
        ([m, *x, "--calibration", str(tmp_path / "none")], "does not exist"),
    ]:
        res = runner.invoke(main, ["export", *args])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "x.tflite").exists()


# -- the PSNR against clean is measured against the pair's aligned, exposure-matched reference -----------------

SHIFT = (4, -2)  # mosaic px: noisy(y, x) = reference(y - 4, x + 2); packed (2, -1)
GAIN = 0.97  # the noisy frame's exposure over its reference's


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory, client):
    """A store holding one pair whose noisy frame is shifted by SHIFT and exposed at GAIN x its reference
    (real DNGs: a synthetic scene's base-ISO frame, and its ISO 800 frame rolled and scaled)."""
    import shutil

    from rawlab.bayer import unpack
    from rawlab.catalog.build import build_catalog
    from rawlab.catalog.qa import QAThresholds
    from rawlab.cluster import RunOptions
    from rawlab.dng import read_dng_tags, write_dng
    from rawlab.rawio import read_raw
    from rawlab.synth import write_dataset

    root = tmp_path_factory.mktemp("shifted")
    synth = write_dataset(root / "synth", seed=4, size=(256, 192), n_sensors=1, n_scenes=2)
    scene = root / "data" / "SynthCam_PG-1" / "astronaut"
    scene.mkdir(parents=True)
    ref = scene / "astronaut_iso100_0.dng"
    shutil.copy(root / "synth" / "SynthCam_PG-1" / "astronaut" / ref.name, ref)
    src = root / "synth" / "SynthCam_PG-1" / "astronaut" / "astronaut_iso800_0.dng"
    frame, tags = read_raw(src), read_dng_tags(src)
    info = frame.info
    black = np.asarray(info.black_level, float)[:, None, None]
    dimmer = np.clip(np.round(black + GAIN * (frame.packed() - black)), 0, info.white_level).astype(np.uint16)
    noisy = scene / "astronaut_iso800_0.dng"
    write_dng(
        noisy,
        np.roll(unpack(dimmer, info.cfa), SHIFT, axis=(0, 1)),
        cfa=info.cfa,
        black_level=list(info.black_level),
        white_level=info.white_level,
        make="SynthCam",
        model="PG-1",
        iso=800,
        exposure_time=tags["exposure_time"],
    )
    store = root / "store.zarr"
    loose = QAThresholds(max_shift=6.0)  # the default 2 px would exclude this pair as misaligned
    cat, _ = build_catalog(
        [str(root / "data")], str(store), thresholds=loose, options=RunOptions(client=client)
    )
    return store, ref, noisy, synth.truth_path, cat


def test_export_psnr_is_against_the_aligned_exposure_matched_reference(shifted_pair, tmp_path):
    from rawlab.bayer import normalise
    from rawlab.deploy.crops import store_crops
    from rawlab.deploy.export import _psnr, export_tflite
    from rawlab.learn.modelio import load_model
    from rawlab.noise.profile import load_profiles
    from rawlab.rawio import read_raw

    store, ref_path, noisy_path, truth_path, cat = shifted_pair
    row = cat.set_index("path").loc[str(noisy_path)]
    assert row["status"] == "ok" and row["clean_path"] == str(ref_path)
    assert (row["align_dy"], row["align_dx"]) == pytest.approx(SHIFT, abs=0.25)  # QA found the shift ...
    assert row["gain"] == pytest.approx(GAIN, abs=0.005)  # ... and the exposure ratio

    # An untrained U-Net is the identity, so the JAX output is the noisy crop and the printed "PSNR vs clean"
    # is the noisy crop's PSNR against the reference the export chose.
    model_dir = tmp_path / "identity"
    make_model(model_dir, noise=load_profiles(truth_path).to_dict(), store=store, scale=0.0)
    lines = []
    result = export_tflite(model_dir, tmp_path / "m.tflite", n_eval=4, echo=lines.append)
    crops = store_crops(str(store), TILE["size"], 4, load_model(model_dir), split="eval", seed=0)  # the same

    # The truth, from the DNG files alone: noisy(y, x) = GAIN * reference(y - 2, x + 1) in packed pixels.
    def planes(path):
        f = read_raw(path)
        return normalise(f.packed(), f.info.black_level, f.info.white_level)

    noisy, ref = planes(noisy_path), planes(ref_path)
    sy, sx = SHIFT[0] // 2, SHIFT[1] // 2
    t = TILE["size"]
    matched, unmatched, bound = [], [], []
    for crop in crops:
        y, x = crop.origin
        want_noisy = np.moveaxis(noisy[:, y : y + t, x : x + t], 0, -1)
        truth = GAIN * np.moveaxis(ref[:, y - sy : y - sy + t, x - sx : x - sx + t], 0, -1)
        np.testing.assert_array_equal(crop.noisy, want_noisy)  # the crop lies inside the pair's overlap
        matched.append(_psnr(want_noisy, truth))
        unmatched.append(_psnr(want_noisy, np.moveaxis(ref[:, y : y + t, x : x + t], 0, -1)))
        # The store's reference is scaled by the gain QA measured, not by GAIN: their relative difference d
        # moves the mean squared error by at most 2|d| rms(truth) rms(err) + d^2 ms(truth) (Cauchy-Schwarz).
        d = float(np.max(np.abs(crop.clean / np.maximum(truth, 1e-3) - 1)[truth > 0.05]))
        ms_t, mse = float(np.mean(truth**2)), float(np.mean((want_noisy - truth) ** 2))
        bound.append(10 * np.log10(1 + (2 * d * np.sqrt(ms_t * mse) + d * d * ms_t) / mse))
        assert d < 0.01
    reported = result.parity["psnr_jax"]
    assert reported == pytest.approx(np.mean(matched), abs=max(bound) + 1e-4)
    assert reported > np.mean(unmatched) + 3  # against the unmatched reference it would read far worse
    assert any(f"vs clean: JAX {reported:.2f} dB" in line for line in lines)  # and that is what is printed


def test_an_unwritable_out_is_refused_before_the_model_is_loaded(tmp_path):
    import shutil

    from rawlab.deploy.export import export_tflite

    make_model(tmp_path / "m")
    broken = tmp_path / "broken"  # fails only when loaded: had it been loaded first, that error would show
    shutil.copytree(tmp_path / "m", broken)
    (broken / "model.msgpack").write_bytes(b"\x81")
    blocker = tmp_path / "somefile.txt"
    blocker.write_text(
        "a regular file"
    )  # tests run as root, whom chmod does not stop; a file below a file is
    runner = CliRunner()
    for out, needle in [
        (blocker / "out.tflite", f"{blocker} is a file, not a folder"),
        (blocker / "sub" / "out.tflite", f"{blocker} is a file, not a folder"),
        ("/proc/rawlab-test.tflite", "cannot write in /proc"),  # refused to root too
    ]:
        res = runner.invoke(main, ["export", str(broken), "--out", str(out)])
        assert res.exit_code == 2, (out, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "msgpack" not in res.stderr, res.stderr
        assert "Traceback" not in res.output
    (tmp_path / "side.tflite.json").mkdir()  # the description written beside the model cannot be written
    with pytest.raises(RawlabError, match=r"side\.tflite\.json is a folder"):
        export_tflite(broken, tmp_path / "side.tflite")
    assert blocker.read_text() == "a regular file"
