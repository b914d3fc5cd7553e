"""rawlab.noise.export and rawlab.noise.plots: darktable JSON, DNG NoiseProfile (real files), plots on disk."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import rawpy
import tifffile
from _darktable import darktable_noiseprofile_log, needs_darktable

from rawlab.bayer import pack
from rawlab.dng import read_dng_tags
from rawlab.errors import RawlabError, RawlabWarning
from rawlab.noise.export import (
    darktable_problems,
    read_darktable,
    save,
    to_darktable,
    to_dng_noise_profile,
    write_darktable,
    write_dng_noise_profiles,
)
from rawlab.noise.isolaw import fit_sensor_law
from rawlab.noise.plots import plot_iso_law, plot_variance_mean
from rawlab.noise.profile import ISOProfile, NoiseProfileSet, SensorProfile, load_profiles
from rawlab.synth.sensors import SENSORS

ANCHORS = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "noise-anchors" / "darktable-noiseprofiles.json"
)

# The makers darktable's data/noiseprofiles.schema enumerates (the makers in its shipped file).
DARKTABLE_MAKERS = [
    "Canon",
    "DJI",
    "Fujifilm",
    "Hasselblad",
    "LGE",
    "Leica",
    "Minolta",
    "Nikon",
    "Olympus",
    "OM System",
    "OnePlus",
    "Panasonic",
    "Pentax",
    "Raspberrypi",
    "Ricoh",
    "Samsung",
    "Sony",
    "YI TECHNOLOGY",
]


def darktable_schema(makers: list[str] | None = DARKTABLE_MAKERS) -> dict:
    """The constraints of darktable's data/noiseprofiles.schema (JSON Schema draft 4), restated.

    One subtlety: darktable's schema gives ``profiles`` two ``minItems`` keys (1, then 4); JSON parsers keep
    the last, so a model needs at least four ISOs. ``makers=None`` drops the maker enum, which lists only
    makers already in darktable's file (a new maker is added to it with the first camera).
    """
    rgb = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
    chars = r"[a-zA-Z0-9_\- ()\*]+"
    profile = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "iso", "a", "b"],
        "properties": {
            "name": {
                "type": "string",
                "pattern": f"^{chars} iso [0-9]{{2,7}}$",
                "minLength": 9,
                "maxLength": 38,
            },
            "iso": {"type": "integer", "minimum": 1, "maximum": 2048000},
            "a": rgb,
            "b": rgb,
            "skip": {"type": "boolean", "enum": [True]},
        },
    }
    model = {
        "type": "object",
        "additionalProperties": False,
        "required": ["comment", "model", "profiles"],
        "properties": {
            "comment": {"type": "string"},
            "model": {"type": "string", "pattern": f"^{chars}$", "minLength": 2, "maxLength": 30},
            "profiles": {"type": "array", "uniqueItems": True, "minItems": 4, "items": profile},
        },
    }
    maker_name = {"type": "string", "pattern": "^[a-zA-Z ]+$"} | ({"enum": makers} if makers else {})
    maker = {
        "type": "object",
        "additionalProperties": False,
        "required": ["maker", "models"],
        "properties": {
            "maker": maker_name,
            "models": {"type": "array", "uniqueItems": True, "minItems": 1, "items": model},
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "noiseprofiles"],
        "properties": {
            "version": {"type": "integer", "enum": [0]},
            "noiseprofiles": {"type": "array", "uniqueItems": True, "minItems": 1, "items": maker},
        },
    }


def truth_profiles(sensors=SENSORS) -> NoiseProfileSet:
    """The synthetic sensors' true profiles, with the fields synth's truth.json carries."""
    out = []
    for s in sensors:
        profiles = [ISOProfile(iso, *s.noise_params(iso)) for iso in s.iso_ladder]
        extra = {"make": s.make, "model": s.model, "cfa": s.cfa, "black_level": list(s.black_level)}
        out.append(
            SensorProfile(s.name, "truth", profiles, s.iso_model(), extra | {"white_level": s.white_level})
        )
    return NoiseProfileSet(out)


# ----------------------------------------------------------------------------------------------------------
# darktable
# ----------------------------------------------------------------------------------------------------------


def test_schema_restatement_accepts_darktables_own_file_and_rejects_bad_ones():
    """Our restated schema is the real one: darktable's shipped file passes it, broken variants fail."""
    if not ANCHORS.is_file():
        pytest.skip("../shared/noise-anchors is not present beside this checkout")
    doc = json.loads(ANCHORS.read_text())
    jsonschema.Draft4Validator(darktable_schema()).validate(doc)
    assert darktable_problems(doc) == []
    bad = copy.deepcopy(doc)
    bad["noiseprofiles"][0]["models"][0]["profiles"][0]["a"] = [1e-5, 1e-5]
    del bad["noiseprofiles"][0]["models"][1]["comment"]
    bad["noiseprofiles"][0]["models"][2]["profiles"][0]["name"] = "no iso here"
    errors = list(jsonschema.Draft4Validator(darktable_schema()).iter_errors(bad))
    assert len(errors) == 3
    assert darktable_problems(bad) == [
        f"Canon EOS-1Ds {doc['noiseprofiles'][0]['models'][0]['profiles'][0]['name']}: "
        "'a' and 'b' need 3 values (R, G, B)"
    ]


