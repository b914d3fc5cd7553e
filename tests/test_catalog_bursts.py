"""Bursts in the catalog (#14): recognised by a recipe, QA'd per burst on a real Dask LocalCluster, stored as one
group with a frame axis. Real DNGs written by rawlab.dng and read by rawpy, a real Zarr store."""

from __future__ import annotations

import datetime as dt
import math
import os

import numpy as np
import pandas as pd
import pytest

from rawlab.bayer import pack
from rawlab.catalog import open_catalog
from rawlab.catalog.build import build_catalog
from rawlab.catalog.burst_qa import BurstThresholds, check_burst
from rawlab.catalog.bursts import open_burst, open_bursts
from rawlab.catalog.pairing import load_recipe, pair_frames
from rawlab.catalog.store import FrameStore
from rawlab.cluster import RunOptions
from rawlab.dng import write_dng

SIZE = 256  # mosaic px: 128x128 packed, the whole frame inside the QA crop
BLACK, WHITE = 64, 4095
A, B = 2e-3, 1e-5  # Poisson-Gaussian noise, normalised units (about ISO 1600 on a 12-bit sensor)
T0 = dt.datetime(2024, 5, 1, 9, 30, 0)


# ------------------------------------------------------------------------------------------ burst factory


def scene_spectrum(seed: int, size: int = 2 * SIZE) -> np.ndarray:
    """Spectrum of a random linear-RGB scene on a canvas twice the frame (so motion brings new content into
    view, as a camera's does): random phases under a 1/f amplitude, the power law of natural images."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    amp = 1.0 / (f + 2.0 / size)
    base = np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))).real
    rgb = []
    for c in range(3):
        x = base + 0.3 * np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))).real
        rgb.append(0.3 + 0.1 * (0.8 + 0.2 * c) * (x - x.mean()) / x.std())
    return np.fft.fft2(np.stack(rgb), axes=(1, 2))


def frame_mosaic(spec, shift=(0.0, 0.0), *, blur=0.0, gain=1.0, cfa="RGGB") -> np.ndarray:
    """Normalised mosaic of the scene moved by ``shift`` (mosaic px, ``frame(y, x) = ref(y - dy, x - dx)``),
    exactly (a band-limited shift in the Fourier domain), optionally blurred (Gaussian, sigma in mosaic px)."""
    n = spec.shape[-1]
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]
    h = np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]) - 2 * np.pi**2 * blur**2 * (fy**2 + fx**2))
    o = (n - SIZE) // 2
    rgb = gain * np.fft.ifft2(spec * h, axes=(1, 2)).real[:, o : o + SIZE, o : o + SIZE]
    mosaic = np.empty((SIZE, SIZE))
    for k, (oy, ox) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[oy::2, ox::2] = rgb["RGB".index(cfa[k]), oy::2, ox::2]
    return mosaic


def to_dn(x: np.ndarray, rng, a=A, b=B) -> np.ndarray:
    y = x + rng.normal(size=x.shape) * np.sqrt(a * np.clip(x, 0, None) + b)
    return np.clip(np.round(BLACK + y * (WHITE - BLACK)), 0, WHITE).astype(np.uint16)


def write_burst(folder, seed, shifts, *, blurs=None, gains=None, model="Cam-1", cfa="RGGB", iso=1600,
                exposure=0.01, t0=T0, step=1.0, name="f"):  # fmt: skip
    """A burst as real DNG files ``<name>00.dng``...: one scene, hand shake ``shifts``, capture times ``step``
    seconds apart. Returns the paths in capture order."""
    folder.mkdir(parents=True, exist_ok=True)
    spec, rng = scene_spectrum(seed), np.random.default_rng(seed + 1000)
    n = len(shifts)
    paths = []
    for k, (s, bl, g) in enumerate(zip(shifts, blurs or [0.0] * n, gains or [1.0] * n, strict=True)):
        path = folder / f"{name}{k:02d}.dng"
        write_dng(
            path, to_dn(frame_mosaic(spec, s, blur=bl, gain=g, cfa=cfa), rng), cfa=cfa, black_level=BLACK,
            white_level=WHITE, make="Burst", model=model, iso=iso, exposure_time=exposure,
            datetime=t0 + dt.timedelta(seconds=step * k),
        )  # fmt: skip
        paths.append(path)
    return paths


# Burst 1: four good frames, then one blurred, one too far off, one at another exposure (all as captured).
SHIFTS = [(0.0, 0.0), (1.3, -2.1), (-3.4, 0.7), (2.2, 4.9), (0.4, -0.6), (30.0, -8.0), (-1.0, 1.5)]
BLURS = [0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0]
GAINS = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.35]
STRICT = BurstThresholds(max_motion=16.0)  # 30 px is too far off for these 256-px frames


def shift_tolerance(seed: int) -> float:
    """How closely QA must recover a shift, derived: the estimator's grid (1/20 mosaic px, the upsampled DFT)
    counts twice, plus 5 standard deviations of the Cramer-Rao bound of a translation between two frames with
    this noise, ``var(d) = 2 var(L) / sum((dL/dx)^2)`` in packed px for the luminance ``L`` (mean of the four
    planes, noise variance ``mean(a x + b) / 4``), times 2 for mosaic px."""
    x = pack(frame_mosaic(scene_spectrum(seed)), "RGGB")
    lum = x.mean(axis=0)
    var_l = float(np.mean(A * np.clip(x, 0, None) + B)) / 4
    grad = min(float(np.sum(np.diff(lum, axis=ax) ** 2)) for ax in (0, 1))
    return 0.1 + 5 * 2 * math.sqrt(2 * var_l / grad)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A burst folder with three bad frames and a corrupt file, a second body's burst, and a pair folder."""
    root = tmp_path_factory.mktemp("bursts")
    data = root / "data"
    b1 = write_burst(data / "b1", 11, SHIFTS, blurs=BLURS, gains=GAINS)
    (data / "b1" / "f07.dng").write_bytes(b1[0].read_bytes()[:3000])  # cut short: LibRaw cannot decode it
    b2 = write_burst(data / "b2", 12, [(0.0, 0.0), (0.5, 0.5), (-1.0, 2.0)], model="Cam-2", cfa="GRBG")
    # A clean base-ISO frame and a noisy one of another scene, same brightness: a pair, not a burst.
    spec, rng = scene_spectrum(13), np.random.default_rng(5)
    common = dict(cfa="RGGB", black_level=BLACK, white_level=WHITE, make="Burst", model="Cam-1")
    pair = data / "pair"
    pair.mkdir()
    write_dng(pair / "clean.dng", to_dn(frame_mosaic(spec), rng, a=A / 16, b=B / 256), iso=100,
              exposure_time=0.16, datetime=T0, **common)  # fmt: skip
    write_dng(pair / "noisy.dng", to_dn(frame_mosaic(spec), rng), iso=1600, exposure_time=0.01,
              datetime=T0 + dt.timedelta(seconds=1), **common)  # fmt: skip
    return data, b1, b2


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory, client):
    data = tree[0]
    store = tmp_path_factory.mktemp("store") / "s.zarr"
    cat, summary = build_catalog(
        [str(data)], str(store), recipe="auto", burst_thresholds=STRICT, options=RunOptions(client=client)
    )
    return store, cat, summary


