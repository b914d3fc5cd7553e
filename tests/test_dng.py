"""rawlab.dng: DNG files that real LibRaw (rawpy) and tifffile read back exactly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawlab.bayer import CFA_PATTERNS, cfa_from_colors, per_site
from rawlab.dng import read_dng_tags, write_dng

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "raw-samples"

# XYZ(D65) -> camera, deliberately not sRGB so LibRaw's use of it is visible.
CM1 = np.array([[0.9, -0.3, -0.1], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
# LibRaw_constants::xyz_rgb (linear sRGB -> XYZ D65), which LibRaw multiplies ColorMatrix1 by.
LIBRAW_XYZ_RGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
BLACK = (256, 257, 258, 259)  # R, G1, G2, B: all different, so a channel mix-up shows
DEPTHS = [(12, 4095), (14, 16383), (16, 65535)]


def make_mosaic(seed: int, shape: tuple[int, int], white: int) -> np.ndarray:
    """Random DN over the full range, with exact 0 and white present."""
    m = np.random.default_rng(seed).integers(0, white + 1, shape, dtype=np.uint16)
    m[0, 0], m[-1, -1] = 0, white
    return m


def write(path: Path, mosaic: np.ndarray, **kw) -> Path:
    args = dict(
        cfa="RGGB",
        black_level=BLACK,
        white_level=4095,
        make="SynthCam",
        model="PG-1",
        iso=800,
        exposure_time=1 / 125,
        as_shot_neutral=(0.4, 0.8, 0.56),
        color_matrix1=CM1,
        noise_profile=[(2e-4, 3e-6), (1e-4, 2e-6), (3e-4, 4e-6)],
    )
    args.update(kw)
    write_dng(path, mosaic, **args)
    return path


def libraw_cfa(raw: rawpy.RawPy) -> str:
    desc = raw.color_desc.decode()
    return cfa_from_colors([[desc[k] for k in row] for row in raw.raw_pattern[:2, :2]])


@pytest.mark.parametrize("compression", ["none", "ljpeg"])
@pytest.mark.parametrize(("bits", "white"), DEPTHS)
@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_rawpy_reads_pixels_levels_cfa_and_exposure(tmp_path, cfa, bits, white, compression):
    mosaic = make_mosaic(bits, (64, 96), white)
    path = write(
        tmp_path / "f.dng",
        mosaic,
        cfa=cfa,
        white_level=white,
        bits_per_sample=bits,
        compression=compression,
        iso=3200,
        exposure_time=1 / 250,
    )
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image_visible.dtype == np.uint16
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        assert libraw_cfa(raw) == cfa
        # LibRaw colour index 1 is the green on red rows (our G1), 3 the green on blue rows (G2).
        site = per_site(np.arange(4), cfa)  # 0=R, 1=G1, 2=G2, 3=B at each site
        assert np.array_equal(raw.raw_pattern[:2, :2], np.array([0, 1, 3, 2])[site])
        black_at_site = np.array(raw.black_level_per_channel)[raw.raw_pattern[:2, :2]]
        np.testing.assert_array_equal(black_at_site, per_site(BLACK, cfa))
        assert raw.white_level == white
        assert raw.other.iso_speed == 3200
        assert raw.other.shutter_speed == pytest.approx(1 / 250, rel=1e-6)


def test_libraw_colour_metadata(tmp_path):
    neutral = np.array([0.4, 0.8, 0.56])
    path = write(tmp_path / "f.dng", make_mosaic(0, (64, 64), 4095), as_shot_neutral=neutral)
    with rawpy.imread(str(path)) as raw:
        # AsShotNeutral -> camera white balance = 1 / neutral, as written (not normalised to green); the 4th
        # (second green) multiplier is 0, LibRaw's "same as G".
        np.testing.assert_allclose(raw.camera_whitebalance[:3], 1 / neutral, rtol=1e-6)
        assert raw.camera_whitebalance[3] == 0
        wb = np.array(raw.camera_whitebalance[:3])
        np.testing.assert_allclose(wb / wb[1], neutral[1] / neutral, rtol=1e-6)
        # ColorMatrix1 does NOT reach rgb_xyz_matrix (cam_xyz): LibRaw fills that only from its built-in
        # table of known cameras. It goes through cam_xyz_coeff instead: A = CM1 @ xyz_rgb, rows normalised
        # to sum 1 (the row sums become daylight_whitebalance = pre_mul), and color_matrix = inverse.
        assert not np.any(raw.rgb_xyz_matrix)
        cam_rgb = CM1 @ LIBRAW_XYZ_RGB
        rowsum = cam_rgb.sum(axis=1)
        np.testing.assert_allclose(
            raw.color_matrix[:, :3], np.linalg.inv(cam_rgb / rowsum[:, None]), atol=1e-5
        )
        np.testing.assert_allclose(raw.daylight_whitebalance[:3], 1 / rowsum, rtol=1e-5)


@pytest.mark.parametrize(
    "noise", [[(1e-4, 1e-6)], [(2e-4, 3e-6), (1e-4, 2e-6), (3e-4, 4e-6)]], ids=["1pair", "3pairs"]
)
def test_read_dng_tags_round_trip(tmp_path, noise):
    mosaic = make_mosaic(1, (48, 64), 16383)
    path = write(
        tmp_path / "f.dng",
        mosaic,
        cfa="GBRG",
        white_level=16383,
        iso=100,
        exposure_time=1 / 3,
        unique_camera_model="SynthCam PG-1 (unit 7)",
        noise_profile=noise,
        datetime="2024:05:06 07:08:09",
        software="rawlab-test 1.0",
    )
    tags = read_dng_tags(path)
    assert tags["make"] == "SynthCam"
    assert tags["model"] == "PG-1"
    assert tags["unique_camera_model"] == "SynthCam PG-1 (unit 7)"
    assert tags["software"] == "rawlab-test 1.0"
    assert tags["datetime"] == "2024:05:06 07:08:09"
    assert tags["dng_version"] == (1, 4, 0, 0)
    assert tags["iso"] == 100
    assert tags["exposure_time"] == pytest.approx(1 / 3, rel=1e-9)
    assert tags["cfa"] == "GBRG"
    assert tags["black_level"] == BLACK
    assert tags["white_level"] == 16383
    assert (tags["height"], tags["width"]) == (48, 64)
    assert (tags["bits_per_sample"], tags["compression"]) == (16, 1)
    np.testing.assert_allclose(tags["as_shot_neutral"], (0.4, 0.8, 0.56), rtol=1e-9)
    np.testing.assert_allclose(tags["color_matrix1"], CM1, rtol=1e-9)
    assert tags["calibration_illuminant1"] == 21
    assert tags["baseline_exposure"] == 0
    assert tags["noise_profile"] == [tuple(p) for p in noise]  # DOUBLE: exact


def test_fractional_black_is_a_rational_and_libraw_truncates_it(tmp_path):
    black = (256.5, 257.25, 258.0, 259.75)
    path = write(tmp_path / "f.dng", make_mosaic(6, (32, 32), 4095), cfa="GRBG", black_level=black)
    assert read_dng_tags(path)["black_level"] == black
    with rawpy.imread(str(path)) as raw:
        black_at_site = np.array(raw.black_level_per_channel)[raw.raw_pattern[:2, :2]]
        np.testing.assert_array_equal(black_at_site, per_site(np.floor(black), "GRBG"))


def test_file_structure_as_tifffile_sees_it(tmp_path):
    mosaic = make_mosaic(2, (600, 800), 4095)
    path = write(tmp_path / "f.dng", mosaic, make="Canon", model="Canon PowerShot S40")
    with tifffile.TiffFile(path) as tif:
        ifd0 = tif.pages[0]
        assert ifd0.tags["Make"].value == "Canon"
        assert ifd0.tags["Model"].value == "Canon PowerShot S40"
        assert ifd0.tags["UniqueCameraModel"].value == "Canon PowerShot S40"  # make not repeated
        assert ifd0.tags["NewSubfileType"].value == 1
        assert ifd0.tags["DNGBackwardVersion"].value == b"\x01\x01\x00\x00"
        preview = ifd0.asarray()
        assert preview.dtype == np.uint8 and preview.shape == (150, 200, 3)
        assert ifd0.tags["ExifTag"].value["ISOSpeedRatings"] == 800
        assert ifd0.tags["ExifTag"].value["ExposureTime"] == (1, 125)
        (raw,) = ifd0.pages
        assert raw.tags["NewSubfileType"].value == 0
        assert raw.tags["PhotometricInterpretation"].value == 32803
        assert raw.tags["CFARepeatPatternDim"].value == (2, 2)
        assert raw.tags["CFAPattern"].value == bytes([0, 1, 1, 2])
        assert raw.tags["CFAPlaneColor"].value == bytes([0, 1, 2])
        assert raw.tags["CFALayout"].value == 1
        assert raw.tags["BlackLevelRepeatDim"].value == (2, 2)
        assert raw.tags["BlackLevel"].value == BLACK  # RGGB: site order is R, G1, G2, B
        assert raw.tags["DefaultCropOrigin"].value == (0, 0)
        assert raw.tags["DefaultCropSize"].value == (800, 600)
        np.testing.assert_array_equal(raw.asarray(), mosaic)


def test_extra_tags_go_to_the_right_ifd(tmp_path):
    extra = [
        (50722, "SRATIONAL", 9, CM1 * 1.1),  # ColorMatrix2 -> IFD0
        (50779, "SHORT", 1, 17),  # CalibrationIlluminant2 -> IFD0
        (50733, "LONG", 1, 0),  # BayerGreenSplit -> raw IFD
        (33437, "RATIONAL", 1, 2.8),  # FNumber -> ExifIFD
    ]
    mosaic = make_mosaic(3, (32, 32), 4095)
    path = write(tmp_path / "f.dng", mosaic, extra_tags=extra)
    with tifffile.TiffFile(path) as tif:
        ifd0 = tif.pages[0]
        assert ifd0.tags["CalibrationIlluminant2"].value == 17
        assert len(ifd0.tags["ColorMatrix2"].value) == 18
        assert ifd0.pages[0].tags["BayerGreenSplit"].value == 0
        assert ifd0.tags["ExifTag"].value["FNumber"] == (14, 5)
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)


def test_ljpeg_is_smaller_for_a_smooth_scene(tmp_path):
    y, x = np.mgrid[0:512, 0:512]
    rng = np.random.default_rng(4)
    mosaic = np.clip(800 + 600 * np.sin(x / 40) * np.cos(y / 30) + rng.normal(0, 4, x.shape), 0, 4095)
    mosaic = mosaic.astype(np.uint16)
    plain = write(tmp_path / "plain.dng", mosaic, compression="none")
    packed = write(tmp_path / "packed.dng", mosaic, compression="none", bits_per_sample=12)
    ljpeg = write(tmp_path / "ljpeg.dng", mosaic, compression="ljpeg", bits_per_sample=12)
    assert os.path.getsize(ljpeg) < os.path.getsize(packed) < os.path.getsize(plain)
    for path in (packed, ljpeg):
        with rawpy.imread(str(path)) as raw:
            np.testing.assert_array_equal(raw.raw_image_visible, mosaic)


def test_same_inputs_give_identical_bytes_and_no_temp_files(tmp_path):
    mosaic = make_mosaic(5, (40, 40), 4095)
    first = write(tmp_path / "a.dng", mosaic).read_bytes()
    write(tmp_path / "a.dng", mosaic)  # overwrite in place
    assert (tmp_path / "a.dng").read_bytes() == first
    assert os.listdir(tmp_path) == ["a.dng"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(mosaic=np.zeros((64, 63), np.uint16)), "even height and width"),
        (dict(mosaic=np.zeros((20, 64), np.uint16)), "too small"),
        (dict(mosaic=np.zeros((64, 64), np.float32)), "must be uint16"),
        (dict(mosaic=np.zeros((64, 64), np.int32)), "must be uint16"),
        (dict(mosaic=np.zeros((2, 64, 64), np.uint16)), "2-D"),
        (dict(mosaic=np.full((64, 64), 4096, np.uint16)), r"4096 mosaic value\(s\) exceed white_level=4095"),
        (dict(cfa="RGBG"), "unknown CFA pattern 'RGBG'"),
        (dict(compression="deflate"), "LibRaw cannot read Deflate"),
        (dict(bits_per_sample=12, white_level=4096), r"white_level must be an integer in \[1, 4095\]"),
        (dict(bits_per_sample=17), "bits_per_sample"),
        (dict(black_level=(1, 2, 3)), "scalar or 4 values"),
        (dict(black_level=4095), r"black_level values must lie in \[0, white_level=4095\)"),
        (dict(iso=100.5), "iso must be an integer"),
        (dict(iso=70000), "iso must be an integer"),
        (dict(exposure_time=0), "exposure_time must be finite and positive"),
        (dict(as_shot_neutral=(1, 0, 1)), "as_shot_neutral must be finite and positive"),
        (dict(color_matrix1=np.eye(4)), "3x3"),
        (dict(noise_profile=[(1e-4, 1e-6)] * 2), "1 pair"),
        (dict(noise_profile=[(1e-4, -1e-6)]), "O >= 0"),
        (dict(datetime="2024-01-02 03:04:05"), "YYYY:MM:DD HH:MM:SS"),
        (dict(make="Caméra"), "7-bit"),
        (dict(make=""), "non-empty"),
        (dict(extra_tags=[(273, "LONG", 1, 0)]), "file structure"),
        (dict(extra_tags=[(50721, "SRATIONAL", 9, CM1)]), "duplicates"),
        (dict(extra_tags=[(50779, "SHORT", 2, 17)]), "count 2"),
    ],
)
def test_bad_input_is_a_clear_value_error(tmp_path, change, match):
    mosaic = change.pop("mosaic", np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match=match):
        write(tmp_path / "f.dng", mosaic, **change)
    assert not os.listdir(tmp_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    half_h=st.integers(11, 150),
    half_w=st.integers(11, 300),
    cfa=st.sampled_from(CFA_PATTERNS),
    data_bits=st.integers(8, 16),
    extra_bits=st.integers(0, 8),
    compression=st.sampled_from(["none", "ljpeg"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_shape_cfa_and_depth_round_trips(
    tmp_path, half_h, half_w, cfa, data_bits, extra_bits, compression, seed
):
    bits = min(16, data_bits + extra_bits)
    white = 2**data_bits - 1
    rng = np.random.default_rng(seed)
    mosaic = rng.integers(0, white + 1, (2 * half_h, 2 * half_w), dtype=np.uint16)
    black = tuple(int(b) for b in rng.integers(0, white // 4 + 1, 4))
    path = tmp_path / "h.dng"
    write_dng(
        path,
        mosaic,
        cfa=cfa,
        black_level=black,
        white_level=white,
        make="Prop",
        model="Cam",
        compression=compression,
        bits_per_sample=bits,
    )
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        assert libraw_cfa(raw) == cfa
        black_at_site = np.array(raw.black_level_per_channel)[raw.raw_pattern[:2, :2]]
        np.testing.assert_array_equal(black_at_site, per_site(black, cfa))
        assert raw.white_level == white
    tags = read_dng_tags(path)
    assert (tags["cfa"], tags["black_level"], tags["white_level"]) == (cfa, black, white)
    assert (tags["height"], tags["width"], tags["bits_per_sample"]) == (*mosaic.shape, bits)


@pytest.mark.samples
def test_read_dng_tags_on_a_camera_dng():
    path = SAMPLES / "bayer" / "blackmagic-design_pocket-cinema-camera-4k_isoNA_blackmagic.dng"
    if not path.exists():
        pytest.skip("../shared/raw-samples is not present")
    tags = read_dng_tags(path)
    assert tags["unique_camera_model"] == "Blackmagic Pocket Cinema Camera 4K"
    assert (tags["height"], tags["width"]) == (2176, 4128)
    assert tags["cfa"] == "RGGB"
    assert tags["black_level"] == (512, 512, 512, 512)
    assert tags["white_level"] == 65535
    assert tags["color_matrix1"].shape == (3, 3)
    assert tags["iso"] is None and tags["make"] is None  # this CinemaDNG has no EXIF ISO and no Make
