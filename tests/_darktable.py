"""darktable-cli, a real client of rawlab's DNGs (Debian's `darktable` package gives it): render a file to a
TIFF, and a skip marker for machines without it."""

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


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two renders' pixels: tone curves and colour matrices keep ranks."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
