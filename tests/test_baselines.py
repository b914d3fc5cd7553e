"""Classical baselines: the generalised Anscombe transform's exact unbiased inverse, the denoisers, the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rawlab.deploy.classical import BASELINES, GAT, available_baselines, denoise_baseline
from rawlab.evaluation.metrics import psnr, ssim


def _expected_f_reference(lam: float, s2: float, u_lo: float | None = None) -> float:
    """E[f(z)] for z = Poisson(lam) + N(0, s2) (count units), by scipy's adaptive quadrature: independent of
    the tabulation in rawlab.deploy.classical."""
    from scipy.integrate import quad
    from scipy.stats import poisson

    c = 0.375 + s2
    sigma = math.sqrt(s2)
    total = 0.0
    for k in range(int(lam + 12 * math.sqrt(lam) + 15) + 1):
        p = poisson.pmf(k, lam)
        if p < 1e-16:
            continue

        def integrand(n, k=k):
            u = k + n if u_lo is None else max(k + n, u_lo)
            return 2 * math.sqrt(max(u + c, 0.0)) * math.exp(-0.5 * (n / sigma) ** 2)

        val, _ = quad(integrand, -10 * sigma, 10 * sigma, points=[-c - k, (u_lo or 0) - k], limit=200)
        total += p * val / (sigma * math.sqrt(2 * math.pi))
    return total


@pytest.mark.parametrize(
    ("a", "b", "lower"),
    [(2e-2, 5e-4, None), (1e-3, 4e-6, None), (2e-2, 5e-4, 0.0)],
    ids=["high-noise", "read-dominated", "black-clipped"],
)
def test_exact_unbiased_inverse_recovers_the_mean(a, b, lower):
    vst = GAT(a, b, lower)
    s2 = b / a**2
    for lam in (0.0, 0.3, 1.0, 3.0, 10.0, 40.0, 200.0):
        ef = _expected_f_reference(max(lam, 1e-12), s2, None if lower is None else lower / a)
        # The forward expectation matches the independent computation, and the inverse undoes it to well
        # under a thousandth of a photo-electron (the algebraic inverse is off by about a quarter).
        assert vst.expected(np.array([lam * a]))[0] == pytest.approx(ef, abs=1.5e-4)
        assert vst.inverse(np.array([ef]))[0] / a == pytest.approx(lam, abs=5e-4)
    if lower is None:  # the algebraic inverse is biased by about -1/4 count where the exact one is not
        ef = _expected_f_reference(3.0, s2)
        assert vst.inverse_algebraic(np.array([ef]))[0] / a == pytest.approx(3.0 - 0.25, abs=0.05)


def test_inverse_is_continuous_over_the_whole_range():
    vst = GAT(1e-5, 1e-9)  # a 16-bit-like low-ISO channel: up to 1e5 counts, past the table's top
    x = np.geomspace(1e-7, 1.5, 4000)
    back = vst.inverse(vst.expected(x))
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-9)
    assert np.all(np.diff(vst.expected(x)) > 0)


def test_forward_stabilises_the_variance():
    rng = np.random.default_rng(0)
    a, b = 8e-3, 1e-4
    vst = GAT(a, b)
    for x in (0.05, 0.2, 0.8):
        z = rng.poisson(x / a, 200_000) * a + rng.standard_normal(200_000) * math.sqrt(b)
        assert np.var(vst.forward(z)) == pytest.approx(1.0, abs=0.03)


def _photos() -> list[np.ndarray]:
    """Five scikit-image photographs, linearised (inverse sRGB gamma) and packed RGGB, (h/2, w/2, 4)."""
    import skimage.data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle"):
        img = getattr(skimage.data, name)()
        img = (img[0] if isinstance(img, tuple) else img)[..., :3] / 255.0
        img = np.where(img <= 0.04045, img / 12.92, ((img + 0.055) / 1.055) ** 2.4)
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = img[:h, :w]
        planes = [img[0::2, 0::2, 0], img[0::2, 1::2, 1], img[1::2, 0::2, 1], img[1::2, 1::2, 2]]
        out.append(np.stack(planes, axis=-1))
    return out


# docs/architecture.md, "Known facts about the stack": (a, b) -> noisy, VST+wavelet, VST+NL-means PSNR (dB) on five packed photographs.
_DESIGN_TABLE = {
    (5e-4, 1e-6): (41.9, 42.7, 43.9),
    (2e-3, 1e-5): (35.8, 37.5, 39.1),
    (8e-3, 1e-4): (29.5, 32.9, 34.7),
    (2e-2, 5e-4): (25.1, 30.0, 31.9),
}


def test_baselines_gain_what_design_measured():
    """Each baseline gains over the noisy input at every level, by what docs/architecture.md records, within 0.7 dB.

    The absolute PSNRs depend on the photographs' brightness (DESIGN's set is darker than this one), the gain
    over the noisy input much less.
    """
    photos = _photos()
    rng = np.random.default_rng(0)
    for (a, b), (noisy_ref, wav_ref, nlm_ref) in _DESIGN_TABLE.items():
        got = {m: [] for m in ("identity", "vst-wavelet", "vst-nlm", "vst-dct")}
        for x in photos:
            z = rng.poisson(x / a) * a + rng.standard_normal(x.shape) * math.sqrt(b)
            for m in got:
                got[m].append(psnr(denoise_baseline(m, z, [a] * 4, [b] * 4), x))
        mean = {m: float(np.mean(v)) for m, v in got.items()}
        gain_wav, gain_nlm = mean["vst-wavelet"] - mean["identity"], mean["vst-nlm"] - mean["identity"]
        assert gain_wav > 0.3 and gain_nlm > gain_wav, (a, b, mean)
        assert gain_wav == pytest.approx(wav_ref - noisy_ref, abs=0.7), (a, b, mean)
        assert gain_nlm == pytest.approx(nlm_ref - noisy_ref, abs=0.7), (a, b, mean)
        # rawlab's sliding DCT (no design figure: it came later) beats the wavelet on every photograph and
        # NL-means on the mean (measured: by 0.9-1.9 dB, and by 0.25-0.36 dB).
        assert min(np.subtract(got["vst-dct"], got["vst-wavelet"])) > 0, (a, b, got)
        assert mean["vst-dct"] > mean["vst-nlm"], (a, b, mean)


def test_dct_wiener_averages_flat_regions_and_keeps_any_shape():
    from rawlab.deploy.classical import dct_wiener

    # A flat region under unit noise: every window keeps its mean and Wiener-shrinks the rest to nearly
    # nothing, so the estimate's error is about one window's mean over its 8 x 8 x 4 samples (1/256), far below
    # the input's (1); allow four times that for the few coefficients noise pushes above the threshold.
    flat = np.full((128, 96, 4), 10.0, np.float32)
    noisy = flat + np.random.default_rng(0).standard_normal(flat.shape).astype(np.float32)
    assert float(np.mean((dct_wiener(noisy) - flat) ** 2)) < 4 / 256
    # A step of 12 noise sigmas survives: the windows across it keep the edge's coefficients.
    step = np.zeros((64, 64, 4), np.float32)
    step[:, 32:] = 12.0
    est = dct_wiener(step + np.random.default_rng(1).standard_normal(step.shape).astype(np.float32))
    assert float(np.mean(est[:, 33:] - est[:, :31])) == pytest.approx(12.0, abs=0.1)
    # Any size (windows pad past a ragged edge and shrink on a small frame), three channels too.
    rng = np.random.default_rng(2)
    for shape in [(63, 41, 4), (5, 7, 4), (40, 30, 3)]:
        y = rng.standard_normal(shape).astype(np.float32)
        out = dct_wiener(y)
        assert out.shape == shape and out.dtype == np.float32 and np.mean(out**2) < 0.1
    one_row = rng.standard_normal((1, 9, 4)).astype(np.float32)
    assert np.array_equal(dct_wiener(one_row), one_row)  # no 2 x 2 window fits: returned as it is


def test_exact_inverse_beats_the_algebraic_one_at_high_noise():
    from rawlab.deploy.classical import _wavelet

    x = _photos()[0]
    a, b = 2e-2, 5e-4
    z = (
        np.random.default_rng(1).poisson(x / a) * a
        + np.random.default_rng(2).standard_normal(x.shape) * b**0.5
    )
    vst = GAT(a, b)
    d = _wavelet(vst.forward(z))
    assert psnr(vst.inverse(d), x) > psnr(vst.inverse_algebraic(d), x) + 0.05


def test_baseline_api():
    x = np.random.default_rng(0).uniform(0, 1, (24, 20, 4)).astype(np.float32)
    ident = denoise_baseline("identity", x, [1e-3] * 4, [1e-6] * 4)
    assert ident.dtype == np.float32 and np.array_equal(ident, x) and ident is not x
    out = denoise_baseline("vst-wavelet", x, [1e-3] * 4, [1e-6] * 4, lower=[0.0] * 4)
    assert out.shape == x.shape and out.dtype == np.float32 and np.all(out >= 0)
    with pytest.raises(ValueError, match="unknown baseline"):
        denoise_baseline("median", x, [1e-3] * 4, [1e-6] * 4)
    with pytest.raises(ValueError, match="a > 0"):
        GAT(0.0, 1e-6)
    assert set(available_baselines()) <= set(BASELINES)
    try:
        import bm3d  # noqa: F401
    except ImportError:
        assert "vst-bm3d" not in available_baselines()


def test_metrics_known_values():
    x = np.random.default_rng(0).uniform(0.1, 0.9, (32, 32, 4))
    assert psnr(x + 0.01, x) == pytest.approx(40.0)  # MSE 1e-4, data range 1
    assert psnr(x - 0.1, x) == pytest.approx(20.0)
    assert psnr(x, x) == math.inf
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = x + np.random.default_rng(1).normal(0, 0.05, x.shape)
    from skimage.metrics import structural_similarity

    per_channel = [
        structural_similarity(noisy[..., c], x[..., c], data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for c in range(4)
    ]  # fmt: skip
    assert ssim(noisy, x) == pytest.approx(np.mean(per_channel))
    assert 0 < ssim(noisy, x) < ssim(x + 0.01, x) < 1
    small = x[:8, :8]  # smaller than the Gaussian window: a smaller uniform window, not an error
    assert 0.9 < ssim(small + 0.01, small) < 1
    with pytest.raises(ValueError, match="shape"):
        psnr(x[:-1], x)


@pytest.mark.slow  # bm3d takes ~10 s even on a 64x64 crop (fixed overheads per call)
def test_bm3d_when_installed():
    pytest.importorskip("bm3d")  # optional, non-commercial licence: never a dependency
    x = _photos()[0][96:160, 96:160]
    a, b = 8e-3, 1e-4
    z = (
        np.random.default_rng(3).poisson(x / a) * a
        + np.random.default_rng(4).standard_normal(x.shape) * b**0.5
    )
    assert "vst-bm3d" in available_baselines()
    assert psnr(denoise_baseline("vst-bm3d", z, [a] * 4, [b] * 4), x) > psnr(z, x) + 2
