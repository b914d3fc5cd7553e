"""rawlab.rawio and rawlab.rawmeta on the real stack: real camera files, real DNGs, real LibRaw (no mocks).

The camera samples live in ../shared/raw-samples (MANIFEST.csv describes them); tests that need them skip
when that folder is absent. Small DNGs are written here with tifffile so that every CFA, odd sizes, odd
active-area origins and per-channel black levels can be checked against values we chose.
"""

from __future__ import annotations

import csv
import functools
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawlab import bayer
from rawlab.errors import RawReadError
from rawlab.rawio import RawFrame, RawInfo, normalize_sensor_name, read_info, read_raw, sniff_raw_format
from rawlab.rawmeta import read_metadata

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "raw-samples"


# --------------------------------------------------------------------------------------------- helpers


def _manifest() -> dict[str, dict[str, str]]:
    path = SAMPLES / "MANIFEST.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


MANIFEST = _manifest()
SAMPLE_FILES = sorted(
    p.relative_to(SAMPLES).as_posix() for p in SAMPLES.glob("*/*") if p.is_file() and SAMPLES.is_dir()
)


def _sample_params() -> list:
    if not SAMPLE_FILES:
        return [pytest.param(None, id="no-samples")]
    return [pytest.param(rel, id=rel) for rel in SAMPLE_FILES]


def _need(rel: str | None) -> dict[str, str]:
    if rel is None:
        pytest.skip(f"{SAMPLES} is not present beside this checkout")
    assert rel in MANIFEST, f"{rel} is in raw-samples but not in MANIFEST.csv; describe it there"
    return MANIFEST[rel]


@functools.cache
def _decoded(rel: str) -> RawFrame | RawReadError:
    """Each sample is decoded once per test session."""
    try:
        return read_raw(SAMPLES / rel)
    except RawReadError as exc:
        return exc


def _sample(prefix: str) -> Path:
    matches = [SAMPLES / rel for rel in SAMPLE_FILES if rel.split("/", 1)[1].startswith(prefix)]
    if not matches:
        pytest.skip(f"no sample starting with {prefix!r} in {SAMPLES}")
    return matches[0]


# Where a sensor name from the file differs from the manifest's make + model, and why.
SENSOR_FROM_FILE = {
    # The DNG has no Make/Model tags; "Blackmagic Design" is not in the file. rawlab uses UniqueCameraModel.
    "bayer/blackmagic-design_pocket-cinema-camera-4k_isoNA_blackmagic.dng": "Blackmagic Pocket Cinema Camera 4K",
    # Headerless: LibRaw recognises the camera by file size, and rawpy does not expose its make/model.
    "non-bayer/kodak_c330_isoNA_raw-kodak-c330-format-no.raw": "Unknown",
}
ERROR_KIND = {"non-bayer": "non-bayer", "stubs": "no-pixels", "undecodable": "undecodable"}
SNIFFED = {".crw": "CRW", ".cr3": "CR3", ".raf": "RAF", ".qtk": "QTK", ".cr2": "CR2", ".raw": "headerless"}
FORMAT = {".nef": "NEF", ".kdc": "KDC", ".dng": "DNG", ".gpr": "DNG", ".raw": "headerless"}

LETTER_INDEX = {"R": 0, "G": 1, "B": 2}


