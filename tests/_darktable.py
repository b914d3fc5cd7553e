"""darktable-cli, a real client of rawlab's DNGs and noise profiles (Debian's `darktable` package gives it):
render a file to a TIFF, load a ``noiseprofiles.json`` through darktable's own verifier, and a skip marker for
machines without it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

needs_darktable = pytest.mark.skipif(
    shutil.which("darktable-cli") is None, reason="darktable-cli is not installed"
)


def darktable_render(dng: Path, tmp: Path) -> np.ndarray:
    """``dng`` rendered by ``darktable-cli`` with its default processing (a private config and an in-memory
    library, so nothing outside ``tmp`` is touched): the TIFF's pixels, float64."""
    import tifffile

    out = tmp / f"{Path(dng).stem}_dt.tif"
    proc = subprocess.run(
        ["darktable-cli", str(dng), str(out), "--core", "--configdir", str(tmp / "dtconf"), "--library", ":memory:"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and out.is_file(), proc.stdout + proc.stderr
    return tifffile.imread(out).astype(np.float64)


def darktable_noiseprofile_log(profiles: Path, tmp: Path) -> list[str]:
    """darktable's own log of loading ``profiles`` as its noise-profile file (``--noiseprofiles``, with ``-d
    control``): the ``[noiseprofile]`` lines, its verifier's findings and errors. darktable reads the file at
    start-up, before it opens any image, so the image argument is a name that does not exist (the run then fails
    on it; only the log is read). A private config and an in-memory library keep everything inside ``tmp``."""
    proc = subprocess.run(
        ["darktable-cli", str(tmp / "no-such-image.dng"), str(tmp / "unused.jpg"), "--core", "--configdir",
         str(tmp / "dtconf"), "--library", ":memory:", "--noiseprofiles", str(profiles), "-d", "control"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "[noiseprofile]" in line]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two renders' pixels: tone curves and colour matrices keep ranks."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