# ------------------------------------------------------------------------------------------ recognition


def _rows(spec):
    return pd.DataFrame([
        dict(path="/d/" + rel, relpath=rel, sensor=sensor, iso=iso, exposure_time=exp, status="ok",
             capture_time=t, height=64, width=64)
        for rel, sensor, iso, exp, t in spec
    ])  # fmt: skip


def test_recognition_cuts_runs_by_time_iso_exposure_and_body():
    spec = [(f"b/f{k}.dng", "Cam", 1600, 0.01, 100.0 + k) for k in range(4)]
    spec += [(f"b/g{k}.dng", "Cam", 1600, 0.01, 200.0 + k) for k in range(3)]  # 97 s later: a new burst
    spec += [("b/h0.dng", "Cam", 3200, 0.01, 203.5), ("b/h1.dng", "Cam", 3200, 0.005, 204.0)]  # changes
    spec += [(f"b/o{k}.dng", "Other", 1600, 0.01, 100.0 + k) for k in range(2)]  # another body, same folder
    out = pair_frames(_rows(spec), "bursts").set_index("relpath")
    ids = out["burst_id"]
    assert ids[[f"b/f{k}.dng" for k in range(4)]].nunique() == 1
    assert ids[[f"b/g{k}.dng" for k in range(3)]].nunique() == 1 and ids["b/g0.dng"] != ids["b/f0.dng"]
    assert ids[["b/o0.dng", "b/o1.dng"]].nunique() == 1 and ids["b/o0.dng"] not in set(ids[:7])
    assert list(out.loc[[f"b/g{k}.dng" for k in range(3)], "burst_index"]) == [0, 1, 2]
    assert out.loc["b/f0.dng", "role"] == "reference" and out.loc["b/f3.dng", "role"] == "frame"
    for single in ("b/h0.dng", "b/h1.dng"):  # ISO, then exposure changed: runs of one
        assert out.loc[single, "role"] == "single" and pd.isna(out.loc[single, "burst_id"])
        assert "fewer than min_frames" in out.loc[single, "pair_note"]
    # Without capture times, name order and the metadata alone decide; the id is a function of the frames.
    untimed = _rows([(f"c/f{k}.dng", "Cam", 800, 0.02, float("nan")) for k in range(3)])
    got = pair_frames(untimed, "bursts")
    assert got["burst_id"].nunique() == 1 and list(got["burst_index"]) == [0, 1, 2]
    assert pair_frames(untimed.iloc[::-1], "bursts")["burst_id"].iloc[0] == got["burst_id"].iloc[0]


