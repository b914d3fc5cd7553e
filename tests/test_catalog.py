"""``rawlab catalog build`` on the real stack: real DNGs, real rawpy, real Zarr, a real Dask LocalCluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import rawpy
import zarr

import rawlab
from rawlab.catalog import open_catalog, open_store
from rawlab.catalog.build import build_catalog
from rawlab.catalog.store import FrameStore, normalized
from rawlab.cluster import RunOptions
from rawlab.synth import write_dataset


def rawlab_cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rawlab", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, client):
    """A synthetic dataset (two sensors) and the store built from it."""
    root = tmp_path_factory.mktemp("built")
    data = root / "data"
    write_dataset(data, seed=3, size=(96, 64), n_sensors=2, n_scenes=2)
    store = root / "store.zarr"
    cat, summary = build_catalog([str(data)], str(store), options=RunOptions(client=client))
    return data, store, cat, summary


def test_catalog_has_contract_columns_and_pairs(built):
    data, store, cat, summary = built
    files = sorted(data.rglob("*.dng"))
    assert summary.n_files == len(files) == summary.n_ingested
    required = [
        "path", "sha256", "make", "model", "sensor", "iso", "exposure_time", "cfa", "black_level",
        "white_level", "height", "width", "scene", "role", "clean_path", "status", "error",
        "saturated_frac", "mean_level", "align_dy", "align_dx", "gain",
    ]  # fmt: skip
    assert set(required) <= set(cat.columns)
    cat2 = open_catalog(store)
    pd.testing.assert_frame_equal(cat.reset_index(drop=True), cat2.reset_index(drop=True))
    assert (cat["status"] == "ok").all()
    assert set(cat["sensor"]) == {"SynthCam PG-1", "SynthCam MP-2"}
    # Default rule: per scene the first base-ISO frame is clean, everything else is paired with it.
    for (_sensor, _scene), rows in cat.groupby(["sensor", "scene"]):
        clean = rows[rows["role"] == "clean"]
        assert len(clean) == 1
        assert clean["iso"].iloc[0] == rows["iso"].min() and clean["path"].iloc[0].endswith("_0.dng")
        noisy = rows[rows["role"] == "noisy"]
        assert len(noisy) == len(rows) - 1 and (noisy["clean_path"] == clean["path"].iloc[0]).all()
    # Synthetic pairs are aligned and exposure-matched by construction.
    noisy = cat[cat["role"] == "noisy"]
    assert noisy["align_dy"].abs().max() <= 0.5 and noisy["align_dx"].abs().max() <= 0.5
    np.testing.assert_allclose(noisy["gain"], 1.0, atol=0.02)
    np.testing.assert_allclose(noisy["expected_gain"], 1.0, rtol=1e-3)
    assert noisy["iso_source"].eq("exif").all() and noisy["make_source"].eq("tiff").all()


def test_lossless_round_trip(built):
    """Every DN in the store equals the raw file's, read independently through rawpy."""
    _data, store, cat, _ = built
    fstore = FrameStore(store)
    for row in cat.itertuples():
        with rawpy.imread(row.path) as raw:
            mosaic = raw.raw_image_visible.copy()
        stored = fstore.read_frame(row.frame_id)
        assert stored.dtype == np.uint16
        np.testing.assert_array_equal(rawlab.bayer.unpack(stored, row.cfa), mosaic)


def test_open_store_is_lazy_xarray(built):
    _data, store, cat, _ = built
    tree = open_store(store)
    leaves = [node for node in tree.subtree if node.has_data]
    assert {n.ds.attrs["sensor"] for n in leaves} == set(cat["sensor"])
    for node in leaves:
        ds = node.ds
        assert ds["raw"].dims == ("frame", "channel", "y", "x") and ds["raw"].dtype == np.uint16
        assert list(ds["channel"].values) == ["R", "G1", "G2", "B"]
        assert hasattr(ds["raw"].data, "dask")  # lazy, backed by dask
        x = normalized(ds)
        assert hasattr(x.data, "dask")
        mean = float(x.mean().compute())
        assert 0.01 < mean < 1.0
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["format"] == "rawlab.store/1" and root.attrs["builds"][-1]["rawlab_version"]


