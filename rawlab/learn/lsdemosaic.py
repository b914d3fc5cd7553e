"""``"ls"``: a fixed linear demosaic fitted by least squares, for the joint model (``model.spec.demosaic``).

The joint model adds its learned correction to a fixed linear demosaic of the (denoised) mosaic, a 3x3
convolution on packed RGGB planes (:func:`rawlab.learn.models.linear_demosaic`). Malvar-He-Cutler's is one
point of that family, chosen by hand; this module fits the family's weights to scenes' linear camera RGB:

    minimise  sum |K * p - t|^2 + mu |K - K_mhc|^2   subject to   K reproducing every flat colour exactly,
                                                               and K unchanged by the mosaic's symmetries

where ``p`` is each 3x3 packed neighbourhood of the RGGB mosaic of a scene and ``t`` the scene's RGB at the
four mosaic pixels of the centre cell.

- **Flat colours** (for each output colour, the weights on planes of that colour sum to 1 and on the others
  to 0, as bilinear's and MHC's do): the colour of flat regions stays exact whatever the scenes' colours.
- **Symmetry** (:func:`symmetric_basis`): the self-ensemble's 8 flips and transposes, each keeping the RGGB
  phase, map the demosaic onto itself, as they map MHC's; 63 of the 432 weights stay free. Without it the fit
  also learnt the photographs' orientations, and the joint runtime's demosaic would depend on whether it ran
  before or after the ensemble's mean.
- **The pull toward MHC** (``mu``, relative to the data's mean diagonal) keeps what the scenes cannot pin
  down where MHC has it. ``mu`` was chosen by leaving each photograph out in turn, on the fitting scenes only
  (:func:`choose_mu`: the best worst case).
- **The scenes**, as in the built-in model's training recipe, are half photographs and half procedural
  dead-leaves scenes: the bundled photographs that no benchmark holds out (:data:`FIT_SCENES`), rendered in
  the linear camera RGB of the two training sensors (SynthCam PG-1 and MP-2; the other two virtual sensors
  stay unseen), and :data:`N_PROCEDURAL` dead-leaves scenes (:func:`rawlab.synth.procedural.dead_leaves`,
  seed :data:`SEED`) weighted to count as much; each in its 8 flips and transposes. Photographs alone teach
  the kernel their colours' correlation, which a strongly coloured scene does not share (fitted on them
  alone, before the symmetry, it lost 0.6 to 2.2 dB to MHC on the retina photograph); the dead leaves'
  random colours do not.

On the clean mosaics of the demosaic benchmark's held-out photographs (coffee, rocket, retina,
stereo_motorcycle) and the burst benchmark's (chelsea too; none entered the fit) at 384x512 it is 0.31 to 1.31
dB closer to the truth than MHC, in each of the four virtual sensors' camera RGB. The shipped weights are
``ls_demosaic.npy`` beside this module; ``python scripts/fit_linear_demosaic.py`` writes them again (about
10 s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "FIT_SCENES",
    "FIT_SENSORS",
    "KERNEL_PATH",
    "MU",
    "choose_mu",
    "cpsnr",
    "demosaic",
    "demosaic_planes",
    "fit",
    "fit_shipped",
    "ls_kernel",
    "normal_equations",
]

FIT_SCENES = ("astronaut", "immunohistochemistry", "hubble_deep_field")  # chelsea: the burst benchmark's
FIT_SENSORS = ("SynthCam PG-1", "SynthCam MP-2")
FIT_SIZE = (384, 512)  # (height, width) of each rendered scene, as the demosaic benchmark's frames
MU = 1e-2  # chosen by choose_mu (leave one photograph out; the best worst case)
N_PROCEDURAL = 16
SEED = 20261206
KERNEL_PATH = Path(__file__).with_name("ls_demosaic.npy")
_PLANE_COLOUR = (0, 1, 1, 2)  # R, G1, G2, B of an RGGB cell


def _planes(rgb: np.ndarray) -> np.ndarray:
    """The RGGB mosaic of linear RGB ``(H, W, 3)`` as packed planes ``(H/2, W/2, 4)``."""
    from ..synth.procedural import mosaic

    return np.moveaxis(mosaic(rgb, "RGGB"), 0, -1)


def _targets(rgb: np.ndarray) -> np.ndarray:
    """RGB at the four mosaic pixels of each cell ``(H/2, W/2, 12)``, ordered ``(dy, dx, colour)`` as the
    packed demosaic's outputs."""
    return np.concatenate([rgb[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)], -1)


