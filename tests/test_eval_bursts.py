"""``rawlab eval`` on bursts (issue 14): real DNG bursts written by ``rawlab synth --burst``, the real merge, the
built-in single-frame model and a tiny burst model, scored against the synth truth; the CLI's happy path and
its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.cli import main
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.evaluation.burst_report import write_burst_outputs
from rawlab.evaluation.burst_sources import find_bursts
from rawlab.evaluation.bursts import SCHEMA, evaluate_bursts, psnr_db

FRAMES = 4


def _synth(root, *extra: str):
    res = CliRunner().invoke(
        main, ["synth", str(root), "--burst", str(FRAMES), "--size", "128x96", "--sensors", "1", *extra]
    )
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture(scope="module")
def bursts(tmp_path_factory):
    """1 sensor x 2 scenes x its 6 ISOs, bursts of 4 frames of 128x96 with a moving object (seed 0)."""
    return _synth(tmp_path_factory.mktemp("evalbursts") / "d", "--scenes", "2")


@pytest.fixture(scope="module")
def tiny_burst_model(tmp_path_factory):
    """A tiny K=2 burst model, 2 training steps (seconds): enough to run the model column's real path."""
    from rawlab.learn.bursttrain import load_burst_config, train_burst

    cfg = load_burst_config("burst", steps=2, burst__frames=2, data__batch_size=2, data__eval_batches=1,
                            data__workers=0, log_every=2, eval_every=2, checkpoint_every=2)  # fmt: skip
    cfg["model"]["spec"].update(widths=[8, 16, 32], convs_per_block=1)
    cfg["data"]["crop"], cfg["burst"]["init"] = 32, None  # a tiny U-Net from scratch, not the builtin's
    work = tmp_path_factory.mktemp("evalburstmodel") / "run"
    train_burst(cfg, work, progress=False)
    return work


@pytest.fixture(scope="module")
def result(bursts, tiny_burst_model, client):
    return evaluate_bursts(
        bursts,
        single="builtin",
        burst_model=tiny_burst_model,
        counts="2,4,8",
        options=RunOptions(client=client),
        fuse_single=False,  # the schema and counts; the default's fusion is scored in test_cli_fuse_single_...
    )


def _row(result, iso: int, n: int, method: str) -> dict:
    (row,) = [r for r in result.rows if r["iso"] == iso and r["frames"] == n and r["method"] == method]
    return row


def _direct_reference(cases):
    """Static and moving squared errors of the reference frames, computed here from the DNGs and the truth."""
    from rawlab.bayer import pack
    from rawlab.rawio import read_raw

    sums = {"static": [0.0, 0], "moving": [0.0, 0]}
    for case in cases:
        frame = read_raw(case.paths[0])
        truth = np.clip(pack(np.load(case.clean), frame.info.cfa).astype(np.float64), 0, 1)
        region = pack(np.load(case.mask).max(axis=0), frame.info.cfa) > 0
        err = (frame.normalized().astype(np.float64) - truth) ** 2
        for name, where in (("static", ~region), ("moving", region)):
            sums[name][0] += float(err[where].sum())
            sums[name][1] += int(where.sum())
    return sums


def test_schema_methods_and_counts(result, bursts, tmp_path):
    written = write_burst_outputs(result, tmp_path / "e.json")
    doc = json.loads(written.json_path.read_text())
    assert doc["schema"] == SCHEMA == "rawlab.eval-bursts/1"
    assert doc["methods"] == ["ref", "single", "merge", "model"]
    assert doc["frames"] == [2, 4]  # 8 asked for, the bursts hold 4
    assert any("8 left out" in n for n in doc["notes"])
    assert doc["models"]["single"] == "builtin" and doc["models"]["burst_frames"] == 2
    isos = sorted({r["iso"] for r in doc["rows"]})
    assert len(isos) == 6 and len(doc["rows"]) == len(isos) * 2 * 4 and len(doc["bursts"]) == 12
    for r in doc["rows"]:
        assert r["n_bursts"] == 2 and r["moving_sites"] > 0 and r["static_sites"] > 10 * r["moving_sites"]
        assert math.isfinite(r["psnr_static"]) and math.isfinite(r["psnr_moving"])
    assert written.plot_path.exists() and written.lines[0].split()[:3] == ["sensor", "ISO", "N"]


