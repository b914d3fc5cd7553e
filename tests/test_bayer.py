"""rawlab.bayer: packing to R, G1, G2, B and back, for every CFA pattern."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rawlab import bayer

DTYPES = (np.uint16, np.uint8, np.int32, np.float32, np.float64)


@st.composite
def mosaics(draw):
    """Mosaics (..., H, W) with even H and W, 0-2 leading dimensions, in several dtypes."""
    dtype = draw(st.sampled_from(DTYPES))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    h, w = 2 * draw(st.integers(1, 6)), 2 * draw(st.integers(1, 6))
    elements = hnp.from_dtype(np.dtype(dtype), allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(dtype, (*lead, h, w), elements=elements))


@settings(max_examples=200, deadline=None)
@given(mosaic=mosaics(), cfa=st.sampled_from(bayer.CFA_PATTERNS))
def test_pack_unpack_are_exact_inverses(mosaic, cfa):
    packed = bayer.pack(mosaic, cfa)
    h, w = mosaic.shape[-2:]
    assert packed.shape == (*mosaic.shape[:-2], 4, h // 2, w // 2)
    assert packed.dtype == mosaic.dtype
    restored = bayer.unpack(packed, cfa)
    assert restored.dtype == mosaic.dtype
    assert np.array_equal(restored, mosaic)
    assert np.array_equal(bayer.pack(restored, cfa), packed)


# Each pattern's 2x2 tile with its greens told apart: "g" is the green on the red row (G1), "h" the green
# on the blue row (G2). Written out by hand, independently of bayer._OFFSETS.
LABELLED_TILES = {
    "RGGB": [["R", "g"], ["h", "B"]],
    "BGGR": [["B", "h"], ["g", "R"]],
    "GRBG": [["g", "R"], ["B", "h"]],
    "GBRG": [["h", "B"], ["R", "g"]],
}
CHANNEL_OF_LABEL = {"R": "R", "g": "G1", "h": "G2", "B": "B"}


@pytest.mark.parametrize("cfa", bayer.CFA_PATTERNS)
def test_g1_is_the_green_on_red_rows(cfa):
    tile = LABELLED_TILES[cfa]
    assert "".join("G" if c in "gh" else c for row in tile for c in row) == cfa
    code = {"R": 10, "g": 20, "h": 30, "B": 40}
    mosaic = np.tile(np.array([[code[c] for c in row] for row in tile], dtype=np.uint16), (3, 4))
    packed = bayer.pack(mosaic, cfa)
    for index, channel in enumerate(bayer.CHANNELS):
        label = next(lbl for lbl, ch in CHANNEL_OF_LABEL.items() if ch == channel)
        assert np.all(packed[index] == code[label]), (cfa, channel)
    # and explicitly: G1 shares its row with R, G2 shares its row with B
    offsets = dict(zip(bayer.CHANNELS, bayer.channel_offsets(cfa), strict=True))
    assert offsets["G1"][0] == offsets["R"][0] and offsets["G2"][0] == offsets["B"][0]
    assert offsets["G1"][1] != offsets["R"][1] and offsets["G2"][1] != offsets["B"][1]


@pytest.mark.parametrize("cfa", bayer.CFA_PATTERNS)
def test_per_site_inverts_channel_offsets(cfa):
    tile = bayer.per_site([1, 2, 3, 4], cfa)
    assert tile.shape == (2, 2)
    packed = bayer.pack(np.tile(tile, (2, 2)), cfa)
    assert packed[:, 0, 0].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("cfa", bayer.CFA_PATTERNS)
def test_cfa_from_colors_names_each_pattern(cfa):
    assert bayer.cfa_from_colors([list(cfa[:2]), list(cfa[2:])]) == cfa
    assert bayer.cfa_from_colors([[c.lower() for c in cfa[:2]], list(cfa[2:])]) == cfa


@pytest.mark.parametrize(
    "tile", [[["R", "G"], ["B", "G"]], [["G", "G"], ["R", "B"]], [["C", "Y"], ["G", "M"]]]
)
def test_cfa_from_colors_rejects_non_bayer_tiles(tile):
    with pytest.raises(ValueError, match="not a Bayer pattern"):
        bayer.cfa_from_colors(tile)


@pytest.mark.parametrize("shape", [(3, 4), (4, 5), (5, 7), (2, 3, 3)])
def test_odd_sizes_are_rejected(shape):
    with pytest.raises(ValueError, match="even height and width"):
        bayer.pack(np.zeros(shape, np.uint16), "RGGB")


def test_unknown_pattern_and_wrong_plane_count_are_rejected():
    with pytest.raises(ValueError, match="unknown CFA pattern 'RGBG'"):
        bayer.pack(np.zeros((4, 4), np.uint16), "RGBG")
    with pytest.raises(ValueError, match="expected 4 packed planes"):
        bayer.unpack(np.zeros((3, 2, 2), np.uint16), "RGGB")


def test_lower_case_pattern_is_accepted():
    mosaic = np.arange(16, dtype=np.uint16).reshape(4, 4)
    assert np.array_equal(bayer.pack(mosaic, "grbg"), bayer.pack(mosaic, "GRBG"))
