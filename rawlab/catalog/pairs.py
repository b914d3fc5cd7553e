"""Noisy/clean pairs as every consumer reads them: the records, their gain and shift, and matched planes.

A pair is a noisy frame and its clean reference (catalog rows with ``role="noisy"`` and ``clean_path``). QA
measured how the two differ (:mod:`rawlab.catalog.qa`): an alignment shift ``align_dy``, ``align_dx`` in
mosaic pixels and a brightness ratio ``gain`` (per channel ``gain_r`` ... ``gain_b`` when measured). This
module turns those into the one way rawlab compares a noisy frame with its reference, used by the noise fit,
the training pipeline, evaluation and export's parity check alike:

- **shift**: a shift of a mosaic pixel or more is undone in whole packed pixels (``round(d / 2)``; a
  mosaic shift under one pixel is left alone, moving by one packed pixel would change the CFA phase). The
  convention is ``noisy(y, x) = ref(y - sy, x - sx)`` in packed pixels;
- **gain**: the reference is scaled by the noisy frame's brightness over it, per channel, after
  normalisation (:func:`rawlab.bayer.normalise`), so ``E[noisy] = gain * ref``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..bayer import normalise

__all__ = ["Pair", "align", "matched_planes", "pair_gain", "pair_shift", "pairs_from_catalog", "read_matched"]


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def pair_gain(row: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """Brightness of the noisy frame over its reference per channel R, G1, G2, B, from a catalog row.

    The per-channel QA gains when all four were measured, else the overall ``gain``, else 1.
    """
    g = [row.get("gain_r"), row.get("gain_g1"), row.get("gain_g2"), row.get("gain_b")]
    if all(_finite(v) for v in g):
        return tuple(float(v) for v in g)  # type: ignore[return-value]
    overall = float(row["gain"]) if _finite(row.get("gain")) else 1.0
    return (overall,) * 4


def pair_shift(row: Mapping[str, Any]) -> tuple[int, int]:
    """The alignment shift ``(sy, sx)`` in packed pixels from a catalog row's ``align_dy``, ``align_dx``."""

    def packed(d):
        return 0 if not _finite(d) or abs(float(d)) < 1.0 else round(float(d) / 2.0)

    return packed(row.get("align_dy")), packed(row.get("align_dx"))


@dataclass(frozen=True)
class Pair:
    """A noisy frame and its clean reference (shapes in packed pixels)."""

    frame_id: str
    ref_id: str
    path: str
    ref_path: str
    sensor: str
    scene: str
    iso: float
    cfa: str
    shape: tuple[int, int]
    shift: tuple[int, int]  # packed px: noisy(y, x) = ref(y - sy, x - sx)
    gain: tuple[float, float, float, float]  # brightness of the noisy frame over the reference, per channel
    black_level: tuple[float, ...]
    white_level: float
    ref_black_level: tuple[float, ...]
    ref_white_level: float

    def window(self, n: int) -> tuple[int, int, int, int] | None:
        """Inclusive ranges ``(y_lo, y_hi, x_lo, x_hi)`` of a noisy-frame ``n x n`` window's corner such that
        the shifted reference window is inside the reference too; ``None`` if no window fits."""
        (h, w), (sy, sx) = self.shape, self.shift
        y_lo, y_hi = max(sy, 0), h + min(sy, 0) - n
        x_lo, x_hi = max(sx, 0), w + min(sx, 0) - n
        return (y_lo, y_hi, x_lo, x_hi) if y_hi >= y_lo and x_hi >= x_lo else None


def pairs_from_catalog(
    catalog: pd.DataFrame, noisy_rows: pd.DataFrame | None = None
) -> tuple[list[Pair], list[str]]:
    """The usable pairs among ``noisy_rows`` (default: every ``ok`` noisy row of ``catalog``), and a note per
    noisy frame left out (no readable reference, no ISO, a size that differs from the reference's).

    Pairs are sorted by sensor, scene, ISO and frame, so the result does not depend on the catalog's row order.
    """
    if noisy_rows is None:
        noisy_rows = catalog[(catalog["role"] == "noisy") & (catalog["status"] == "ok")]
    noisy_rows = noisy_rows[noisy_rows["frame_id"].notna()]
    by_path = catalog.drop_duplicates("path").set_index("path")
    pairs, notes = [], []
    for r in noisy_rows.to_dict("records"):
        ref = by_path.loc[r["clean_path"]] if r.get("clean_path") in by_path.index else None
        if ref is None or ref["status"] != "ok" or not isinstance(ref["frame_id"], str):
            notes.append(f"{r['path']}: its clean reference is missing or unreadable")
            continue
        if not (_finite(r.get("iso")) and float(r["iso"]) > 0):
            notes.append(f"{r['path']}: no ISO, so no noise parameters for it")
            continue
        if (r["height"], r["width"]) != (ref["height"], ref["width"]):
            notes.append(f"{r['path']}: size differs from its reference's")
            continue
        pairs.append(
            Pair(
                frame_id=r["frame_id"],
                ref_id=ref["frame_id"],
                path=str(r["path"]),
                ref_path=str(r["clean_path"]),
                sensor=r["sensor"],
                scene=str(r["scene"]),
                iso=float(r["iso"]),
                cfa=str(r["cfa"]).upper(),
                shape=(int(r["height"]) // 2, int(r["width"]) // 2),
                shift=pair_shift(r),
                gain=pair_gain(r),
                black_level=tuple(float(v) for v in r["black_level"]),
                white_level=float(r["white_level"]),
                ref_black_level=tuple(float(v) for v in ref["black_level"]),
                ref_white_level=float(ref["white_level"]),
            )
        )
    pairs.sort(key=lambda p: (p.sensor, p.scene, p.iso, p.frame_id))
    return pairs, notes


def align(noisy, ref, shift: tuple[int, int]):
    """The overlapping parts of ``noisy`` and ``ref`` (``(..., h, w)``, any array type) under ``shift``.

    With ``noisy(y, x) = ref(y - sy, x - sx)``, returns same-shaped views in which pixel ``(y, x)`` of one is
    the same scene point as ``(y, x)`` of the other.
    """
    sy, sx = (int(v) for v in shift)
    h, w = min(noisy.shape[-2], ref.shape[-2]), min(noisy.shape[-1], ref.shape[-1])
    noisy = noisy[..., max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)]
    ref = ref[..., max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)]
    return noisy, ref


def matched_planes(noisy_dn, ref_dn, pair: Pair, *, crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)`` normalised float32 planes ``(4, h, w)``: aligned, then the reference scaled by the
    pair's gain so that ``E[noisy] = clean``; a centred ``crop x crop`` window when ``crop`` is given."""
    noisy_dn, ref_dn = align(noisy_dn, ref_dn, pair.shift)
    if crop:
        h, w = noisy_dn.shape[-2:]
        y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        noisy_dn = noisy_dn[..., y0 : y0 + crop, x0 : x0 + crop]
        ref_dn = ref_dn[..., y0 : y0 + crop, x0 : x0 + crop]
    y = normalise(np.asarray(noisy_dn), pair.black_level, pair.white_level)
    c = normalise(np.asarray(ref_dn), pair.ref_black_level, pair.ref_white_level)
    return y, c * np.asarray(pair.gain, np.float32)[:, None, None]


def read_matched(fstore, pair: Pair, *, crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`matched_planes` of a pair read from a :class:`~rawlab.catalog.store.FrameStore`."""
    return matched_planes(fstore.read_frame(pair.frame_id), fstore.read_frame(pair.ref_id), pair, crop=crop)
