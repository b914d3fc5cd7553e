"""`rawlab denoise RAW --output rgb` on every real Bayer sample in ../shared/raw-samples (issue 13's "done
when"): each decodes, is demosaiced and denoised by a joint model, and comes out as linear RGB of the raw's
visible size. A small perturbed joint model keeps it fast; the test skips when ../shared is absent."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _models import make_joint_model
from click.testing import CliRunner

from rawlab.cli import main


@pytest.mark.samples
@pytest.mark.slow  # 23 files of up to 9 MP: 157 s on the shared 2-core machine under a training run
def test_denoise_output_rgb_on_every_real_bayer_sample(samples_dir, tmp_path, client):
    from rawlab.rawio import read_info

    model = tmp_path / "joint"
    make_joint_model(model, tile={"size": 128, "overlap": 16})  # larger tiles: fewer overlaps to compute
    files = sorted((samples_dir / "bayer").iterdir())
    res = CliRunner().invoke(main, ["denoise", str(samples_dir / "bayer"), "--model", str(model),
                                    "--output", "rgb", "--format", "tiff", "--out", str(tmp_path / "out"),
                                    "--scheduler", client.scheduler.address, "--strict"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"{len(files)} of {len(files)} files denoised" in res.output
    for src in files:
        info = read_info(str(src))
        rgb = tifffile.imread(tmp_path / "out" / src.with_suffix(".tiff").name)
        # The linear TIFF is the mosaic's size (LibRaw's visible area, as rawlab reads it), 16-bit RGB.
        assert rgb.shape == (info.height, info.width, 3) and rgb.dtype == np.uint16, src.name
        assert rgb.max() > 0, src.name  # not an empty image
