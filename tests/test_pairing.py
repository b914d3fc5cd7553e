"""Pairing: the default rule (with property tests) and the SID, SIDD and RawNIND recipes on miniature trees.

Trees are catalog rows (relpaths laid out as each dataset's documentation and pairing lists show), not pixel
files: pairing reads only paths and metadata.
"""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawlab.catalog.pairing import (
    CATALOGS_DIR,
    Recipe,
    apply_recipe,
    available_recipes,
    load_recipe,
    pair_default,
    pair_frames,
)
from rawlab.errors import RawlabError

NAN = math.nan


def catalog(rows, root="/data"):
    """Catalog rows from (relpath, sensor, iso, exposure[, status]) tuples under one source root."""
    recs = []
    for r in rows:
        rel, sensor, iso, exposure, *rest = r
        recs.append(
            {"path": f"{root}/{rel}", "relpath": rel, "source_root": root, "sensor": sensor,
             "iso": iso, "exposure_time": exposure, "status": rest[0] if rest else "ok",
             "iso_source": "exif", "exposure_source": "exif"}
        )  # fmt: skip
    return pd.DataFrame(recs)


def by_rel(out):
    return {r["relpath"]: r for r in out.to_dict("records")}


def shuffled(df, seed):
    idx = list(df.index)
    random.Random(seed).shuffle(idx)
    return df.loc[idx]


def same_result(a, b):
    cols = ["path", "scene", "role", "clean_path", "pair_note", "pair_group", "iso", "exposure_time"]
    a = a.sort_values("path").reset_index(drop=True)[cols]
    b = b.sort_values("path").reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(a, b)


# ------------------------------------------------------------------------------------------ default rule


def test_default_rule_scenes_sensors_and_singles():
    df = catalog([
        ("camA/street/a_iso1600.dng", "Cam A", 1600, 1 / 1000),
        ("camA/street/a_iso100.dng", "Cam A", 100, 1 / 60),
        ("camA/street/a_iso400.dng", "Cam A", 400, 1 / 250),
        ("camA/street/b_iso200.dng", "Cam B", 200, 1 / 60),  # another sensor in the same directory
        ("camA/street/b_iso800.dng", "Cam B", 800, 1 / 250),
        ("camA/lonely/only.dng", "Cam A", 3200, 1 / 30),  # one frame: single
        ("camA/street/c_iso100.dng", "Cam C", 100, 1 / 60),  # the only Cam C frame: single
    ])  # fmt: skip
    out = by_rel(pair_default(df))
    assert out["camA/street/a_iso100.dng"]["role"] == "clean"
    for rel in ("camA/street/a_iso1600.dng", "camA/street/a_iso400.dng"):
        assert out[rel]["role"] == "noisy"
        assert out[rel]["clean_path"] == "/data/camA/street/a_iso100.dng"
    assert out["camA/street/b_iso200.dng"]["role"] == "clean"
    assert out["camA/street/b_iso800.dng"]["clean_path"] == "/data/camA/street/b_iso200.dng"
    assert out["camA/lonely/only.dng"]["role"] == "single"
    assert "only frame" in out["camA/lonely/only.dng"]["pair_note"]
    assert out["camA/street/c_iso100.dng"]["role"] == "single"
    assert {r["scene"] for r in out.values()} == {"camA/street", "camA/lonely"}
    assert out["camA/street/a_iso100.dng"]["clean_path"] is None


def test_default_rule_ties_longest_exposure_then_path_order():
    df = catalog([
        ("s/x_short.dng", "Cam", 100, 0.01),
        ("s/x_long.dng", "Cam", 100, 0.1),  # same ISO, longer exposure: the reference
        ("s/y.dng", "Cam", 400, 0.1),
        ("t/b.dng", "Cam", 100, 0.1),
        ("t/a.dng", "Cam", 100, 0.1),  # full tie: first path in name order
        ("t/c.dng", "Cam", 100, NAN),  # unknown exposure ranks after known ones
    ])  # fmt: skip
    out = by_rel(pair_default(df))
    assert out["s/x_long.dng"]["role"] == "clean"
    assert out["s/x_short.dng"]["clean_path"] == "/data/s/x_long.dng"  # same-ISO frames are noisy too
    assert out["t/a.dng"]["role"] == "clean"
    assert out["t/b.dng"]["clean_path"] == out["t/c.dng"]["clean_path"] == "/data/t/a.dng"


