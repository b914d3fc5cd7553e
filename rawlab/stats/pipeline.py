"""``rawlab stats``: one function that gathers every statistic of a store, on a Dask cluster.

- Catalog-level numbers (counts, exposure times, QA outcomes) come from the catalog (a small table).
- Pixel-level numbers come from one Dask pass over the store (:mod:`rawlab.stats.pixels`).
- Noise comes from a profile when one is given (``--profile``: a rawlab JSON written by ``rawlab noise-fit``);
  a store itself carries no profile (``noise-fit`` writes to its ``--out`` file), so sensors without one are
  fitted here with :func:`rawlab.noise.fit_store` (its own Dask pass).

Nothing loads a whole store: the largest thing in this process is the catalog and a few numbers per frame.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import RawlabError
from .compare import (
    Anchors,
    law_of,
    load_anchors,
    overall_ranking,
    rank_sensors,
    shape_percentiles,
    shape_table,
)
from .table import (
    UNKNOWN_SENSOR,
    balance_table,
    composition_table,
    sensor_summary,
    sensor_table,
    white_minus_black,
)

if TYPE_CHECKING:
    from ..cluster import RunOptions

__all__ = ["StatsResult", "compute_stats"]


@dataclass
class StatsResult:
    """Everything ``rawlab stats`` computed; :func:`rawlab.stats.write_outputs` writes it to a folder.

    Tables (pandas): ``sensors`` (``sensors.csv``, one row per sensor and ISO), ``summary`` (per sensor),
    ``composition`` (counts per sensor, ISO, role, status), ``balance`` (per sensor), ``frames`` (per-frame
    pixel statistics), ``ranking`` (per ISO and sensor, :func:`rawlab.stats.rank_sensors`), ``overall``,
    ``shapes`` (the law over ISO's shape per sensor) and ``anchor_shapes`` (the same for external profiles).
    ``hists`` holds the level histograms per sensor and ISO; ``profiles``, ``laws`` and ``binned`` the noise
    used (``binned``: variance-mean points, only for sensors fitted here).
    """

    store: str
    catalog: pd.DataFrame
    frames: pd.DataFrame
    hists: dict
    sensors: pd.DataFrame
    summary: pd.DataFrame
    composition: pd.DataFrame
    balance: pd.DataFrame
    ranking: pd.DataFrame
    overall: pd.DataFrame
    shapes: pd.DataFrame
    anchor_shapes: pd.DataFrame | None
    profiles: Any
    laws: dict[str, Any]
    binned: dict[str, Any]
    noise_source: dict[str, str]
    anchors: Anchors | None = None
    fitted: Any = None  # the NoiseFitResult of sensors fitted here
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    dashboard: str | None = None


def _given_profile(profile):
    """``(NoiseProfileSet, laws, binned, label)`` from a path, a profile set or a noise-fit result."""
    from ..noise.profile import NoiseProfileSet, load_profiles

    if profile is None:
        return None, {}, {}, ""
    if isinstance(profile, str | os.PathLike):
        return load_profiles(profile), {}, {}, f"profile {os.path.basename(os.fspath(profile))}"
    if isinstance(profile, NoiseProfileSet):
        return profile, {}, {}, "profile (given)"
    if hasattr(profile, "profiles") and hasattr(profile, "laws"):  # a NoiseFitResult
        return profile.profiles, dict(profile.laws), dict(profile.binned), "fit"
    raise TypeError(
        f"profile must be a path, a NoiseProfileSet or a NoiseFitResult, not {type(profile).__name__}"
    )


def compute_stats(
    store: str | os.PathLike[str],
    *,
    profile=None,
    anchors=None,
    bootstrap: int = 100,
    options: RunOptions | None = None,
) -> StatsResult:
    """Cross-device statistics of ``store``.

    Parameters
    ----------
    store
        Store path or fsspec URL (built by ``rawlab catalog build``).
    profile
        Noise to use: a rawlab profile JSON path (``rawlab noise-fit --out``), a ``NoiseProfileSet`` or a
        ``NoiseFitResult``. Sensors of the store it does not cover are fitted here (``fit_store``, method
        ``auto``); ``None`` fits every sensor.
    anchors
        External profiles to compare with: a path (darktable ``noiseprofiles.json`` or rawlab JSON) or
        :class:`~rawlab.stats.compare.Anchors`.
    bootstrap
        Bootstrap resamples for the standard errors of sensors fitted here.
    options
        Where the Dask work runs and how it reports (:class:`rawlab.cluster.RunOptions`; default: a new local
        cluster): ``set_total(n)`` at the start of each pass (pixels, then noise moments), ``progress(k)`` as
        ``k`` more frames (or pairs) are done.

    Raises
    ------
    RawlabError
        If ``store`` is not a rawlab store or holds no readable frame, a profile or anchor file is unreadable,
        or the profile has no sensor of the store.
    """
    from ..catalog import open_catalog
    from ..cluster import RunOptions

    opts = options or RunOptions()
    t0 = time.perf_counter()
    store = os.fspath(store)
    cat = open_catalog(store, opts.storage_options)
    _check_not_empty(cat, store)
    given, laws, binned, label = _given_profile(profile)
    if isinstance(anchors, str | os.PathLike):
        anchors = load_anchors(anchors)
    readable = cat[(cat["status"] != "failed") & cat["sensor"].notna()]
    in_store = sorted(readable["sensor"].unique())
    notes: list[str] = []
    profiles_by_sensor: dict[str, Any] = {}
    noise_source: dict[str, str] = {}
    if given is not None:
        names = [s.sensor for s in given.sensors]
        if in_store and not set(names) & set(in_store):
            raise RawlabError(
                f"the noise profile has no sensor of {store}: it has {', '.join(map(repr, names)) or 'none'}; "
                f"the store has {', '.join(map(repr, in_store))}. Pass the profile noise-fit wrote for this "
                "store, or drop --profile to fit here"
            )
        for sp in given.sensors:
            if sp.sensor in in_store:
                profiles_by_sensor[sp.sensor] = sp
                noise_source[sp.sensor] = label if label != "fit" else f"fit ({sp.method})"
            else:
                notes.append(f"profile sensor {sp.sensor!r} is not in the store; left out")
    to_fit = [s for s in in_store if s not in profiles_by_sensor]

    timings: dict[str, float] = {}
    fitted = None

    from .pixels import frame_stats, pixel_rows

    with opts.session() as (client, info):
        dashboard = None if opts.client is not None else info.dashboard
        here = replace(opts, client=client)  # both passes on this one cluster
        t = time.perf_counter()
        opts.total(len(pixel_rows(cat)))
        frames, hists = frame_stats(store, cat, options=here)
        timings["pixels"] = time.perf_counter() - t
        if to_fit:
            from ..noise.pipeline import fit_store

            t = time.perf_counter()
            for sensor in ["all"] if len(to_fit) == len(in_store) else to_fit:
                try:
                    res = fit_store(store, sensor=sensor, method="auto", bootstrap=bootstrap, options=here)
                except RawlabError as e:
                    notes.append(f"noise not fitted for {sensor!r}: {e}")
                    continue
                fitted = res if fitted is None else _merge_fits(fitted, res)
            timings["noise_fit"] = time.perf_counter() - t

    if fitted is not None:
        for sp in fitted.profiles.sensors:
            if sp.sensor in to_fit:
                profiles_by_sensor[sp.sensor] = sp
                noise_source[sp.sensor] = f"fit ({sp.method})"
        laws |= {k: v for k, v in fitted.laws.items() if k in to_fit}
        binned |= {k: v for k, v in fitted.binned.items() if k in to_fit}
        notes += list(fitted.notes)
    from ..noise.profile import NoiseProfileSet

    profiles = NoiseProfileSet([profiles_by_sensor[s] for s in sorted(profiles_by_sensor)])
    for sp in profiles.sensors:
        if sp.sensor not in laws:
            law = law_of(sp)
            if law is not None:
                laws[sp.sensor] = law

    t = time.perf_counter()
    sensors = sensor_table(cat, frames, profiles, noise_source)
    spans = white_minus_black(cat[cat["sensor"].notna()])
    ranking = rank_sensors(profiles, laws, spans=spans, anchors=anchors)
    shapes = shape_table(profiles, "store", min_isos=2)
    anchor_shapes = None
    if anchors is not None:
        anchor_shapes = shape_table(anchors.profiles, anchors.kind)
        if not shapes.empty:
            shapes = shape_percentiles(shapes, anchor_shapes)
    timings["tables"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    if (cat["sensor"].isna() | (cat["sensor"] == "")).any():
        notes.append(f"files that could not be read have no sensor; they are counted as {UNKNOWN_SENSOR!r}")
    return StatsResult(
        store=store, catalog=cat, frames=frames, hists=hists, sensors=sensors, summary=sensor_summary(sensors),
        composition=composition_table(cat), balance=balance_table(cat), ranking=ranking,
        overall=overall_ranking(ranking), shapes=shapes, anchor_shapes=anchor_shapes, profiles=profiles,
        laws=laws, binned=binned, noise_source=noise_source, anchors=anchors, fitted=fitted, notes=notes,
        timings=timings, dashboard=dashboard,
    )  # fmt: skip


def _check_not_empty(cat: pd.DataFrame, store: str) -> None:
    """Refuse a store with no readable frame: statistics of nothing are no statistics."""
    n = len(cat)
    if n and "sensor" in cat and "status" in cat and (cat["status"] != "failed").any():
        return
    if not n:
        why = "its catalog lists no files (was it built from an empty folder?)"
    else:
        files = "its only file" if n == 1 else f"every one of the {n} files in its catalog"
        why = f"{files} failed to read (`rawlab catalog show {store}` says why)"
    raise RawlabError(
        f"{store} holds no readable frames: {why}; build it from a folder of raw files with "
        "`rawlab catalog build SOURCE --out STORE`"
    )


def _merge_fits(first, second):
    """Two NoiseFitResults of different sensors as one."""
    from ..noise.profile import NoiseProfileSet

    first.profiles = NoiseProfileSet(first.profiles.sensors + second.profiles.sensors, first.profiles.extra)
    first.laws |= second.laws
    first.binned |= second.binned
    first.validation |= second.validation
    first.notes += second.notes
    return first