def test_reference_column_is_the_reference_frames_psnr(result, bursts):
    """The ``ref`` column, per ISO, equals the PSNR of the frames f0 against the truth computed directly, on the
    static area and on the moving region, and the region's size is the union of the object's masks."""
    cases, _ = find_bursts(bursts)
    for iso in sorted({c.iso for c in cases}):
        direct = _direct_reference([c for c in cases if c.iso == iso])
        for n in (2, 4):
            row = _row(result, iso, n, "ref")
            assert row["static_sites"] == direct["static"][1] and row["moving_sites"] == direct["moving"][1]
            for region in ("static", "moving"):
                s, c = direct[region]
                assert row[f"psnr_{region}"] == pytest.approx(psnr_db(s / c), abs=1e-9)


def test_merge_gains_on_static_content_as_the_noise_says(result):
    """Each frame has its own, independent noise of the reference's law, so an average of ``n`` aligned
    frames divides the noise variance by ``n``: 4 frames can gain at best 10 log10(4) = 6.0 dB over the
    reference where noise dominates (the highest ISO). The merge of 4 must beat what an ideal average of 2
    frames gives there, 10 log10(2) = 3.0 dB (it really uses more than two frames' worth), and 4 frames never
    score below 2 on static content where noise dominates the alignment's error (ISO >= 800)."""
    isos = sorted({r["iso"] for r in result.rows})
    ref = _row(result, isos[-1], 4, "ref")["psnr_static"]
    gain = _row(result, isos[-1], 4, "merge")["psnr_static"] - ref
    assert 10 * np.log10(2) < gain < 10 * np.log10(4)
    for iso in (i for i in isos if i >= 800):
        assert _row(result, iso, 4, "merge")["psnr_static"] >= _row(result, iso, 2, "merge")["psnr_static"]


def test_model_columns(result):
    """The single-frame model (built-in, guarded) beats the reference where noise dominates; it does not depend
    on the frame count. The tiny burst model's column exists for every count."""
    top = max(r["iso"] for r in result.rows)
    assert _row(result, top, 2, "single")["psnr_static"] > _row(result, top, 2, "ref")["psnr_static"]
    for r in result.rows:
        if r["method"] == "single":
            assert r["psnr_static"] == _row(result, r["iso"], 2, "single")["psnr_static"]
    assert {r["frames"] for r in result.rows if r["method"] == "model"} == {2, 4}


def test_static_bursts_have_no_moving_numbers_and_a_bad_burst_is_a_note(tmp_path, client):
    src = _synth(tmp_path / "still", "--scenes", "1", "--no-moving")
    bad = sorted(src.glob("*/chart/burst_iso800/*_f1.dng"))[0]
    bad.write_bytes(b"not a raw file")
    res = evaluate_bursts(src, counts=[2], options=RunOptions(client=client))
    assert res.methods == ["ref", "merge"]
    assert all(r["psnr_moving"] is None and r["moving_sites"] == 0 for r in res.rows)
    assert 800 not in {r["iso"] for r in res.rows} and len(res.bursts) == 5  # the other ISOs go on
    assert any("1 burst(s) not scored" in n and str(bad) in n for n in res.notes), res.notes


