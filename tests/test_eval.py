"""``rawlab eval`` end to end: synthetic DNGs -> store -> scores of a model and the baselines, JSON and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.catalog import open_catalog
from rawlab.catalog.build import build_catalog
from rawlab.cli import main
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.evaluation import evaluate_store, select_pairs, write_outputs
from rawlab.learn.modelio import init_model, save_model
from rawlab.learn.split import split_pairs
from rawlab.noise.profile import load_profiles


@pytest.fixture(scope="module")
def store(small_synth, tmp_path_factory, client):
    """The session's small synthetic dataset (2 sensors x 2 scenes, 128x96) as a real store."""
    path = tmp_path_factory.mktemp("eval") / "store.zarr"
    build_catalog([str(small_synth.out)], str(path), options=RunOptions(client=client))
    return str(path)


@pytest.fixture(scope="module")
def truth(small_synth):
    return load_profiles(small_synth.truth_path)


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory, truth):
    """An untrained tiny U-Net (its zero-initialised head makes it exactly the identity) with the true noise law."""
    d = tmp_path_factory.mktemp("model") / "tiny"
    save_model(d, init_model({"model": {"arch": "tiny"}, "noise": truth.to_dict()}))
    return d


def test_eval_json_rows_and_identity_model(store, identity_model, small_synth, tmp_path, client):
    # No fusion: fused with VST+NL-means (the default, tests/test_fuse.py) the identity would not score as one.
    result = evaluate_store(
        store, identity_model, methods=None, profile=small_synth.truth_path, options=RunOptions(client=client),
        fuse=False,
    )  # fmt: skip
    assert result.methods[:4] == ["model", "identity", "vst-wavelet", "vst-nlm"]
    out = write_outputs(result, tmp_path / "eval.json")
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert doc["schema"] == "rawlab.eval/1" and doc["model"] == str(identity_model)
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG" and out.plot_path == tmp_path / "eval.png"

    # One row per held-out sensor, ISO and method, counting the held-out frames of that sensor and ISO.
    _, held = split_pairs(open_catalog(store))
    expected = held.groupby(["sensor", "iso"]).size()
    rows = doc["rows"]
    assert len(rows) == len(expected) * len(result.methods)
    for r in rows:
        assert {"sensor", "iso", "method", "psnr", "ssim", "n_frames"} <= set(r)
        assert isinstance(r["iso"], int) and r["n_frames"] == expected[(r["sensor"], r["iso"])]
        assert 15 < r["psnr"] < 80 and 0 < r["ssim"] <= 1
    by = {(r["sensor"], r["iso"], r["method"]): r for r in rows}
    for sensor, iso in expected.index:
        ident, model = by[(sensor, iso, "identity")], by[(sensor, iso, "model")]
        # The untrained network is exactly the identity, so it scores exactly what the noisy input scores.
        assert model["psnr"] == pytest.approx(ident["psnr"], abs=1e-9)
        assert model["ssim"] == pytest.approx(ident["ssim"], abs=1e-9)
    for sensor in {s for s, _ in expected.index}:
        isos = [i for s, i in expected.index if s == sensor]
        for m in ("vst-wavelet", "vst-nlm"):  # known noise: every baseline beats the noisy input at high ISO
            assert by[(sensor, max(isos), m)]["psnr"] > by[(sensor, max(isos), "identity")]["psnr"] + 1
            assert by[(sensor, max(isos), m)]["ssim"] > by[(sensor, max(isos), "identity")]["ssim"]
    assert {n["source"] for n in doc["noise"]} == {"profile"}
    assert len(doc["frames"]) == len(held)
    assert out.summary.startswith(f"eval: {len(held)} frames, 2 sensors")
    assert any("model-best" in line for line in out.lines)


def test_model_noise_law_crop_and_max_frames(store, identity_model):
    # No --profile: the model's own noise law gives (a, b); only identity and the model, so no cluster.
    result = evaluate_store(store, identity_model, methods="identity", max_frames=1, crop=32)
    assert result.methods == ["model", "identity"]
    assert {n["source"] for n in result.noise} == {"model"}
    assert all(r["n_frames"] == 1 for r in result.rows)
    assert all(f["shape"] == [32, 32, 4] for f in result.frames)