def test_auto_recipe_recognises_bursts_not_pairs_and_the_default_rule_is_unchanged():
    spec = [(f"burst/f{k}.dng", "Cam", 1600, 0.01, 50.0 + k) for k in range(4)]
    spec += [("pair/clean.dng", "Cam", 100, 0.16, 10.0), ("pair/noisy.dng", "Cam", 1600, 0.01, 11.0)]
    spec += [(f"same/f{k}.dng", "Cam", 400, 0.01, float("nan")) for k in range(3)]  # no times: not for auto
    df = _rows(spec)
    auto = pair_frames(df, "auto").set_index("relpath")
    assert set(auto.loc[[f"burst/f{k}.dng" for k in range(4)], "role"]) == {"reference", "frame"}
    assert auto.loc["pair/noisy.dng", "role"] == "noisy"
    assert auto.loc["pair/noisy.dng", "clean_path"] == "/d/pair/clean.dng"
    assert auto.loc["pair/clean.dng", "role"] == "clean" and pd.isna(auto.loc["pair/clean.dng", "burst_id"])
    assert set(auto.loc[[f"same/f{k}.dng" for k in range(3)], "role"]) == {"clean", "noisy"}
    # No recipe: exactly the default rule, bursts or not (a burst folder is a reference and noisy frames).
    default = pair_frames(df).set_index("relpath")
    assert "burst_id" not in default.columns
    assert default.loc["burst/f0.dng", "role"] == "clean" and default.loc["burst/f1.dng", "role"] == "noisy"


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ("bursts: {max_gap: -1}", "bursts.max_gap"),
        ("bursts: {min_frames: 1}", "bursts.min_frames"),
        ("bursts: {others: pairs}", "bursts.others"),
        ("bursts: {colour: red}", "unknown key(s) 'colour'"),
        ("patterns: ['x']\nbursts: {}", "no effect with rule: bursts"),
    ],
)
def test_burst_recipe_errors_name_the_key(tmp_path, section, needle):
    from rawlab.errors import RawlabError

    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\ndescription: d\nrule: bursts\n{section}\n", encoding="utf-8")
    with pytest.raises(RawlabError, match=r"catalogs/README\.md") as err:
        load_recipe(str(path))
    assert needle in str(err.value)


# ------------------------------------------------------------------------------------------ QA on arrays