def make_dng(
    mosaic: np.ndarray,
    cfa: str = "RGGB",
    *,
    black: tuple[int, ...] = (0, 0, 0, 0),
    white: int = 4095,
    active: tuple[int, int, int, int] | None = None,
    compression: str | None = None,
    cfa_dim: tuple[int, int] = (2, 2),
    cfa_indices: list[int] | None = None,
    plane_colors: list[int] | None = None,
    make: str = "SynthCam",
    model: str = "PG-1",
    iso: int | None = 400,
    exposure: tuple[int, int] | None = (1, 100),
) -> bytes:
    """A minimal CFA DNG that LibRaw reads. ``cfa`` and the 2x2 ``black`` tile (reading order) are relative to
    the active-area origin, as the DNG specification defines them. LibRaw needs at least 22x22 pixels."""
    pattern = bytes(cfa_indices or [LETTER_INDEX[c] for c in cfa])
    tags = [
        (33421, "H", 2, cfa_dim, True),  # CFARepeatPatternDim
        (33422, "B", len(pattern), pattern, True),  # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, f"{make} {model}", True),  # UniqueCameraModel
        (271, "s", 0, make, True),
        (272, "s", 0, model, True),
        (50713, "H", 2, (2, 2), True),  # BlackLevelRepeatDim
        (50714, "H", 4, black, True),  # BlackLevel
        (50717, "H", 1, white, True),  # WhiteLevel
        (50721, "i", 18, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),  # ColorMatrix1 = I
        (50728, "I", 6, (1, 2, 1, 1, 1, 2), True),  # AsShotNeutral 0.5, 1, 0.5
    ]
    if iso is not None:
        tags.append((34855, "H", 1, iso, True))  # ISO in IFD0, as TIFF/EP allows
    if exposure is not None:
        tags.append((33434, "I", 2, exposure, True))
    if active is not None:
        tags.append((50829, "I", 4, active, True))  # ActiveArea top, left, bottom, right
    if plane_colors is not None:
        tags.append((50710, "B", len(plane_colors), bytes(plane_colors), True))  # CFAPlaneColor
    buf = io.BytesIO()
    tifffile.imwrite(buf, mosaic, photometric=32803, compression=compression, extratags=tags, subfiletype=0)
    return buf.getvalue()


def labelled_mosaic(shape: tuple[int, int], cfa: str, values: dict[str, int], origin=(0, 0)) -> np.ndarray:
    """A mosaic whose every site holds the value of its channel (R, G1, G2, B) for ``cfa`` at ``origin``."""
    mosaic = np.empty(shape, dtype=np.uint16)
    for (dy, dx), channel in zip(bayer.channel_offsets(cfa), bayer.CHANNELS, strict=True):
        mosaic[(origin[0] + dy) % 2 :: 2, (origin[1] + dx) % 2 :: 2] = values[channel]
    return mosaic


