"""Write what ``rawlab noise-fit`` produced: the profile in the chosen format, plots beside it, a summary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RawlabError
from ..outputs import output_file

__all__ = ["Written", "write_outputs"]


@dataclass
class Written:
    files: list[Path]
    lines: list[str]
    summary: str


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def write_outputs(result, out: str | Path, fmt: str = "rawlab") -> Written:
    """Save ``result`` (:class:`~rawlab.noise.pipeline.NoiseFitResult`) to ``out`` and plot beside it.

    The rawlab JSON also carries the validation report and notes; other formats carry only what they can.

    Raises
    ------
    RawlabError
        If ``out`` cannot be written (:func:`rawlab.outputs.output_file`), or writing fails for the machine's reasons.
    """
    out = output_file(out)
    try:
        return _write(result, out, fmt)
    except OSError as e:  # the machine's (disk full): say which file, no traceback
        raise RawlabError(
            f"cannot write {e.filename or out}: {e.strerror or e}; free space or choose another --out"
        ) from None


def _write(result, out: Path, fmt: str) -> Written:
    from .export import save
    from .plots import plot_iso_law, plot_variance_mean

    profiles = result.profiles
    profiles.extra.update(
        {"validation": result.validation, "notes": result.notes, "timings_s": result.timings}
    )
    files = save(profiles, out, fmt)
    lines: list[str] = []
    for sp in profiles.sensors:
        base = out.with_name(f"{out.stem}_{_slug(sp.sensor)}")
        if result.binned.get(sp.sensor):
            files.append(plot_variance_mean(result.binned[sp.sensor], sp, f"{base}_variance.png",
                                            title=f"{sp.sensor}: variance vs mean ({sp.method})"))  # fmt: skip
        law = result.laws.get(sp.sensor)
        if law is not None:
            files.append(plot_iso_law(law, sp, f"{base}_isolaw.png", title=f"{sp.sensor}: noise vs ISO"))
        lines.append(f"{sp.sensor} ({sp.method}):")
        lines.append(f"  {'ISO':>6}  {'a (G1)':>10} {'± se':>9}  {'b (G1)':>10} {'± se':>9}  frames  flags")
        if not sp.profiles:
            lines.append("  no fit: no frame of this sensor has an ISO in its metadata (fits are per ISO)")
        for p in sp.profiles:
            flags = "; ".join(p.extra.get("flags", []))
            lines.append(
                f"  {p.iso:>6g}  {p.a[1]:>10.3e} {p.a_stderr[1]:>9.1e}  {p.b[1]:>10.3e} {p.b_stderr[1]:>9.1e}  "
                f"{p.n_frames:>6}  {flags}"
            )
        if law is not None:
            d = law.to_dict()
            ga = d.get("ga")
            lines.append(
                f"  ISO law: {d.get('form')}; ga (G1) = {np.asarray(ga)[1]:.3e}" if ga is not None else ""
            )
            for flag in d.get("flags", []):
                lines.append(f"  flag: {flag.get('message', flag) if isinstance(flag, dict) else flag}")
        val = result.validation.get(sp.sensor, {})
        overall = val.get("overall")
        if overall and overall.get("share_within_rel") is None:
            lines.append(
                f"  validation: none of the {overall.get('n_tiles', 0)} held-out tiles could be checked"
            )
        elif overall:
            lines.append(
                f"  validation: {overall['share_within_rel']:.0%} of {overall['n_tiles']} held-out tiles within "
                f"10% of the predicted variance (sampling-aware: {overall['share_within_tol']:.0%}); median "
                f"measured/predicted {overall['median_ratio']:.3f}"
            )
    pngs = [f for f in files if f.suffix == ".png"]
    n_iso = sum(len(s.profiles) for s in profiles.sensors)
    summary = (
        f"noise-fit: {len(profiles.sensors)} sensors, {n_iso} ISO profiles -> {out} ({fmt})"
        + (f"; plots: {', '.join(str(p) for p in pngs)}" if pngs else "")
        + f" ({result.timings.get('total', 0):.1f} s)"
    )
    return Written(files, [line for line in lines if line], summary)