def test_default_rule_synth_layout_first_base_iso_frame_is_reference():
    # rawlab synth writes <sensor>/<scene>/<scene>_iso<ISO>_<k>.dng; base-ISO frames share ISO and exposure
    rows = [(f"SynthCam/chart/chart_iso100_{k}.dng", "SynthCam PG-1", 100, 1 / 15) for k in (1, 0, 2)]
    rows += [("SynthCam/chart/chart_iso800_0.dng", "SynthCam PG-1", 800, 1 / 120)]
    out = by_rel(pair_default(catalog(rows)))
    assert out["SynthCam/chart/chart_iso100_0.dng"]["role"] == "clean"
    assert [out[f"SynthCam/chart/chart_iso100_{k}.dng"]["role"] for k in (1, 2)] == ["noisy", "noisy"]


def test_default_rule_missing_iso():
    df = catalog([
        ("mixed/a.dng", "Cam", 100, 0.1),
        ("mixed/b.dng", "Cam", 400, 0.1),
        ("mixed/c.crw", "Cam", NAN, 0.5),  # cannot be ranked against ISO 100/400
        ("old/a.crw", "Old", NAN, 0.5),  # no ISO anywhere: rank by exposure
        ("old/b.crw", "Old", NAN, 0.05),
        ("old/c.crw", "Old", NAN, NAN),  # neither: single
        ("pair1/a.crw", "Old", NAN, NAN),
        ("pair1/b.crw", "Old", 200, 0.1),  # the only rankable frame left: single
    ])  # fmt: skip
    out = by_rel(pair_default(df))
    assert out["mixed/a.dng"]["role"] == "clean" and out["mixed/b.dng"]["role"] == "noisy"
    assert out["mixed/c.crw"]["role"] == "single" and "ISO unknown" in out["mixed/c.crw"]["pair_note"]
    assert out["old/a.crw"]["role"] == "clean" and "longest exposure" in out["old/a.crw"]["pair_note"]
    assert out["old/b.crw"]["clean_path"] == "/data/old/a.crw"
    assert (
        out["old/c.crw"]["role"] == "single" and "neither ISO nor exposure" in out["old/c.crw"]["pair_note"]
    )
    assert out["pair1/a.crw"]["role"] == out["pair1/b.crw"]["role"] == "single"


def test_default_rule_failed_rows_untouched_and_excluded_rows_paired():
    df = catalog([
        ("d/a.dng", "Cam", 100, 0.1, "ok"),
        ("d/broken.dng", "Cam", NAN, NAN, "failed"),
        ("e/a.dng", "Cam", 100, 0.1, "ok"),
        ("e/b.dng", "Cam", 800, 0.1, "excluded"),  # excluded by QA in an earlier build: still a frame
    ])  # fmt: skip
    df["error"] = [None, "not a raw", None, None]
    out = pair_default(df)
    rows = by_rel(out)
    assert pd.isna(rows["d/broken.dng"]["role"]) and rows["d/broken.dng"]["clean_path"] is None
    assert rows["d/a.dng"]["role"] == "single"  # the failed file does not count as a frame
    assert rows["e/b.dng"]["role"] == "noisy" and rows["e/b.dng"]["clean_path"] == "/data/e/a.dng"
    assert list(out.index) == list(df.index) and list(out["path"]) == list(df["path"])


def test_default_rule_scene_names_remote_paths_and_root_files():
    a = catalog([("x/1.dng", "Cam", 100, 0.1), ("x/2.dng", "Cam", 200, 0.1)], root="s3://bucket/a")
    b = catalog([("x/1.dng", "Cam", 100, 0.1), ("x/2.dng", "Cam", 200, 0.1)], root="/local/b")
    c = catalog([("1.dng", "Cam", 100, 0.1), ("2.dng", "Cam", 200, 0.1)], root="/local/shoot")
    out = pair_default(pd.concat([a, b, c], ignore_index=True))
    scenes = dict(zip(out["path"], out["scene"], strict=True))
    # the same relative folder under two roots is two scenes, named by their full directory
    assert scenes["s3://bucket/a/x/1.dng"] == "s3://bucket/a/x" and scenes["/local/b/x/1.dng"] == "/local/b/x"
    assert scenes["/local/shoot/1.dng"] == "shoot"
    assert set(out["role"]) == {"clean", "noisy"}
    assert out.loc[out["path"] == "s3://bucket/a/x/2.dng", "clean_path"].item() == "s3://bucket/a/x/1.dng"