def png_bytes() -> bytes:
    """A valid 16x16 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + bytes(range(48)) for _ in range(16))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------- real samples


@pytest.mark.samples
@pytest.mark.parametrize("rel", _sample_params())
def test_sample_reads_as_manifest_says(rel):
    row = _need(rel)
    result = _decoded(rel)
    if row["category"] != "bayer":
        assert isinstance(result, RawReadError), f"{rel} should be rejected, got {result!r}"
        assert result.kind == ERROR_KIND[row["category"]], result
        assert result.path == str(SAMPLES / rel)
        assert str(SAMPLES / rel) in str(result) and len(result.reason) > 40
        return
    assert isinstance(result, RawFrame), f"{rel}: {result}"
    info = result.info
    assert info.cfa == row["cfa"]
    # MANIFEST black lists LibRaw's black_level_per_channel (colour-index order R, G, B, G2). For every
    # sample this equals R, G1, G2, B: the only non-uniform one (S30, [31, 32, 31, 31], RGGB with index 1
    # on the red rows) reads the same in both orders. rawlab reports R, G1, G2, B.
    assert list(info.black_level) == [float(v) for v in row["black"].strip("[]").split(",")]
    assert info.white_level == int(row["white"])
    assert info.sensor == SENSOR_FROM_FILE.get(rel, normalize_sensor_name(row["make"], row["model"]))
    if row["iso"] == "NA":
        assert info.iso is None and info.sources["iso"] == "missing"
    elif row["iso"].startswith("NA(libraw="):
        assert info.iso == float(row["iso"][len("NA(libraw=") : -1])
        assert info.sources["iso"] == "libraw"
    else:
        assert info.iso == float(row["iso"])
    assert set(info.sources) == {"make", "model", "iso", "exposure_time"}
    mosaic = result.mosaic
    assert mosaic.dtype == np.uint16 and mosaic.shape == (info.height, info.width)
    assert info.height % 2 == 0 and info.width % 2 == 0
    assert mosaic.flags.owndata and mosaic.flags.c_contiguous  # a copy, not a view into LibRaw memory
    assert mosaic.min() < mosaic.max()


@pytest.mark.samples
@pytest.mark.parametrize("rel", _sample_params())
def test_sample_metadata_without_libraw(rel):
    """Make, model and ISO come from the file itself, even for files LibRaw rejects (stubs, GPR)."""
    row = _need(rel)
    meta = read_metadata(SAMPLES / rel)
    sensor = normalize_sensor_name(meta.make, meta.model)
    assert sensor == SENSOR_FROM_FILE.get(rel, normalize_sensor_name(row["make"], row["model"]))
    if row["category"] != "bayer" and row["iso"].replace(".", "").isdigit():
        assert meta.iso == float(row["iso"])  # stubs, GPR and the DNG carry EXIF ISO
    if meta.iso is not None:
        assert meta.sources["iso"] in ("exif", "tiff")
    suffix = Path(rel).suffix.lower()
    assert meta.raw_format == FORMAT.get(suffix, SNIFFED.get(suffix))


@pytest.mark.samples
@pytest.mark.parametrize("rel", _sample_params())
def test_sniff_sample_header(rel):
    _need(rel)
    header = (SAMPLES / rel).read_bytes()[:64]
    expected = SNIFFED.get(Path(rel).suffix.lower(), "TIFF-raw")
    assert sniff_raw_format(header) == expected


@pytest.mark.samples
def test_sources_follow_the_fallback_chain():
    crw = _decoded(_sample("canon_powershot-s40").relative_to(SAMPLES).as_posix())
    assert crw.info.sources == {"make": "ciff", "model": "ciff", "iso": "libraw", "exposure_time": "libraw"}
    assert crw.info.raw_format == "CRW" and crw.info.exposure_time > 0
    qtk = _decoded(_sample("apple_quicktake-150").relative_to(SAMPLES).as_posix())
    assert qtk.info.sources == {
        "make": "header",
        "model": "header",
        "iso": "missing",
        "exposure_time": "missing",
    }
    assert qtk.info.wb is None  # LibRaw reports [0, 1, 0, 0]: no as-shot balance
    nef = _decoded(_sample("nikon_d1").relative_to(SAMPLES).as_posix())
    assert nef.info.sources == {"make": "tiff", "model": "tiff", "iso": "libraw", "exposure_time": "exif"}
    assert nef.info.exposure_time == pytest.approx(1 / 250)
    kdc = _decoded(_sample("kodak_dc120_isoNA_p003908").relative_to(SAMPLES).as_posix())
    assert kdc.info.sources["exposure_time"] == "tiff" and kdc.info.color_matrix is None
    assert kdc.info.sensor == "Kodak DC120 ZOOM Digital Camera"


@pytest.mark.samples
def test_read_info_matches_read_raw_and_bytes_source():
    path = _sample("canon_powershot-s30")
    frame = _decoded(path.relative_to(SAMPLES).as_posix())
    assert read_info(path) == frame.info
    named = read_raw(path.read_bytes(), name="s3://bucket/raw/S30.CRW")
    assert named.info.path == "s3://bucket/raw/S30.CRW"
    assert np.array_equal(named.mosaic, frame.mosaic)
    assert named.info.black_level == (31.0, 32.0, 31.0, 31.0)
    assert read_info(path.read_bytes()).path == "<bytes>"


@pytest.mark.samples
def test_normalized_and_packed_on_a_real_frame():
    frame = _decoded(_sample("canon_powershot-s30").relative_to(SAMPLES).as_posix())
    packed = frame.packed()
    assert packed.shape == (4, frame.info.height // 2, frame.info.width // 2) and packed.dtype == np.uint16
    assert np.array_equal(bayer.unpack(packed, frame.info.cfa), frame.mosaic)
    norm = frame.normalized()
    assert norm.dtype == np.float32
    black = np.array(frame.info.black_level)[:, None, None]
    expected = (packed - black) / (frame.info.white_level - black)
    np.testing.assert_allclose(norm, expected, rtol=1e-6)


@pytest.mark.samples
@pytest.mark.parametrize(
    ("prefix", "fraction", "kind"),
    [
        ("nikon_d1", 0.1, "truncated"),
        ("nikon_d1", 0.6, "truncated"),
        ("canon_powershot-g2_iso50_crw-0304", 0.1, "truncated"),
        ("canon_powershot-g2_iso50_crw-0304", 0.6, "truncated"),
        ("blackmagic", 0.6, "truncated"),
        ("apple_quicktake-100_isoNA_image-1", 0.6, "truncated"),
        # Kodak-compressed: LibRaw decodes the cut file without an error; the strip check catches it.
        ("kodak_dc120_isoNA_p003911", 0.6, "truncated"),
        ("kodak_dc50_isoNA_dc0008l", 0.1, "no-pixels"),  # cut before the first byte of image data
    ],
)
def test_truncated_copies(tmp_path, prefix, fraction, kind):
    source = _sample(prefix)
    data = source.read_bytes()
    cut = tmp_path / source.name
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(RawReadError) as err:
        read_raw(cut)
    assert err.value.kind == kind, err.value
    assert err.value.path == str(cut)
    with pytest.raises(RawReadError) as err:
        read_info(cut.read_bytes(), name="mem://cut")
    assert err.value.kind == kind and err.value.path == "mem://cut"


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("filename", "content", "kind"),
    [
        ("photo.png", png_bytes(), "not-raw"),
        ("x.dng", b"this is a text file with a raw extension\n" * 20, "not-raw"),
        ("empty.CR2", b"", "not-raw"),
        ("noise.nef", bytes(range(256)) * 64, "not-raw"),
        ("fake.jpg.dng", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 4000, "not-raw"),
    ],
    ids=["png", "text-named-dng", "empty", "random-bytes", "jpeg"],
)
def test_non_raw_files(tmp_path, filename, content, kind):
    path = tmp_path / filename
    path.write_bytes(content)
    for source, name in ((path, None), (content, "upload.bin")):
        with pytest.raises(RawReadError) as err:
            read_raw(source, name=name)
        assert err.value.kind == kind, err.value
        assert err.value.path == (str(path) if name is None else name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RawReadError) as err:
        read_raw(tmp_path / "nope.CR2")
    assert err.value.kind == "missing" and "no such file" in err.value.reason
    with pytest.raises(RawReadError) as err:
        read_info(tmp_path)
    assert err.value.kind == "not-raw" and "directory" in err.value.reason


def test_raw_read_error_pickles():
    try:
        read_raw(b"", name="s3://b/k.dng")
    except RawReadError as exc:
        again = pickle.loads(pickle.dumps(exc))
        assert (again.path, again.kind, again.reason) == (exc.path, exc.kind, exc.reason)


# --------------------------------------------------------------------------------------------- synthetic DNGs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfa=st.sampled_from(bayer.CFA_PATTERNS),
    height=st.integers(22, 41),
    width=st.integers(22, 41),
    seed=st.integers(0, 2**32 - 1),
)
def test_dng_roundtrip_every_cfa(cfa, height, width, seed):
    """LibRaw reads back what was written, for every CFA; odd sizes lose their last row/column."""
    mosaic = np.random.default_rng(seed).integers(0, 4096, (height, width), dtype=np.uint16)
    frame = read_raw(make_dng(mosaic, cfa), name="synth.dng")
    h, w = height // 2 * 2, width // 2 * 2
    assert frame.info.cfa == cfa and (frame.info.height, frame.info.width) == (h, w)
    assert np.array_equal(frame.mosaic, mosaic[:h, :w])
    assert np.array_equal(frame.packed(), bayer.pack(mosaic[:h, :w], cfa))
    assert np.array_equal(bayer.unpack(frame.packed(), cfa), frame.mosaic)


@pytest.mark.parametrize("cfa", bayer.CFA_PATTERNS)
@pytest.mark.parametrize("origin", [(0, 0), (1, 1), (1, 0), (0, 1), (3, 3)])
def test_g1_on_red_rows_with_odd_active_area(cfa, origin):
    """Each packed plane holds exactly its channel, also when the visible area starts at an odd offset
    (LibRaw moves the origin, and the visible CFA differs from the written one)."""
    values = {"R": 1000, "G1": 2000, "G2": 2500, "B": 3000}
    mosaic = labelled_mosaic((33, 45), cfa, values, origin)
    active = (*origin, 33, 45) if origin != (0, 0) else None
    frame = read_raw(make_dng(mosaic, cfa, active=active))
    planes = frame.packed()
    for c, channel in enumerate(bayer.CHANNELS):
        assert np.all(planes[c] == values[channel]), (frame.info.cfa, channel)
    assert frame.info.height % 2 == 0 and frame.info.width % 2 == 0


@pytest.mark.parametrize("cfa", bayer.CFA_PATTERNS)
def test_black_levels_per_channel(cfa):
    """Per-site black levels come back in R, G1, G2, B order, and normalized() uses them per channel."""
    black = {"R": 64, "G1": 80, "G2": 96, "B": 112}
    tile = bayer.per_site([black[c] for c in bayer.CHANNELS], cfa)
    values = {"R": 1064, "G1": 2080, "G2": 3096, "B": 4000}
    frame = read_raw(
        make_dng(labelled_mosaic((24, 32), cfa, values), cfa, black=tuple(tile.ravel()), white=4095)
    )
    assert frame.info.black_level == tuple(float(black[c]) for c in bayer.CHANNELS)
    norm = frame.normalized()
    for c, channel in enumerate(bayer.CHANNELS):
        expected = (values[channel] - black[channel]) / (4095 - black[channel])
        np.testing.assert_allclose(norm[c], expected, rtol=1e-6)


def test_dng_metadata_from_ifd0():
    mosaic = np.random.default_rng(1).integers(0, 4096, (24, 32), dtype=np.uint16)
    info = read_info(make_dng(mosaic, make="SynthCam ", model="SynthCam  PG-1", iso=800, exposure=(1, 50)))
    assert (info.make, info.model, info.sensor) == ("SynthCam", "SynthCam PG-1", "SynthCam PG-1")
    assert (info.iso, info.exposure_time) == (800.0, 0.02)
    assert info.sources == {"make": "tiff", "model": "tiff", "iso": "tiff", "exposure_time": "tiff"}
    assert info.raw_format == "DNG"
    assert info.wb == (2.0, 1.0, 1.0, 2.0)  # AsShotNeutral (0.5, 1, 0.5)
    # LibRaw fills rgb_xyz_matrix from its own camera table only, not from a DNG's ColorMatrix tags.
    assert info.color_matrix is None
    again = pickle.loads(pickle.dumps(info))  # catalog builds ship RawInfo between Dask workers
    assert again == info and isinstance(again, RawInfo)


def test_missing_iso_is_missing_not_zero():
    mosaic = np.random.default_rng(2).integers(0, 4096, (24, 32), dtype=np.uint16)
    info = read_info(make_dng(mosaic, iso=None, exposure=None))
    assert info.iso is None and info.exposure_time is None  # LibRaw reports 0 for both
    assert info.sources["iso"] == info.sources["exposure_time"] == "missing"


@pytest.mark.parametrize(
    ("kwargs", "kind", "words"),
    [
        ({"cfa_indices": [0, 1, 3, 2], "plane_colors": [0, 1, 2, 3]}, "non-bayer", "4-colour"),  # CYGM-like
        (
            {"cfa_dim": (6, 6), "cfa_indices": [1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1] * 2},
            "non-bayer",
            "6x6",
        ),
        ({"compression": "zlib"}, "undecodable", "Deflate"),
    ],
    ids=["four-colour-cfa", "xtrans-like-6x6", "deflate-dng"],
)
def test_dngs_rawlab_cannot_use(kwargs, kind, words):
    mosaic = np.random.default_rng(3).integers(0, 4096, (36, 48), dtype=np.uint16)
    with pytest.raises(RawReadError) as err:
        read_raw(make_dng(mosaic, **kwargs), name="odd.dng")
    assert err.value.kind == kind and words in err.value.reason, err.value


def test_constant_mosaic_is_no_pixels():
    with pytest.raises(RawReadError) as err:
        read_raw(make_dng(np.full((24, 32), 77, np.uint16)), name="flat.dng")
    assert err.value.kind == "no-pixels" and "77 DN" in err.value.reason


# --------------------------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\x00" * 20, "CR2"),
        (b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 24, "TIFF-raw"),
        (b"II\x1a\x00\x00\x00HEAPCCDR\x02\x00", "CRW"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "CR3"),
        (b"FUJIFILMCCD-RAW 0201FF392201", "RAF"),
        (b"IIRO\x08\x00\x00\x00", "ORF"),
        (b"IIU\x00\x08\x00\x00\x00", "RW2"),
        (b"qktn\x00\x00\x00\x08", "QTK"),
        (b"\x00MRM\x00\x00", "MRW"),
        (b"FOVb\x00\x00", "X3F"),
        (b"DSC-Image\x00", "RDC"),
        (bytes(range(128, 192)), "headerless"),
        (png_bytes()[:64], None),
        (b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00", None),
        (b"GIF89a\x10\x00", None),
        (b"%PDF-1.7\n", None),
        (b"PK\x03\x04\x14\x00", None),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", None),
        (b"make,model,iso\nCanon,EOS R6,100\n", None),
        ("Kamera: Sony α7 IV, Belichtung 1/250 s\n".encode(), None),
        (b"", None),
    ],
)
def test_sniff_raw_format(header, expected):
    assert sniff_raw_format(header) == expected


# --------------------------------------------------------------------------------------------- sensor names


@pytest.mark.parametrize(
    ("make", "model", "sensor"),
    [
        ("Canon", "Canon PowerShot S40", "Canon PowerShot S40"),
        ("NIKON CORPORATION", "NIKON D1 ", "NIKON D1"),
        ("Eastman Kodak Company", "Kodak DC120 ZOOM Digital Camera", "Kodak DC120 ZOOM Digital Camera"),
        ("Blackmagic Design", "Pocket Cinema Camera 4K", "Blackmagic Design Pocket Cinema Camera 4K"),
        ("FUJIFILM", "FinePix S5Pro  ", "FUJIFILM FinePix S5Pro"),
        ("Apple", "iPhone 12 Pro", "Apple iPhone 12 Pro"),
        ("SONY", "ILCE-7M3\x00\x00", "SONY ILCE-7M3"),
        ("  Canon\t", "canon  eos\nR6", "canon eos R6"),
        ("OLYMPUS IMAGING CORP.", "E-M1", "OLYMPUS IMAGING CORP. E-M1"),
        (
            "Digital Camera Company",
            "Digital 1",
            "Digital Camera Company Digital 1",
        ),  # legal words are no brand
        (None, "QuickTake 100", "Unknown QuickTake 100"),
        ("Apple", None, "Apple Unknown"),
        (None, "  ", "Unknown"),
    ],
)
def test_normalize_sensor_name(make, model, sensor):
    assert normalize_sensor_name(make, model) == sensor


_word = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd"), max_codepoint=0x24F), min_size=1, max_size=8
)
_space = st.text(alphabet=" \t\n\x00", min_size=1, max_size=3)


@st.composite
def _spaced(draw, words):
    parts = [draw(_space) if draw(st.booleans()) else ""]
    for i, word in enumerate(words):
        parts.append(word)
        parts.append(draw(_space) if i < len(words) - 1 or draw(st.booleans()) else "")
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(
    make=st.lists(_word, min_size=1, max_size=3),
    model=st.lists(_word, min_size=1, max_size=3),
    data=st.data(),
)
def test_sensor_name_properties(make, model, data):
    clean = normalize_sensor_name(" ".join(make), " ".join(model))
    # whitespace (and NUL padding) does not matter
    assert normalize_sensor_name(data.draw(_spaced(make)), data.draw(_spaced(model))) == clean
    # single spaces only, and the model is never lost
    assert clean == " ".join(clean.split()) and clean.endswith(" ".join(model))
    # idempotent: naming the sensor again with the same make changes nothing
    assert normalize_sensor_name(" ".join(make), clean) == clean
    # a model that already starts with the make is kept as it is
    assert normalize_sensor_name(" ".join(make), " ".join(make + model)) == " ".join(make + model)
