"""Linear DNG (LinearRaw) and 16-bit linear TIFF of camera RGB: real LibRaw (rawpy), tifffile and, when
installed, darktable read back what rawlab.dng.write_linear_dng / rawlab.deploy.linear write (#13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from _darktable import darktable_render, needs_darktable, rank_correlation

from rawlab.deploy.linear import linear_dng_metadata, rgb_levels, to_dn, write_linear_rgb
from rawlab.deploy.render import demosaic_bilinear
from rawlab.dng import read_dng_tags, write_dng, write_linear_dng
from rawlab.errors import RawlabError
from rawlab.rawio import read_raw

# XYZ -> camera, not sRGB, so that LibRaw's use of it shows.
CM1 = np.array([[0.9, -0.3, -0.1], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
CM2 = np.array([[0.7, -0.25, -0.05], [-0.39, 1.2, 0.16], [-0.09, 0.2, 0.58]])
BLACK = (60, 64, 70)  # R, G, B: all different, so a channel mix-up shows
WHITE = 4000
NEUTRAL = (0.5, 1.0, 0.7)

# Real raws that carry different metadata: a CRW (LibRaw's built-in D65 matrix, black 32, 10-bit), a DNG
# (its own ColorMatrix1 under Standard A and ColorMatrix2 under D65, AsShotNeutral, black 512, 16-bit), a
# NEF (BGGR, 12-bit, black 0).
REAL = [
    "bayer/canon_powershot-g2_iso50_crw-0304.CRW",
    "bayer/blackmagic-design_pocket-cinema-camera-4k_isoNA_blackmagic.dng",
    "bayer/nikon_d1_iso200_raw-nikon-d1.NEF",
]
CROP = (slice(None), slice(300, 428), slice(400, 592))  # packed planes -> a 256 x 384 image


def make_rgb(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Random DN over the full range, with exact 0 and white present."""
    rgb = np.random.default_rng(seed).integers(0, WHITE + 1, (*shape, 3), dtype=np.uint16)
    rgb[0, 0], rgb[-1, -1] = 0, WHITE
    return rgb


def write(path: Path, rgb: np.ndarray, **kw) -> Path:
    args = dict(
        black_level=BLACK,
        white_level=WHITE,
        make="SynthCam",
        model="PG-1",
        color_matrix1=CM1,
        calibration_illuminant1=17,
        color_matrix2=CM2,
        calibration_illuminant2=21,
        as_shot_neutral=NEUTRAL,
        iso=800,
        exposure_time=1 / 125,
    )
    args.update(kw)
    write_linear_dng(path, rgb, **args)
    return path


def linear_postprocess(raw: rawpy.RawPy, **kw) -> np.ndarray:
    """LibRaw's linear output: no gamma, no auto-brightness, camera colour, unit white balance, no rotation."""
    return raw.postprocess(
        gamma=(1, 1),
        no_auto_bright=True,
        output_color=rawpy.ColorSpace.raw,
        user_wb=[1.0, 1.0, 1.0, 1.0],
        output_bps=16,
        user_flip=0,
        **kw,
    )


# ----------------------------------------------------------------------------------------------------------
# Synthetic pixels: what LibRaw sees in a LinearRaw DNG
# ----------------------------------------------------------------------------------------------------------


def test_rawpy_reads_linear_raw_pixels_and_levels(tmp_path):
    rgb = make_rgb(0, (41, 63))  # odd sizes: LinearRaw has no CFA tile
    path = write(tmp_path / "f.dng", rgb, orientation=6)
    with rawpy.imread(str(path)) as raw:
        # LibRaw unpacks LinearRaw as a 4-sample "stack" (no CFA pattern): samples 0-2 are the file's R, G, B
        # exactly; sample 3 is zero.
        assert raw.raw_type == rawpy.RawType.Stack
        assert raw.num_colors == 3
        assert raw.raw_pattern is None
        assert raw.raw_image.shape == (41, 63, 4) and raw.raw_image.dtype == np.uint16
        np.testing.assert_array_equal(raw.raw_image[..., :3], rgb)
        np.testing.assert_array_equal(raw.raw_image_visible[..., :3], rgb)
        assert not raw.raw_image[..., 3].any()
        assert list(raw.black_level_per_channel) == [*BLACK, 0]
        assert raw.white_level == WHITE
        # AsShotNeutral -> camera white balance 1 / neutral, as for a CFA DNG, except that LibRaw scales by
        # one white level for all channels and so folds each channel's black into its multiplier:
        # (white - min black) / (white - black_c). Measured; equal blacks give exactly 1 / neutral.
        black = np.array(BLACK, np.float64)
        expected = (WHITE - black.min()) / (WHITE - black) / np.array(NEUTRAL)
        np.testing.assert_allclose(raw.camera_whitebalance[:3], expected, rtol=1e-6)
        assert raw.sizes.flip == 6
        assert raw.other.iso_speed == 800
        assert raw.other.shutter_speed == pytest.approx(1 / 125, rel=1e-6)