def test_check_burst_recovers_shifts_and_excludes_with_reasons():
    spec, rng = scene_spectrum(11), np.random.default_rng(3)
    crops = [pack(to_dn(frame_mosaic(spec, s, blur=b, gain=g), rng), "RGGB")
             for s, b, g in zip(SHIFTS, BLURS, GAINS, strict=True)]  # fmt: skip
    crops.append(OSError("chunk c/0/0/0 is gone"))
    metas = [dict(black_level=[BLACK] * 4, white_level=WHITE, iso=1600, exposure_time=0.01,
                  mean_level=float(np.mean((c - BLACK) / (WHITE - BLACK))) if isinstance(c, np.ndarray) else 0.3)
             for c in crops]  # fmt: skip
    res = check_burst(crops, metas, thresholds=STRICT)
    frames = res["frames"]
    assert res["reference"] == 0 and frames[0]["role"] == "reference"
    tol = shift_tolerance(11)
    for k in (1, 2, 3):
        assert frames[k]["role"] == "frame" and frames[k]["reason"] == ""
        assert frames[k]["align_dy"] == pytest.approx(SHIFTS[k][0], abs=tol)
        assert frames[k]["align_dx"] == pytest.approx(SHIFTS[k][1], abs=tol)
        assert frames[k]["gain"] == pytest.approx(1.0, abs=0.02)
    assert frames[4]["role"] == "excluded" and frames[4]["reason"].startswith("blurred")
    assert frames[5]["role"] == "excluded" and frames[5]["reason"].startswith("too far off")
    assert frames[6]["role"] == "excluded" and frames[6]["reason"].startswith("exposure off")
    assert frames[6]["gain"] == pytest.approx(1.35, rel=0.02)
    assert frames[7]["status"] == "excluded" and "chunk c/0/0/0 is gone" in frames[7]["reason"]
    # The first frame blurred: the reference moves to the first sharp one and motion is measured from it.
    res = check_burst([crops[4], *crops[:4]], [metas[4], *metas[:4]], thresholds=STRICT)
    assert res["reference"] == 1 and res["frames"][0]["reason"].startswith("blurred")
    assert res["frames"][2]["align_dx"] == pytest.approx(SHIFTS[1][1], abs=tol)


def test_flat_field_burst_is_not_judged_for_blur_or_motion():
    rng = np.random.default_rng(4)
    flat = np.full((SIZE, SIZE), 0.3)
    crops = [pack(to_dn(flat, rng), "RGGB") for _ in range(4)]
    metas = [dict(black_level=[BLACK] * 4, white_level=WHITE, mean_level=0.3)] * 4
    res = check_burst(crops, metas)
    assert [f["status"] for f in res["frames"]] == ["ok"] * 4
    assert all(math.isnan(f["sharpness"]) for f in res["frames"])


# ------------------------------------------------------------------------------------------ the build


