"""Bursts in the catalog: recognise them (a recipe rule), QA them on Dask, store each as one group, read them.

A **burst** is a run of frames of one body (sensor), one ISO, one exposure time and one frame size, taken one
after the other: consecutive in capture order (EXIF ``DateTimeOriginal`` with sub-seconds, the catalog's
``capture_time``; then the file name), no two consecutive frames further apart than ``max_gap`` seconds, in
one folder. Recipes with ``rule: bursts`` (``catalogs/bursts.yaml``, ``catalogs/auto.yaml``; schema in
``catalogs/README.md``) turn on recognition:

- ``bursts``: every such run of at least ``min_frames`` frames is a burst; other frames are ``single``;
- ``auto``: a folder (per body) is a burst only when all its frames are one run with known capture times,
  and everything else is paired by the default rule, so a folder of a burst and a folder of a clean frame
  and noisy frames each get what they are.

Catalog rows of a burst get ``burst_id`` (the first 16 hex digits of the SHA-256 of its frame ids in capture
order: same frames, same id), ``burst_index`` (0-based capture order) and a ``role``: ``reference``, ``frame``
or, after QA, ``excluded`` (then ``status`` is ``excluded`` and ``error``/``qa_reason`` say why). The build
(:func:`run_bursts`) checks each burst in one Dask task (:func:`rawlab.catalog.burst_qa.check_burst`), which
also writes the burst's group ``bursts/<sensor>/<burst id>`` (:meth:`FrameStore.write_burst`): ``raw``
``(frame, channel, y, x)`` with every frame in capture order (excluded ones too), attributes ``reference``
(its index), ``frame_ids``, ``paths`` and the QA. :func:`open_burst` reads it lazily.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RawlabError
from .pairing import _dir_scenes, _finish, _Frame, _prepare, _Result, _sensor_txt, pair_default

__all__ = [
    "BURST_COLUMNS", "BURST_FORMAT", "BurstRule", "open_burst", "open_bursts", "parse_burst_rule",
    "recognise_bursts", "run_bursts",
]  # fmt: skip

BURST_FORMAT = "rawlab.burst/1"
#: Catalog columns burst recognition adds (None on rows that are not in a burst).
BURST_COLUMNS = ("burst_id", "burst_index", "capture_time", "sharpness")
_RULE_KEYS = ("max_gap", "min_frames", "reference_candidates", "whole_folder", "others")


@dataclass(frozen=True)
class BurstRule:
    """The ``bursts:`` section of a recipe with ``rule: bursts`` (``catalogs/README.md``)."""

    max_gap: float | None = 2.0  # s between consecutive capture times; None: capture times never cut a run
    min_frames: int = 2
    reference_candidates: int = 1  # the reference is the sharpest of the first K usable frames
    whole_folder: bool = False  # a folder (per body) is a burst only as a whole, with known capture times
    others: str = "single"  # frames in no burst: "single", or "default" (the default pairing rule)


def parse_burst_rule(data: Any, fail) -> BurstRule:
    """Validate a recipe's ``bursts:`` mapping; ``fail(message)`` makes the error to raise."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise fail(f"bursts is {data!r}; expected a mapping with keys {', '.join(_RULE_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _RULE_KEYS)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise fail(f"unknown key(s) {names} in bursts; allowed: {', '.join(_RULE_KEYS)}")
    rule = BurstRule()
    gap = data.get("max_gap", rule.max_gap)
    if gap is not None and (isinstance(gap, bool) or not isinstance(gap, int | float) or not gap > 0):
        raise fail(f"bursts.max_gap is {gap!r}; expected seconds > 0, or null to ignore capture times")
    out = {"max_gap": None if gap is None else float(gap)}
    for key, low in (("min_frames", 2), ("reference_candidates", 1)):
        v = data.get(key, getattr(rule, key))
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise fail(f"bursts.{key} is {v!r}; expected a whole number >= {low}")
        out[key] = v
    whole = data.get("whole_folder", rule.whole_folder)
    if not isinstance(whole, bool):
        raise fail(f"bursts.whole_folder is {whole!r}; expected true or false")
    others = data.get("others", rule.others)
    if others not in ("single", "default"):
        raise fail(f"bursts.others is {others!r}; expected 'single' or 'default'")
    return BurstRule(**out, whole_folder=whole, others=others)


