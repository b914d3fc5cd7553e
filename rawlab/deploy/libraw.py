"""A Bayer denoiser followed by one of LibRaw's demosaics (:mod:`rawlab.demosaic`, the one path every LibRaw
demosaic in rawlab takes), for ``rawlab denoise --output rgb --demosaic METHOD``.

On the benchmark's held-out frames the built-in denoiser followed by LibRaw's DHT is above ``builtin-joint`` (the
built-in denoiser and a fixed linear demosaic) at 12 of 13 sensor-ISOs, by up to 1.8 dB (README, "Demosaicing").
"""

from __future__ import annotations

import numpy as np

from ..demosaic import DEMOSAICS, available_demosaics, demosaic
from ..errors import RawlabError

__all__ = ["LibRawDemosaic"]


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
