"""Quality checks of a burst: frame-to-reference motion, exposure consistency, blur, frames too far off.

A burst (:mod:`rawlab.catalog.bursts`) is several frames of one body at one ISO and exposure, taken one after
the other. :func:`check_burst` reads the packed planes of a central crop of each frame (DN, as captured) and
decides, per frame:

- **Sharpness** (``sharpness``, relative to the burst's median): the gradient energy of the binned green
  (mean of G1 and G2, one value per 2x2 mosaic cell) minus what the noise puts there, at the burst's median
  level, divided by the burst's median. Noise is the same in every frame of a burst (same ISO and exposure),
  so its share is estimated once, as the least of the frames' noise floors
  (:func:`rawlab.catalog.qa._noise_floor`; texture inflates a floor, never deflates it), and taken off every
  frame alike. A frame below ``min_sharpness`` is blurred (camera shake during the exposure, focus
  hunting). A burst with no structure above the noise (a flat field) is not judged for blur.
- **Reference**: by default the first frame in capture order (synthetic bursts and most burst pipelines use
  it); with ``reference_candidates: K`` the sharpest of the first K frames, as HDR+ does (Hasinoff et al.,
  SIGGRAPH Asia 2016). A candidate must be sharp and have the burst's exposure (whole-frame mean level within
  the exposure tolerance of the burst's median); if none of the first K is, the first frame that is.
- **Motion** (``align_dy``, ``align_dx``, mosaic px, ``frame(y, x) = ref(y - dy, x - dx)``; ``align_match``):
  a global translation by phase correlation against the reference, the pair QA's estimator
  (:func:`rawlab.catalog.qa.estimate_shift`: band-limited phase correlation of the luminance, refined by the
  upsampled DFT), except that the shift is chosen among the six highest peaks of the correlation surface as
  the one under which the median 8x8 block of the frame matches the moved reference best (:func:`_consensus`):
  the motion of most of the scene, not of a textured object moving across a plain background, nor a
  repeating pattern's period. Rotation is not modelled: hand shake's rotation moves the crop's corners by a
  pixel or so. Where the scene is mostly plain (a chart) the true motion can be missing from the six peaks:
  on ``rawlab synth --burst``'s chart, with a moving disc, the motion is off by 0.4 px (median) and up to
  9.5 px, against 0.06 px (median) and 0.12 px at most on its photographed scene.
  A frame moved by more than ``max_motion``, whose motion reaches the edge of the search window, or whose
  alignment is not reliable (``align_match`` below ``min_match``) is **too far off**.
- **Exposure** (``gain``, ``gain_r`` ... ``gain_b``): the frame's brightness over the reference's on the
  aligned overlap (:func:`rawlab.catalog.qa.estimate_gain`: block means free of clipping, outlier blocks such
  as a moving object left out). A burst has one ISO and exposure, so the expected gain is 1; a frame is off
  when ``|gain - 1|`` exceeds ``max(exposure_tolerance, 5 standard errors)``, the standard error being what
  the two frames' noise alone gives the ratio of their means over the overlap.

Every excluded frame keeps its row, with each failed check in one sentence naming the value and the threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .qa import Thresholds, _align, _noise_floor, estimate_gain, expected_gain, normalise

__all__ = ["BURST_QA_COLUMNS", "BurstThresholds", "check_burst", "sharpness_energy"]

#: The catalog columns :func:`check_burst` fills for each frame of a burst (besides role, status and reason).
BURST_QA_COLUMNS: tuple[str, ...] = tuple(
    "align_dy align_dx align_match gain gain_r gain_g1 gain_g2 gain_b expected_gain sharpness".split()
)


@dataclasses.dataclass(frozen=True)
class BurstThresholds(Thresholds):
    """Limits beyond which a frame of a burst is ``excluded`` (``rawlab catalog build --qa-burst-*``).

    Parameters
    ----------
    max_motion
        Largest accepted motion to the reference, ``hypot(dy, dx)`` in mosaic px. Hand-held bursts move by a
        few to a few tens of pixels over a burst; tile-based alignment (HDR+) searches about +-64 px, so a
        frame beyond that cannot be merged.
    min_match
        Smallest accepted alignment confidence (-1..1, :func:`rawlab.catalog.qa.estimate_shift`). Lower than
        the pairs' 0.4 because both frames of a burst are noisy; an unrelated frame scores below 0.2.
    exposure_tolerance
        Largest accepted ``|gain - 1|`` of a frame against the reference (a light that flickers, a changed
        exposure the metadata does not show). The noise of the two frames widens it (module docstring).
    min_sharpness
        Smallest accepted sharpness relative to the burst's median (0..). On a scene with a natural image's
        1/f spectrum, a Gaussian blur of sigma 0.5 / 1 / 1.5 mosaic px leaves 0.45 / 0.24 / 0.14 of the
        median at low noise and 0.57 / 0.38 / 0.24 at ten times the shot noise; the sharp frames of a burst
        lie within a few percent of 1.
    """

    _SIGNED = ("min_match",)

    max_motion: float = 64.0
    min_match: float = 0.3
    exposure_tolerance: float = 0.1
    min_sharpness: float = 0.5


def sharpness_energy(planes) -> float:
    """Gradient energy of the binned green (normalised units squared per packed px): the mean of the squared
    vertical and horizontal differences of ``(G1 + G2) / 2``, noise included (:func:`check_burst` takes the
    noise's share off)."""
    g = 0.5 * (np.asarray(planes[1], dtype=np.float64) + np.asarray(planes[2], dtype=np.float64))
    if min(g.shape) < 2:
        return float("nan")
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


def _noise_energy(sigma: np.ndarray) -> float:
    """What independent pixel noise of std ``sigma`` (R, G1, G2, B) adds to :func:`sharpness_energy`: each
    difference of the binned green has variance ``2 * (s1^2 + s2^2) / 4``, and there are two directions."""
    return float(sigma[1] ** 2 + sigma[2] ** 2)


def check_burst(
    crops_dn: Sequence[Any],
    metas: Sequence[Mapping[str, Any]],
    *,
    thresholds: BurstThresholds | Mapping = BurstThresholds(),
    reference_candidates: int = 1,
) -> dict[str, Any]:
    """QA of one burst: which frame is the reference, and each frame's motion, exposure, sharpness and verdict.

    Parameters
    ----------
    crops_dn
        Per frame in capture order: packed planes ``(4, h, w)`` in DN (a central crop, the same for every
        frame), or the exception that reading it raised (that frame is excluded with it as the reason).
    metas
        Per frame: ``black_level`` (4, DN), ``white_level`` (DN), ``iso``, ``exposure_time`` (s) and the
        whole-frame ``mean_level`` (normalised, from ingest).
    thresholds
        :class:`BurstThresholds`, or a dict for :meth:`BurstThresholds.from_dict`.
    reference_candidates
        The reference is the sharpest of the first this many usable frames (1: the first frame).

    Returns
    -------
    dict
        ``reference``: the reference's index in the burst (None when no frame could be read), and
        ``frames``: one dict per frame with the keys of :data:`BURST_QA_COLUMNS`, ``role`` (``reference``,
        ``frame`` or ``excluded``), ``status`` (``ok`` or ``excluded``) and ``reason`` (``""``, or one
        sentence per failed check joined by ``"; "``).
    """
    t = BurstThresholds.from_dict(thresholds) if isinstance(thresholds, Mapping) else thresholds
    n = len(crops_dn)
    rows: list[dict[str, Any]] = [dict.fromkeys(BURST_QA_COLUMNS, float("nan")) for _ in range(n)]
    reasons: list[list[str]] = [[] for _ in range(n)]
    crops: list[np.ndarray | None] = [None] * n
    sigmas: list[np.ndarray | None] = [None] * n
    for i, (dn, meta) in enumerate(zip(crops_dn, metas, strict=True)):
        try:
            if isinstance(dn, BaseException):
                raise dn
            crops[i] = normalise(dn, meta["black_level"], meta["white_level"])
            sigmas[i] = _noise_floor(crops[i])[0]
        except Exception as e:  # this frame's own failure: its reason, the burst goes on
            reasons[i].append(f"QA could not run: {type(e).__name__}: {e}")
    shapes = {c.shape for c in crops if c is not None}
    if len(shapes) > 1:  # recognition keeps one size per burst; a crop that differs is the odd one out
        common = max(shapes, key=lambda s: sum(c is not None and c.shape == s for c in crops))
        for i, c in enumerate(crops):
            if c is not None and c.shape != common:
                reasons[i].append(f"size mismatch: {c.shape[1:]} packed px, the burst's is {common[1:]}")
                crops[i] = None
    usable = [i for i in range(n) if crops[i] is not None]

    # Sharpness, relative to the burst's median, the noise's share taken off alike for every frame. Texture
    # passes for noise in a frame's noise floor, never the reverse, so the burst's least estimate is the best
    # (a blurred frame's, when there is one); capped below every frame's energy so that no signal is < 0.
    energy = {i: sharpness_energy(crops[i]) for i in usable}
    green = {i: float(np.mean(crops[i][1:3])) for i in usable}
    mid_green = float(np.median(list(green.values()))) if green else float("nan")
    noise = min([_noise_energy(sigmas[i]) for i in usable] + [0.9 * e for e in energy.values()], default=0.0)
    # a brighter frame has stronger gradients: compare at one level
    signal = {i: (energy[i] - noise) * (mid_green / green[i]) ** 2 if green[i] > 0 else 0.0 for i in usable}
    median = float(np.median(list(signal.values()))) if signal else float("nan")
    judged = math.isfinite(median) and median > 0.25 * noise and median > 0  # structure above the noise
    blurred = set()
    for i in usable:
        rows[i]["sharpness"] = signal[i] / median if judged else float("nan")
        if judged and rows[i]["sharpness"] < t.min_sharpness:
            blurred.add(i)
            reasons[i].append(
                f"blurred: sharpness {rows[i]['sharpness']:.2f} of the burst's median, below min_sharpness "
                f"{t.min_sharpness:.3g}"
            )

    # The reference: sharp, at the burst's exposure, the sharpest of the first K (the first by default).
    levels = {i: float(metas[i].get("mean_level", float("nan"))) for i in usable}
    finite = [v for v in levels.values() if math.isfinite(v) and v > 0]
    mid = float(np.median(finite)) if finite else float("nan")
    fit = [
        i for i in usable
        if i not in blurred and not (math.isfinite(mid) and abs(levels[i] / mid - 1) > t.exposure_tolerance)
    ]  # fmt: skip
    first = fit[: max(1, int(reference_candidates))]
    ref = max(first, key=lambda i: (_finite(rows[i]["sharpness"]), -i)) if first else None
    if ref is None and usable:
        ref = usable[0]  # no frame is both sharp and at the burst's exposure: compare against the first
    if ref is None:
        return {"reference": None, "frames": [_verdict(rows[i], reasons[i], False) for i in range(n)]}

    # Each frame against the reference: motion (too far off), then exposure on the aligned overlap.
    rc, rsig = crops[ref], sigmas[ref]
    fits = min(rc.shape[1:]) / 2 - 2  # the widest search the crop allows (mosaic px; see qa._align)
    search = max(0.0, min(max(16.0, 2 * t.max_motion), fits))
    ref_level = float(np.mean(rc))
    for i in usable:
        row = rows[i]
        row["expected_gain"] = _expected(metas[ref], metas[i])
        if i == ref:
            row.update(align_dy=0.0, align_dx=0.0, align_match=1.0, gain=1.0)
            row.update(gain_r=1.0, gain_g1=1.0, gain_g2=1.0, gain_b=1.0)
            continue
        dy, dx, match, texture_r, texture_m = _align(rc, crops[i], search, 20, _consensus())
        row.update(align_dy=dy, align_dx=dx, align_match=match)
        flat = texture_r < 4 * np.sum(rsig**2) / 16 and texture_m < 4 * np.sum(sigmas[i] ** 2) / 16
        length = math.hypot(dy, dx)
        if flat:
            pass  # nothing to align in a flat field, and nothing needs it
        elif match < t.min_match:
            reasons[i].append(
                f"too far off: no reliable alignment to the reference (match {match:.2f} is below min_match "
                f"{t.min_match:.3g}; moved beyond the +-{search:.0f} px search, or another view)"
            )
        elif length > t.max_motion or max(abs(dy), abs(dx)) >= search - 0.5:
            reasons[i].append(
                f"too far off: motion ({dy:.1f}, {dx:.1f}) px to the reference, length {length:.1f} px, "
                f"exceeds max_motion {t.max_motion:.3g} px"
                + ("" if length > t.max_motion else f" (at the edge of the +-{search:.0f} px search)")
            )
        gain, per = estimate_gain(rc, crops[i], shift=(0.0, 0.0) if flat else (dy, dx))
        row.update(gain=gain, gain_r=per[0], gain_g1=per[1], gain_g2=per[2], gain_b=per[3])
        expect = row["expected_gain"] if math.isfinite(row["expected_gain"]) else 1.0
        if math.isfinite(gain):
            # The noise's share of the ratio of two means over the crop's samples (4 planes), at the
            # reference's level: se^2 = (var_ref + var_frame) / (N * level^2).
            var = float(np.mean(rsig**2) + np.mean(sigmas[i] ** 2))
            se = math.sqrt(var / max(rc.size, 1)) / max(ref_level, 1e-6)
            tol = max(t.exposure_tolerance, 5 * se)
            if abs(gain / expect - 1) > tol:
                reasons[i].append(
                    f"exposure off: brightness {gain:.3g} x the reference's where {expect:.3g} is expected (off "
                    f"by {abs(gain / expect - 1):.0%}, above the tolerance {tol:.0%})"
                )
    return {"reference": ref, "frames": [_verdict(rows[i], reasons[i], i == ref) for i in range(n)]}


_BLOCK = 8  # working px: blocks whose agreement :func:`_consensus` counts


def _consensus():
    """A ``choose`` for :func:`rawlab.catalog.qa._align`: the candidate shift that most of the scene agrees
    with.

    Phase correlation's highest peak follows the most contrasted structure, which can be a textured object
    moving across a plain background (a chart, a wall) rather than the camera, and a repeating pattern (a
    chart's patches) peaks at its period too. For each candidate shift the reference's luminance is moved by
    it (exactly, in the Fourier domain) and compared with the frame's in 8x8 blocks over their overlap,
    levels included (a burst has one exposure); the candidate with the least median block error wins: the
    motion of at least half the scene, whatever a minority (a moving object) does.
    """

    def choose(lr: np.ndarray, lm: np.ndarray, b: int, shifts: list[tuple[float, float]]) -> int:
        import scipy.fft as sfft

        h, w = lr.shape
        fy, fx = sfft.fftfreq(h)[:, None], sfft.fftfreq(w)[None, :]
        spec = sfft.fft2(lr.astype(np.float32))
        m = int(max(max(abs(dy), abs(dx)) for dy, dx in shifts)) + 2  # circular wrap stays outside
        inner = (slice(m, h - m), slice(m, w - m))
        hb, wb = (h - 2 * m) // _BLOCK, (w - 2 * m) // _BLOCK
        if hb < 1 or wb < 1:
            return 0

        def blocks(x: np.ndarray) -> np.ndarray:
            x = x[inner][: hb * _BLOCK, : wb * _BLOCK]
            return x.reshape(hb, _BLOCK, wb, _BLOCK).transpose(0, 2, 1, 3).reshape(hb, wb, -1)

        mov = blocks(lm)
        scores = []
        for dy, dx in shifts:
            ry = np.exp(-2j * np.pi * fy * dy).astype(np.complex64)  # the shift's phase ramp, separable
            rx = np.exp(-2j * np.pi * fx * dx).astype(np.complex64)
            moved = sfft.ifft2(spec * ry * rx).real
            scores.append(float(np.median(np.mean((mov - blocks(moved)) ** 2, axis=-1))))
        return int(np.argmin(scores))

    return choose


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _expected(ref_meta: Mapping[str, Any], meta: Mapping[str, Any]) -> float:
    exp = expected_gain(
        ref_meta.get("iso"), ref_meta.get("exposure_time"), meta.get("iso"), meta.get("exposure_time")
    )
    return float("nan") if exp is None else exp


def _verdict(row: dict[str, Any], reasons: list[str], is_ref: bool) -> dict[str, Any]:
    if is_ref:  # the reference is kept whatever it is: every other frame is measured against it
        role, status, why = "reference", "ok", ""
    elif reasons:
        role, status, why = "excluded", "excluded", "; ".join(reasons)
    else:
        role, status, why = "frame", "ok", ""
    return {**row, "role": role, "status": status, "reason": why}
