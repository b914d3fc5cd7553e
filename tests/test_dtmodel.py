"""`rawlab export --format dtmodel`: a darktable rawdenoise package built to the published format, checked by
darktable-ai-sdk's validators where it is installed and by the format's rules (rawlab.deploy.dtmodel) always;
its bayer_v1 graph run in ONNX Runtime the way darktable feeds it."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from _models import TILE, make_joint_model, make_model

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the onnx extra (onnx) is not installed")

from click.testing import CliRunner

from rawlab.cli import main
from rawlab.errors import RawlabError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    return path, make_model(path, seed=2)


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("dt") / "My Tiny.dtmodel"
    res = CliRunner().invoke(main, ["export", str(model[0]), "--format", "dtmodel", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "darktable rawdenoise package 'rawdenoise-my-tiny'" in res.output
    return out


def test_the_package_follows_the_format(package):
    from rawlab.deploy.dtmodel import check_package

    config = check_package(package)
    with zipfile.ZipFile(package) as zf:
        names = sorted(zf.namelist())
    assert names == ["rawdenoise-my-tiny/config.json", "rawdenoise-my-tiny/model_bayer.onnx"]
    assert (
        config["id"] == "rawdenoise-my-tiny" and config["task"] == "rawdenoise" and config["tiling"] is True
    )
    assert config["variants"]["bayer"]["input_kind"] == "bayer_v1"
    assert json.loads(package.with_name(package.name + ".json").read_text())["dtmodel"] == config


def test_darktable_ai_sdk_validates_it(package, tmp_path):
    sdk = pytest.importorskip("dt_ai_sdk", reason="darktable-ai-sdk is not installed")
    with zipfile.ZipFile(package) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "rawdenoise-my-tiny"
    assert sdk.validate_config_json(folder / "config.json")
    assert sdk.validate_onnx(folder / "model_bayer.onnx", "model")


@pytest.mark.parametrize("size", [192, 256])  # two of darktable's packed tile sizes
def test_the_bayer_graph_is_what_darktable_expects(package, model, size):
    """Input [1, 4, T, T] -> output [1, 3, 2T, 2T]; at the CFA sites the RGB is the network's denoised planes
    for the graph's own noise estimate (numpy's blind_sigma), so darktable's re-mosaic gives them back."""
    import onnxruntime as ort

    from rawlab.deploy.dtmodel import blind_sigma

    with zipfile.ZipFile(package) as zf:
        data = zf.read("rawdenoise-my-tiny/model_bayer.onnx")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("input", "output") and inp.shape[:2] == [1, 4]
    rng = np.random.default_rng(size)
    clean = np.clip(rng.random((4, size // 8, size // 8)).repeat(8, 1).repeat(8, 2), 0.05, 0.9)
    sigma = np.array([0.01, 0.02, 0.02, 0.015])
    x = (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)).astype(np.float32)[None]
    rgb = sess.run(None, {"input": x})[0]
    assert rgb.shape == (1, 3, 2 * size, 2 * size)
    est = blind_sigma(x[0])
    assert np.all(np.abs(est / sigma - 1) < 0.1)  # the MAD estimate finds the noise on piecewise-flat scenes
    net_in = np.concatenate([x, np.broadcast_to(est[None, :, None, None], x.shape)], 1).astype(np.float32)
    want = np.moveaxis(np.asarray(model[1].module.apply(model[1].params, np.moveaxis(net_in, 1, -1))), -1, 1)[
        0
    ]
    got = np.stack(
        [rgb[0, 0, 0::2, 0::2], rgb[0, 1, 0::2, 1::2], rgb[0, 1, 1::2, 0::2], rgb[0, 2, 1::2, 1::2]]
    )
    assert np.max(np.abs(got - want)) <= 1e-4
    assert np.allclose(rgb[0, 1, 0::2, 0::2], (want[1] + want[2]) / 2, atol=1e-5)  # filled greens


def test_the_format_rules_reject_bad_packages(tmp_path):
    from rawlab.deploy.dtmodel import check_package

    def pack(name, files):
        path = tmp_path / f"{name}.dtmodel"
        with zipfile.ZipFile(path, "w") as zf:
            for arc, data in files.items():
                zf.writestr(arc, data)
        return path

    good = {"id": "rawdenoise-x", "name": "x", "description": "x", "task": "rawdenoise", "backend": "onnx",
            "version": "1.0", "variants": {"bayer": {"input_kind": "bayer_v1", "onnx": "model_bayer.onnx"}}}  # fmt: skip
    onnx = b"onnx"
    assert check_package(
        pack("ok", {"rawdenoise-x/config.json": json.dumps(good), "rawdenoise-x/model_bayer.onnx": onnx})
    )
    cases = {
        "two tops": {"rawdenoise-x/config.json": json.dumps(good), "other/model_bayer.onnx": onnx},
        "id mismatch": {"y/config.json": json.dumps(good), "y/model_bayer.onnx": onnx},
        "missing field": {"rawdenoise-x/config.json": json.dumps({**good, "version": None} | {"version": 1})
                          .replace('"backend": "onnx", ', ""), "rawdenoise-x/model_bayer.onnx": onnx},
        "no onnx": {"rawdenoise-x/config.json": json.dumps(good)},
        "traversal": {"rawdenoise-x/config.json": json.dumps(good), "rawdenoise-x/../../evil.onnx": onnx},
    }  # fmt: skip
    for name, files in cases.items():
        with pytest.raises(RawlabError):
            check_package(pack(name.replace(" ", "-"), files))
    (tmp_path / "plain.dtmodel").write_text("not a zip")
    with pytest.raises(RawlabError, match=r"not a \.dtmodel"):
        check_package(tmp_path / "plain.dtmodel")


def test_ksigma_models_are_refused(tmp_path):
    from rawlab.deploy.dtmodel import export_dtmodel
    from rawlab.learn.modelio import init_model, save_model

    save_model(
        tmp_path / "k",
        init_model({"model": {"arch": "tiny"}, "normalisation": {"kind": "ksigma"}, "tile": TILE}),
    )
    with pytest.raises(RawlabError, match="noise-map model"):
        export_dtmodel(tmp_path / "k", tmp_path / "k.dtmodel", n_eval=1)
    assert not (tmp_path / "k.dtmodel").exists()


def test_joint_models_are_refused_with_a_reason(tmp_path):
    from rawlab.deploy.dtmodel import export_dtmodel

    make_joint_model(tmp_path / "j")
    with pytest.raises(RawlabError, match="joint demosaic"):
        export_dtmodel(tmp_path / "j", tmp_path / "j.dtmodel", n_eval=1)
    assert not (tmp_path / "j.dtmodel").exists()
