"""LibRaw's demosaics of rawlab's packed planes, as linear camera RGB.

They are the classical demosaics rawlab's evaluation scores (:mod:`rawlab.evaluation.demosaic`), what ``rawlab
denoise --output rgb --demosaic METHOD`` runs after a Bayer denoiser (:class:`rawlab.deploy.libraw.LibRawDemosaic`),
and the demosaic the burst merge resamples an alternate frame through (:func:`rawlab.burst.resample.mosaic_tiles`,
DHT). It sits in layer 1, beside ``rawio`` and ``dng``, so that ``evaluation``, ``deploy`` and ``burst`` can all
import it.

Every demosaic goes through one path: rawlab's normalised planes (``bayer.normalise``, the
one home of normalising DN) written as a 16-bit DNG with black 0 and white 65535, read back by rawpy and
demosaiced with ``output_color=raw`` (camera RGB, no colour matrix), ``gamma=(1, 1)``, no auto-brightness,
``user_wb=(1, 1, 1, 1)`` (the same white balance, none, for every method), highlights clipped and
``adjust_maximum_thr=0`` (by default LibRaw takes the data's maximum for white when it lies above 0.75 of
white, which scaled a dim frame by up to 1/0.75), then divided by 65535. LibRaw scales by ``65535 / (white - black)``
with one black for all channels, so writing the levels rawlab normalised with makes that scale exactly 1 (a camera's
own DNG with per-channel blacks would be off by up to ``(b_max - b_min) / (white - b_min)``, 0.2 % on a 10-bit phone
sensor); what is left is quantisation to 1/65535 and LibRaw clipping the noise below black to 0, as it does for every
raw (tests/test_demosaic_eval.py checks the linearity against the truth). This module calls rawpy itself because it
post-processes a DNG it wrote, not a camera raw (``rawio`` stays the home of reading raws).

**One OpenMP thread.** LibRaw's DHT refines each row's directions from its neighbours' while other OpenMP threads
rewrite them, so with several threads a few pixels change from run to run (on a 12 MP frame, 2 threads: about 1 in
70 000 values, by up to 3 % of white). Every demosaic therefore runs with LibRaw's OpenMP runtime held to one
thread (:func:`one_openmp_thread`): the same planes give the same RGB, bit for bit. Measured on 2 cores, 12 MP: DHT
2.05 s -> 2.69 s, AHD and AAHD unchanged.
"""

from __future__ import annotations

import ctypes
import glob
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from .bayer import unpack

__all__ = [
    "DEMOSAICS",
    "available_demosaics",
    "demosaic",
    "demosaic_all",
    "one_openmp_thread",
]

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


@lru_cache(maxsize=1)
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime rawpy's LibRaw runs on, or None (a build without OpenMP, or none found).

    rawpy's wheels carry their own ``libgomp`` beside the package (``rawpy.libs`` on Linux, ``rawpy/.dylibs`` on
    macOS); a rawpy built against the system's finds it among the libraries this process has loaded. Opening a
    loaded library again returns that same library, so the thread count set on it is the one LibRaw reads.
    """
    import rawpy

    if not rawpy.flags.get("OPENMP", False):
        return None
    here = os.path.dirname(rawpy.__file__)
    candidates = [
        *sorted(glob.glob(os.path.join(here, os.pardir, "rawpy.libs", "*omp*"))),
        *sorted(glob.glob(os.path.join(here, ".dylibs", "*omp*"))),
    ]
    try:
        with open("/proc/self/maps") as maps:  # Linux: an OpenMP runtime already loaded from elsewhere
            candidates += sorted(
                {ln.split()[-1] for ln in maps if "omp" in os.path.basename(ln.split()[-1])} - set(candidates)
            )
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            lib.omp_set_num_threads, lib.omp_get_max_threads  # noqa: B018 - both or neither
        except (OSError, AttributeError):
            continue
        lib.omp_set_num_threads.argtypes, lib.omp_get_max_threads.restype = [ctypes.c_int], ctypes.c_int
        return lib
    return None


@contextmanager
def one_openmp_thread() -> Iterator[int | None]:
    """Run the block with LibRaw's OpenMP runtime held to one thread (the module docstring: DHT races with more);
    the calling thread's setting is restored after. Yields the thread count it replaced (None: no runtime)."""
    lib = _openmp_runtime()
    if lib is None:
        yield None
        return
    before = lib.omp_get_max_threads()
    lib.omp_set_num_threads(1)
    try:
        yield before
    finally:
        lib.omp_set_num_threads(before)


def _to_dng(path: str, planes: np.ndarray, cfa: str) -> None:
    from .dng import write_dng

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
        with rawpy.imread(path) as raw, one_openmp_thread():
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
