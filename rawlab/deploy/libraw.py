"""LibRaw's demosaics of rawlab's packed planes, as linear camera RGB.

They are the classical demosaics rawlab's evaluation scores (:mod:`rawlab.evaluation.demosaic`) and what
``rawlab denoise --output rgb --demosaic METHOD`` runs after a Bayer denoiser (:class:`LibRawDemosaic`): on the
benchmark's held-out frames the built-in denoiser followed by LibRaw's DHT is above ``builtin-joint`` (the
built-in denoiser and a fixed linear demosaic) at 12 of 13 sensor-ISOs, by up to 1.8 dB (README, "Demosaicing").

Every demosaic goes through one path: rawlab's normalised planes (``bayer.normalise``, the
one home of normalising DN) written as a 16-bit DNG with black 0 and white 65535, read back by rawpy and
demosaiced with ``output_color=raw`` (camera RGB, no colour matrix), ``gamma=(1, 1)``, no auto-brightness,
``user_wb=(1, 1, 1, 1)`` (the same white balance, none, for every method), highlights clipped and
``adjust_maximum_thr=0`` (by default LibRaw takes the data's maximum for white when it lies above 0.75 of
white, which scaled a dim frame by up to 1/0.75), then divided by 65535. LibRaw scales by ``65535 / (white - black)`` with one black for all channels, so writing the levels
rawlab normalised with makes that scale exactly 1 (a camera's own DNG with per-channel blacks would be off by
up to ``(b_max - b_min) / (white - b_min)``, 0.2 % on a 10-bit phone sensor); what is left is quantisation to
1/65535 and LibRaw clipping the noise below black to 0, as it does for every raw (tests/test_demosaic_eval.py
checks the linearity against the truth). This module calls rawpy itself because it post-processes a DNG it
wrote, not a camera raw (``rawio`` stays the home of reading raws).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np

from ..bayer import unpack
from ..errors import RawlabError

__all__ = ["DEMOSAICS", "LibRawDemosaic", "available_demosaics", "demosaic", "demosaic_all"]

DEMOSAICS = ("LINEAR", "VNG", "PPG", "AHD", "DCB", "DHT", "AAHD")
_FULL = 65535.0


def available_demosaics(methods: Sequence[str] = DEMOSAICS) -> tuple[list[str], list[str]]:
    """``(supported, missing)``: which of LibRaw's demosaics this rawpy build has (the GPL packs may not be)."""
    import rawpy

    ok, missing = [], []
    for m in methods:
        alg = getattr(rawpy.DemosaicAlgorithm, m, None)
        (ok if alg is not None and alg.isSupported else missing).append(m)
    return ok, missing


def _to_dng(path: str, planes: np.ndarray, cfa: str) -> None:
    from ..dng import write_dng

    dn = np.rint(np.clip(np.asarray(planes, np.float64), 0.0, 1.0) * _FULL).astype(np.uint16)
    write_dng(
        path,
        unpack(np.moveaxis(dn, -1, 0), cfa),
        cfa=cfa,
        black_level=0,
        white_level=int(_FULL),
        make="rawlab",
        model="demosaic",
    )


def demosaic_all(planes: np.ndarray, cfa: str, methods: Sequence[str] = DEMOSAICS) -> dict[str, np.ndarray]:
    """LibRaw's demosaics of normalised packed planes, as linear camera RGB.

    Parameters
    ----------
    planes
        ``(h, w, 4)`` R, G1, G2, B, normalised units (values outside ``[0, 1]`` are clipped, as the sensor
        and LibRaw clip them).
    cfa
        The mosaic's pattern (``"RGGB"`` ...).
    methods
        Names from :data:`DEMOSAICS` (see :func:`available_demosaics`).

    Returns
    -------
    dict
        Method -> ``(2h, 2w, 3)`` float32 camera RGB, normalised (module docstring, "Linear LibRaw").
    """
    import rawpy

    out = {}
    with tempfile.TemporaryDirectory(prefix="rawlab-demosaic-") as tmp:
        path = os.path.join(tmp, "mosaic.dng")
        _to_dng(path, planes, cfa)
        with rawpy.imread(path) as raw:
            for m in methods:
                rgb = raw.postprocess(
                    demosaic_algorithm=getattr(rawpy.DemosaicAlgorithm, m),
                    output_color=rawpy.ColorSpace.raw,
                    gamma=(1, 1),
                    no_auto_bright=True,
                    output_bps=16,
                    user_wb=[1.0, 1.0, 1.0, 1.0],
                    use_camera_wb=False,
                    use_auto_wb=False,
                    highlight_mode=rawpy.HighlightMode.Clip,
                    adjust_maximum_thr=0.0,  # else LibRaw takes a data maximum above 0.75 white for white
                    user_flip=0,
                )
                out[m] = rgb.astype(np.float32) / np.float32(_FULL)
    return out


def demosaic(planes: np.ndarray, cfa: str, method: str = "AHD") -> np.ndarray:
    """One LibRaw demosaic of normalised planes ``(h, w, 4)``: ``(2h, 2w, 3)`` linear camera RGB."""
    return demosaic_all(planes, cfa, [method])[method]


class LibRawDemosaic:
    """A Bayer denoiser's runtime followed by one of LibRaw's demosaics: clean linear camera RGB, as a joint
    model's runtime gives it (``head`` ``"rgb"``, :meth:`demosaic`), for ``rawlab denoise --output rgb
    --demosaic METHOD``.

    :meth:`demosaic` denoises the planes as ``rawlab denoise`` denoises a raw (the wrapped runtime's guard,
    rotations and fusion, as set on it) and demosaics the estimate with ``method`` (:func:`demosaic`). Every
    other attribute is the wrapped runtime's (its noise law, its guard and fusion weights, :meth:`check`).
    """

    head = "rgb"

    def __init__(self, denoiser, method: str):
        if method not in DEMOSAICS:
            raise RawlabError(f"unknown demosaic {method!r}; choose one of {', '.join(DEMOSAICS)}")
        if getattr(denoiser, "head", "bayer") != "bayer":
            raise RawlabError(
                f"--demosaic {method} runs a Bayer denoiser, then LibRaw; {denoiser.name!r} is a joint "
                "demosaic+denoise model: drop --demosaic, or pass a Bayer denoiser with --model"
            )
        supported, _ = available_demosaics()
        if method not in supported:
            raise RawlabError(
                f"this rawpy build has no {method} demosaic (LibRaw's GPL demosaic packs); choose one of "
                f"{', '.join(supported)}"
            )
        self.denoiser, self.method = denoiser, method

    @property
    def name(self) -> str:
        return f"{self.denoiser.name} + LibRaw {self.method}"

    def __getattr__(self, item):  # only for what this class does not define: the wrapped runtime's
        if item == "denoiser":  # not set yet (a copy being built): no recursion
            raise AttributeError(item)
        return getattr(self.denoiser, item)

    def demosaic(self, x: np.ndarray, a, b, cfa: str) -> np.ndarray:
        """Packed normalised planes ``(h, w, 4)`` of a ``cfa`` mosaic with noise ``(a, b)`` -> clean linear
        camera RGB ``(2h, 2w, 3)`` float32, normalised: the denoiser's estimate through LibRaw's demosaic."""
        return demosaic(self.denoiser.denoise(x, a, b, cfa=cfa), cfa, self.method)