def test_rerun_ingests_nothing_and_new_files_alone(tmp_path, client):
    data = tmp_path / "data"
    write_dataset(data, seed=5, size=(64, 48), n_sensors=1, n_scenes=1)
    store = tmp_path / "s.zarr"
    _, first = build_catalog([str(data)], str(store), options=RunOptions(client=client))
    _, again = build_catalog([str(data)], str(store), options=RunOptions(client=client))
    assert again.n_ingested == 0 and again.n_reused == first.n_files
    extra = tmp_path / "more"
    write_dataset(extra, seed=6, size=(64, 48), n_sensors=2, n_scenes=1)
    new_files = [p for p in extra.rglob("*.dng") if "MP-2" in str(p)]
    dest = data / "SynthCam_MP-2"
    shutil.copytree(extra / "SynthCam_MP-2", dest)
    cat, third = build_catalog([str(data)], str(store), options=RunOptions(client=client))
    assert third.n_ingested == len(new_files) and third.n_reused == first.n_files
    assert len(cat) == first.n_files + len(new_files)
    assert cat["frame_id"].is_unique


def test_duplicate_content_is_stored_once(tmp_path, client):
    data = tmp_path / "data"
    write_dataset(data, seed=1, size=(64, 48), n_sensors=1, n_scenes=1)
    one = sorted(data.rglob("*.dng"))[0]
    (tmp_path / "copy").mkdir()
    shutil.copy(one, tmp_path / "copy" / "same.dng")
    cat, _ = build_catalog(
        [str(data), str(tmp_path / "copy")], str(tmp_path / "s.zarr"), options=RunOptions(client=client)
    )
    # One content, one row: the first path in name order, the copy listed with it (#17).
    first, copy = sorted([str(one), str(tmp_path / "copy" / "same.dng")])
    dup = cat[cat["sha256"] == cat.loc[cat["path"] == first, "sha256"].iloc[0]]
    assert len(dup) == 1 and list(dup["other_paths"].iloc[0]) == [copy]
    assert cat["sha256"].is_unique and copy not in set(cat["path"])
    assert len(FrameStore(tmp_path / "s.zarr").list_frames()) == cat["frame_id"].nunique() == len(cat)


def test_qa_excludes_a_shifted_and_an_overexposed_pair(tmp_path, client):
    """Pairs made wrong on purpose (shifted by 6 px; brightness 1.6x against the metadata) are excluded."""
    from rawlab.bayer import unpack
    from rawlab.dng import read_dng_tags, write_dng
    from rawlab.rawio import read_raw

    data = tmp_path / "data"
    write_dataset(data, seed=2, size=(256, 192), n_sensors=1, n_scenes=2)
    scene = sorted(p for p in (data / "SynthCam_PG-1").iterdir() if p.name != "chart")[0]
    src = scene / "chart_iso400_0.dng" if scene.name == "chart" else sorted(scene.glob("*_iso400_0.dng"))[0]
    frame, tags = read_raw(src), read_dng_tags(src)
    common = dict(cfa=frame.info.cfa, black_level=frame.info.black_level, white_level=frame.info.white_level,
                  make="SynthCam", model="PG-1", exposure_time=tags["exposure_time"])  # fmt: skip
    shifted = np.roll(frame.mosaic, (6, 0), axis=(0, 1))
    write_dng(
        scene / "shifted_iso800_0.dng",
        shifted,
        iso=800,
        **{**common, "exposure_time": tags["exposure_time"] / 2},
    )
    bright = np.clip(frame.packed().astype(float) * 1.6, 0, frame.info.white_level).astype(np.uint16)
    write_dng(scene / "bright_iso400_9.dng", unpack(bright, frame.info.cfa), iso=400, **common)
    cat, summary = build_catalog([str(data)], str(tmp_path / "s.zarr"), options=RunOptions(client=client))
    row = cat.set_index("path")
    shifted_row = row.loc[str(scene / "shifted_iso800_0.dng")]
    assert shifted_row["status"] == "excluded" and "misaligned" in shifted_row["error"]
    assert shifted_row["align_dy"] == pytest.approx(6.0, abs=0.25)
    bright_row = row.loc[str(scene / "bright_iso400_9.dng")]
    assert bright_row["status"] == "excluded" and "exposure" in bright_row["error"]
    assert bright_row["gain"] == pytest.approx(1.6, rel=0.03)
    assert summary.n_excluded == 2
    # Pixels are stored as captured, so QA can be redone with looser thresholds.
    cat2, _ = build_catalog([str(data)], str(tmp_path / "s.zarr"), options=RunOptions(client=client),
                            thresholds=_thresholds(max_shift=10, gain_tolerance=1.0))  # fmt: skip
    assert (cat2["status"] == "ok").all()