def test_a_burst_store_is_scored_on_the_frames_its_qa_kept(bursts, result, tmp_path, client):
    """A store built from the synth folder (--recipe bursts) finds its truth through the catalog's source paths;
    it scores the frames QA kept (the store's reference first), read losslessly from the store: the reference
    column equals the folder's wherever every burst of the ISO is there."""
    from rawlab.catalog import open_catalog
    from rawlab.catalog.build import build_catalog

    store = tmp_path / "s.zarr"
    build_catalog([str(bursts)], str(store), recipe="bursts", options=RunOptions(client=client))
    cat = open_catalog(store)
    on_disk, _ = find_bursts(bursts)
    cases, notes = find_bursts(store)
    assert [c.folder for c in cases] == [c.folder for c in on_disk] and notes == []
    for case, disk in zip(cases, on_disk, strict=True):
        rows = cat[cat["burst_id"] == case.burst_id]
        assert case.n_frames == int((rows["status"] == "ok").sum()) and case.paths[0] == disk.paths[0]
    got = evaluate_bursts(store, counts=[2], options=RunOptions(client=client))
    for r in got.rows:
        if r["method"] == "ref":
            assert r["psnr_static"] == _row(result, r["iso"], 2, "ref")["psnr_static"]
            assert r["psnr_moving"] == _row(result, r["iso"], 2, "ref")["psnr_moving"]


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_cli_happy_path_and_user_mistakes(bursts, tmp_path, client):
    runner = CliRunner()
    out = tmp_path / "cli" / "eval.json"
    res = runner.invoke(
        main,
        ["eval", str(bursts), "--frames", "2,4", "--out", str(out), "--scheduler", client.scheduler.address],
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("eval bursts: 12 bursts, 6 sensor-ISOs, frames 2,4")
    doc = json.loads(out.read_text())
    assert doc["schema"] == SCHEMA and doc["methods"] == ["ref", "merge"]
    assert out.with_suffix(".png").exists()

    bad = [
        (["eval", str(tmp_path), "--bursts", "--out", str(out)], "has no truth.json"),
        (["eval", str(bursts), "--burst-model", str(tmp_path / "nope"), "--out", str(out)], "does not exist"),
        (["eval", str(bursts), "--burst-model", "builtin", "--out", str(out)], "single-frame denoiser"),
        (["eval", str(bursts), "--crop", "32", "--out", str(out)], "--crop applies to pairs"),
        (["eval", str(bursts), "--frames", "two", "--out", str(out)], "--frames must be"),
    ]
    for args, message in bad:
        assert message in _one_line_error(runner.invoke(main, args)), args
    from rawlab.catalog.build import build_catalog

    pairs = tmp_path / "pairs.zarr"  # the same files built with the default rule: no bursts
    build_catalog([str(bursts / "SynthCam_PG-1" / "chart")], str(pairs), options=RunOptions(client=client))
    assert "has no bursts" in _one_line_error(
        runner.invoke(main, ["eval", str(pairs), "--bursts", "--out", str(out)])
    )
    assert "--fuse-single applies to bursts" in _one_line_error(
        runner.invoke(main, ["eval", str(pairs), "--fuse-single", "--out", str(out)])
    )
    with pytest.raises(RawlabError, match="lists no bursts"):
        (tmp_path / "truth.json").write_text(json.dumps({"schema": "rawlab.noise/1", "sensors": []}))
        find_bursts(tmp_path)


def test_cli_fuse_single_reaches_the_burst_model_and_its_mistakes_are_one_line(tmp_path, client):
    """``rawlab eval --burst-model builtin-burst`` scores the burst model as ``rawlab denoise --burst`` runs it,
    fused with the single-frame model by default (the JSON says so), and ``--no-fuse-single`` without (its
    column differs); either flag is refused without a burst model, --fuse-single with --no-fuse, and on pairs.
    (Its gain is tested in test_burst_model.py on bursts large enough for SURE's tiles.)"""
    res = CliRunner().invoke(
        main,
        ["synth", str(tmp_path / "d"), "--burst", "2", "--size", "64x48", "--sensors", "1", "--scenes", "1"],
    )
    assert res.exit_code == 0, res.output
    runner, sched = CliRunner(), ["--scheduler", client.scheduler.address]
    docs = {}
    for name, extra in (("plain", ["--no-fuse-single"]), ("fused", [])):
        out = tmp_path / f"{name}.json"
        args = [
            "eval",
            str(tmp_path / "d"),
            "--burst-model",
            "builtin-burst",
            "--frames",
            "2",
            "--out",
            str(out),
        ]
        res = runner.invoke(main, [*args, *extra, *sched])
        assert res.exit_code == 0, res.output
        docs[name] = json.loads(out.read_text())
    assert docs["fused"]["models"]["burst_fuse_single"] and not docs["plain"]["models"]["burst_fuse_single"]
    scores = {k: [r["psnr_static"] for r in d["rows"] if r["method"] == "model"] for k, d in docs.items()}
    assert len(scores["fused"]) == 6 and all(math.isfinite(v) for v in scores["fused"])
    assert scores["fused"] != scores["plain"]
    base = ["eval", str(tmp_path / "d"), "--out", str(tmp_path / "x.json")]
    bad = [
        ([*base, "--fuse-single"], "--fuse-single applies to a burst model's output; add --burst-model"),
        (
            [*base, "--no-fuse-single"],
            "--no-fuse-single applies to a burst model's output; add --burst-model",
        ),
        (
            [*base, "--fuse-single", "--burst-model", "builtin-burst", "--no-fuse"],
            "--fuse-single is a fusion",
        ),
    ]
    for args, message in bad:
        assert message in _one_line_error(runner.invoke(main, args)), args