ISOS = st.sampled_from([NAN, 50.0, 100.0, 100.0, 400.0, 1600.0])
EXPOSURES = st.sampled_from([NAN, 0.01, 0.1, 0.1, 1.0])
ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c/d"]), st.sampled_from(["S1", "S2"]), ISOS, EXPOSURES,
        st.sampled_from(["ok", "ok", "ok", "failed", "excluded"]),
    ),
    min_size=1, max_size=25,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 2**16))
def test_default_rule_properties(rows, seed):
    df = catalog(
        [(f"{d}/f{i:02d}.dng", s, iso, exp, status) for i, (d, s, iso, exp, status) in enumerate(rows)]
    )
    out = pair_default(df)
    live = out[out["status"] != "failed"]
    assert live["role"].isin(["clean", "noisy", "single"]).all()  # exactly one role per readable frame
    failed = out[out["status"] == "failed"]
    assert failed["role"].isna().all() and failed["clean_path"].isna().all() and failed["scene"].isna().all()
    rows_by_path = out.set_index("path")
    for r in live.to_dict("records"):
        if r["role"] != "noisy":
            assert r["clean_path"] is None
            continue
        ref = rows_by_path.loc[r["clean_path"]]
        assert ref["role"] == "clean" and ref["scene"] == r["scene"] and ref["sensor"] == r["sensor"]
        group = live[(live["scene"] == r["scene"]) & (live["sensor"] == r["sensor"])]
        if not math.isnan(ref["iso"]):  # the reference has the lowest ISO, then the longest exposure
            assert ref["iso"] == group["iso"].min() and not math.isnan(r["iso"])
            same = group[group["iso"] == ref["iso"]]["exposure_time"].dropna()
            assert same.empty or ref["exposure_time"] == same.max()
        else:
            assert group["iso"].isna().all() and ref["exposure_time"] == group["exposure_time"].max()
    for _, group in live.groupby(["scene", "sensor"]):  # one reference per scene and sensor with pairs
        assert (group["role"] == "clean").sum() == (1 if (group["role"] == "noisy").any() else 0)
    same_result(out, pair_default(shuffled(df, seed)))


# ------------------------------------------------------------------------------------------ SID


SID_ROWS = [
    # as in Sony_train_list.txt: every short frame of an id pairs with long/<id>_00_<t>s.ARW
    ("Sony/short/00001_00_0.04s.ARW", "Sony ILCE-7SM2", 200, NAN),
    ("Sony/short/00001_00_0.1s.ARW", "Sony ILCE-7SM2", 200, NAN),
    ("Sony/short/00001_01_0.04s.ARW", "Sony ILCE-7SM2", 200, NAN),
    ("Sony/long/00001_00_10s.ARW", "Sony ILCE-7SM2", 200, NAN),
    ("Sony/short/00175_02_0.1s.ARW", "Sony ILCE-7SM2", 160, 0.1),
    ("Sony/long/00175_00_30s.ARW", "Sony ILCE-7SM2", 160, 30.0),
    ("Sony/short/10003_00_0.033s.ARW", "Sony ILCE-7SM2", 100, NAN),  # test id without its long frame
    ("Sony/Sony_train_list.ARW", "Sony ILCE-7SM2", 100, NAN),  # a raw outside short/ and long/
    ("Fuji/short/00001_00_0.1s.RAF", "Fujifilm X-T2", NAN, NAN, "failed"),  # X-Trans: not read
    ("Fuji/long/00001_00_10s.RAF", "Fujifilm X-T2", NAN, NAN, "failed"),
]


