"""The built-in model: the name ``builtin`` wherever a model is accepted, the shipped weights and their record,
and ``rawlab denoise`` with no ``--model`` on a sensor and a scene no training run saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.bayer import unpack
from rawlab.cli import main
from rawlab.dng import write_dng
from rawlab.errors import RawlabError
from rawlab.learn import modelio
from rawlab.rawio import read_raw
from rawlab.synth.generate import simulate_frame
from rawlab.synth.scenes import natural_scene
from rawlab.synth.sensors import SENSORS


def _psnr(x, y) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - y) ** 2)))


def _unseen_frame(path, iso: float, scene: str = "rocket", seed: int = 0):
    """A DNG of SynthCam GR-3 (a sensor the built-in model's store does not have: GRBG, 14 bits, black 512)
    at ``iso``, with its DNG NoiseProfile as cameras write it, and the noise-free planes it was drawn from."""
    sensor = SENSORS[2]
    clean = np.clip(natural_scene(scene, sensor, 384, 512) * 0.6, 0.0, None)
    planes = simulate_frame(clean, sensor, iso, np.random.default_rng(seed))
    a, b = sensor.noise_params(iso)
    write_dng(
        path, unpack(planes, sensor.cfa), cfa=sensor.cfa, black_level=sensor.black_level,
        white_level=sensor.white_level, make=sensor.make, model=sensor.model, iso=iso, exposure_time=0.01,
        as_shot_neutral=[1.0 / g for g in sensor.wb_gains], color_matrix1=sensor.xyz_to_cam,
        noise_profile=[(a[0], b[0]), ((a[1] + a[2]) / 2, (b[1] + b[2]) / 2), (a[3], b[3])],
    )  # fmt: skip
    return np.minimum(clean, 1.0)


def test_the_name_builtin_resolves_or_says_what_is_missing(tmp_path, monkeypatch):
    assert modelio.resolve_model("builtin") == modelio.BUILTIN_DIR
    assert modelio.resolve_model(tmp_path / "runs" / "x") == tmp_path / "runs" / "x"
    assert modelio.resolve_model("builtin-burst") == modelio.BUILTINS["builtin-burst"]
    monkeypatch.setitem(modelio.BUILTINS, "builtin", tmp_path / "gone")
    with pytest.raises(RawlabError, match="built-in model is missing"):
        modelio.resolve_model("builtin")
    _unseen_frame(tmp_path / "x.dng", 800)
    r = CliRunner().invoke(main, ["denoise", str(tmp_path / "x.dng"), "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "built-in model is missing" in r.output and "Traceback" not in r.output


def test_the_shipped_weights_load_and_record_how_they_were_made():
    model = modelio.load_model("builtin")
    made = model.config["builtin"]
    assert all(c.startswith("rawlab ") for c in made["retrain"]) and made["retrain"][-1].startswith(
        "rawlab train"
    )
    assert "--config builtin " in made["retrain"][2]  # the first stage trains the builtin config
    repo = Path(__file__).resolve().parents[1]
    for command in made["retrain"]:  # a stage with its own config names a file the repository ships
        words = command.split()
        config = words[words.index("--config") + 1] if "--config" in words else "builtin"
        assert not config.endswith(".py") or (repo / config).is_file(), command
    assert len(made["stages"]) == len(made["retrain"]) - 2 and made["steps"] == sum(made["stages"])
    assert made["steps"] >= 1 and made["hardware"] and made["date"]
    assert model.config["training"]["data"]["procedural_fraction"] > 0
    size_mb = (modelio.BUILTIN_DIR / modelio.PARAMS).stat().st_size / 1e6
    assert 0.5 < size_mb < 20  # a mobile-class model: a few MB inside the package


@pytest.mark.parametrize("iso", [3200, 12800])
def test_denoise_with_no_model_helps_on_a_sensor_it_never_saw(tmp_path, iso):
    """GR-3 at high ISO: the output is closer to the noise-free scene than the input is (PSNR against the
    truth the frame was drawn from), and the line says which model and noise source were used."""
    (tmp_path / "in").mkdir()
    clean = _unseen_frame(tmp_path / "in" / "x.dng", iso)
    r = CliRunner().invoke(main, ["denoise", str(tmp_path / "in" / "x.dng"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "builtin" in r.output
    noisy = read_raw(tmp_path / "in" / "x.dng").normalized()
    out = read_raw(tmp_path / "out" / "x.dng").normalized()
    before, after = _psnr(noisy, clean), _psnr(out, clean)
    assert after > before + 1.0, (before, after)


def test_serve_defaults_to_the_builtin_model():
    from rawlab.serve.app import describe_models, model_names

    named = model_names(["builtin"])
    assert named == {"builtin": str(modelio.BUILTIN_DIR)}
    (described,) = describe_models(named)
    assert described["name"] == "builtin" and described["kind"] == "jax"