# ---------------------------------------------------------------------------------------------- recognition


def _same(a: float, b: float) -> bool:
    """Equal metadata values: both unknown, or equal within rounding (EXIF rationals)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-3)


def _runs(members: list[_Frame], times: dict[int, float], sizes: dict[int, tuple], rule: BurstRule):
    """Split one folder-and-body's frames, in capture order, into runs; each run with why it ended."""
    timed = all(not math.isnan(times[f.pos]) for f in members)
    order = sorted(members, key=lambda f: ((times[f.pos] if timed else 0.0), f.path))
    runs: list[list[_Frame]] = []
    cuts: list[str] = []
    for f in order:
        prev = runs[-1][-1] if runs else None
        why = None
        if prev is None:
            why = "first"
        elif not _same(f.iso, prev.iso):
            why = "ISO changes"
        elif not _same(f.exposure, prev.exposure):
            why = "exposure time changes"
        elif sizes[f.pos] != sizes[prev.pos]:
            why = "frame size changes"
        elif rule.max_gap is not None and times[f.pos] - times[prev.pos] > rule.max_gap:
            why = f"{times[f.pos] - times[prev.pos]:.1f} s after the previous frame (max_gap {rule.max_gap:g} s)"
        if why is None:
            runs[-1].append(f)
        else:
            runs.append([f])
            cuts.append(why)
    return runs, cuts, timed


def burst_id(frame_keys: list[str]) -> str:
    """The id of a burst of these frames (frame ids, or paths), in capture order."""
    return hashlib.sha256("\n".join(frame_keys).encode()).hexdigest()[:16]


def recognise_bursts(df: pd.DataFrame, recipe) -> pd.DataFrame:
    """Scene, role, ``burst_id`` and ``burst_index`` of every frame under a ``rule: bursts`` recipe (module
    docstring). The reference is provisionally each burst's first frame; QA may choose another.

    Parameters
    ----------
    df
        Catalog rows with ``path``, ``relpath``, ``sensor``, ``iso``, ``exposure_time`` (s), ``status`` and,
        where known, ``capture_time`` (s), ``height``, ``width`` and ``frame_id``.
    recipe
        A :class:`rawlab.catalog.pairing.Recipe` with ``rule == "bursts"``.

    Returns
    -------
    A copy of ``df`` (same index and row order) with ``scene``, ``role``, ``clean_path``, ``pair_note``,
    ``pair_group``, ``truth_path``, ``burst_id`` and ``burst_index`` set on every row that is not ``failed``.
    """
    rule: BurstRule = recipe.bursts
    out, frames = _prepare(df)

    def column(name: str) -> list:
        return out[name].tolist() if name in out.columns else [None] * len(out)

    times = {f.pos: _num(column("capture_time")[f.pos]) for f in frames}
    hw = list(zip(column("height"), column("width"), strict=True))
    sizes = {f.pos: tuple(_num(v) for v in hw[f.pos]) for f in frames}
    ids = column("frame_id")
    scenes = _dir_scenes(frames)
    groups: dict[tuple[str, str], list[_Frame]] = defaultdict(list)
    for f in frames:
        groups[(f.dirkey, f.sensor)].append(f)
    results: dict[int, _Result] = {}
    members_of: dict[int, tuple[str, int]] = {}
    others: list[int] = []
    for (dirkey, sensor), members in sorted(groups.items()):
        scene = scenes[dirkey]
        where = f"sensor {_sensor_txt(sensor)} in scene {scene!r}"
        runs, cuts, timed = _runs(members, times, sizes, rule)
        if rule.whole_folder and (len(runs) > 1 or not timed):
            why = "capture times unknown" if not timed else f"not one run: it breaks where {cuts[1]}"
            for f in members:
                others.append(f.pos)
                results[f.pos] = _Result(scene, "single", None, f"not a burst ({why}) in {where}")
            continue
        for run in runs:
            if len(run) < rule.min_frames:
                for f in run:
                    others.append(f.pos)
                    note = (
                        f"not in a burst: a run of {len(run)} frame(s) of one ISO and exposure in {where}, "
                        f"fewer than min_frames {rule.min_frames}"
                    )
                    results[f.pos] = _Result(scene, "single", None, note)
                continue
            keys = [ids[f.pos] if isinstance(ids[f.pos], str) and ids[f.pos] else f.path for f in run]
            bid = burst_id(keys)
            for k, f in enumerate(run):
                role = "reference" if k == 0 else "frame"
                note = f"burst {bid}: frame {k} of {len(run)} in capture order ({where})"
                results[f.pos] = _Result(scene, role, None, note, f"{scene}|{sensor}|burst={bid}")
                members_of[f.pos] = (bid, k)
    out = _finish(df, out, results)
    if rule.others == "default" and others:
        rows = df.iloc[sorted(others)]
        paired = pair_default(rows)
        for col in ("scene", "role", "clean_path", "pair_note", "pair_group"):
            out.loc[paired.index, col] = paired[col].astype(object)
    bids = [members_of[p][0] if p in members_of else None for p in range(len(out))]
    index = [float(members_of[p][1]) if p in members_of else np.nan for p in range(len(out))]
    out["burst_id"] = pd.Series(bids, index=out.index, dtype=object)
    out["burst_index"] = pd.Series(index, index=out.index, dtype=float)
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------------- the build step

