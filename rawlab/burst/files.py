"""Bursts of raw files in, one merged Bayer DNG out (``rawlab burst merge``).

Per burst (:func:`merge_files`): read every frame (:func:`rawlab.rawio.read_raw`; anything that is not a Bayer
raw is refused with its path and the reason), check that the frames belong together (same size, CFA, levels
and ISO; at least two), take the noise law of the reference frame from the caller's ``noise`` (the CLI gives
``rawlab denoise``'s rule: a ``--noise`` profile, else the DNG NoiseProfile, else a single-image estimate),
align and merge (:func:`rawlab.burst.merge.merge_burst`) and write a DNG of the reference's size, CFA, levels
and metadata whose NoiseProfile is the law scaled by the merge's variance factor.

Many bursts (:func:`merge_bursts`): one Dask task per burst (:func:`rawlab.cluster.run_tasks`), each reporting
its result or its one-line failure; the others go on. Outputs are never replaced unless ``overwrite``: an
existing output is reported as skipped, and each output is written to a hidden temporary file beside it and
then renamed, so it is never half-written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError
from ..outputs import exists_reason, publish
from .merge import ROBUSTNESS, merge_burst

if TYPE_CHECKING:
    from ..cluster import RunOptions

__all__ = ["BurstOutcome", "BurstResult", "merge_bursts", "merge_files", "read_burst", "run_bursts"]

NoiseSource = Callable[[Any, np.ndarray], Any]  # (RawInfo, planes) -> object with a, b and describe()


@dataclass
class BurstOutcome:
    """What became of one burst written to one DNG (:func:`burst_to_dng` fills it): written to ``out``,
    ``skipped`` (the output exists) or failed (``error``)."""

    paths: list[str]
    out: str
    error: str | None = None
    skipped: str | None = None
    reference: int = 0
    noise: str | None = None
    shape: tuple[int, int] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    def line(self) -> str:
        where = (
            self.paths[0].rsplit("/", 1)[0] if len(self.paths) > 1 else self.paths[0] if self.paths else "?"
        )
        if self.error is not None:
            return f"failed: {where}: {self.error}"
        if self.skipped is not None:
            return f"skipped: {where}: {self.skipped}"
        return self.done()

    def done(self) -> str:
        raise NotImplementedError


@dataclass
class BurstResult(BurstOutcome):
    """A merged burst (``burst merge``)."""

    variance_factor: float | None = None  # merged over single-frame noise variance (G1)
    shifts: list[tuple[float, float]] | None = None  # per frame, the median (dy, dx) in mosaic pixels

    def done(self) -> str:
        h, w = self.shape or (0, 0)
        n = len(self.paths)
        gain = -10 * np.log10(self.variance_factor) if self.variance_factor else 0.0
        return (
            f"merged: {n} frames ({w}x{h}) -> {self.out}; reference {self.reference}; noise from {self.noise}; "
            f"merged noise variance x{self.variance_factor:.3f} ({gain:+.1f} dB; {n} frames at most "
            f"{10 * np.log10(n):+.1f} dB) ({self.seconds:.1f} s)"
        )


def read_burst(paths: Sequence[str | os.PathLike[str]]):
    """Read and check the frames of one burst: a list of :class:`rawlab.rawio.RawFrame`.

    Raises
    ------
    RawlabError
        Fewer than two frames, a file that is not a Bayer raw (:class:`rawlab.errors.RawReadError`, with its
        path and the reason), or a frame whose size, CFA pattern, black or white level or ISO differs from
        the first frame's (named, with both values).
    """
    from ..rawio import read_raw

    paths = [os.fspath(p) for p in paths]
    if len(paths) < 2:
        raise RawlabError(
            f"a burst needs at least two frames, got {len(paths)} ({', '.join(paths) or 'none'}); pass all the "
            "frames of the burst"
        )
    frames = [read_raw(p) for p in paths]
    first = frames[0].info
    for f in frames[1:]:
        i = f.info
        checks = (
            ("size", (first.width, first.height), (i.width, i.height)),
            ("CFA pattern", first.cfa, i.cfa),
            ("black level", tuple(first.black_level), tuple(i.black_level)),
            ("white level", first.white_level, i.white_level),
            ("ISO", first.iso, i.iso),
        )
        for what, want, got in checks:
            if want != got:
                fmt = (lambda v: f"{v[0]}x{v[1]}") if what == "size" else (lambda v: f"{v}")
                raise RawlabError(
                    f"{i.path}: its {what} is {fmt(got)} but {first.path}'s is {fmt(want)}; a burst's frames "
                    "must come from one camera at one setting"
                )
    return frames


def _to_dn(planes: np.ndarray, info) -> np.ndarray:
    """Normalised packed planes to the mosaic in DN (rounded, clipped to ``[0, white]``)."""
    from ..bayer import levels, unpack

    black, span = levels(info.black_level, info.white_level)  # the inverse of rawlab.bayer.normalise
    dn = np.round(planes * span[:, None, None] + black[:, None, None])
    return unpack(np.clip(dn, 0, info.white_level).astype(np.uint16), info.cfa)


def _noise(noise, info, planes):
    """``(a, b, description)`` from the caller's ``noise``: a callable (see :data:`NoiseSource`) or a pair."""
    if callable(noise):
        est = noise(info, planes)
        return np.asarray(est.a, np.float64), np.asarray(est.b, np.float64), est.describe()
    if noise is None:
        raise RawlabError("no noise law given for the burst; pass noise=(a, b) or a noise source")
    a, b = (np.broadcast_to(np.asarray(v, np.float64), (4,)) for v in noise)
    return a, b, "given"


