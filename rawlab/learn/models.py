"""The U-Net family: small Flax (linen) U-Nets on packed Bayer planes, ``(N, H/2, W/2, 4)`` in and out.

Only ops that jax2tf lowers to builtin TFLite ops at a fixed input shape are used (docs/architecture.md, "Known facts about the stack"):
3x3 and 2x2 convolutions, 2x2 stride-2 transposed convolutions for upsampling (never ``jax.image.resize`` or
``jnp.repeat``), concatenation, addition and leaky ReLU. The network predicts a residual that is added to its
input, so an untrained network is close to the identity and training starts from the noisy image.

Sizes (``rawlab.learn.models.describe``): ``tiny`` trains in seconds on a CPU (tests, the quick start);
``mobile`` is PMRID-class (Wang et al., ECCV 2020: about 1 M parameters, about 4 GMAC per mosaic megapixel);
``large`` is a wider 5-level U-Net for a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["ARCHS", "UNet", "UNetSpec", "build_model", "describe", "macs_per_megapixel"]


@dataclasses.dataclass(frozen=True)
class UNetSpec:
    """Architecture of one U-Net: channel width per level (top level first) and convolutions per block.

    ``in_channels`` is 4 (packed R, G1, G2, B) plus 4 when the network also takes a noise-level map.
    """

    widths: tuple[int, ...]
    convs_per_block: int | tuple[int, ...] = 2
    in_channels: int = 4
    out_channels: int = 4
    negative_slope: float = 0.2

    def convs(self, level: int) -> int:
        c = self.convs_per_block
        return c if isinstance(c, int) else c[level]

    @property
    def multiple(self) -> int:
        """Input height and width (packed pixels) must be a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetSpec:
        c = d.get("convs_per_block", 2)
        return cls(
            **{**d, "widths": tuple(d["widths"]), "convs_per_block": c if isinstance(c, int) else tuple(c)}
        )


ARCHS: dict[str, UNetSpec] = {
    "tiny": UNetSpec(widths=(8, 16, 32), convs_per_block=1),
    # ~0.97 M parameters, ~4.1 GMAC per mosaic megapixel: one conv at full resolution keeps the MACs down.
    "mobile": UNetSpec(widths=(8, 16, 40, 80, 160), convs_per_block=(1, 2, 2, 2, 2)),
    "large": UNetSpec(widths=(16, 32, 64, 128, 256), convs_per_block=2),  # ~2.5 M, ~13 GMAC/MP
}


class _Block(nn.Module):
    features: int
    convs: int
    negative_slope: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for _ in range(self.convs):
            x = nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype)(x)
            x = nn.leaky_relu(x, self.negative_slope)
        return x


class UNet(nn.Module):
    """A U-Net that maps packed planes ``(N, h, w, in_channels)`` to a denoised ``(N, h, w, out_channels)``.

    The first ``out_channels`` input channels are the noisy signal; the output is that signal plus the
    network's residual. ``dtype`` is the computation's (e.g. ``jnp.bfloat16`` for training on a GPU); the
    parameters, the skip from the input and the output stay float32.
    """

    spec: UNetSpec
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        s = self.spec
        skips = []
        h = x
        for i, width in enumerate(s.widths):
            if i > 0:  # 2x2 stride-2 convolution: a learned downsampling that TFLite runs as CONV_2D
                h = nn.Conv(width, (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype)(h)
                h = nn.leaky_relu(h, s.negative_slope)
            h = _Block(width, s.convs(i), s.negative_slope, self.dtype)(h)
            skips.append(h)
        for i in reversed(range(len(s.widths) - 1)):
            h = nn.ConvTranspose(s.widths[i], (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype)(h)
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = _Block(s.widths[i], s.convs(i), s.negative_slope, self.dtype)(h)
        # Zero-initialised head: an untrained network is exactly the identity, so training starts from the
        # noisy input rather than from noise.
        residual = nn.Conv(s.out_channels, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
        return x[..., : s.out_channels] + residual.astype(x.dtype)


def build_model(arch: str | UNetSpec | dict[str, Any], *, noise_map: bool = False, dtype: Any = None) -> UNet:
    """The U-Net named ``arch`` (``tiny``, ``mobile``, ``large``), or one from an explicit spec.

    ``noise_map`` adds 4 input channels carrying the per-pixel noise standard deviation; ``dtype`` is the
    computation's (default float32; the parameters are float32 either way, so a model trained in bfloat16
    runs, exports and quantises as any other).
    """
    if isinstance(arch, str):
        if arch not in ARCHS:
            from ..errors import RawlabError

            raise RawlabError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")
        spec = ARCHS[arch]
    elif isinstance(arch, dict):
        spec = UNetSpec.from_dict(arch)
    else:
        spec = arch
    if noise_map and spec.in_channels == 4:
        spec = dataclasses.replace(spec, in_channels=8)
    return UNet(spec, dtype=dtype)


def macs_per_megapixel(spec: UNetSpec) -> float:
    """Multiply-accumulates per mosaic megapixel (one packed pixel is 4 mosaic pixels), counted analytically."""
    pixels = 1e6 / 4  # packed pixels at the top level
    macs, cin = 0.0, spec.in_channels
    for i, w in enumerate(spec.widths):
        if i > 0:
            pixels /= 4
            macs += pixels * 4 * cin * w
            cin = w
        for _ in range(spec.convs(i)):
            macs += pixels * 9 * cin * w
            cin = w
    for i in reversed(range(len(spec.widths) - 1)):
        w = spec.widths[i]
        pixels *= 4
        macs += pixels * cin * w  # 2x2 stride-2 transposed conv: each output pixel gets one tap per input
        cin = 2 * w
        for _ in range(spec.convs(i)):
            macs += pixels * 9 * cin * w
            cin = w
    macs += pixels * cin * spec.out_channels
    return macs


def describe(arch: str | UNetSpec, *, noise_map: bool = False) -> dict[str, Any]:
    """Parameter count and GMAC per mosaic megapixel of a named or explicit architecture."""
    import jax

    model = build_model(arch, noise_map=noise_map)
    x = jnp.zeros((1, model.spec.multiple, model.spec.multiple, model.spec.in_channels), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    n = sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(params))
    return {"params": n, "gmac_per_mp": macs_per_megapixel(model.spec) / 1e9, "multiple": model.spec.multiple}