def _thresholds(**kw):
    from rawlab.catalog.qa import QAThresholds

    return QAThresholds.from_dict({**QAThresholds().to_dict(), **kw})


@pytest.mark.samples
def test_every_real_sample_is_accounted_for(samples_dir, tmp_path, client):
    manifest = pd.read_csv(samples_dir / "MANIFEST.csv")
    cat, summary = build_catalog(
        [str(samples_dir)], str(tmp_path / "s.zarr"), options=RunOptions(client=client)
    )
    assert summary.n_files == len(manifest)
    by_name = {
        p.split("raw-samples/", 1)[1]: r for p, r in zip(cat["path"], cat.to_dict("records"), strict=True)
    }
    assert set(by_name) == set(manifest["file"])
    for m in manifest.itertuples():
        row = by_name[m.file]
        if m.category == "bayer":
            # Readable; frames of different scenes sharing a folder are paired by the default rule and
            # then excluded by QA (they do not align), which is the point of QA.
            assert row["status"] in ("ok", "excluded"), (m.file, row["error"])
            assert row["status"] == "ok" or "alignment" in row["error"] or "misaligned" in row["error"]
            assert row["cfa"] == m.cfa and row["white_level"] == m.white
        else:
            assert row["status"] == "failed" and row["error"], m.file
            assert row["error_kind"] in {"non-bayer", "no-pixels", "undecodable", "truncated", "not-raw"}
    # The eight S40 frames share one folder and one ISO: one is the reference, the others are paired with it.
    s40 = cat[cat["sensor"] == "Canon PowerShot S40"]
    assert len(s40) == 8 and s40["iso"].eq(50).all()


