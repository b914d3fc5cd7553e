"""The joint demosaic+denoise model through ONNX (issues 13 and 16): `rawlab export --format onnx` of a joint
model directory writes builtin ops with float32 parity against JAX, the `.onnx` demosaics any CFA as the JAX
model does on the same tiles, `rawlab denoise --model FILE.onnx --output rgb` writes what the model directory
writes, and running it imports neither JAX nor TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from _models import make_joint_model
from click.testing import CliRunner

pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from rawlab.cli import main
from rawlab.deploy.export import FP32_TOLERANCE


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    """``(model_dir, onnx_path, export_result)``: the perturbed joint model and its ONNX export."""
    from rawlab.deploy.export import export_model

    root = tmp_path_factory.mktemp("joint-onnx")
    make_joint_model(root / "model")
    res = export_model(root / "model", root / "joint.onnx", fmt="onnx", n_eval=2)
    return root / "model", root / "joint.onnx", res


def test_export_writes_builtin_ops_with_rgb_output_and_parity(joint):
    import onnx

    _, path, res = joint
    assert res.parity["max_abs"] <= FP32_TOLERANCE
    assert {"Pad", "DepthToSpace", "Conv", "ConvTranspose"} <= set(res.ops)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "2H", "2W"]
    meta = json.loads((path.parent / "joint.onnx.json").read_text())
    assert meta["export"]["output"]["shape"] == ["N", 3, "2H", "2W"]
    assert meta["config"]["model"]["spec"]["head"] == "rgb"


def test_the_int8_layout_of_the_joint_model_is_the_same_function(joint):
    """The joint model's int8 layout (narrow top level placed and added, the RGB head reading the wide top
    block) computes what the plain graph does, within the float32 parity rule."""
    import onnxruntime as ort

    from rawlab.deploy.onnx import network_model
    from rawlab.learn.modelio import load_model

    m = load_model(joint[0])
    x = np.random.default_rng(2).random((1, 8, 32, 48)).astype(np.float32)
    plain, wide = (ort.InferenceSession(network_model(m, int8_layout=k).SerializeToString()).run(None, {"input": x})[0]
                   for k in (False, True))  # fmt: skip
    assert plain.shape == wide.shape == (1, 3, 64, 96)
    assert np.max(np.abs(plain - wide)) <= FP32_TOLERANCE


def test_int8_export_stays_close_to_jax_and_demosaics(joint, small_synth, tmp_path):
    """``--quantize int8`` of the joint model: static QOperator int8 like the Bayer models, within 40 dB of JAX
    on its parity crops (uint8 activations step about 1/255 of their range, about 59 dB of rounding error at the
    output alone; measured 53.5 dB through the whole network), and ``denoise --output rgb`` runs the file."""
    from rawlab.deploy.export import export_model

    model_dir, _, _ = joint
    out = tmp_path / "int8.onnx"
    res = export_model(model_dir, out, fmt="onnx", quantize="int8", n_eval=2)
    assert "QLinearConv" in res.ops and "DepthToSpace" in res.ops
    assert res.parity["psnr_vs_jax"] >= 40.0, res.parity
    src = sorted((small_synth.out / "SynthCam_MP-2").rglob("*iso800*.dng"))[0]
    r = CliRunner().invoke(main, ["denoise", str(src), "--model", str(out), "--output", "rgb", "--format", "tiff",
                                  "--out", str(tmp_path / "d")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert tifffile.imread(tmp_path / "d" / src.with_suffix(".tiff").name).shape == (96, 128, 3)


def test_onnx_demosaics_every_cfa_as_jax_does_on_the_same_tiles(joint):
    from rawlab.bayer import CFA_PATTERNS
    from rawlab.deploy.runtime import load_denoiser

    model_dir, path, _ = joint
    onnx_model, jax_model = load_denoiser(path), load_denoiser(model_dir)
    assert onnx_model.kind == "onnx" and onnx_model.head == "rgb"
    rng = np.random.default_rng(2)
    planes = (
        rng.random((46, 70, 4), dtype=np.float32) * 0.6
    )  # not a multiple of the tile: padding, 2 x 3 tiles
    a, b = np.full(4, 2e-3, np.float32), np.full(4, 1e-5, np.float32)
    for cfa in CFA_PATTERNS:
        got, ref = onnx_model.demosaic(planes, a, b, cfa), jax_model.demosaic(planes, a, b, cfa)
        assert got.shape == ref.shape == (92, 140, 3)
        # Each tile agrees within the parity tolerance; the blend weights sum to 1, so the image does too.
        np.testing.assert_allclose(got, ref, atol=FP32_TOLERANCE)
    # The perturbed network is far from its bilinear start, so this compared the residual path too.
    from rawlab.deploy.render import demosaic_bilinear

    bilinear = demosaic_bilinear(np.moveaxis(planes, -1, 0), "RGGB")
    assert np.abs(ref - bilinear).max() > 100 * FP32_TOLERANCE


def test_denoise_output_rgb_with_the_onnx_writes_what_the_model_directory_writes(
    joint, small_synth, tmp_path
):
    model_dir, path, _ = joint
    src = sorted((small_synth.out / "SynthCam_MP-2").rglob("*iso800*.dng"))[0]
    runner = CliRunner()
    outs = {}
    for name, model in (("onnx", path), ("jax", model_dir)):
        res = runner.invoke(main, ["denoise", str(src), "--model", str(model), "--output", "rgb",
                                   "--format", "tiff", "--out", str(tmp_path / name)])  # fmt: skip
        assert res.exit_code == 0, res.output
        outs[name] = tifffile.imread(tmp_path / name / src.with_suffix(".tiff").name).astype(np.int64)
    assert outs["onnx"].shape == (96, 128, 3)
    # 16-bit linear TIFF, white = 65535: the models agree within FP32_TOLERANCE * 65535 = 6.6 DN before
    # rounding (measured 6e-8 of white, so rounding may differ by 1 DN).
    assert np.abs(outs["onnx"] - outs["jax"]).max() <= 1


def test_denoise_output_rgb_with_onnx_never_imports_jax_or_tensorflow(joint, small_synth, tmp_path):
    _, path, _ = joint
    src = sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[0]
    watch = ("tensorflow", "jax", "flax", "keras", "ai_edge_litert")
    code = (
        "import sys\n"
        "from rawlab.cli import main\n"
        f"main(['denoise', {str(src)!r}, '--model', {str(path)!r}, '--output', 'rgb', '--format', 'tiff', "
        f"'--out', {str(tmp_path)!r}], standalone_mode=False)\n"
        f"print('LOADED', [m for m in {watch!r} if m in sys.modules])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "LOADED []"
    assert (tmp_path / src.with_suffix(".tiff").name).is_file()


def test_builtin_joint_exports_with_parity(tmp_path):
    """The shipped joint model denoises first (its Bayer head's planes feed the demosaic): the ONNX graph does
    the same, within the float32 tolerance of JAX."""
    from rawlab.deploy.export import export_model

    res = export_model("builtin-joint", tmp_path / "bj.onnx", fmt="onnx", tile=80, n_eval=2)
    assert res.parity["max_abs"] <= FP32_TOLERANCE
    assert {"DepthToSpace", "Pad"} <= set(res.ops)
    meta = json.loads((tmp_path / "bj.onnx.json").read_text())
    assert meta["config"]["model"]["spec"]["denoise_first"] is True