def test_darktable_export_validates_and_round_trips(tmp_path):
    truth = truth_profiles()
    doc = to_darktable(truth)
    jsonschema.Draft4Validator(darktable_schema(makers=None)).validate(doc)
    assert darktable_problems(doc) == []
    assert doc["version"] == 0 and [m["maker"] for m in doc["noiseprofiles"]] == ["SynthCam"]
    assert [m["model"] for m in doc["noiseprofiles"][0]["models"]] == ["PG-1", "MP-2", "GR-3", "GB-4"]
    first = doc["noiseprofiles"][0]["models"][1]["profiles"][0]
    assert first["name"] == "MP-2 iso 50" and first["iso"] == 50 and isinstance(first["iso"], int)

    path = write_darktable(truth, tmp_path / "noiseprofiles.json")
    back = read_darktable(path)
    assert [s.sensor for s in back.sensors] == [s.sensor for s in truth.sensors]
    for want, got in zip(truth.sensors, back.sensors, strict=True):
        assert got.method == "darktable" and [p.iso for p in got.profiles] == [p.iso for p in want.profiles]
        for pw, pg in zip(want.profiles, got.profiles, strict=True):
            for key in ("a", "b"):
                w, g = getattr(pw, key), getattr(pg, key)
                assert g[0] == w[0] and g[3] == w[3]  # R and B exact (JSON floats round-trip)
                assert g[1] == g[2] == pytest.approx((w[1] + w[2]) / 2, rel=1e-15)  # darktable's G


def test_darktable_export_for_a_known_maker_passes_the_full_schema(tmp_path):
    """Under a maker darktable already lists, the export passes the schema unchanged, maker enum included."""
    gr3 = truth_profiles([SENSORS[2]])
    path = write_darktable(gr3, tmp_path / "dt.json", maker="Canon", model_name="EOS 5D Mark IV")
    doc = json.loads(path.read_text())
    jsonschema.Draft4Validator(darktable_schema()).validate(doc)
    names = [p["name"] for p in doc["noiseprofiles"][0]["models"][0]["profiles"]]
    assert names == [
        "EOS 5D Mark IV iso 100",
        "EOS 5D Mark IV iso 800",
        "EOS 5D Mark IV iso 3200",
        "EOS 5D Mark IV iso 12800",
    ]
    # names keep to darktable's characters and 38-character limit whatever the model is called
    odd = to_darktable(gr3, "Canon", "PowerShot G7 X Mark III / ver.2 (beta)")
    odd = odd["noiseprofiles"][0]["models"][0]
    assert all(len(p["name"]) <= 38 and p["name"].endswith(f" iso {p['iso']}") for p in odd["profiles"])
    assert odd["profiles"][0]["name"] == "PowerShot G7 X Mark III - ver iso 100"