def test_libraw_linear_output_is_the_written_pixels(tmp_path):
    rgb = make_rgb(1, (48, 64))
    path = write(tmp_path / "f.dng", rgb)
    with rawpy.imread(str(path)) as raw:
        # With the levels overridden to 0 and 65535 every LibRaw scaling step is the identity, and LinearRaw
        # is not demosaiced: the output is the file's pixels, bit for bit.
        exact = linear_postprocess(raw, user_black=0, user_cblack=[0, 0, 0, 0], user_sat=65535)
        np.testing.assert_array_equal(exact, rgb)
    with rawpy.imread(str(path)) as raw:
        # With the file's levels: (DN - black_c) times one gain for all three channels. LibRaw rounds each
        # output to a whole DN (|error| < 1), and the fitted gain is off by far less than 0.5 DN at 65535.
        out = linear_postprocess(raw, adjust_maximum_thr=0.0).astype(np.float64)
    signal = np.clip(rgb.astype(np.float64) - BLACK, 0, None)
    k = float((signal * out).sum() / (signal**2).sum())
    assert np.abs(out - k * signal).max() < 1.5
    per_channel = [(signal[..., c] * out[..., c]).sum() / (signal[..., c] ** 2).sum() for c in range(3)]
    np.testing.assert_allclose(per_channel, k, rtol=1e-4)


def test_read_dng_tags_of_a_linear_dng(tmp_path):
    path = write(
        tmp_path / "f.dng", make_rgb(2, (32, 40)), orientation=8, unique_camera_model="SynthCam PG-1 #7"
    )
    tags = read_dng_tags(path)
    assert (tags["make"], tags["model"], tags["unique_camera_model"]) == (
        "SynthCam",
        "PG-1",
        "SynthCam PG-1 #7",
    )
    assert tags["dng_version"] == (1, 4, 0, 0)
    assert tags["orientation"] == 8
    np.testing.assert_allclose(tags["color_matrix1"], CM1, rtol=1e-9)  # 32-bit rationals
    np.testing.assert_allclose(tags["color_matrix2"], CM2, rtol=1e-9)
    assert (tags["calibration_illuminant1"], tags["calibration_illuminant2"]) == (17, 21)
    np.testing.assert_allclose(tags["as_shot_neutral"], NEUTRAL, rtol=1e-9)
    assert tags["cfa"] is None and tags["black_level"] is None  # no CFA image
    assert tags["linear_raw"] == {
        "height": 32,
        "width": 40,
        "samples_per_pixel": 3,
        "bits_per_sample": 16,
        "compression": 1,
        "black_level": tuple(float(b) for b in BLACK),
        "white_level": (WHITE,) * 3,
    }
    with tifffile.TiffFile(path) as tif:
        linear = tif.pages[0].pages[0]
        assert linear.photometric == 34892
        assert tif.pages[0].tags["DNGBackwardVersion"].value == bytes((1, 1, 0, 0))