BURST_QA_CROP = 512  # packed px: the central crop QA reads of each frame, as the pair QA does
BURST_QA_VERSION = 1  # part of a group's QA key: a change of the checks re-decides stored bursts


def _meta(row) -> dict[str, Any]:
    return {
        "black_level": [float(v) for v in row["black_level"]],
        "white_level": int(row["white_level"]),
        "iso": None if pd.isna(row["iso"]) else float(row["iso"]),
        "exposure_time": None if pd.isna(row["exposure_time"]) else float(row["exposure_time"]),
        "mean_level": float(row["mean_level"]) if pd.notna(row.get("mean_level")) else float("nan"),
    }


def _clean(v: Any) -> Any:
    """JSON-safe: NumPy scalars to Python, NaN to None, recursively."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _burst_task(store_url, storage_options, path, frames, thresholds, candidates, attrs) -> dict[str, Any]:
    """One burst: read each frame's central crop, check the burst, write its group with the verdicts.

    ``frames``: ``[(frame id, meta)]`` in capture order. A frame whose crop cannot be read is excluded with
    the reason and the others go on. Returns ``{"qa": check_burst's result, PROFILE_KEY: CPU by phase}``.
    """
    from .burst_qa import check_burst
    from .ingest import PROFILE_KEY, PhaseClock
    from .store import FrameStore, _os_reason

    clock = PhaseClock()
    store = FrameStore(store_url, storage_options)
    crops: list[Any] = []
    with clock("read"):
        for fid, _ in frames:
            try:
                crops.append(store.read_crop(fid, BURST_QA_CROP))
            except Exception as e:  # this frame's reason
                crops.append(e)
    with clock("check"):
        qa = check_burst(
            crops, [m for _, m in frames], thresholds=thresholds, reference_candidates=candidates
        )
    out: dict[str, Any] = {"qa": qa}
    with clock("write"):
        readable = [fid for (fid, _), c in zip(frames, crops, strict=True) if not isinstance(c, Exception)]
        if len(readable) == len(frames):  # a frame that cannot be read leaves no group (the next run retries)
            try:
                store.write_burst(path, [fid for fid, _ in frames], _clean({**attrs, **_group_qa(qa)}))
            except OSError as e:  # the machine's (disk full, read-only), not the burst's: stop the build
                out["store_error"] = f"cannot write burst {path} into {store_url}: {_os_reason(e)}"
    return {**out, PROFILE_KEY: clock.cpu}


def _group_qa(qa: dict[str, Any]) -> dict[str, Any]:
    """The verdicts as the group keeps them: the reference's index and each frame's QA row."""
    return {"reference": qa["reference"], "qa_frames": qa["frames"]}


def run_bursts(
    client, cat: pd.DataFrame, store, thresholds, cpu: dict[str, float], reference_candidates: int = 1
) -> pd.DataFrame:
    """QA every burst of ``cat`` and write its group: one Dask task per burst whose group is missing or was
    checked with other thresholds; bursts already written with these frames and thresholds take their
    verdicts from the group (a re-run does no work). Returns the catalog with the verdicts (role, status,
    ``error``, ``qa_reason``, the columns of :data:`rawlab.catalog.burst_qa.BURST_QA_COLUMNS`)."""
    from ..cluster import run_tasks
    from .burst_qa import BURST_QA_COLUMNS
    from .ingest import PROFILE_KEY
    from .store import StoreWriteError

    cat = cat.copy()
    for col in ("sharpness", "qa_reason"):
        if col not in cat.columns:
            cat[col] = None
    in_burst = cat["burst_id"].notna() & (cat["status"] != "failed") if "burst_id" in cat.columns else None
    if in_burst is None or not in_burst.any():
        return cat
    cat["sharpness"] = pd.to_numeric(cat["sharpness"], errors="coerce")
    tkey = json.dumps(sorted(thresholds.to_dict().items()))
    todo, verdicts = [], {}
    for bid, rows in cat[in_burst].groupby("burst_id", sort=True):
        rows = rows.sort_values("burst_index")
        sensor = rows["sensor"].iloc[0]
        path = store.burst_path(sensor, bid)
        fids = rows["frame_id"].tolist()
        candidates = reference_candidates
        key = f"{BURST_QA_VERSION}|{tkey}|{candidates}"
        done = store.burst_attrs(path)
        if done is not None and done.get("frame_ids") == fids and done.get("qa_key") == key:
            verdicts[bid] = (rows.index, {"reference": done["reference"], "frames": done["qa_frames"]})
            continue
        attrs = {
            "format": BURST_FORMAT, "burst_id": bid, "sensor": sensor, "paths": rows["path"].tolist(),
            "iso": rows["iso"].iloc[0], "exposure_time": rows["exposure_time"].iloc[0],
            "capture_time": rows["capture_time"].tolist() if "capture_time" in rows else None,
            "thresholds": thresholds.to_dict(), "qa_key": key,
        }  # fmt: skip
        frames = [(fid, _meta(r)) for fid, (_, r) in zip(fids, rows.iterrows(), strict=True)]
        args = (store.url, store.storage_options, path, frames, thresholds, candidates, attrs)
        todo.append((bid, rows.index, args))
    outcomes = run_tasks(client, _burst_task, [a for _, _, a in todo], name="bursts") if todo else []
    failed = [out.value["store_error"] for out in outcomes if out.ok and out.value.get("store_error")]
    if failed:
        raise StoreWriteError(
            f"{failed[0]}; the build stopped before its catalog update (bursts written before it are reused by "
            f"the next run) — free space or fix the permissions of {store.url} and run the build again"
        )
    for (bid, index, _), out in zip(todo, outcomes, strict=True):
        if out.ok:
            prof = out.value.pop(PROFILE_KEY, {})
            for phase, sec in prof.items():
                cpu[f"bursts: {phase}"] = cpu.get(f"bursts: {phase}", 0.0) + float(sec)
            verdicts[bid] = (index, out.value["qa"])
        else:
            why = f"{type(out.error).__name__ if out.error else 'KilledWorker'}: {out.error}"
            bad = {"role": "excluded", "status": "excluded", "reason": f"burst QA could not run: {why}"}
            verdicts[bid] = (index, {"reference": None, "frames": [bad] * len(index)})
    for bid, (index, qa) in sorted(verdicts.items()):
        for idx, res in zip(index, qa["frames"], strict=True):
            for k in BURST_QA_COLUMNS:
                if k in res:
                    cat.at[idx, k] = np.nan if res[k] is None else res[k]
            cat.at[idx, "role"] = res["role"]
            cat.at[idx, "qa_reason"] = res.get("reason", "")
            if res["status"] == "excluded":
                cat.at[idx, "status"], cat.at[idx, "error"] = "excluded", res.get("reason", "")
            if res["role"] == "reference":
                k = int(cat.at[idx, "burst_index"])
                cat.at[idx, "pair_note"] = f"reference of burst {bid} (frame {k})"
    return cat


# ---------------------------------------------------------------------------------------------- reading


def open_burst(store: str | os.PathLike[str], burst_id: str, storage_options: dict | None = None):
    """One burst of a store as a lazy ``xarray.Dataset``.

    ``raw`` is uint16 ``(frame, channel, y, x)`` backed by dask over the burst's Zarr chunks, every frame in
    capture order (``frame`` is ``burst_index``), excluded ones included; coordinates per frame from the
    catalog: ``frame_id``, ``path``, ``role`` (``reference``/``frame``/``excluded``), ``status``,
    ``qa_reason``, ``align_dy``, ``align_dx`` (mosaic px, ``frame(y, x) = ref(y - dy, x - dx)``), ``gain``,
    ``sharpness``, ``capture_time`` (s), ``black_level`` (frame, channel); attributes ``burst_id``,
    ``sensor``, ``reference`` (the reference's index), ``iso``, ``exposure_time``, ``cfa``, ``white_level``.
    Keep the usable frames with ``ds.isel(frame=ds.status.values == "ok")``.

    Raises
    ------
    RawlabError
        If the store has no such burst, or its group is not written (an interrupted build: run it again).
    """
    import xarray as xr

    from ..bayer import CHANNELS
    from . import open_catalog
    from .store import FrameStore

    cat = open_catalog(store, storage_options)
    rows = cat[cat["burst_id"] == burst_id] if "burst_id" in cat.columns else cat.iloc[:0]
    if rows.empty:
        known = sorted(cat["burst_id"].dropna().unique()) if "burst_id" in cat.columns else []
        raise RawlabError(
            f"store {os.fspath(store)} has no burst {burst_id!r}; its bursts: {', '.join(known) or 'none'} "
            "(build with --recipe bursts or --recipe auto to recognise bursts)"
        )
    rows = rows.sort_values("burst_index")
    fstore = FrameStore(store, storage_options)
    path = fstore.burst_path(rows["sensor"].iloc[0], burst_id)
    attrs = fstore.burst_attrs(path)
    if attrs is None or attrs.get("frame_ids") != rows["frame_id"].tolist():
        raise RawlabError(
            f"burst {burst_id} of {fstore.url} is not (completely) written; run the catalog build again"
        )
    n = len(rows)

    def col(name: str, dtype=object):
        values = rows[name] if name in rows.columns else pd.Series([None] * n)
        return ("frame", values.to_numpy(dtype=dtype) if dtype is float else values.astype(object).to_numpy())

    first = rows.iloc[0]
    ds = xr.Dataset(
        {"raw": (("frame", "channel", "y", "x"), fstore.burst_array(path))},
        coords={
            "frame": np.arange(n),
            "channel": np.array(CHANNELS, dtype=object),
            **{c: col(c) for c in ("frame_id", "path", "role", "status", "qa_reason")},
            **{c: col(c, float) for c in ("align_dy", "align_dx", "gain", "sharpness", "capture_time")},
            "black_level": (("frame", "channel"), np.stack(rows["black_level"].to_numpy()).astype(float)),
        },
        attrs={
            "burst_id": burst_id,
            "sensor": first["sensor"],
            "reference": attrs.get("reference"),
            "iso": float(first["iso"]),
            "exposure_time": float(first["exposure_time"]),
            "cfa": first["cfa"],
            "white_level": float(first["white_level"]),
        },
    )
    return ds


def open_bursts(store: str | os.PathLike[str], storage_options: dict | None = None):
    """Every burst of a store as an ``xarray.DataTree``: ``/<sensor>/<burst id>``, each :func:`open_burst`."""
    import xarray as xr

    from . import open_catalog

    cat = open_catalog(store, storage_options)
    if "burst_id" not in cat.columns:
        return xr.DataTree(name="bursts")
    tree = {}
    for (sensor, bid), _ in cat[cat["burst_id"].notna()].groupby(["sensor", "burst_id"], sort=True):
        tree[f"/{str(sensor).replace('/', '_')}/{bid}"] = open_burst(store, bid, storage_options)
    return xr.DataTree.from_dict(tree, name="bursts")