def merge_files(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    noise: NoiseSource | tuple | None,
    reference: int = 0,
    overwrite: bool = False,
    robustness: float = ROBUSTNESS,
) -> BurstResult:
    """Merge one burst of raw files into the DNG ``out`` (module docstring); a burst rawlab cannot use is
    returned as a failed result with the reason, never raised.

    Parameters
    ----------
    paths
        The frames, in order.
    out
        The merged DNG. An existing file is kept (the result is ``skipped``) unless ``overwrite``.
    noise
        The noise law of the reference frame: a callable ``noise(info, planes)`` returning an object with
        ``a``, ``b`` (per channel R, G1, G2, B, normalised) and ``describe()``, or a pair ``(a, b)``.
    reference
        Index in ``paths`` of the frame the others are aligned and merged to.
    """
    res = BurstResult([os.fspath(p) for p in paths], os.fspath(out), reference=reference)

    def merge(frames, planes, ref):
        a, b, res.noise = _noise(noise, ref.info, planes[reference])
        merged = merge_burst(planes, a, b, reference=reference, robustness=robustness, cfa=ref.info.cfa)
        ma, mb = merged.noise(a, b)
        profile = [(ma[0], mb[0]), ((ma[1] + ma[2]) / 2, (mb[1] + mb[2]) / 2), (ma[3], mb[3])]
        res.variance_factor = float(merged.variance_factor[1])
        res.shifts = [a_.median_shift() for a_ in merged.alignments]
        return merged.planes, {
            "noise_profile": [(float(s), float(o)) for s, o in profile],
            "software": f"rawlab {__version__} burst merge ({len(frames)} frames)",
        }

    return burst_to_dng(res, out, merge, overwrite=overwrite, what="merged frame")


