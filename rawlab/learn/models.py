"""The U-Net family: small Flax (linen) U-Nets on packed Bayer planes, ``(N, H/2, W/2, 4)`` in and out.

Only ops that jax2tf lowers to builtin TFLite ops at a fixed input shape are used (docs/architecture.md, "Known facts about the stack"):
3x3 and 2x2 convolutions, 2x2 stride-2 transposed convolutions for upsampling (never ``jax.image.resize`` or
``jnp.repeat``), concatenation, addition and leaky ReLU. The network predicts a residual that is added to its
input, so an untrained network is close to the identity and training starts from the noisy image.

Sizes (``rawlab.learn.models.describe``): ``tiny`` trains in seconds on a CPU (tests, the quick start);
``mobile`` is PMRID-class (Wang et al., ECCV 2020: about 1 M parameters, about 4 GMAC per mosaic megapixel);
``large`` is a wider 5-level U-Net for a GPU.

The joint demosaicking and denoising model (``UNetSpec.head = "rgb"``, config ``joint``) is the same U-Net with
a full-resolution head: 12 channels at packed resolution (2 x 2 positions x R, G, B) rearranged by
depth-to-space (a reshape and a 5-D transpose; TFLite RESHAPE/TRANSPOSE) into camera RGB ``(N, 2h, 2w, 3)`` at
mosaic resolution. It sees the mosaic in the RGGB phase only: :func:`to_rggb` flips any CFA's packed planes
into it (a flip of a Bayer mosaic is a Bayer mosaic of another phase) and :func:`from_rggb` flips the RGB
back, outside the network, so one network (and one export) serves every CFA. Its residual is on a fixed
bilinear demosaic of the input (``rawlab.deploy.render.demosaic_bilinear``'s, as a 3x3 packed convolution
after one packed pixel of edge padding, which is that function's mirrored border), so an untrained network
is exactly the bilinear demosaic.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..bayer import channel_offsets, from_rggb, to_rggb  # the CFA flips live with the CFAs

__all__ = [
    "ARCHS",
    "DEMOSAICS",
    "HEADS",
    "UNet",
    "UNetSpec",
    "bilinear_kernel",
    "build_model",
    "burst_spec",
    "demosaic_kernel",
    "describe",
    "from_rggb",
    "linear_demosaic",
    "macs_per_megapixel",
    "mhc_kernel",
    "to_rggb",
]

HEADS = ("bayer", "rgb")  # denoised packed planes; or linear camera RGB at mosaic resolution (joint model)
DEMOSAICS = ("bilinear", "mhc", "ls")  # the joint model's fixed linear demosaics (demosaic_kernel)


@dataclasses.dataclass(frozen=True)
class UNetSpec:
    """Architecture of one U-Net: channel width per level (top level first) and convolutions per block.

    ``in_channels`` is 4 (packed R, G1, G2, B) plus 4 when the network also takes a noise-level map.
    ``merge_frames`` ``K`` > 0: a burst model that takes the classical merge of its ``K`` aligned frames too,
    ``in_channels = 8 (K + 1)`` laid out ``[merged, frames, merged's noise map, frames' noise maps]`` (4 channels
    each): the U-Net proper sees the merged frame and its noise map (8 channels, as a single-frame model with a
    noise map, whose parameters it can start from), the frames and their noise maps enter through a
    zero-initialised 3x3 convolution added to the top level's features (``frames_in``), and the residual is added
    to the merged frame. Untrained in ``frames_in`` it is the single-frame model run on the merge.
    ``head`` is ``"bayer"`` (``out_channels`` 4: denoised packed planes) or ``"rgb"`` (``out_channels`` 3:
    camera RGB at mosaic resolution, from RGGB-phase input; the joint model).
    ``demosaic`` (``"rgb"`` only): the fixed linear demosaic the RGB residual is added to, ``"bilinear"``,
    ``"mhc"`` (Malvar, He and Cutler 2004: bilinear plus the centre channel's Laplacian, 2-3 dB closer to the
    truth on the synthetic scenes' clean mosaics) or ``"ls"`` (the same 3x3 packed family fitted by least
    squares to photographs and procedural scenes, :mod:`rawlab.learn.lsdemosaic`: 0.3 to 1.3 dB closer than
    MHC on held-out photographs' clean mosaics).
    ``denoise_first`` (``"rgb"`` only): the joint model also has the Bayer denoiser's head, and its fixed
    demosaic reads the denoised planes instead of the noisy ones; the Bayer head is created first, so it has the
    name a denoiser's has and the joint model can start from a denoiser of the same U-Net (``rawlab train
    --init``): untrained in its RGB head it is that denoiser followed by the fixed demosaic.
    """

    widths: tuple[int, ...]
    convs_per_block: int | tuple[int, ...] = 2
    in_channels: int = 4
    out_channels: int = 4
    negative_slope: float = 0.2
    head: str = "bayer"
    merge_frames: int = 0  # K of a burst model that also takes the classical merge of its K frames; 0: none
    denoise_first: bool = False  # rgb head: demosaic the Bayer head's denoised planes, not the input's
    demosaic: str = "bilinear"  # rgb head: the fixed linear demosaic under the residual (DEMOSAICS)

    def convs(self, level: int) -> int:
        c = self.convs_per_block
        return c if isinstance(c, int) else c[level]

    @property
    def denoiser(self) -> UNetSpec:
        """The Bayer denoiser inside a joint model that denoises first (``denoise_first``): the same U-Net with
        only the Bayer head, whose parameters are the joint model's less its RGB head."""
        return dataclasses.replace(
            self, head="bayer", out_channels=4, denoise_first=False, demosaic="bilinear"
        )

    @property
    def multiple(self) -> int:
        """Input height and width (packed pixels) must be a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["head"] == "bayer":  # the denoisers' config.json as before (fine-tuning compares it)
            del d["head"]
        for key in ("merge_frames", "denoise_first"):  # absent when off: older configs compare equal
            if not d[key]:
                del d[key]
        if d["demosaic"] == "bilinear":
            del d["demosaic"]
        return d

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
        frames = None
        if (
            s.merge_frames
        ):  # [merged, frames, sigma merged, sigma frames] -> the U-Net's 8 and the frames' 8 K
            c = 4 * (s.merge_frames + 1)
            frames = jnp.concatenate([x[..., 4:c], x[..., c + 4 :]], axis=-1)
            x = jnp.concatenate([x[..., :4], x[..., c : c + 4]], axis=-1)
        skips = []
        h = x
        for i, width in enumerate(s.widths):
            if i > 0:  # 2x2 stride-2 convolution: a learned downsampling that TFLite runs as CONV_2D
                h = nn.Conv(width, (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype)(h)
                h = nn.leaky_relu(h, s.negative_slope)
            h = _Block(width, s.convs(i), s.negative_slope, self.dtype)(h)
            if i == 0 and frames is not None:
                h = h + nn.Conv(width, (3, 3), padding="SAME", use_bias=False, kernel_init=nn.initializers.zeros,
                                dtype=self.dtype, name="frames_in")(frames)  # fmt: skip
            skips.append(h)
        for i in reversed(range(len(s.widths) - 1)):
            h = nn.ConvTranspose(s.widths[i], (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype)(h)
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = _Block(s.widths[i], s.convs(i), s.negative_slope, self.dtype)(h)
        if s.head == "rgb":  # 12 = (dy, dx, colour) at packed resolution, then depth-to-space
            planes = x[..., :4]
            if s.denoise_first:  # the Bayer head first: a denoiser's name for it (Conv_{levels - 1})
                planes = planes + nn.Conv(4, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype)(
                    h
                ).astype(x.dtype)
            residual = nn.Conv(12, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
            return depth_to_space(linear_demosaic(planes, s.demosaic) + residual.astype(x.dtype))
        # Zero-initialised head: an untrained network is exactly the identity, so training starts from the
        # noisy input rather than from noise.
        residual = nn.Conv(s.out_channels, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
        return x[..., : s.out_channels] + residual.astype(x.dtype)


@lru_cache(maxsize=1)
def bilinear_kernel() -> np.ndarray:
    """The bilinear demosaic of an RGGB mosaic as a 3x3 convolution on packed planes: ``(3, 3, 4, 12)`` (HWIO),
    output channel ``(2 dy + dx) * 3 + colour`` for the mosaic pixel ``(2i + dy, 2j + dx)``.

    Each missing colour is the mean of its nearest same-colour neighbours (kernels ``[1 2 1; 2 4 2; 1 2 1] / 4``
    for R and B, ``[0 1 0; 1 4 1; 0 1 0] / 4`` for G on the masked mosaic, as ``render.demosaic_bilinear``).
    """
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4
    colour = (0, 1, 1, 2)  # R, G1, G2, B at (0,0), (0,1), (1,0), (1,1) of an RGGB tile
    w = np.zeros((3, 3, 4, 12))
    for ch, (cy, cx) in enumerate(channel_offsets("RGGB")):
        kern = k_g if colour[ch] == 1 else k_rb
        for p in (-1, 0, 1):  # the input's packed offset from the output's packed pixel
            for q in (-1, 0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        my, mx = 2 * p + cy - dy, 2 * q + cx - dx  # mosaic offset of the sample
                        if abs(my) <= 1 and abs(mx) <= 1:
                            w[p + 1, q + 1, ch, (2 * dy + dx) * 3 + colour[ch]] += kern[my + 1, mx + 1]
    return w.astype(np.float32)


@lru_cache(maxsize=1)
def mhc_kernel() -> np.ndarray:
    """The Malvar-He-Cutler demosaic of an RGGB mosaic (ICASSP 2004) as a 3x3 convolution on packed planes,
    laid out as :func:`bilinear_kernel`.

    Each missing colour is its bilinear estimate corrected by the Laplacian of the sample's own colour (the
    paper's 5x5 filters, gains 1/2, 5/8 and 3/4): exact on any image whose channels are linear, and closer to
    the truth than bilinear where colours share their edges. A 5x5 mosaic filter reaches at most one packed
    pixel away, so the packed kernel is 3x3.
    """
    h = np.array(
        [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
    )
    g = np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]])
    d = np.array(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
    )
    own = np.zeros((5, 5))
    own[2, 2] = 8
    # (R, G, B) filters (x 8) at each site of an RGGB tile: h for a colour left and right of a green
    # site, its transpose for one above and below, d for the opposite corner colour, g for green.
    filters = {(0, 0): (own, g, d), (0, 1): (h, own, h.T), (1, 0): (h.T, own, h), (1, 1): (d, g, own)}
    site = {offset: ch for ch, offset in enumerate(channel_offsets("RGGB"))}
    w = np.zeros((3, 3, 4, 12))
    for (dy, dx), per_colour in filters.items():
        for colour, k in enumerate(per_colour):
            for u, v in zip(*np.nonzero(k), strict=True):
                my, mx = dy + u - 2, dx + v - 2  # the sample's mosaic position in the output's packed pixel
                w[my // 2 + 1, mx // 2 + 1, site[(my % 2, mx % 2)], (2 * dy + dx) * 3 + colour] += k[u, v] / 8
    return w.astype(np.float32)


def demosaic_kernel(name: str) -> np.ndarray:
    """The packed 3x3 kernel of a fixed linear demosaic in :data:`DEMOSAICS` (``"ls"``: fitted by least
    squares, :mod:`rawlab.learn.lsdemosaic`)."""
    if name == "ls":
        from .lsdemosaic import ls_kernel

        return ls_kernel()
    return {"bilinear": bilinear_kernel, "mhc": mhc_kernel}[name]()


def linear_demosaic(x, name: str = "bilinear"):
    """Packed RGGB-phase planes ``(N, h, w, 4)`` -> camera RGB at packed resolution ``(N, h, w, 12)`` by the
    fixed demosaic ``name`` (:func:`depth_to_space` gives ``(N, 2h, 2w, 3)``). One packed pixel of edge
    padding: for bilinear it is the mirrored mosaic border (mosaic pixel -1 is pixel 1, and 2h is 2h - 2),
    the only samples a 3x3 mosaic kernel reaches; MHC's 5x5 filters read pixel -2 as pixel 0 there."""
    x = jnp.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
    x = jnp.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
    k = jnp.asarray(demosaic_kernel(name), x.dtype)
    return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def depth_to_space(y):
    """``(N, h, w, 12)`` ordered ``(dy, dx, colour)`` -> ``(N, 2h, 2w, 3)``; a 5-D transpose (TFLite's limit)."""
    n, h, w, _ = y.shape
    y = y.reshape(n * h, w, 2, 2, 3).transpose(0, 2, 1, 3, 4)
    return y.reshape(n, 2 * h, 2 * w, 3)


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
    if spec.head not in HEADS or (spec.head == "rgb") != (spec.out_channels == 3):
        from ..errors import RawlabError

        raise RawlabError(
            f"model head {spec.head!r} with out_channels {spec.out_channels}: use head 'bayer' with 4 output "
            "channels, or 'rgb' with 3"
        )
    if spec.demosaic not in DEMOSAICS:
        from ..errors import RawlabError

        raise RawlabError(f"model.spec.demosaic {spec.demosaic!r}: choose one of {', '.join(DEMOSAICS)}")
    if (spec.denoise_first or spec.demosaic != "bilinear") and spec.head != "rgb":
        from ..errors import RawlabError

        raise RawlabError("model.spec.denoise_first and demosaic are for the joint model (head 'rgb') only")
    if noise_map and spec.in_channels == 4:
        spec = dataclasses.replace(spec, in_channels=8)
    return UNet(spec, dtype=dtype)