def test_cfa_dng_tags_unchanged_by_the_linear_fields(tmp_path):
    mosaic = np.zeros((32, 32), np.uint16)
    path = tmp_path / "cfa.dng"
    write_dng(path, mosaic, cfa="RGGB", black_level=0, white_level=4095, make="A", model="B")
    tags = read_dng_tags(path)
    assert tags["linear_raw"] is None and tags["color_matrix2"] is None and tags["orientation"] == 1
    assert tags["cfa"] == "RGGB"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(rgb=np.zeros((32, 32), np.uint16)), r"\(H, W, 3\)"),
        (dict(rgb=np.zeros((32, 32, 3), np.float32)), "uint16"),
        (dict(rgb=np.full((32, 32, 3), WHITE + 1, np.uint16)), "exceed white_level"),
        (dict(rgb=np.zeros((16, 32, 3), np.uint16)), "too small"),
        (dict(black_level=(1, 2)), "black_level"),
        (dict(black_level=WHITE), "black_level"),
        (dict(color_matrix2=None), "go together"),
        (dict(calibration_illuminant1=-1), "LightSource"),
        (dict(orientation=9), "Orientation"),
        (dict(as_shot_neutral=(1, 0, 1)), "as_shot_neutral"),
        (dict(extra_tags=[(262, "SHORT", 1, 2)]), "write_linear_dng"),
    ],
)
def test_write_linear_dng_rejects(tmp_path, kw, match):
    rgb = kw.pop("rgb", np.zeros((32, 32, 3), np.uint16))
    with pytest.raises(ValueError, match=match):
        write(tmp_path / "f.dng", rgb, **kw)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ----------------------------------------------------------------------------------------------------------
# Real raws: their metadata carried into the linear DNG and TIFF
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=REAL, ids=lambda p: Path(p).suffix[1:].lower())
def real(request, samples_dir):
    """(frame, normalised linear camera RGB): a bilinear demosaic of a 256 x 384 crop of a real raw."""
    frame = read_raw(samples_dir / request.param)
    return frame, demosaic_bilinear(frame.normalized()[CROP], frame.info.cfa)


def source_colour(info) -> tuple[np.ndarray, int]:
    """The matrix a raw converter uses for the source: a DNG's own ColorMatrix1, else LibRaw's (D65)."""
    tags = read_dng_tags(info.path) if info.raw_format == "DNG" else {}
    if tags.get("color_matrix1") is not None:
        return tags["color_matrix1"], tags["calibration_illuminant1"]
    return np.asarray(info.color_matrix), 21


@pytest.mark.samples
def test_linear_dng_of_a_real_raw_keeps_pixels_and_metadata(tmp_path, real):
    frame, rgb = real
    info = frame.info
    path = tmp_path / "out.dng"
    write_linear_rgb(path, rgb, info)
    black, white = rgb_levels(info)
    dn = to_dn(rgb, black, white)
    with rawpy.imread(str(path)) as raw, rawpy.imread(info.path) as src:
        np.testing.assert_array_equal(raw.raw_image_visible[..., :3], dn)
        assert list(raw.black_level_per_channel[:3]) == black.tolist()
        assert raw.white_level == info.white_level
        wb = np.array(raw.camera_whitebalance[:3])
        np.testing.assert_allclose(wb / wb[1], np.array(info.wb)[[0, 1, 3]], rtol=1e-6)  # 32-bit rationals
        # LibRaw derives the daylight balance from the colour matrix: the same from our file as from the
        # source means it reads the same matrix (float32 arithmetic: rtol 1e-5).
        np.testing.assert_allclose(raw.daylight_whitebalance, src.daylight_whitebalance, rtol=1e-5)
        assert raw.sizes.flip == src.sizes.flip
    tags = read_dng_tags(path)
    cm, illuminant = source_colour(info)
    np.testing.assert_allclose(tags["color_matrix1"], cm, rtol=1e-7, atol=1e-9)
    assert tags["calibration_illuminant1"] == illuminant
    assert (tags["make"], tags["model"]) == (info.make, info.model)
    if info.raw_format == "DNG":  # a dual-illuminant DNG keeps its second matrix
        src_tags = read_dng_tags(info.path)
        np.testing.assert_allclose(tags["color_matrix2"], src_tags["color_matrix2"], rtol=1e-7)
        assert tags["calibration_illuminant2"] == src_tags["calibration_illuminant2"]
        np.testing.assert_allclose(tags["as_shot_neutral"], src_tags["as_shot_neutral"], rtol=1e-9)