def test_sid_recipe_pairs_short_with_long_of_the_same_id():
    out = by_rel(pair_frames(catalog(SID_ROWS, root="/datasets/SID"), "sid"))
    ref = "/datasets/SID/Sony/long/00001_00_10s.ARW"
    assert out["Sony/long/00001_00_10s.ARW"]["role"] == "clean"
    for rel in (
        "Sony/short/00001_00_0.04s.ARW",
        "Sony/short/00001_00_0.1s.ARW",
        "Sony/short/00001_01_0.04s.ARW",
    ):
        assert (out[rel]["role"], out[rel]["clean_path"], out[rel]["scene"]) == ("noisy", ref, "Sony/00001")
    assert out["Sony/short/00175_02_0.1s.ARW"]["clean_path"] == "/datasets/SID/Sony/long/00175_00_30s.ARW"
    lone = out["Sony/short/10003_00_0.033s.ARW"]
    assert lone["role"] == "single" and "no clean reference in scene 'Sony/10003'" in lone["pair_note"]
    other = out["Sony/Sony_train_list.ARW"]
    assert (
        other["role"] == "single" and "matches none of the 1 pattern(s) of recipe 'sid'" in other["pair_note"]
    )
    assert pd.isna(out["Fuji/short/00001_00_0.1s.RAF"]["role"])


def test_sid_recipe_fills_exposure_from_names_only_when_missing():
    out = by_rel(pair_frames(catalog(SID_ROWS), "sid"))
    for rel, t in [("Sony/short/00001_00_0.04s.ARW", 0.04), ("Sony/long/00001_00_10s.ARW", 10.0),
                   ("Sony/short/10003_00_0.033s.ARW", 0.033)]:  # fmt: skip
        assert out[rel]["exposure_time"] == pytest.approx(t) and out[rel]["exposure_source"] == "recipe"
    kept = out["Sony/long/00175_00_30s.ARW"]
    assert kept["exposure_time"] == 30.0 and kept["exposure_source"] == "exif"
    assert math.isnan(out["Sony/Sony_train_list.ARW"]["exposure_time"])


def test_sid_recipe_with_the_camera_folder_as_source_root_and_several_long_frames():
    rows = [
        ("short/00001_00_0.1s.ARW", "Sony ILCE-7SM2", 200, NAN),
        ("long/00001_00_10s.ARW", "Sony ILCE-7SM2", 200, NAN),
        ("long/00001_01_30s.ARW", "Sony ILCE-7SM2", 200, NAN),  # the longer one is the reference
    ]
    out = by_rel(pair_frames(catalog(rows, root="/d/SID/Sony"), "sid"))
    assert out["short/00001_00_0.1s.ARW"]["scene"] == "00001"
    assert out["short/00001_00_0.1s.ARW"]["clean_path"] == "/d/SID/Sony/long/00001_01_30s.ARW"
    assert (
        out["long/00001_00_10s.ARW"]["role"] == "clean" and out["long/00001_00_10s.ARW"]["clean_path"] is None
    )


# ------------------------------------------------------------------------------------------ SIDD


SIDD_ROWS = [
    ("Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_RAW_010.DNG", "Samsung SM-G925F", NAN, NAN),
    ("Data/0001_001_S6_00100_00060_3200_L/0001_GT_RAW_010.DNG", "Samsung SM-G925F", NAN, NAN),
    ("Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_RAW_011.DNG", "Samsung SM-G925F", NAN, NAN),
    ("Data/0001_001_S6_00100_00060_3200_L/0001_GT_RAW_011.DNG", "Samsung SM-G925F", NAN, NAN),
    ("Data/0001_001_S6_00100_00060_3200_L/0001_METADATA_RAW_010.DNG", "Samsung SM-G925F", NAN, NAN),
    ("Data/0052_002_S6_01600_01000_5500_N/0052_NOISY_RAW_010.DNG", "Samsung SM-G925F", 1600, 0.001),
    ("Data/0052_002_S6_01600_01000_5500_N/0052_GT_RAW_010.DNG", "Samsung SM-G925F", 1600, 0.001),
    ("Data/0052_002_S6_01600_01000_5500_N/0052_NOISY_RAW_011.DNG", "Samsung SM-G925F", 1600, 0.001),
    ("Data/0200_010_GP_01600_03200_5500_N/0200_NOISY_RAW_010.DNG", "Google Pixel", NAN, NAN),
    ("Data/0200_010_GP_01600_03200_5500_N/0200_GT_RAW_010.DNG", "Google Pixel", NAN, NAN),
    # SIDD-Full, unpacked per kind: no scene-instance folder
    ("0007_NOISY_RAW/0007_NOISY_RAW_001.DNG", "Apple iPhone 7", NAN, NAN),
    ("0007_GT_RAW/0007_GT_RAW_001.DNG", "Apple iPhone 7", NAN, NAN),
]