def test_bad_files_fail_alone_and_strict_exits_1(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, seed=4, size=(128, 96), n_sensors=1, n_scenes=1)
    good = sorted(data.rglob("*.dng"))
    (data / "notes.txt").write_text("not a raw, not named like one: skipped")
    (data / "fake.dng").write_text("a text file named like a raw")
    cut = data / "cut.dng"
    cut.write_bytes(good[0].read_bytes()[:3000])
    store = tmp_path / "s.zarr"
    res = rawlab_cli("catalog", "build", str(data), "--out", str(store), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert f"{len(good) + 2} files" in res.stdout and "2 failed" in res.stdout
    assert "fake.dng" in res.stderr and "cut.dng" in res.stderr
    cat = open_catalog(store)
    failed = cat[cat["status"] == "failed"].set_index("path")
    assert failed.loc[str(data / "fake.dng"), "error_kind"] == "not-raw"
    assert failed.loc[str(cut), "error_kind"] in ("truncated", "no-pixels")
    res = rawlab_cli("catalog", "build", str(data), "--out", str(store), "--workers", "1", "--strict")
    assert res.returncode == 1 and "0 ingested" in res.stdout
    show = rawlab_cli("catalog", "show", str(store), "--json")
    summary = json.loads(show.stdout)
    assert summary["status"] == {"failed": 2, "ok": len(good)}
    assert {p["path"] for p in summary["problems"]} == {str(data / "fake.dng"), str(cut)}


@pytest.mark.parametrize(
    "setup, args, needle",
    [
        ("none", ["catalog", "build", "/no/such/folder", "--out", "{tmp}/s.zarr"], "does not exist"),
        ("file", ["catalog", "build", "{tmp}/data", "--out", "{tmp}/occupied"], "not a rawlab store"),
        (
            "foreign",
            ["catalog", "build", "{tmp}/data", "--out", "{tmp}/foreign.zarr"],
            "not a rawlab.store/1",
        ),
        ("none", ["catalog", "show", "{tmp}/nothing.zarr"], "not a rawlab store"),
        ("none", ["catalog", "build", "{tmp}/data", "--out", "{tmp}/s.zarr", "--recipe", "nope"], "nope"),
        ("readonly", ["catalog", "build", "{tmp}/data", "--out", "{tmp}/ro/s.zarr"], "cannot write"),
        ("parent-is-file", ["catalog", "build", "{tmp}/data", "--out", "{tmp}/afile/s.zarr"], "cannot write"),
    ],
)
def test_user_errors_exit_2(tmp_path, setup, args, needle):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.dng").write_text("a raw candidate, so that the source is not empty")
    if setup == "file":
        (tmp_path / "occupied").mkdir()
        (tmp_path / "occupied" / "x.txt").write_text("x")
    if setup == "foreign":
        zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["format"] = "something-else/2"
    if setup == "parent-is-file":
        (tmp_path / "afile").write_text("a file where a folder should be")
    if setup == "readonly":
        (tmp_path / "ro").mkdir(mode=0o500)
        if subprocess.run(["test", "-w", str(tmp_path / "ro")]).returncode == 0:
            pytest.skip("running as a user who can write anywhere (root)")
    res = rawlab_cli(*[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr and "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def scene_frames(tmp_path_factory):
    """Real DNGs of one photographed scene: the clean base-ISO frame and noisy frames up the ladder."""
    data = tmp_path_factory.mktemp("frames")
    write_dataset(data, seed=8, size=(128, 96), n_sensors=1, n_scenes=3)
    scenes = sorted(p for p in (data / "SynthCam_PG-1").iterdir() if p.name != "chart")
    return [{int(f.name.split("_iso")[1].split("_")[0]) * 10 + int(f.stem[-1]): f for f in s.glob("*.dng")}
            for s in scenes]  # fmt: skip


def _lay_out(root, layout):
    for rel, src in layout.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)


@pytest.mark.parametrize("recipe", ["sid", "sidd", "rawnind"])
def test_recipes_pair_miniature_dataset_trees(tmp_path, client, scene_frames, recipe):
    """Trees laid out as each dataset documents it, filled with real synthetic DNGs, pair as documented."""
    s1, s2 = scene_frames  # keys: ISO * 10 + frame index; 1000 = base-ISO clean frame
    if recipe == "sid":  # Sony/long/<id>_00_<t>s + Sony/short/<id>_<burst>_<t>s
        layout = {"Sony/long/00001_00_10s.dng": s1[1000], "Sony/short/00001_00_0.1s.dng": s1[16000],
                  "Sony/short/00001_01_0.04s.dng": s1[64000], "Sony/long/10003_00_30s.dng": s2[1000],
                  "Sony/short/10003_00_0.033s.dng": s2[32000]}  # fmt: skip
        expect = {"Sony/short/00001_00_0.1s.dng": "Sony/long/00001_00_10s.dng",
                  "Sony/short/00001_01_0.04s.dng": "Sony/long/00001_00_10s.dng",
                  "Sony/short/10003_00_0.033s.dng": "Sony/long/10003_00_30s.dng"}  # fmt: skip
    elif recipe == "sidd":  # <instance>_<scene>_<phone>_<ISO>_<shutter>_<temp>_<L|N|H>/<n>_{GT,NOISY}_RAW_<k>
        d1, d2 = "0001_001_S6_00800_00350_3200_L", "0002_001_IP_01600_00100_4400_N"
        layout = {f"{d1}/0001_GT_RAW_010.dng": s1[1000], f"{d1}/0001_NOISY_RAW_010.dng": s1[8000],
                  f"{d1}/0001_GT_RAW_011.dng": s1[1001], f"{d1}/0001_NOISY_RAW_011.dng": s1[4000],
                  f"{d2}/0002_GT_RAW_010.dng": s2[1000], f"{d2}/0002_NOISY_RAW_010.dng": s2[16000]}  # fmt: skip
        expect = {f"{d1}/0001_NOISY_RAW_010.dng": f"{d1}/0001_GT_RAW_010.dng",
                  f"{d1}/0001_NOISY_RAW_011.dng": f"{d1}/0001_GT_RAW_011.dng",
                  f"{d2}/0002_NOISY_RAW_010.dng": f"{d2}/0002_GT_RAW_010.dng"}  # fmt: skip
    else:  # src/Bayer/<set>/gt/<clean> with noisy frames beside gt/
        b, c = "src/Bayer/Bark", "src/Bayer/Cups"
        layout = {f"{b}/gt/Bayer_Bark_GT_ISO100_sha1=aa01.dng": s1[1000],
                  f"{b}/Bayer_Bark_ISO800_sha1=aa02.dng": s1[8000],
                  f"{b}/Bayer_Bark_ISO6400_sha1=aa03.dng": s1[64000],
                  f"{c}/gt/Bayer_Cups_GT_ISO100_sha1=bb01.dng": s2[1000],
                  f"{c}/Bayer_Cups_ISO3200_sha1=bb02.dng": s2[32000]}  # fmt: skip
        expect = {f"{b}/Bayer_Bark_ISO800_sha1=aa02.dng": f"{b}/gt/Bayer_Bark_GT_ISO100_sha1=aa01.dng",
                  f"{b}/Bayer_Bark_ISO6400_sha1=aa03.dng": f"{b}/gt/Bayer_Bark_GT_ISO100_sha1=aa01.dng",
                  f"{c}/Bayer_Cups_ISO3200_sha1=bb02.dng": f"{c}/gt/Bayer_Cups_GT_ISO100_sha1=bb01.dng"}  # fmt: skip
    root = tmp_path / recipe
    _lay_out(root, layout)
    cat, summary = build_catalog(
        [str(root)], str(tmp_path / "s.zarr"), options=RunOptions(client=client), recipe=recipe
    )
    rows = cat.set_index("relpath")
    assert summary.n_files == len(layout) and summary.n_failed == 0
    assert summary.n_pairs == len(expect)
    for noisy, clean in expect.items():
        assert rows.loc[noisy, "role"] == "noisy"
        assert rows.loc[noisy, "clean_path"] == str(root / clean)
        assert rows.loc[clean, "role"] == "clean"
        assert rows.loc[noisy, "status"] == "ok"  # same scene, exposure-matched: QA passes


def test_a_frame_is_marked_complete_in_one_metadata_write(tmp_path, monkeypatch):
    """A kill between two attribute writes once left a frame "complete" without its catalog row (CI, SIGKILL
    test). Every version of the frame group's metadata that reaches the disk has both marks or neither."""
    from zarr.storage import LocalStore

    writes = []
    original = LocalStore.set

    async def spy(self, key, value):
        if key.startswith("frames/f1/") and key.endswith("zarr.json") and "raw" not in key:
            writes.append(json.loads(value.to_bytes()).get("attributes", {}))
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", spy)
    store = FrameStore(tmp_path / "s.zarr")
    store.initialise({})
    store.write_frame("f1", np.zeros((4, 8, 8), np.uint16), {"path": "x.dng", "iso": 100.0})
    assert writes and writes[-1] == {"complete": True, "row": {"path": "x.dng", "iso": 100.0}}
    assert all(("complete" in w) == ("row" in w) for w in writes), writes
    assert store.frame_attrs("f1")["row"]["iso"] == 100.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts the process's threads in /proc")
def test_catalog_io_starts_no_arrow_threads(tmp_path):
    """Arrow's thread pools, once started, can abort a process at exit (``terminate called without an active
    exception``, exit -6: once in a loaded CI run of ``rawlab stats`` on an empty store). The catalog is read
    and written on the calling thread: a fresh process has as many threads after a write and a read as before
    them."""
    code = (
        "import os, sys, pandas as pd, pyarrow\n"
        "from rawlab.catalog.store import FrameStore\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        "fs = FrameStore(sys.argv[1]); fs.initialise({})\n"
        "before = n()  # zarr's own I/O threads are running by now\n"
        "df = pd.DataFrame({'path': [f'f{i}.dng' for i in range(500)], 'iso': range(500)})\n"
        "fs.write_catalog(df)\n"
        "back = fs.read_catalog()\n"
        "assert back.equals(df), back\n"
        "print(before, n())\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.zarr")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    before, after = map(int, res.stdout.split())
    assert after == before, (before, after)