def burst_spec(arch: str | UNetSpec | dict[str, Any], frames: int, *, merge: bool = False) -> UNetSpec:
    """The burst model's spec (:mod:`rawlab.learn.burstdata`): ``arch``'s U-Net with ``frames`` aligned frames as
    channels, reference first, and each frame's noise map: ``in_channels = 8 * frames``, out 4 (the reference);
    ``merge``: the classical merge of the frames in front of them (``UNetSpec.merge_frames``), ``8 (frames + 1)``
    channels, the U-Net proper ``arch``'s own."""
    base = build_model(arch).spec
    if base.head != "bayer" or frames < 1:
        from ..errors import RawlabError

        raise RawlabError(
            f"a burst model needs a Bayer head and at least one frame, got {base.head!r}, {frames}"
        )
    k = int(frames)
    return dataclasses.replace(
        base, in_channels=8 * (k + merge), out_channels=4, merge_frames=k if merge else 0
    )


def macs_per_megapixel(spec: UNetSpec) -> float:
    """Multiply-accumulates per mosaic megapixel (one packed pixel is 4 mosaic pixels), counted analytically."""
    pixels = 1e6 / 4  # packed pixels at the top level
    macs, cin = 0.0, 8 if spec.merge_frames else spec.in_channels
    macs += pixels * 9 * (spec.in_channels - 8) * spec.widths[0] if spec.merge_frames else 0  # frames_in
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
    macs += pixels * cin * (12 + 4 * spec.denoise_first if spec.head == "rgb" else spec.out_channels)
    return macs


def describe(arch: str | UNetSpec, *, noise_map: bool = False) -> dict[str, Any]:
    """Parameter count and GMAC per mosaic megapixel of a named or explicit architecture."""
    import jax

    model = build_model(arch, noise_map=noise_map)
    x = jnp.zeros((1, model.spec.multiple, model.spec.multiple, model.spec.in_channels), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    n = sum(int(jnp.size(p)) for p in jax.tree_util.tree_leaves(params))
    return {"params": n, "gmac_per_mp": macs_per_megapixel(model.spec) / 1e9, "multiple": model.spec.multiple}