def test_sidd_recipe_pairs_noisy_and_gt_with_the_same_index():
    out = by_rel(pair_frames(catalog(SIDD_ROWS, root="/d/SIDD_Medium_Raw"), "sidd"))
    folder = "Data/0001_001_S6_00100_00060_3200_L"
    for n in ("010", "011"):
        noisy, gt = out[f"{folder}/0001_NOISY_RAW_{n}.DNG"], out[f"{folder}/0001_GT_RAW_{n}.DNG"]
        assert gt["role"] == "clean" and noisy["role"] == "noisy"
        assert noisy["clean_path"] == f"/d/SIDD_Medium_Raw/{folder}/0001_GT_RAW_{n}.DNG"
        assert noisy["scene"] == "0001_001_S6_00100_00060_3200_L" and noisy["pair_group"].endswith(
            f"index={n}"
        )
    meta = out[f"{folder}/0001_METADATA_RAW_010.DNG"]
    assert meta["role"] == "single" and "matches none" in meta["pair_note"]
    lone = out["Data/0052_002_S6_01600_01000_5500_N/0052_NOISY_RAW_011.DNG"]  # its GT_RAW_011 is missing
    assert lone["role"] == "single"
    assert "no clean reference in scene '0052_002_S6_01600_01000_5500_N'" in lone["pair_note"]
    assert "index=011" in lone["pair_note"]
    assert (
        out["0007_NOISY_RAW/0007_NOISY_RAW_001.DNG"]["clean_path"]
        == "/d/SIDD_Medium_Raw/0007_GT_RAW/0007_GT_RAW_001.DNG"
    )
    assert out["0007_NOISY_RAW/0007_NOISY_RAW_001.DNG"]["scene"] == "0007"


def test_sidd_recipe_fills_iso_and_shutter_from_the_folder_name():
    out = by_rel(pair_frames(catalog(SIDD_ROWS), "sidd"))
    s6 = out["Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_RAW_010.DNG"]
    assert (s6["iso"], s6["iso_source"]) == (100.0, "recipe")
    assert s6["exposure_time"] == pytest.approx(1 / 60) and s6["exposure_source"] == "recipe"
    gp = out["Data/0200_010_GP_01600_03200_5500_N/0200_GT_RAW_010.DNG"]
    assert gp["iso"] == 1600.0 and gp["exposure_time"] == pytest.approx(1 / 3200)
    kept = out["Data/0052_002_S6_01600_01000_5500_N/0052_GT_RAW_010.DNG"]
    assert (kept["iso_source"], kept["exposure_source"]) == ("exif", "exif")
    full = out["0007_GT_RAW/0007_GT_RAW_001.DNG"]  # nothing in the path to fill from
    assert math.isnan(full["iso"]) and full["iso_source"] == "exif"


# ------------------------------------------------------------------------------------------ RawNIND

H1, H2, H3, H4, H5, H6 = (c * 40 for c in "123456")
RAWNIND_ROWS = [
    (f"src/Bayer/Bark/gt/Bayer_Bark_GT_ISO100_sha1={H1}.cr2", "Canon EOS 7D", NAN, 2.0),
    (f"src/Bayer/Bark/Bayer_Bark_ISO800_sha1={H2}.cr2", "Canon EOS 7D", NAN, 0.25),
    (f"src/Bayer/Bark/Bayer_Bark_ISO65535_sha1={H3}.cr2", "Canon EOS 7D", NAN, 1 / 500),
    # a set with two ground truths: lowest ISO, then longest exposure, is the reference
    (f"src/Bayer/TitusToys/gt/Bayer_TitusToys_GT_ISO100_sha1={H4}.arw", "Sony ILCE-7RM3", 100, 1.0),
    (f"src/Bayer/TitusToys/gt/Bayer_TitusToys_GT_ISO100_sha1={H5}.arw", "Sony ILCE-7RM3", 100, 2.0),
    (f"src/Bayer/TitusToys/Bayer_TitusToys_ISO3200_sha1={H6}.arw", "Sony ILCE-7RM3", 3200, 1 / 30),
    (f"src/Bayer/NoGT/Bayer_NoGT_ISO6400_sha1={H1}.nef", "Nikon D60", 6400, 0.01),
    (f"src/X-Trans/books/gt/X-Trans_books_GT_ISO200_sha1={H2}.raf", "Fujifilm X-T1", NAN, NAN, "failed"),
    (f"src/X-Trans/books/X-Trans_books_ISO800_sha1={H3}.raf", "Fujifilm X-T1", NAN, NAN, "failed"),
]