def test_darktable_export_errors(tmp_path):
    truth = truth_profiles()
    with pytest.raises(RawlabError, match="4 sensors"):
        to_darktable(truth, "Canon", "EOS R5")
    one = truth_profiles([SENSORS[0]])
    one.sensors[0].profiles[2].a = [np.nan] * 4
    with pytest.warns(RawlabWarning, match="ISO 800"):
        doc = to_darktable(one)
    assert [p["iso"] for p in doc["noiseprofiles"][0]["models"][0]["profiles"]] == [
        100,
        400,
        1600,
        3200,
        6400,
    ]
    assert darktable_problems({"version": 1, "noiseprofiles": []}) == ["'version' must be 0"]
    (tmp_path / "bad.json").write_text(json.dumps({"version": 0, "noiseprofiles": [{"maker": "X"}]}))
    with pytest.raises(RawlabError, match="needs 'maker' and a 'models' array"):
        read_darktable(tmp_path / "bad.json")
    with pytest.raises(RawlabError, match="does not exist"):
        read_darktable(tmp_path / "missing.json")


@needs_darktable
def test_darktable_loads_the_exported_profiles(tmp_path):
    """darktable itself verifies the export (its loader, not our restatement of the schema): every maker, model
    and profile found, no error; the same file with one profile's ``a`` removed is rejected, so the check can
    fail."""
    truth = truth_profiles()
    log = darktable_noiseprofile_log(write_darktable(truth, tmp_path / "noiseprofiles.json"), tmp_path)
    assert not [line for line in log if "error" in line], log
    assert any("verifying noiseprofile completed" in line for line in log), log
    found = [line.split("[noiseprofile] found ", 1)[1] for line in log if "[noiseprofile] found " in line]
    # darktable's closing count ("found N profiles total"; 4.2 prints the last model's N) is left out
    found = [f for f in found if not f.endswith(" total")]
    want = ["1 makers", "maker `SynthCam'", f"{len(truth.sensors)} models"]
    for s in truth.sensors:
        want += [s.extra["model"], f"{len(s.profiles)} profiles"]
    assert found == want

    doc = to_darktable(truth)
    del doc["noiseprofiles"][0]["models"][1]["profiles"][2]["a"]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    log = darktable_noiseprofile_log(tmp_path / "broken.json", tmp_path / "second")
    assert any("missing `a`" in line for line in log), log
    assert any("not a valid noiseprofile file" in line for line in log), log


def test_read_darktables_real_file():
    if not ANCHORS.is_file():
        pytest.skip("../shared/noise-anchors is not present beside this checkout")
    real = read_darktable(ANCHORS)
    assert len(real.sensors) == 374
    assert (
        sum(len(s.profiles) for s in real.sensors) == 7045 - 490
    )  # "skip" entries left out, as darktable does
    assert sum(len(s.profiles) for s in read_darktable(ANCHORS, include_skipped=True).sensors) == 7045
    canon = real.sensors[0]
    assert canon.sensor == "Canon EOS-1Ds" and canon.profiles[0].iso == 50


# ----------------------------------------------------------------------------------------------------------
# DNG NoiseProfile
# ----------------------------------------------------------------------------------------------------------


def test_dng_noise_profile_pairs():
    p = ISOProfile(800, [3e-3, 2e-3, 2.2e-3, 3.1e-3], [1e-5, 2e-5, 2.2e-5, -1e-6])
    assert to_dng_noise_profile(p) == [
        (3e-3, 1e-5),
        (pytest.approx(2.1e-3), pytest.approx(2.1e-5)),
        (3.1e-3, 0.0),
    ]
    with pytest.raises(RawlabError, match="S > 0"):
        to_dng_noise_profile(ISOProfile(800, [0, 1e-3, 1e-3, 1e-3], [1e-5] * 4))


