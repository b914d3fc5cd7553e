"""`rawlab export --format onnx` and ONNX Runtime denoising: builtin ops, parity with JAX, self-describing file,
dynamic height and width, and `rawlab denoise --model FILE.onnx` with neither JAX nor TensorFlow imported.

One tiny U-Net with perturbed weights (an untrained one is the identity, which would hide a wrong kernel layout),
knowing the noise law of one of small_synth's sensors, exported once for the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _models import TILE, denoise_in_fresh_interpreter, first_sensor_noise, make_model

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the onnx extra (onnx) is not installed")

from click.testing import CliRunner

from rawlab.cli import main
from rawlab.errors import RawlabError

# The U-Net family's operators: all in the default ONNX domain (no custom or contrib ops).
BUILTIN = {"Conv", "ConvTranspose", "Concat", "Add", "LeakyRelu", "Slice", "Identity"}
TOL = 1e-4  # the float32 parity rule (rawlab.deploy.export.FP32_TOLERANCE)


@pytest.fixture(scope="module")
def model(tmp_path_factory, small_synth):
    path = tmp_path_factory.mktemp("model") / "tiny"
    return path, make_model(path, noise=first_sensor_noise(small_synth.truth_path))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    from rawlab.deploy.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    lines = []
    result = export_onnx(model[0], out, n_eval=3, echo=lines.append)
    return out, result, lines


def test_export_writes_builtin_ops_and_matches_jax(exported):
    _, result, lines = exported
    assert set(result.ops) <= BUILTIN, result.ops
    assert result.parity["n_crops"] == 3 and 0 <= result.parity["max_abs"] <= TOL
    assert any("synthetic crops" in line for line in lines)  # no store: said so
    assert "max |ONNX - JAX|" in result.summary()


def test_the_description_is_embedded_and_beside_the_file(exported, model):
    from rawlab.deploy.onnx import SCHEMA, read_onnx_metadata

    out, result, _ = exported
    meta = read_onnx_metadata(out)
    assert meta == json.loads(result.sidecar.read_text())
    assert meta["schema"] == SCHEMA
    assert meta["config"]["tile"] == TILE and meta["config"]["noise"] == model[1].config["noise"]
    assert meta["export"]["input"]["shape"] == ["N", 8, "H", "W"]
    # the embedded copy wins: a damaged sidecar changes nothing
    result.sidecar.write_text("{not json")
    try:
        assert read_onnx_metadata(out) == meta
    finally:
        result.sidecar.write_text(json.dumps(meta))


def test_the_graph_runs_any_multiple_of_the_downsampling(exported, model):
    """Dynamic N, H and W: non-square, not the tile size, a batch of 2; parity holds there too."""
    import jax

    from rawlab.deploy.runtime import load_denoiser

    out, _, _ = exported
    den = load_denoiser(out, num_threads=1)
    assert den.kind == "onnx"
    den.check()
    rng = np.random.default_rng(3)
    x = rng.random((2, 36, 52, 8), dtype=np.float32)
    y_jax = np.asarray(jax.jit(model[1].network_fn())(x))
    y_onnx = den._run(x)
    assert y_onnx.shape == (2, 36, 52, 4)
    assert np.max(np.abs(y_onnx - y_jax)) <= TOL
    assert np.max(np.abs(y_jax - x[..., :4])) > 100 * TOL  # the network is not the identity


def test_tiled_onnx_matches_tiled_jax(exported, model):
    from rawlab.deploy.runtime import load_denoiser

    rng = np.random.default_rng(4)
    x = rng.random((150, 170, 4), dtype=np.float32) * 0.5
    a, b = np.full(4, 2e-3, np.float32), np.full(4, 1e-5, np.float32)
    y_onnx = load_denoiser(exported[0]).denoise(x, a, b)
    y_jax = load_denoiser(model[0]).denoise(x, a, b)
    assert y_onnx.shape == x.shape
    assert np.max(np.abs(y_onnx - y_jax)) <= TOL


def test_damaged_or_undescribed_onnx_is_a_clear_error(exported, tmp_path, model):
    from rawlab.deploy.onnx import network_model
    from rawlab.deploy.runtime import describe_model, load_denoiser

    out = exported[0]
    assert describe_model(out) == "tiny.onnx (onnx float32)"
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(RawlabError, match="truncated or corrupt"):
        load_denoiser(cut)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(network_model(model[1]).SerializeToString())
    with pytest.raises(RawlabError, match="no rawlab description"):
        load_denoiser(bare)
    with pytest.raises(RawlabError, match="does not exist"):
        describe_model(tmp_path / "missing.onnx")


def test_cli_export_onnx_and_refuse_quantize(model, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    res = runner.invoke(main, ["export", str(model[0]), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "m.onnx.json").is_file() and "max |ONNX - JAX|" in res.output
    res = runner.invoke(
        main, ["export", str(model[0]), "--format", "onnx", "--quantize", "fp16", "--out", str(out)]
    )
    assert res.exit_code == 2 and "none or int8" in res.output


def test_int8_onnx_is_quantized_runs_and_says_what_it_costs(model, tmp_path):
    """Static int8 (QLinearConv) with its PSNR cost measured against JAX; the runtime reads it like any .onnx.
    Bound on the cost: 8-bit activations quantise each layer's range in 256 steps, a relative error of about
    2^-9 per layer, which over the tiny U-Net's dozen layers stays far below the 3 dB allowed here (the
    perturbed test model is not trained, so only a gross error, e.g. a wrong scale, would exceed it)."""
    from rawlab.deploy import load_denoiser

    runner = CliRunner()
    out = tmp_path / "m8.onnx"
    res = runner.invoke(
        main, ["export", str(model[0]), "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "onnx int8" in res.output and "WARNING" not in res.output
    meta = json.loads((tmp_path / "m8.onnx.json").read_text())["export"]
    assert meta["quantize"] == "int8" and "QLinearConv" in meta["ops"]
    import onnx

    q = onnx.load(str(out))  # quantised from the padded layout: no 3x3 int8 convolution under 16 filters
    shapes = {t.name: tuple(t.dims) for t in q.graph.initializer}
    conv3 = [
        shapes[n.input[3]] for n in q.graph.node if n.op_type == "QLinearConv" and shapes[n.input[3]][2] == 3
    ]
    assert conv3 and min(s[0] for s in conv3) >= 16
    cost = meta["parity"]["psnr_cost_db"]
    assert cost is None or abs(cost) < 3.0
    d = load_denoiser(out)
    assert d.kind == "onnx" and d.quantize == "int8"
    from rawlab.deploy.runtime import describe_model

    assert describe_model(out) == "m8.onnx (onnx int8)"  # what `rawlab denoise` says it ran
    x = np.random.default_rng(0).random((64, 64, 4)).astype(np.float32) * 0.5
    y = d.denoise(x, np.full(4, 1e-3), np.full(4, 1e-5))
    assert y.shape == x.shape and np.all(np.isfinite(y))


def test_the_int8_layout_is_the_same_function_laid_out_for_int8_kernels(model):
    """The graph that int8 export quantises (`int8_layout=True`): every block convolution with fewer than 16
    output channels gets zero filters up to 16 (its own filters placed among them, the rest zero); the top
    level's skip and up-sampling are placed side by side in 16 channels and added, not concatenated; each
    up-sampling ConvTranspose becomes a 1x1 Conv and a channels-last pixel shuffle; and the network is the same
    function (within the float32 parity rule: the padded and re-written convolutions may block their sums
    differently)."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from rawlab.deploy.onnx import INT8_MIN_OUT, network_model, op_types
    from rawlab.learn.modelio import load_model

    m = load_model(model[0])
    plain, wide = network_model(m), network_model(m, int8_layout=True)
    assert "ConvTranspose" in op_types(plain) and "ConvTranspose" not in op_types(wide)
    assert {"Transpose", "Reshape"} <= set(op_types(wide)) and set(op_types(wide)) <= BUILTIN | {
        "Transpose", "Reshape", "Shape", "Mul"}  # fmt: skip

    def channel_concats(g):
        return sum(n.op_type == "Concat" and n.attribute[0].i == 1 for n in g.graph.node)

    assert channel_concats(wide) == channel_concats(plain) - 1  # the top level's concatenation is an Add

    def convs(g):  # the 3x3 convolutions' weights, in graph order
        w = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}
        return [w[n.input[1]] for n in g.graph.node if n.op_type == "Conv" and w[n.input[1]].shape[2] == 3]

    def placed(w1, w0):  # w0 is a block of w1 at some output and input offset, and the rest of w1 is zero
        for o in range(w1.shape[0] - w0.shape[0] + 1):
            for c in range(w1.shape[1] - w0.shape[1] + 1):
                block = w1[o : o + w0.shape[0], c : c + w0.shape[1]]
                if np.array_equal(block, w0) and np.count_nonzero(w1) == np.count_nonzero(w0):
                    return True
        return False

    before, after = convs(plain), convs(wide)
    assert len(before) == len(after)
    assert any(w.shape[0] < INT8_MIN_OUT for w in before)  # the tiny U-Net's first level is 8 wide
    for w0, w1 in zip(before, after, strict=True):
        assert w1.shape[0] == max(w0.shape[0], INT8_MIN_OUT) and placed(w1, w0)
    x = np.random.default_rng(5).random((1, 8, 64, 48)).astype(np.float32)
    run = [ort.InferenceSession(g.SerializeToString()).run(None, {"input": x})[0] for g in (plain, wide)]
    assert run[0].shape == run[1].shape
    assert np.max(np.abs(run[0] - run[1])) <= TOL


def test_denoise_with_onnx_never_imports_jax_or_tensorflow(exported, small_synth, tmp_path, model):
    """The whole `rawlab denoise --model FILE.onnx` in a fresh interpreter; its DNG equals the JAX one."""
    from rawlab.deploy.denoise import denoise_files
    from rawlab.rawio import read_raw

    src = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]
    watch = ("tensorflow", "jax", "flax", "keras", "ai_edge_litert")
    stdout = denoise_in_fresh_interpreter(src, exported[0], tmp_path / "onnx", watch)
    assert "LOADED []" in stdout and "1 of 1 files denoised" in stdout
    assert "noise from: 1 model law" in stdout
    summary = denoise_files([str(src)], str(model[0]), tmp_path / "jax")
    assert summary.n_ok == 1
    (a,) = (tmp_path / "onnx").rglob("*.dng")
    (b,) = (tmp_path / "jax").rglob("*.dng")
    da, db = read_raw(str(a)).mosaic.astype(int), read_raw(str(b)).mosaic.astype(int)
    assert da.shape == db.shape
    assert np.max(np.abs(da - db)) <= 1  # same tiles, float32 within 1e-4: at most one DN of rounding