def burst_to_dng(res, out, work, *, overwrite: bool, what: str):
    """One burst into one DNG, as ``burst merge`` and ``denoise --burst`` do it: check ``res.reference``, keep
    an existing ``out`` (unless ``overwrite``), read and check the frames ``res.paths``, run ``work(frames,
    planes, reference_frame)`` -> ``(clean normalised planes, write_dng keywords)``, and write the DNG with the
    reference's metadata through a temporary file that is published without clobbering. Fills ``res``
    (``skipped``, ``error``, ``shape``, ``seconds``) and returns it: a burst that cannot be used is a failed
    result with the reason, never raised."""
    from ..dng import raw_metadata, write_dng

    t0 = time.perf_counter()
    reference = res.reference
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.dng")
    try:
        if not 0 <= reference < len(res.paths):
            raise RawlabError(
                f"--reference {reference} is not a frame of this burst of {len(res.paths)} "
                f"(0 to {len(res.paths) - 1})"
            )
        if not overwrite and os.path.lexists(out):
            res.skipped = exists_reason(out)
            return res
        frames = read_burst(res.paths)
        ref = frames[reference]
        planes = np.stack([f.normalized() for f in frames])
        clean, tags = work(frames, planes, ref)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_dng(tmp, _to_dn(clean, ref.info), **raw_metadata(ref.info), **tags)
            if not publish(tmp, out, overwrite):
                res.skipped = exists_reason(out)
                return res
        except ValueError as e:  # metadata a DNG cannot hold
            raise RawlabError(f"the {what} could not be written as a DNG ({e})") from None
        res.shape = (ref.info.height, ref.info.width)
    except OSError as e:
        res.error = f"cannot write {out}: {e.strerror or e}"
    except RawlabError as e:
        res.error = str(e)
    finally:
        tmp.unlink(missing_ok=True)
        res.seconds = time.perf_counter() - t0
    return res


def merge_bursts(
    bursts: Sequence[Sequence[str]],
    outs: Sequence[str | os.PathLike[str]],
    *,
    noise: NoiseSource | tuple | None,
    reference: int = 0,
    overwrite: bool = False,
    robustness: float = ROBUSTNESS,
    options: RunOptions | None = None,
    on_result: Callable[[BurstResult], None] | None = None,
) -> list[BurstResult]:
    """Merge many bursts, one Dask task each (:func:`rawlab.cluster.run_tasks`); results in input order.

    ``noise`` must pickle (it runs on the workers). ``options`` says where the work runs and how it reports
    (``progress`` counts bursts); ``on_result`` gets each result as it finishes.

    Raises
    ------
    RawlabError
        ``bursts`` and ``outs`` differ in length, or two bursts would write the same output.
    """
    return run_bursts(
        _task, bursts, outs, (noise, reference, overwrite, robustness), name="burst-merge", options=options,
        on_result=on_result, result=BurstResult,
    )  # fmt: skip


def run_bursts(
    task: Callable[..., BurstOutcome],
    bursts: Sequence[Sequence[str]],
    outs: Sequence[str | os.PathLike[str]],
    rest: tuple,
    *,
    name: str,
    options: RunOptions | None,
    on_result: Callable[[BurstOutcome], None] | None,
    result: type[BurstOutcome],
) -> list[BurstOutcome]:
    """``task(paths, out, *rest)`` for each burst's ``paths`` and its output ``out``, one Dask task each
    (:func:`rawlab.cluster.run_tasks`; ``options`` where and how it reports), results in input order; a task
    that raised or whose worker died becomes a ``result`` with the reason. ``burst merge`` and ``denoise
    --burst`` over folders.

    Raises
    ------
    RawlabError
        ``bursts`` and ``outs`` differ in length, or two bursts would write the same output.
    """
    from ..cluster import RunOptions, run_tasks

    if len(bursts) != len(outs):
        raise RawlabError(f"{len(bursts)} bursts but {len(outs)} outputs")
    args = [(list(p), os.fspath(o), *rest) for p, o in zip(bursts, outs, strict=True)]
    seen: dict[str, int] = {}
    for i, a in enumerate(args):
        key = os.fspath(a[1]).casefold()
        if key in seen:
            raise RawlabError(
                f"bursts {seen[key]} and {i} would both be written to {a[1]}; rename one folder"
            )
        seen[key] = i
    opts = options or RunOptions()
    opts.total(len(args))

    def outcome(a, o) -> BurstOutcome:
        if o.ok:
            return o.value
        why = "the worker process died on this burst" if o.killed else o.why
        return result(list(a[0]), a[1], error=why)

    with opts.session() as (client, _info):
        outcomes = run_tasks(
            client, task, args, name=name, progress=opts.progress,
            on_result=(lambda o: on_result(outcome(args[o.index], o))) if on_result else None,
        )  # fmt: skip
    return [outcome(a, o) for a, o in zip(args, outcomes, strict=True)]


def _task(paths, out, noise, reference, overwrite, robustness) -> BurstResult:
    return merge_files(
        paths, out, noise=noise, reference=reference, overwrite=overwrite, robustness=robustness
    )