def test_build_stores_bursts_with_a_frame_axis_and_qa(built, tree):
    store, cat, summary = built
    data, b1, b2 = tree
    rows = cat.set_index("path")
    assert summary.n_bursts == 2 and summary.n_burst_frames == len(b1) + len(b2)
    assert summary.n_failed == 1 and summary.failures[0][0] == str(data / "b1" / "f07.dng")
    assert rows.loc[str(data / "b1" / "f07.dng"), "status"] == "failed"
    assert rows.loc[str(data / "b1" / "f07.dng"), "error"]  # the reason, with its path in the row
    assert rows.loc[str(data / "pair" / "noisy.dng"), "role"] == "noisy"
    assert rows.loc[str(data / "pair" / "noisy.dng"), "status"] == "ok" and summary.n_pairs == 1
    r1 = rows.loc[[str(p) for p in b1]]
    assert r1["burst_id"].nunique() == 1 and list(r1["burst_index"]) == list(range(len(b1)))
    assert list(r1["role"]) == ["reference", "frame", "frame", "frame", "excluded", "excluded", "excluded"]
    reasons = list(r1["qa_reason"])
    assert reasons[4].startswith("blurred") and reasons[5].startswith("too far off")
    assert reasons[6].startswith("exposure off") and r1["status"].iloc[4:].eq("excluded").all()
    assert (r1["error"].iloc[4:] == r1["qa_reason"].iloc[4:]).all()
    tol = shift_tolerance(11)
    for k in (1, 2, 3, 5):
        assert r1["align_dy"].iloc[k] == pytest.approx(SHIFTS[k][0], abs=tol)
        assert r1["align_dx"].iloc[k] == pytest.approx(SHIFTS[k][1], abs=tol)
    assert r1["capture_time"].diff().iloc[1:].eq(1.0).all()  # EXIF DateTimeOriginal, read back

    ds = open_burst(store, r1["burst_id"].iloc[0])
    assert ds["raw"].dims == ("frame", "channel", "y", "x")
    assert ds["raw"].shape == (7, 4, SIZE // 2, SIZE // 2)
    assert ds.attrs["reference"] == 0 and list(ds["role"].values) == list(r1["role"])
    assert hasattr(ds["raw"].data, "dask")  # lazy
    fstore = FrameStore(store)
    for k, fid in enumerate(r1["frame_id"]):
        np.testing.assert_array_equal(ds["raw"][k].values, fstore.read_frame(fid))
    # The burst's chunks are the frames' own files (hard links), not a second copy of the pixels.
    path = fstore.burst_path(r1["sensor"].iloc[0], r1["burst_id"].iloc[0])
    chunk = os.path.join(store, path, "raw", "c", "0", "0", "0", "0")
    assert os.stat(chunk).st_nlink == 2
    tree2 = open_bursts(store)
    assert sorted(node.name for s in tree2.children.values() for node in s.children.values()) == sorted(
        cat["burst_id"].dropna().unique()
    )


def test_show_lists_bursts_and_excluded_frames_with_reasons(built):
    from rawlab.catalog.summary import catalog_summary, format_summary

    store = built[0]
    summary = catalog_summary(open_catalog(store))
    assert summary["bursts"]["n"] == 2 and summary["bursts"]["excluded"] == 3
    text = format_summary(summary, str(store))
    assert "bursts: 2" in text
    for reason in ("blurred", "too far off", "exposure off"):
        assert reason in text


def test_rerun_is_idempotent_and_new_thresholds_redecide_without_rewriting(built, tree, client):
    store, cat, _ = built
    data, b1, _ = tree
    bid = cat.loc[cat["path"] == str(b1[0]), "burst_id"].iloc[0]
    fstore = FrameStore(store)
    chunk = os.path.join(store, fstore.burst_path("Burst Cam-1", bid), "raw", "c", "1", "0", "0", "0")
    inode = os.stat(chunk).st_ino
    again, summary = build_catalog(
        [str(data)], str(store), recipe="auto", burst_thresholds=STRICT, options=RunOptions(client=client)
    )
    assert summary.n_ingested == 0 and not any(k.startswith("bursts: ") for k in summary.cpu)
    pd.testing.assert_frame_equal(again, cat)
    # Looser thresholds: the far-off frame comes back; pixels untouched, the group's verdicts updated.
    loose, _ = build_catalog(
        [str(data)], str(store), recipe="auto", options=RunOptions(client=client),
        burst_thresholds=BurstThresholds(max_motion=64.0),
    )  # fmt: skip
    r = loose.set_index("path")
    assert r.loc[str(b1[5]), "role"] == "frame" and r.loc[str(b1[5]), "status"] == "ok"
    assert r.loc[str(b1[4]), "role"] == "excluded"
    assert os.stat(chunk).st_ino == inode
    assert open_burst(store, bid)["role"].values[5] == "frame"


def test_an_interrupted_burst_write_is_redone_on_the_next_run(tree, tmp_path, client):
    data, _, b2 = tree
    store = tmp_path / "s.zarr"
    opts = RunOptions(client=client)
    cat, _ = build_catalog([str(data)], str(store), recipe="bursts", burst_thresholds=STRICT, options=opts)
    fstore = FrameStore(store)
    bid2 = cat.loc[cat["path"] == str(b2[0]), "burst_id"].iloc[0]
    meta = os.path.join(store, fstore.burst_path("Burst Cam-2", bid2), "zarr.json")
    with open(meta) as f:
        text = f.read()
    with open(meta, "w") as f:  # as a build killed before the group's last metadata write leaves it
        f.write(text.replace('"complete": true', '"complete": false'))
    again, summary = build_catalog([str(data)], str(store), recipe="bursts", burst_thresholds=STRICT,
                                   options=opts)  # fmt: skip
    assert summary.cpu.get("bursts: check", 0) > 0  # one burst redone (the other was reused)
    cols = ["path", "burst_id", "burst_index", "role", "status", "qa_reason", "align_dy", "align_dx", "gain"]
    pd.testing.assert_frame_equal(again[cols], cat[cols])
    assert open_burst(store, bid2)["raw"].shape[0] == len(b2)
    # The bursts recipe keeps frames in no burst single (the pair folder's two frames differ in ISO).
    assert set(cat.loc[cat["path"].str.contains("/pair/"), "role"]) == {"single"}
    # Built again with the default rule, the same files are pairs again, with nothing left of the bursts.
    paired, summary = build_catalog([str(data)], str(store), options=opts)
    assert summary.n_bursts == 0 and paired["burst_id"].isna().all() and paired["sharpness"].isna().all()
    assert set(paired.loc[paired["status"] != "failed", "role"]) == {"clean", "noisy"}
    noisy = paired[paired["role"] == "noisy"]
    assert noisy["align_dy"].notna().all() and noisy["qa_key"].notna().all()  # checked as pairs


# ------------------------------------------------------------------------------------------ rawlab synth --burst


def _burst_motion_tolerance(rotation_deg: float, crop_px: tuple[int, int]) -> float:
    """A global translation cannot fit a rotation: allow what the rotation moves a point a quarter of the
    crop's diagonal from its centre (mosaic px), plus twice the estimator's 1/20 px grid."""
    diag = math.hypot(*crop_px)
    return 0.1 + abs(math.radians(rotation_deg)) * diag / 4


@pytest.mark.slow
def test_synthetic_bursts_are_recognised_with_their_true_motion(tmp_path, client):
    """``rawlab synth --burst`` data (its library function, in process): every burst folder is one burst in
    capture order, frame 0 its reference, and QA recovers the true hand shake of the photographed scenes."""
    import json

    from rawlab.synth.burst import write_bursts

    summary = write_bursts(tmp_path / "data", n_frames=3, seed=3, size=(256, 192), n_sensors=1, n_scenes=2)
    cat, built = build_catalog([str(tmp_path / "data")], str(tmp_path / "s.zarr"), recipe="bursts",
                               options=RunOptions(client=client))  # fmt: skip
    truth = json.loads(summary.truth_path.read_text())["bursts"]
    assert built.n_bursts == len(truth) and built.n_burst_frames == 3 * len(truth) == len(cat)
    for b in truth:
        folder = summary.truth_path.parent / b["folder"]
        rows = cat[cat["path"].str.startswith(str(folder) + "/")].sort_values("burst_index")
        assert rows["burst_id"].nunique() == 1
        assert [os.path.basename(p) for p in rows["path"]] == b["frames"]  # capture order
        assert rows["role"].iloc[b["reference"]] == "reference"
        if b["scene"] == "chart":  # plain patches and a textured moving disc: motion there is approximate
            continue
        assert (rows["status"] == "ok").all(), rows["qa_reason"].tolist()
        for (_, r), m in zip(rows.iterrows(), b["motion"], strict=True):
            tol = _burst_motion_tolerance(m["rotation_deg"], (192, 256))
            assert r["align_dy"] == pytest.approx(m["dy"], abs=tol)
            assert r["align_dx"] == pytest.approx(m["dx"], abs=tol)


@pytest.mark.slow
def test_cli_synth_burst_build_and_show(tmp_path):
    """The commands as the README gives them: synth --burst, catalog build --recipe bursts with a --qa-burst-*
    threshold, catalog show listing the bursts."""
    import subprocess
    import sys

    def cli(*args):
        res = subprocess.run(
            [sys.executable, "-m", "rawlab", *args], capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    data, store = str(tmp_path / "data"), str(tmp_path / "s.zarr")
    cli("synth", data, "--burst", "3", "--size", "128x96", "--sensors", "1", "--scenes", "1", "--seed", "2")
    out = cli("catalog", "build", data, "--out", store, "--recipe", "bursts", "--workers", "1",
              "--qa-burst-max-motion", "32", "--qa-burst-min-sharpness", "0.4")  # fmt: skip
    assert "bursts of" in out
    shown = cli("catalog", "show", store)
    assert "bursts: " in shown
    built = FrameStore(store).attrs()["builds"][-1]
    assert built["burst_qa_thresholds"]["max_motion"] == 32 and built["recipe"] == "bursts"