@pytest.mark.samples
def test_linear_tiff_is_the_same_pixels(tmp_path, real):
    frame, rgb = real
    info = frame.info
    write_linear_rgb(tmp_path / "out.dng", rgb, info)
    write_linear_rgb(tmp_path / "out.tiff", rgb, info, "tiff")
    with tifffile.TiffFile(tmp_path / "out.tiff") as tif:
        page = tif.pages[0]
        tiff = page.asarray()
        meta = json.loads(page.description)
        assert page.photometric == 2 and page.tags["Orientation"].value == 1
    assert tiff.shape == rgb.shape and tiff.dtype == np.uint16
    np.testing.assert_array_equal(tiff, np.clip(np.rint(rgb.astype(np.float64) * 65535), 0, 65535))
    assert meta["schema"] == "rawlab.linear-tiff/1" and meta["white_level"] == info.white_level
    # Both files hold the same image: each rounds it to its own step (0.5 DN of white - black in the DNG,
    # 0.5 of 65535 in the TIFF), so they agree within the sum of the two half-steps where nothing clips.
    with rawpy.imread(str(tmp_path / "out.dng")) as raw:
        dn = raw.raw_image_visible[..., :3].astype(np.float64)
    black, white = rgb_levels(info)
    x_dng = (dn - black) / (white - black)
    inside = (rgb > 0) & (rgb < 1)
    bound = 0.5 / (white - black) + 0.5 / 65535
    assert np.all(np.abs(x_dng - tiff / 65535)[inside] <= np.broadcast_to(bound, rgb.shape)[inside] + 1e-12)


@pytest.mark.samples
def test_linear_dng_metadata_without_colour_or_white_balance(samples_dir):
    info = read_raw(samples_dir / "bayer/kodak_dc120_isoNA_p003908.KDC").info  # LibRaw: no matrix, no WB
    meta = linear_dng_metadata(info)
    assert meta["color_matrix1"] is None and meta["as_shot_neutral"] is None  # the writer's sRGB default
    assert meta["orientation"] == 1 and meta["white_level"] == 255


def test_to_dn_and_write_linear_rgb_errors(tmp_path):
    np.testing.assert_array_equal(
        to_dn(np.array([[[-1.0, 0.0, 0.5]]]), (10, 10, 10), 110), [[[0, 10, 60]]]
    )  # below black is kept down to 0 DN
    with pytest.raises(RawlabError, match="non-finite"):
        to_dn(np.full((2, 2, 3), np.nan), 0, 100)
    with pytest.raises(RawlabError, match="choose one of dng, tiff"):
        write_linear_rgb(tmp_path / "x.png", np.zeros((32, 32, 3)), None, "png")


# ----------------------------------------------------------------------------------------------------------
# darktable
# ----------------------------------------------------------------------------------------------------------


@needs_darktable
def test_darktable_renders_the_linear_dng(tmp_path):
    # A grey ramp (camera RGB proportional to the as-shot neutral, so white-balanced it is grey and nothing
    # clips), larger than the 256-px preview in IFD0: a full-size render proves darktable decoded the
    # LinearRaw image and not the preview.
    yy, xx = np.mgrid[0:200, 0:300]
    luminance = 0.05 + 0.25 * (xx / 299 + yy / 199) / 2
    rgb = np.rint(64 + luminance[..., None] * np.array(NEUTRAL) * (WHITE - 64)).astype(np.uint16)
    for orientation, expected in ((1, luminance), (6, np.rot90(luminance, -1))):  # 6: rotate 90 deg CW
        path = write(tmp_path / f"o{orientation}.dng", rgb, black_level=64, orientation=orientation)
        img = darktable_render(path, tmp_path)
        assert img.shape == (*expected.shape, 3)
        assert img.std() > 1.0  # not blank
        # darktable applies white balance, the matrix and a tone curve, all monotonic in brightness for a
        # grey, so the ranks of its luminance follow ours: measured 1.00 (-1.00 against the wrong rotation;
        # 8-bit ties keep it from being exactly 1).
        assert rank_correlation(img.mean(axis=-1), expected) > 0.99


@pytest.mark.samples
@needs_darktable
def test_darktable_renders_a_real_raws_linear_dng(tmp_path, real):
    frame, rgb = real
    path = tmp_path / "out.dng"
    write_linear_rgb(path, rgb, frame.info)
    img = darktable_render(path, tmp_path)
    assert img.shape == rgb.shape and img.std() > 1.0
    # Coloured content, so darktable's matrix and white balance reorder some pixels' brightness: measured
    # 0.992 (CRW), 0.999 (DNG), 0.989 (NEF); a wrong orientation or a blank render gives about 0.
    assert rank_correlation(img.mean(axis=-1), rgb.mean(axis=-1)) > 0.95
