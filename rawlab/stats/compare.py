"""Cross-device comparison: sensors on a common footing, ranked; and the shape of ISO laws against published ones.

**Common footing.** Sensors are compared at the same ISO and the same normalised signal level (18% grey by
default). By the definition of ISO speed (ISO 12232), the same exposure at the same ISO gives about the same
normalised signal, so this is also the same exposure: the comparison a photographer makes when two cameras
shoot the same scene with the same settings. At each ISO a sensor is compared with what was measured there, or,
between two profiled ISOs, with its fitted law over ISO (``basis = "law"``); never extrapolated. Rank 1 is the
highest SNR; ``delta_db`` is the SNR difference to the best sensor at that ISO (0 for the best, negative
otherwise). Definitions of SNR, dynamic range and electrons: :mod:`rawlab.stats.metrics`.

**External anchors.** A darktable ``noiseprofiles.json`` (e.g. ``../shared/noise-anchors``) or another rawlab
profile JSON can be given as a second set of devices. darktable fits its profiles on demosaiced data, so its
absolute values are not raw-mosaic values: only the *shape* of its laws over ISO is compared (how ``a`` and
``b`` grow with ISO). A rawlab profile is raw-mosaic data like the store's, so its sensors also enter the
ranking (``source = "anchor"``). Shapes are log-log slopes fitted to green (mean of G1 and G2) over ISOs with
positive values: ``a_exponent`` (``a ~ ISO**p``, 1 when ``a`` is proportional to ISO), ``b_exponent``
(``b ~ ISO**q``: near 0 when read noise is mostly after the gain, near 2 when before it) and
``b_vs_a_exponent`` (``b ~ a**m``, the relation Brooks et al., CVPR 2019, sample read noise from).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RawlabError
from .metrics import GREY, crossover, dynamic_range_stops, photon_transfer, snr_db
from .table import green

__all__ = [
    "Anchors",
    "law_of",
    "law_shape",
    "load_anchors",
    "noise_at",
    "overall_ranking",
    "rank_sensors",
    "shape_percentiles",
    "shape_table",
    "snr_gap",
]


@dataclass
class Anchors:
    """External profiles: ``profiles`` (a NoiseProfileSet), ``kind`` (``"darktable"`` or ``"rawlab"``),
    ``absolute`` (whether they are raw-mosaic values comparable with the store's) and ``source`` (the path)."""

    profiles: Any
    kind: str
    absolute: bool
    source: str


def load_anchors(path: str | os.PathLike[str]) -> Anchors:
    """Read a darktable ``noiseprofiles.json`` or a rawlab noise-profile JSON as external devices.

    Raises
    ------
    RawlabError
        If the file is missing, not JSON, or neither format.
    """
    import json

    from ..noise.export import read_darktable
    from ..noise.profile import NoiseProfileSet

    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise RawlabError(
            f"anchor profiles {os.fspath(path)!r} do not exist; pass an existing file"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RawlabError(f"anchor profiles {os.fspath(path)!r} are not valid JSON: {e}") from None
    except OSError as e:
        raise RawlabError(f"anchor profiles {os.fspath(path)!r} cannot be read: {e.strerror}") from None
    if isinstance(doc, dict) and "noiseprofiles" in doc:
        return Anchors(read_darktable(path), "darktable", False, os.fspath(path))
    if isinstance(doc, dict) and "schema" in doc:
        return Anchors(NoiseProfileSet.from_dict(doc), "rawlab", True, os.fspath(path))
    raise RawlabError(
        f"{os.fspath(path)!r} is neither a darktable noiseprofiles.json (no 'noiseprofiles' list) nor a rawlab "
        "noise profile (no 'schema'); pass one of those"
    )


def law_of(sensor_profile, laws: dict | None = None):
    """The sensor's law over ISO: from ``laws``, else read from its ``iso_model``, else fitted to its profiles;
    ``None`` with fewer than two usable ISOs."""
    from ..noise.isolaw import ISOLaw, fit_sensor_law

    if laws and sensor_profile.sensor in laws:
        return laws[sensor_profile.sensor]
    if sensor_profile.iso_model:
        try:
            return ISOLaw.from_dict(sensor_profile.iso_model)
        except RawlabError:
            pass
    usable = [p for p in sensor_profile.profiles if np.isfinite(p.a).all() and np.isfinite(p.b).all()]
    if len({p.iso for p in usable}) < 2:
        return None
    try:
        return fit_sensor_law(type(sensor_profile)(sensor_profile.sensor, sensor_profile.method, usable))
    except RawlabError:
        return None


def noise_at(sensor_profile, iso: float, law=None):
    """``(a, b)`` per channel at ``iso`` as a :class:`~rawlab.noise.profile.NoiseParams`: rawlab's one rule
    (:meth:`SensorProfile.noise_at`) with ``outside="none"``, so ``law`` is used only between the lowest and
    highest profiled ISO (``basis="law"``; ``"nearest"`` where it gives no usable values) and ``None`` comes
    back outside that range: a comparison is never extrapolated."""
    return sensor_profile.noise_at(float(iso), law=law, outside="none")


def rank_sensors(
    profiles,
    laws: dict | None = None,
    *,
    spans: dict[str, Any] | None = None,
    anchors: Anchors | None = None,
    isos=None,
    x: float = GREY,
) -> pd.DataFrame:
    """Rank sensors by SNR at signal ``x`` at each ISO where at least two of them can be compared.

    Parameters
    ----------
    profiles
        The store's :class:`~rawlab.noise.profile.NoiseProfileSet`.
    laws
        ``{sensor: ISOLaw}`` (else read from each profile's ``iso_model`` or fitted).
    spans
        ``{sensor: white - black}`` in DN (per channel or scalar) for the conversion gain.
    anchors
        External profiles; ranked too when they are raw-mosaic values (``anchors.absolute``).
    isos
        ISOs to compare at (default: every profiled ISO that two or more sensors cover).
    x
        Signal level, normalised (default 18% grey).

    Returns
    -------
    pandas.DataFrame
        One row per ISO and sensor: ``iso``, ``sensor``, ``source`` (``"store"``/``"anchor"``), ``basis``,
        ``a``, ``b`` (green), ``snr_db``, ``rank``, ``delta_db``, ``dr_stops``, ``crossover_stops``,
        ``read_noise_e``, ``full_well_e``, ``gain_e_per_dn``, ``n_compared``.
    """
    devices = [(sp, "store") for sp in profiles.sensors]
    if anchors is not None and anchors.absolute:
        devices += [(sp, "anchor") for sp in anchors.profiles.sensors]
    spans = spans or {}
    device_law = {(sp.sensor, src): law_of(sp, laws if src == "store" else None) for sp, src in devices}
    if isos is None:
        cover: dict[float, int] = {}
        for sp, _src in devices:
            for p in sp.profiles:
                cover[float(p.iso)] = 0
        for iso in cover:
            cover[iso] = sum(
                noise_at(sp, iso, device_law[(sp.sensor, src)]) is not None for sp, src in devices
            )
        isos = sorted(i for i, n in cover.items() if n >= 2)
    rows = []
    for iso in isos:
        here = []
        for sp, src in devices:
            got = noise_at(sp, float(iso), device_law[(sp.sensor, src)])
            if got is None:
                continue
            ag, bg, basis = green(got.a), green(got.b), got.basis
            v = spans.get(sp.sensor) if src == "store" else _anchor_span(sp)
            v = green(np.broadcast_to(np.asarray(v, float), (4,))) if v is not None else math.nan
            pt = photon_transfer(ag, bg, v)
            here.append({
                "iso": float(iso), "sensor": sp.sensor, "source": src, "basis": basis, "a": ag, "b": bg,
                "snr_db": float(snr_db(ag, bg, x)), "dr_stops": float(dynamic_range_stops(bg)),
                "crossover_stops": float(crossover(ag, bg)[1]),
                **{k: float(pt[k]) for k in ("read_noise_e", "full_well_e", "gain_e_per_dn")},
            })  # fmt: skip
        if len(here) < 2:
            continue
        frame = pd.DataFrame(here)
        frame["rank"] = frame["snr_db"].rank(ascending=False, method="min").astype(int)
        frame["delta_db"] = frame["snr_db"] - frame["snr_db"].max()
        frame["n_compared"] = len(frame)
        rows.append(frame.sort_values("rank", kind="stable"))
    cols = ["iso", "sensor", "source", "basis", "a", "b", "snr_db", "rank", "delta_db", "dr_stops"]
    cols += ["crossover_stops", "read_noise_e", "full_well_e", "gain_e_per_dn", "n_compared"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def _anchor_span(sp):
    if "white_minus_black" in sp.extra:
        return sp.extra["white_minus_black"]
    if "white_level" in sp.extra and "black_level" in sp.extra:
        return float(sp.extra["white_level"]) - np.asarray(sp.extra["black_level"], float)
    return None


def overall_ranking(ranking: pd.DataFrame) -> pd.DataFrame:
    """Per sensor over every compared ISO: ``mean_delta_db`` (mean SNR gap to the best, dB), ``wins`` (ISOs
    where it ranks first), ``n_isos``; sorted best first."""
    if ranking.empty:
        return pd.DataFrame(columns=["sensor", "source", "n_isos", "wins", "mean_delta_db"])
    g = ranking.groupby(["sensor", "source"], sort=False)
    out = pd.DataFrame({
        "n_isos": g.size(), "wins": g["rank"].apply(lambda r: int((r == 1).sum())),
        "mean_delta_db": g["delta_db"].mean(),
    }).reset_index()  # fmt: skip
    return out.sort_values(["mean_delta_db", "wins"], ascending=[False, False]).reset_index(drop=True)


def snr_gap(ranking: pd.DataFrame, iso: float, noisier: str, than: str) -> float:
    """dB by which ``noisier`` has a lower SNR than ``than`` at ``iso`` (negative if it is in fact cleaner).

    Raises
    ------
    RawlabError
        If either sensor was not compared at that ISO (the message lists who was).
    """
    at = ranking[np.isclose(ranking["iso"], iso)].set_index("sensor")["snr_db"]
    missing = [s for s in (noisier, than) if s not in at.index]
    if missing:
        have = ", ".join(map(repr, at.index)) or "none"
        raise RawlabError(
            f"{', '.join(map(repr, missing))} not compared at ISO {iso:g}; compared there: {have}"
        )
    return float(at[than] - at[noisier])


def _slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def law_shape(sensor_profile) -> dict[str, Any]:
    """Shape of one device's noise over ISO (module docstring): exponents fitted to green in log-log."""
    ps = sorted(sensor_profile.profiles, key=lambda p: p.iso)
    iso = np.array([float(p.iso) for p in ps])
    a = np.array([green(p.a) for p in ps])
    b = np.array([green(p.b) for p in ps])
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0)
    return {
        "sensor": sensor_profile.sensor,
        "n_isos": int(ok.sum()),
        "iso_min": float(iso[ok].min()) if ok.any() else math.nan,
        "iso_max": float(iso[ok].max()) if ok.any() else math.nan,
        "a_exponent": _slope(iso, a),
        "b_exponent": _slope(iso, b),
        "b_vs_a_exponent": _slope(a, b),
        "negative_b": int((b[ok] <= 0).sum()),
    }


def shape_table(profiles, source: str, *, min_isos: int = 3) -> pd.DataFrame:
    """:func:`law_shape` of every device with at least ``min_isos`` usable ISOs, with a ``source`` column."""
    rows = [law_shape(sp) | {"source": source} for sp in profiles.sensors]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df[df["n_isos"] >= min_isos].reset_index(drop=True)


def shape_percentiles(ours: pd.DataFrame, anchors: pd.DataFrame) -> pd.DataFrame:
    """Where each of ``ours`` sits among ``anchors``: percentile (0-100) of each exponent."""
    out = ours.copy()
    for col in ("a_exponent", "b_exponent", "b_vs_a_exponent"):
        ref = anchors[col].to_numpy(dtype=float)
        ref = ref[np.isfinite(ref)]
        out[f"{col}_percentile"] = [
            float(100.0 * np.mean(ref <= v)) if ref.size and np.isfinite(v) else math.nan for v in out[col]
        ]
    return out