def _neighbourhoods(planes: np.ndarray) -> np.ndarray:
    """Each cell's 3x3 packed neighbourhood ``(h, w, 36)``, ordered as the kernel's ``(3, 3, 4)`` (one cell of
    edge padding, as :func:`rawlab.learn.models.linear_demosaic` pads)."""
    q = np.pad(planes, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = planes.shape[:2]
    return np.concatenate([q[i : i + h, j : j + w] for i in range(3) for j in range(3)], -1)


def _dihedral(rgb: np.ndarray) -> Iterable[np.ndarray]:
    for t in (False, True):
        img = rgb.transpose(1, 0, 2) if t else rgb
        for fy in (1, -1):
            for fx in (1, -1):
                out = img[::fy, ::fx]
                yield out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]


def normal_equations(scenes: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``X'X`` ``(36, 36)`` and ``X'Y`` ``(36, 12)`` over linear RGB ``scenes`` and their 8 flips and
    transposes."""
    xtx, xty = np.zeros((36, 36)), np.zeros((36, 12))
    for rgb in scenes:
        for img in _dihedral(np.asarray(rgb, np.float64)):
            x = _neighbourhoods(_planes(img)).reshape(-1, 36)
            xtx += x.T @ x
            xty += x.T @ _targets(img).reshape(-1, 12)
    return xtx, xty


def demosaic_planes(planes: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Packed RGGB planes ``(h, w, 4)`` demosaicked by a packed ``kernel`` (``(3, 3, 4, 12)``, or flattened
    ``(36, 12)``): RGB ``(2h, 2w, 3)``, in NumPy (the network's is :func:`rawlab.learn.models.linear_demosaic`)."""
    h, w = planes.shape[:2]
    out = _neighbourhoods(np.asarray(planes, np.float64)) @ np.asarray(kernel, np.float64).reshape(36, 12)
    return out.reshape(h, w, 2, 2, 3).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, 3)


@lru_cache(maxsize=1)
def symmetric_basis() -> np.ndarray:
    """An orthonormal basis ``(432, r)`` of the kernels (flattened ``(36, 12)``) that the self-ensemble's 8
    flips and transposes leave unchanged: demosaicking a mosaic transformed by one of them (and cropped by a
    pixel to keep the RGGB phase, :func:`rawlab.learn.augment.bayer_crop`) and mapping the RGB back gives the
    same image, away from the edges. Malvar-He-Cutler's and bilinear's kernels are such kernels; a fitted one
    must be too, or the joint model's output would depend on how the runtime orders the demosaic and the
    ensemble's mean. Found as the null space of the equivariance conditions on random mosaics (each a linear
    function of the kernel, probed one weight at a time)."""
    from .augment import bayer_crop, op_bits

    rng = np.random.default_rng(0)
    size, margin = 24, 6
    rows = []
    for op in range(1, 8):
        t, fy, fx = op_bits(op)
        oy, ox = bayer_crop("RGGB", op)
        mosaic = rng.random((size, size))
        m = mosaic.T if t else mosaic
        m = m[:: -1 if fy else 1, :: -1 if fx else 1][oy : oy + size - 2, ox : ox + size - 2]
        planes = _planes(
            np.repeat(mosaic[..., None], 3, -1)
        )  # the mosaic's own samples, any colour reads them
        moved = _planes(np.repeat(m[..., None], 3, -1))
        diffs = []
        for j in range(432):
            e = np.zeros(432)
            e[j] = 1
            direct = demosaic_planes(planes, e)
            back = np.zeros((size, size, 3))
            back[oy : oy + size - 2, ox : ox + size - 2] = demosaic_planes(moved, e)
            back = back[:: -1 if fy else 1, :: -1 if fx else 1]
            back = back.transpose(1, 0, 2) if t else back
            diffs.append((direct - back)[margin:-margin, margin:-margin].ravel())
        rows.append(np.stack(diffs, 1))
    _, sv, vt = np.linalg.svd(np.concatenate(rows), full_matrices=True)
    rank = int(np.sum(sv > 1e-9 * sv[0]))
    return vt[rank:].T