def test_scenes_the_model_trained_on_are_never_scored(store, truth, tmp_path):
    cat = open_catalog(store)
    _, held = split_pairs(cat)
    scenes = sorted(set(zip(held["sensor"], held["scene"], strict=True)))
    d = tmp_path / "seen"
    config = {"model": {"arch": "tiny"}, "noise": truth.to_dict(), "split": {"train_scenes": scenes[:1]}}
    save_model(d, init_model(config))
    result = evaluate_store(store, d, methods="identity")
    assert {(f["sensor"], f["scene"]) for f in result.frames} == set(scenes[1:])
    assert any("trained on" in n for n in result.notes)
    save_model(d, init_model({**config, "split": {"train_scenes": scenes}}))
    with pytest.raises(RawlabError, match="used to train the model"):
        evaluate_store(store, d, methods="identity")


def test_no_held_out_pairs_says_what_to_do(store):
    cat = open_catalog(store).assign(scene="only")  # one scene per sensor: nothing can be held out
    with pytest.raises(RawlabError, match=r"no held-out pairs.*--scenes all"):
        select_pairs(cat, store)
    pairs, notes = select_pairs(cat, store, scenes="all", trained=None)
    assert len(pairs) == int(((cat["role"] == "noisy") & (cat["status"] == "ok")).sum())
    assert any("does not record its training scenes" in n for n in notes)


def test_cli_end_to_end_and_exit_codes(store, identity_model, small_synth, tmp_path, client):
    runner = CliRunner()
    out = tmp_path / "cli.json"
    res = runner.invoke(
        main,
        ["eval", store, "--model", str(identity_model), "--out", str(out), "--methods", "identity,vst-wavelet",
         "--profile", str(small_synth.truth_path), "--max-frames", "1", "--crop", "32",
         "--scheduler", client.scheduler.address],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("eval: ") and "model" in last and "vst-wavelet" in last and str(out) in last
    doc = json.loads(out.read_text())
    assert {r["method"] for r in doc["rows"]} == {"model", "identity", "vst-wavelet"}
    assert out.with_suffix(".png").exists()

    bad = [
        (["eval", store, "--model", str(tmp_path / "missing"), "--out", str(out)], "does not exist"),
        (["eval", str(tmp_path / "nostore"), "--out", str(out)], "not a rawlab store"),
        (["eval", store, "--methods", "model", "--out", str(out)], "needs --model"),
        (["eval", store, "--methods", "median", "--out", str(out)], "unknown method"),
        (["eval", store, "--model", str(small_synth.truth_path), "--out", str(out)], "not a TFLite model"),
        (["eval", store, "--crop", "8", "--out", str(out)], "--crop"),
    ]
    for args, message in bad:
        res = runner.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)


def test_frames_are_exposure_matched_and_aligned(store):
    """The scored pair is the noisy frame against gain x reference: the residual has (about) zero mean."""
    from rawlab.evaluation.scoring import load_pair

    pairs, _ = select_pairs(open_catalog(store), store)
    for p in pairs[:3]:
        noisy, clean = load_pair(store, None, p, None)
        assert noisy.shape == clean.shape and noisy.dtype == np.float32
        assert abs(float(np.mean(noisy - clean))) < 0.01


@pytest.mark.slow  # imports TensorFlow for the export
def test_a_tflite_file_scores_like_its_model_directory(store, identity_model, small_synth, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from rawlab.deploy import export_tflite

    tfl = tmp_path / "tiny.tflite"
    export_tflite(identity_model, tfl, tile=80, calibration=store)
    # No fusion: for an identity network its residual is exactly 0 in JAX but int8 rounding in TFLite, and the
    # fusion's weights for so degenerate a residual say nothing about the file and the directory being alike.
    kw = {"methods": "identity", "profile": small_synth.truth_path, "max_frames": 1, "fuse": False}
    from_file = evaluate_store(store, tfl, **kw)
    from_dir = evaluate_store(store, identity_model, **kw)
    assert from_file.model == str(tfl)
    for a, b in zip(from_file.rows, from_dir.rows, strict=True):
        assert (a["sensor"], a["iso"], a["method"]) == (b["sensor"], b["iso"], b["method"])
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