def test_dng_noise_profiles_read_back_through_tifffile_and_rawpy(tmp_path):
    truth = truth_profiles(SENSORS[:2])
    doc = write_dng_noise_profiles(truth, tmp_path)
    manifest = json.loads((tmp_path / "dng_noise_profiles.json").read_text())
    assert manifest == doc and manifest["planes"] == ["R", "G", "B"]
    with open(tmp_path / doc["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * (6 + 7)
    mp2 = SENSORS[1]
    for entry, sensor in zip(doc["sensors"], truth.sensors, strict=True):
        for item, prof in zip(entry["profiles"], sensor.profiles, strict=True):
            path = tmp_path / item["dng"]
            want = to_dng_noise_profile(prof)
            tags = read_dng_tags(path)
            assert tags["noise_profile"] == want and tags["iso"] == prof.iso  # DOUBLE: exact
            with tifffile.TiffFile(path) as tif:
                assert np.ravel(tif.pages[0].tags[51041].value).tolist() == [v for q in want for v in q]
    # rawpy (LibRaw) opens the file; the pixels have the noise the tag describes
    item = doc["sensors"][1]["profiles"][4]
    prof = truth.sensors[1].profiles[4]
    with rawpy.imread(str(tmp_path / item["dng"])) as raw:
        mosaic = raw.raw_image_visible.astype(np.float64)
        assert raw.black_level_per_channel is not None and raw.white_level == mp2.white_level
    black = np.asarray(mp2.black_level, float)[:, None, None]
    x = (pack(mosaic, mp2.cfa) - black) / (mp2.white_level - black)
    h = x.shape[1] // 2
    for level, rows_ in ((0.2, slice(0, h)), (0.6, slice(h, None))):
        var = x[:, rows_].reshape(4, -1).var(axis=1, ddof=1)
        np.testing.assert_allclose(var, np.asarray(prof.a) * level + np.asarray(prof.b), rtol=0.15)


def test_save_dispatches_every_format(tmp_path):
    truth = truth_profiles(SENSORS[:1])
    (rawlab_file,) = save(truth, tmp_path / "profile.json", "rawlab")
    assert load_profiles(rawlab_file).sensors[0].profiles[0].a == truth.sensors[0].profiles[0].a
    (dt_file,) = save(truth, tmp_path / "darktable.json", "darktable")
    assert darktable_problems(json.loads(dt_file.read_text())) == []
    files = save(truth, tmp_path / "dng.json", "dng")
    assert files[:2] == [tmp_path / "dng.json", tmp_path / "dng.csv"] and len(files) == 2 + 6
    assert all(f.is_file() for f in files) and files[2].parent.parent.name == "dng_dng"
    truth.sensors[0].extra = {"cfa": ["BGGR"], "white_minus_black": 4095.0}  # as noise-fit writes them
    files = save(truth, tmp_path / "fit.json", "dng")
    assert read_dng_tags(files[2])["cfa"] == "BGGR"
    with pytest.raises(RawlabError, match="rawlab, darktable, dng"):
        save(truth, tmp_path / "x", "tiff")


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------


def assert_matplotlib_png(path: Path, min_bytes: int = 20_000):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes
    assert b"Matplotlib" in data  # matplotlib's Software text chunk
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plots_write_readable_pngs(tmp_path):
    mp2 = truth_profiles([SENSORS[1]]).sensors[0]
    rng = np.random.default_rng(0)
    binned = {}
    for p in mp2.profiles:
        mean = np.tile(np.geomspace(0.002, 0.9, 16), (4, 1))
        n = np.full((4, 16), 4000)
        var = (
            (np.asarray(p.a)[:, None] * mean + np.asarray(p.b)[:, None]) * rng.chisquare(3999, (4, 16)) / 3999
        )
        binned[p.iso] = {"mean": mean, "var": var, "n": n} if p.iso > 200 else (mean, var, n)
    out = plot_variance_mean(binned, mp2, tmp_path / "variance_mean.png", title="SynthCam MP-2")
    assert out == tmp_path / "variance_mean.png"
    assert_matplotlib_png(out)
    mp2.profiles[3].a = [2 * v for v in mp2.profiles[3].a]  # mislabel ISO 400: the plot marks it
    law = fit_sensor_law(mp2)
    assert_matplotlib_png(plot_iso_law(law, None, tmp_path / "iso_law.png"))
    assert_matplotlib_png(plot_iso_law(law, mp2, tmp_path / "iso_law_fits.png"))