def fit(xtx: np.ndarray, xty: np.ndarray, mu: float = MU) -> np.ndarray:
    """The constrained, regularised least-squares kernel ``(3, 3, 4, 12)`` float32 (module docstring), within
    the kernels the self-ensemble's flips and transposes leave unchanged (:func:`symmetric_basis`); ``mu``
    relative to the mean of ``X'X``'s diagonal."""
    from .models import mhc_kernel

    prior = mhc_kernel().astype(np.float64).reshape(-1)
    lam = mu * np.trace(xtx) / 36
    # Parameters flattened as (36, 12): index 12 i + o. The data term is the same X'X for every output o.
    a = np.kron(xtx + lam * np.eye(36), np.eye(12))
    b = (xty + lam * prior.reshape(36, 12)).reshape(-1)
    flat = np.zeros((36, 432))  # for each output, its weights on its own colour's samples sum to 1, others' 0
    target = np.zeros(36)
    for o in range(12):
        for colour in range(3):
            for i in range(36):
                if _PLANE_COLOUR[i % 4] == colour:
                    flat[3 * o + colour, 12 * i + o] = 1
            target[3 * o + colour] = float(colour == o % 3)
    n = symmetric_basis()
    an, bn, cn = n.T @ a @ n, n.T @ b, flat @ n
    # Every kernel meeting the flat-colour conditions: one that does, plus the conditions' null space (the
    # symmetric subspace makes some of the 36 conditions repeat others); minimise over that exactly.
    z0 = np.linalg.pinv(cn) @ target
    _, sv, vt = np.linalg.svd(cn)
    free = vt[int(np.sum(sv > 1e-9 * sv[0])) :].T
    w = np.linalg.solve(free.T @ an @ free, free.T @ (bn - an @ z0))
    return (n @ (z0 + free @ w)).reshape(3, 3, 4, 12).astype(np.float32)


def _scene_equations(
    scenes: Sequence[str], sensors: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from ..synth.scenes import render_scene_rgb
    from ..synth.sensors import SENSORS

    by_name = {s.name: s for s in SENSORS}
    return {
        scene: normal_equations(render_scene_rgb(scene, by_name[s], *FIT_SIZE) for s in sensors)
        for scene in scenes
    }


def _procedural_equations() -> tuple[np.ndarray, np.ndarray]:
    from ..synth.procedural import dead_leaves

    rng = np.random.default_rng(SEED)
    return normal_equations(dead_leaves(rng, *FIT_SIZE) for _ in range(N_PROCEDURAL))


def _with_procedural(photo: tuple[np.ndarray, np.ndarray], procedural) -> tuple[np.ndarray, np.ndarray]:
    """The photographs' equations plus the procedural scenes', weighted to the same total (half and half)."""
    w = np.trace(photo[0]) / np.trace(procedural[0])
    return photo[0] + w * procedural[0], photo[1] + w * procedural[1]


def choose_mu(
    mus: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1), scenes: Sequence[str] = FIT_SCENES
) -> dict[float, tuple[float, float]]:
    """For each ``mu``, the mean and the worst gain (dB, CPSNR of the clean mosaic's demosaic over MHC's) on
    each photograph of ``scenes`` when the kernel is fitted on the others (and the procedural scenes); the
    best worst case is :data:`MU`."""
    from ..synth.scenes import render_scene_rgb
    from ..synth.sensors import SENSORS
    from .models import mhc_kernel

    eqs = _scene_equations(scenes, FIT_SENSORS)
    procedural = _procedural_equations()
    by_name = {s.name: s for s in SENSORS}
    out = {}
    for mu in mus:
        gains = []
        for held in scenes:
            photo = tuple(sum(e[i] for s, e in eqs.items() if s != held) for i in (0, 1))
            k = fit(*_with_procedural(photo, procedural), mu)
            for sensor in FIT_SENSORS:
                rgb = render_scene_rgb(held, by_name[sensor], *FIT_SIZE)
                gains.append(cpsnr(demosaic(rgb, k), rgb) - cpsnr(demosaic(rgb, mhc_kernel()), rgb))
        out[mu] = (float(np.mean(gains)), float(np.min(gains)))
    return out


def demosaic(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The RGGB mosaic of linear RGB ``(H, W, 3)`` demosaicked by a packed ``kernel``: ``(H, W, 3)``."""
    return demosaic_planes(_planes(np.asarray(rgb, np.float64)), kernel)


def cpsnr(x: np.ndarray, truth: np.ndarray, margin: int = 4) -> float:
    """CPSNR (dB, peak 1) of ``x`` against ``truth`` without a ``margin`` of pixels at the edges."""
    e = (np.asarray(x, np.float64) - truth)[margin:-margin, margin:-margin]
    return float(10 * np.log10(1.0 / np.mean(e**2)))


def fit_shipped() -> np.ndarray:
    """The kernel as shipped: :data:`FIT_SCENES` in :data:`FIT_SENSORS`' camera RGB and the procedural scenes,
    ``mu`` = :data:`MU`."""
    eqs = _scene_equations(FIT_SCENES, FIT_SENSORS)
    photo = (sum(e[0] for e in eqs.values()), sum(e[1] for e in eqs.values()))
    return fit(*_with_procedural(photo, _procedural_equations()), MU)


@lru_cache(maxsize=1)
def ls_kernel() -> np.ndarray:
    """The shipped kernel ``(3, 3, 4, 12)`` float32 (``ls_demosaic.npy``)."""
    return np.load(KERNEL_PATH).astype(np.float32)