def test_rawnind_recipe_tree_layout():
    out = by_rel(pair_frames(catalog(RAWNIND_ROWS, root="/d/RawNIND"), "rawnind"))
    gt = f"/d/RawNIND/src/Bayer/Bark/gt/Bayer_Bark_GT_ISO100_sha1={H1}.cr2"
    assert out[f"src/Bayer/Bark/gt/Bayer_Bark_GT_ISO100_sha1={H1}.cr2"]["role"] == "clean"
    for name in (f"Bayer_Bark_ISO800_sha1={H2}.cr2", f"Bayer_Bark_ISO65535_sha1={H3}.cr2"):
        row = out[f"src/Bayer/Bark/{name}"]
        assert (row["role"], row["clean_path"], row["scene"]) == ("noisy", gt, "Bark")
    toys = "src/Bayer/TitusToys"
    ref = f"/d/RawNIND/{toys}/gt/Bayer_TitusToys_GT_ISO100_sha1={H5}.arw"
    assert out[f"{toys}/Bayer_TitusToys_ISO3200_sha1={H6}.arw"]["clean_path"] == ref
    other = out[f"{toys}/gt/Bayer_TitusToys_GT_ISO100_sha1={H4}.arw"]
    assert other["role"] == "clean" and other["clean_path"] is None and ref in other["pair_note"]
    nogt = out[f"src/Bayer/NoGT/Bayer_NoGT_ISO6400_sha1={H1}.nef"]
    assert nogt["role"] == "single" and "no clean reference in scene 'NoGT'" in nogt["pair_note"]
    assert pd.isna(out[f"src/X-Trans/books/X-Trans_books_ISO800_sha1={H3}.raf"]["role"])
    bark = out[f"src/Bayer/Bark/Bayer_Bark_ISO65535_sha1={H3}.cr2"]
    assert (bark["iso"], bark["iso_source"]) == (65535.0, "recipe")


def test_rawnind_recipe_flat_dataverse_download_pairs_the_same():
    flat = [(r[0].rpartition("/")[2], *r[1:]) for r in RAWNIND_ROWS]
    tree = pair_frames(catalog(RAWNIND_ROWS, root="/d"), "rawnind")
    flat_out = pair_frames(catalog(flat, root="/d"), "rawnind")
    name = lambda p: p.rpartition("/")[2] if isinstance(p, str) else p  # noqa: E731
    assert list(tree["role"].fillna("-")) == list(flat_out["role"].fillna("-"))
    assert list(tree["clean_path"].map(name)) == list(flat_out["clean_path"].map(name))
    assert list(tree["scene"]) == list(flat_out["scene"])


@pytest.mark.parametrize(
    ("name", "rows"), [("sid", SID_ROWS), ("sidd", SIDD_ROWS), ("rawnind", RAWNIND_ROWS)]
)
def test_recipes_do_not_depend_on_row_order(name, rows):
    df = catalog(rows)
    recipe = load_recipe(name)
    for seed in range(5):
        same_result(apply_recipe(recipe, df), apply_recipe(recipe, shuffled(df, seed)))


# ------------------------------------------------------------------------------------------ loading


