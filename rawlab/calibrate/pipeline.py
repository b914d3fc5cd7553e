"""``rawlab calibrate``: dark and flat frames in, EMVA 1288 figures per sensor, ISO and channel out.

1. The sources are scanned (:func:`rawlab.catalog.scan.scan_sources`) and each file's header read on Dask
   (:func:`rawlab.rawmeta.read_metadata`, no decode): sensor, ISO and exposure time.
2. Frames are grouped by sensor, ISO and exposure time; one Dask task per group reads its frames (each file
   decoded once, one frame in memory at a time), tells darks from flats
   (:func:`rawlab.calibrate.stats.classify_frame`: by level, or by a recipe that names the darks and the
   flats) and accumulates small statistics (:class:`rawlab.calibrate.stats.GroupAccumulator`); the black and
   white levels, pattern and size come from the frames it reads.
3. The figures are fitted per sensor and ISO (:func:`rawlab.calibrate.fit.fit_iso`).

A frame that cannot be read, lacks ISO or exposure time, or is neither dark nor flat (not uniform) is
rejected with its path and the reason; the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..bayer import CHANNELS
from ..cluster import RunOptions, run_tasks
from ..errors import RawlabError
from .fit import fit_iso
from .stats import DARK_MAX, GroupAccumulator, as_planes, classify_frame, frame_sums, sample_positions

__all__ = ["SCHEMA", "CalibrationResult", "calibrate"]

SCHEMA = "rawlab.calibration/1"


@dataclass
class CalibrationResult:
    doc: dict  # the rawlab.calibration/1 document
    rejected: list[dict] = field(default_factory=list)  # {"path", "reason"}
    groups: dict = field(default_factory=dict)  # (sensor, iso) -> {"darks": [...], "flats": [...]}


def _info(path: str) -> dict:
    """What grouping needs (sensor, ISO, exposure time) from the file's header, without decoding it; LibRaw
    (:func:`rawlab.rawio.read_info`, one decode) only where the header lacks a value or the file is damaged."""
    from ..rawmeta import normalize_sensor_name, read_metadata

    m = read_metadata(path)
    partial = m.payload is not None and m.payload.state == "partial"
    if m.damaged or partial or None in (m.make, m.model, m.iso, m.exposure_time):
        from ..rawio import read_info

        m = read_info(path)  # raises what reading the frame would raise
    sensor = normalize_sensor_name(m.make, m.model)
    return {"path": path, "sensor": sensor, "make": m.make, "model": m.model, "iso": m.iso,
            "exposure_time": m.exposure_time}  # fmt: skip


def _measure_group(paths: list[str], roles: list[str | None], dark_max: float) -> dict:
    """Read the frames of one (sensor, ISO, exposure) group, one at a time; classify each; streaming
    statistics of its darks and flats (:class:`GroupAccumulator`), and the levels and size of the frames."""
    from ..rawio import read_raw

    acc: dict[str, GroupAccumulator] = {}
    rejected, notes = [], []
    info = positions = last = None
    for path, role in zip(paths, roles, strict=True):
        try:
            frame = read_raw(path)
        except RawlabError as e:
            rejected.append({"path": path, "reason": f"cannot read: {e}"})
            continue
        i = frame.info
        b, white = np.asarray(i.black_level, float), float(i.white_level)
        if info is not None and (
            not np.allclose(b, info["black"])
            or white != info["white"]
            or (i.height, i.width) != (info["height"], info["width"])
        ):
            rejected.append({"path": path, "reason": "black or white level or size differs from its group's"})
            continue
        if positions is None:
            positions = sample_positions(i.height // 2, i.width // 2, len(paths))
        # The frame goes into the sum of the kind it most likely is (its role, else the last frame's) while
        # its sums are taken; a wrong guess (rare: a group is one exposure time) takes it back out.
        guess = role or last
        into = acc[guess].total if guess in acc else None
        planes, sums = frame_sums(frame.mosaic, white=white, positions=positions, cfa=i.cfa, into=into)
        kind, note = classify_frame(sums, b, white, dark_max=dark_max, role=role)
        if into is not None and kind != guess:
            planes = as_planes(frame.mosaic, i.cfa)
            into -= planes
        del frame
        if kind is None:
            rejected.append({"path": path, "reason": note})
            continue
        if info is None:
            info = {"black": b.tolist(), "white": i.white_level, "height": i.height, "width": i.width,
                    "cfa": i.cfa}  # fmt: skip
        acc.setdefault(kind, GroupAccumulator(b, white, positions)).add(sums, planes)  # None: added already
        notes.append({"path": path, "kind": kind, "note": note})
        last = kind
    out = {"rejected": rejected, "frames": notes, "info": info}
    for kind, a in acc.items():
        out[kind] = a.result(dark=kind == "dark")
    return out


def _sources(sources, darks, flats, storage_options):
    from ..catalog.scan import scan_sources

    roles: dict[str, str | None] = {}
    for items, role in ((sources, None), (darks, "dark"), (flats, "flat")):
        if items:
            for f in scan_sources(list(items), storage_options).files:
                roles[f.path] = role if role else roles.get(f.path)
    return roles


def calibrate(
    sources=(),
    *,
    darks=(),
    flats=(),
    sensor: str | None = None,
    dark_max: float = DARK_MAX,
    options: RunOptions | None = None,
) -> CalibrationResult:
    """Calibrate every sensor (or ``sensor``) found in ``sources`` (auto: darks and flats told apart by level),
    ``darks`` and ``flats`` (a recipe: the role is given).

    Raises
    ------
    RawlabError
        If no source is given, a source does not exist, ``sensor`` is not among the frames, or no sensor
        has both darks and flats at some ISO.
    """
    options = options or RunOptions()
    if not (sources or darks or flats):
        raise RawlabError("no frames given: pass folders or files of dark and flat frames")
    roles = _sources(sources, darks, flats, options.storage_options)
    if not roles:
        raise RawlabError(f"no raw files under {', '.join(map(str, [*sources, *darks, *flats]))}")
    paths = sorted(roles)
    rejected: list[dict] = []
    with options.session() as (client, _):
        options.total(len(paths))
        options.note(f"calibrate: reading the metadata of {len(paths)} files")
        infos = []
        for p, o in zip(paths, run_tasks(client, _info, [(p,) for p in paths], name="cal-info",
                                         progress=options.progress), strict=True):  # fmt: skip
            if not o.ok:
                rejected.append({"path": p, "reason": f"cannot read: {o.error}"})
            elif not o.value["iso"] or not o.value["exposure_time"]:
                missing = "ISO" if not o.value["iso"] else "exposure time"
                rejected.append(
                    {"path": p, "reason": f"no {missing} in its metadata (figures are per ISO and exposure)"}
                )
            else:
                infos.append(o.value)
        sensors = sorted({i["sensor"] for i in infos})
        if sensor is not None:
            if sensor not in sensors:
                raise RawlabError(
                    f"--sensor {sensor!r} is not among the frames' sensors: {', '.join(sensors) or 'none'}"
                )
            infos = [i for i in infos if i["sensor"] == sensor]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for i in infos:
            groups[(i["sensor"], float(i["iso"]), float(i["exposure_time"]))].append(i)
        keys = sorted(groups)
        args = [
            ([i["path"] for i in groups[k]], [roles[i["path"]] for i in groups[k]], dark_max) for k in keys
        ]
        options.total(len(paths))
        options.note(f"calibrate: measuring {len(infos)} frames in {len(keys)} groups")
        progress = options.progress
        outcomes = run_tasks(client, _measure_group, args, name="cal-group",
                             progress=(lambda n: progress(n)) if progress else None)  # fmt: skip
    by_iso: dict[tuple, dict] = defaultdict(lambda: {"darks": [], "flats": [], "frames": []})
    levels: dict[str, dict] = {}  # sensor -> the levels, pattern and size its frames were read with
    for k, o in zip(keys, outcomes, strict=True):
        if not o.ok:
            for i in groups[k]:
                rejected.append({"path": i["path"], "reason": f"cannot read: {o.error}"})
            continue
        rejected += o.value["rejected"]
        if o.value["info"] is not None:
            levels.setdefault(k[0], o.value["info"])
        entry = by_iso[(k[0], k[1])]
        entry["frames"] += [f | {"exposure_time": k[2]} for f in o.value["frames"]]
        for kind in ("dark", "flat"):
            if kind in o.value:
                entry[kind + "s"].append(o.value[kind] | {"exposure_time": k[2]})
    doc = _document(by_iso, infos, levels, rejected)
    if not doc["sensors"]:
        raise RawlabError(
            "no sensor has both dark and flat frames at one ISO"
            + (
                f"; {len(rejected)} frames rejected, e.g. {rejected[0]['path']}: {rejected[0]['reason']}"
                if rejected
                else ""
            )
        )
    return CalibrationResult(doc, rejected, dict(by_iso))


def _document(by_iso, infos, levels, rejected) -> dict:
    from .._version import __version__

    meta = {}
    for i in infos:
        meta.setdefault(i["sensor"], i)
    sensors = []
    for name in sorted({k[0] for k in by_iso}):
        isos = []
        for (s, iso), entry in sorted(by_iso.items()):
            if s != name or not entry["darks"] or not entry["flats"]:
                continue
            fit = fit_iso(entry["darks"], entry["flats"])
            isos.append({"iso": int(iso) if float(iso).is_integer() else iso} | fit)
        if not isos:
            continue
        m = meta[name] | levels[name]
        sensors.append(
            {
                "sensor": name,
                "make": m["make"],
                "model": m["model"],
                "cfa": m["cfa"],
                "black_level": m["black"],
                "white_level": m["white"],
                "size": [m["width"], m["height"]],
                "isos": isos,
            }
        )
    return {
        "schema": SCHEMA,
        "rawlab_version": __version__,
        "channels": list(CHANNELS),
        "units": "DN above the declared black level; system gain K in DN per electron (EMVA 1288)",
        "sensors": sensors,
        "rejected": rejected,
    }