def test_shipped_recipes_load_and_default_yaml_is_the_default_rule():
    assert {"default", "rawnind", "sid", "sidd"} <= set(available_recipes())
    for name in available_recipes():
        r = load_recipe(name)
        assert isinstance(r, Recipe) and r.description and r.source == str(CATALOGS_DIR / f"{name}.yaml")
    df = catalog([("a/1.dng", "Cam", 100, 0.1), ("a/2.dng", "Cam", 400, 0.1), ("b/1.dng", "Cam", 100, 0.1)])
    same_result(pair_frames(df, "default"), pair_frames(df))
    same_result(pair_frames(df, str(CATALOGS_DIR / "default.yaml")), pair_frames(df))


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


GOOD = "name: t\ndescription: test\npatterns: ['(?P<scene>[^/]+)/(?P<n>\\d+)\\.dng$']\nroles: [{pattern: x, role: clean}]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "patern: oops\n", ["unknown key(s) 'patern'", "allowed keys: description, metadata, name"]),
        (
            GOOD.replace("(?P<scene>[^/]+)", "(?P<scene>[^/]+"),
            ["patterns[0]", "(?P<scene>[^/]+/", "missing ), unterminated subpattern"],
        ),
        (GOOD.replace("name: t\n", ""), ["missing required field 'name'"]),
        (GOOD.replace("roles: [{pattern: x, role: clean}]\n", ""), ["missing required field 'roles'"]),
        (GOOD.replace("role: clean", "role: clena"), ["roles[0].role is 'clena'", "clean, noisy, single"]),
        (
            GOOD.replace("pattern: x", "pattern: '[x'"),
            ["roles[0].pattern '[x'", "unterminated character set"],
        ),
        (
            GOOD + "scene: '{camera}/{scene}'\n",
            ["uses group 'camera'", "its named groups: scene, n", "(?P<camera>...)"],
        ),
        (GOOD + "pair_by: [index]\n", ["pair_by uses group 'index'"]),
        (
            GOOD + "reference: [highest_iso]\n",
            ["reference is ['highest_iso']", "lowest_iso, longest_exposure"],
        ),
        (
            GOOD + "metadata: {iso: {group: nope}}\n",
            ["metadata.iso reads group 'nope', which no pattern defines"],
        ),
        (
            GOOD + "metadata: {gain: {group: n}}\n",
            ["metadata key 'gain' is not fillable", "iso, exposure_time"],
        ),
        (GOOD + "metadata: {iso: {group: n, scale: -1}}\n", ["metadata.iso.scale is -1"]),
        (GOOD + "rule: fancy\n", ["rule is 'fancy'", "'patterns'", "'default'"]),
        ("name: d\ndescription: x\nrule: default\nroles: []\n", ["roles have no effect with rule: default"]),
        ("- just\n- a list\n", ["expected a mapping", "got list"]),
        ("name: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_recipes_raise_helpful_errors(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RawlabError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"Recipe {path}: ")
    for part in expected:
        assert part in msg


def test_unknown_recipe_name_and_missing_file():
    with pytest.raises(
        RawlabError, match=r"Unknown recipe 'sdi'; available recipes: default, rawnind, sid, sidd"
    ):
        load_recipe("sdi")
    with pytest.raises(RawlabError, match=r"Recipe file '.*nothere.yaml' does not exist.*sid, sidd"):
        pair_frames(catalog([("a/1.dng", "Cam", 100, 0.1)]), "/tmp/nothere.yaml")


def test_custom_recipe_from_a_path(tmp_path):
    path = write(
        tmp_path,
        "name: lab\ndescription: clean/ and noisy/ folders per scene, ISO in the name\n"
        "patterns: ['(?:^|/)(?P<scene>[^/]+)/(?:clean|noisy)/[^/]*_iso(?P<iso>\\d+)\\.dng$']\n"
        "roles:\n  - {pattern: '/clean/', role: clean}\n  - {pattern: '/noisy/', role: noisy}\n"
        "metadata: {iso: iso}\n",
    )
    df = catalog([("s1/clean/a_iso100.dng", "Cam", NAN, 1.0), ("s1/noisy/b_iso3200.dng", "Cam", NAN, 0.03)])
    out = by_rel(pair_frames(df, path))
    assert out["s1/noisy/b_iso3200.dng"]["clean_path"] == "/data/s1/clean/a_iso100.dng"
    assert out["s1/noisy/b_iso3200.dng"]["iso"] == 3200.0
