"""``rawlab catalog build``: scan, ingest (one Dask task per file), pair, check pair quality, write the catalog.

Incremental and resumable: frames are keyed by content hash and written completely before being marked done
(:mod:`rawlab.catalog.store`), and a file whose path, size and modification time match the previous catalog is
not read again. A re-run after a crash or a SIGKILL therefore ingests only what is missing.

Safe to point at a store in use: one build at a time holds the store's lock (a second one waits, then reuses
what the first wrote); the catalog is merged, never replaced, so building folders one after another adds them
up; and a failure to write the store (disk full, read-only) stops the build before the catalog changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..cluster import RunOptions, TaskOutcome, run_tasks, wait_idle, worker_threads
from ..errors import RawlabError
from .ingest import PROFILE_KEY, PhaseClock, ingest_file
from .qa import QA_COLUMNS
from .scan import scan_sources
from .store import FrameStore, StoreWriteError

__all__ = ["BuildSummary", "build_catalog"]

# Catalog columns in a stable, readable order; any other column follows.
COLUMNS = [
    "path", "sha256", "frame_id", "status", "error", "error_kind", "make", "model", "sensor", "iso",
    "exposure_time", "cfa", "black_level", "white_level", "height", "width", "scene", "role", "clean_path",
    "saturated_frac", "mean_level", "align_dy", "align_dx", "align_match", "gain", "gain_r", "gain_g1",
    "gain_g2", "gain_b", "expected_gain", "ref_saturated_frac", "qa_reason", "raw_format", "wb", "make_source",
    "model_source", "iso_source", "exposure_source", "relpath", "source_root", "size", "mtime", "other_paths",
    "recipe", "capture_time", "burst_id", "burst_index", "sharpness",
]  # fmt: skip
# Copies of a row's content: their paths (for people) and their scan details as JSON (for the next run).
DUPLICATE_COLUMNS = ("other_paths", "other_sources")
SOURCE_KEYS = ("path", "relpath", "source_root", "size", "mtime")


@dataclass
class BuildSummary:
    store: str
    n_files: int
    n_ingested: int
    n_reused: int
    n_failed: int
    n_excluded: int
    n_skipped: int
    n_pairs: int
    sensors: list[str]
    seconds: float
    dashboard: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # CPU seconds by phase, summed over files: the tasks' ("ingest: decode", "qa: check", ...; each measured in
    # its worker process) and this process's ("driver: ..."; with a local cluster, the scheduler runs here too)
    cpu: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_duplicates: int = 0  # copies of another file's content, listed in its row's other_paths
    n_kept: int = 0  # files of other sources, from earlier builds into the store
    n_bursts: int = 0  # bursts recognised (recipe rule "bursts"), and the frames in them
    n_burst_frames: int = 0

    def line(self) -> str:
        extra = f", {self.n_duplicates} duplicate copies listed once" if self.n_duplicates else ""
        extra += f", {self.n_kept} from earlier builds of other sources" if self.n_kept else ""
        extra += f", {self.n_bursts} bursts of {self.n_burst_frames} frames" if self.n_bursts else ""
        return (
            f"catalog build: {self.n_files} files -> {self.store}: {self.n_ingested} ingested, "
            f"{self.n_reused} already there, {self.n_failed} failed, {self.n_excluded} excluded by QA, "
            f"{self.n_pairs} noisy/clean pairs, {len(self.sensors)} sensors{extra} ({self.seconds:.1f} s)"
        )


def _expand_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per source path: a catalog row stands for its path and for each copy in ``other_sources``."""
    out = []
    for r in rows:
        copies = r.get("other_sources")
        out.append({k: v for k, v in r.items() if k not in DUPLICATE_COLUMNS})
        if isinstance(copies, str) and copies:
            for src in json.loads(copies):
                out.append({**out[-1], **src, "reused": True})
    return out


def _collapse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per content: copies with the same SHA-256 become one row, the first path in name order, which
    lists the others in ``other_paths`` (and their scan details in ``other_sources``), so they never pair with
    each other and count once in every statistic."""
    by_sha: dict[str, list[dict[str, Any]]] = {}
    out = []
    for r in sorted(rows, key=lambda r: r["path"]):
        sha = r.get("sha256")
        if isinstance(sha, str) and sha:
            by_sha.setdefault(sha, []).append(r)
        else:
            out.append({**r, "other_paths": [], "other_sources": ""})
    for group in by_sha.values():
        first, copies = group[0], group[1:]
        out.append({
            **first,
            "other_paths": [c["path"] for c in copies],
            "other_sources": json.dumps([{k: c.get(k) for k in SOURCE_KEYS} for c in copies]) if copies else "",
        })  # fmt: skip
    return out


def _unchanged(prev: dict[str, Any] | None, src: dict[str, Any], complete: set[str]) -> bool:
    return (
        prev is not None
        and prev.get("status") in ("ok", "excluded")
        and prev.get("frame_id") in complete
        and prev.get("size") == src["size"]
        and (src["mtime"] is None or prev.get("mtime") == src["mtime"])
    )


class _StoreFull(Exception):
    """Raised from a result callback to stop the ingest: writing the store failed (see ``store_error``)."""


def _add_profile(cpu: dict[str, float], prefix: str, value: Any) -> None:
    """Take a task's CPU profile out of its result (a dict) and add it to ``cpu``."""
    prof = value.pop(PROFILE_KEY, None) if isinstance(value, dict) else None
    for phase, sec in (prof or {}).items():
        key = f"{prefix}: {phase}"
        cpu[key] = cpu.get(key, 0.0) + float(sec)


def _run_ingest(client, todo, store_url, options: RunOptions, cpu: dict[str, float]) -> list[dict[str, Any]]:
    """One task per file. Files whose worker died are retried one at a time, so that a file is recorded as
    crashing only when it kills a worker on its own (a dying worker also takes its queued neighbours down).
    A row with a ``store_error`` (disk full, read-only store) stops the run at once."""

    def check(out: TaskOutcome) -> None:
        if out.ok and out.value.get("store_error"):
            raise _StoreFull(out.value["store_error"])

    args = [(src, store_url, options.storage_options) for src in todo]
    outcomes = run_tasks(
        client,
        ingest_file,
        args,
        name="ingest",
        progress=options.progress,
        on_result=check,
        retry_killed=True,
    )
    rows = []
    for out, src in zip(outcomes, todo, strict=True):
        if out.ok:
            _add_profile(cpu, "ingest", out.value)
            rows.append(out.value)
        elif out.killed:
            rows.append({
                **src, "status": "failed", "error_kind": "crash",
                "error": "the worker process died while reading this file, also when retried alone (LibRaw crash)",
            })  # fmt: skip
        else:  # a bug in rawlab for this file: record it, keep going
            rows.append({**src, "status": "failed", "error_kind": "internal",
                         "error": f"{type(out.error).__name__}: {out.error}"})  # fmt: skip
    return rows


def _qa_key(row, ref, tkey: str) -> str:
    return f"{row['frame_id']}|{ref['frame_id']}|{tkey}"


def _run_qa(
    client, cat: pd.DataFrame, store_url, options: RunOptions, thresholds, previous, cpu: dict[str, float],
    n_workers: int = 1,
) -> pd.DataFrame:  # fmt: skip
    """Check every noisy frame against its reference: one task per reference (or per part of its frames, when
    there are fewer references than workers), which reads the reference's crop once for all its frames."""
    noisy = cat[(cat["role"] == "noisy") & (cat["status"] == "ok")]
    if noisy.empty:
        return cat
    by_path = cat.set_index("path")
    tkey = repr(sorted(thresholds.to_dict().items()))
    results: dict[Any, dict[str, Any]] = {}
    groups: dict[str, list[tuple[Any, str, dict[str, Any]]]] = {}
    ref_meta: dict[str, dict[str, Any]] = {}
    for idx, row in noisy.iterrows():
        ref = by_path.loc[row["clean_path"]]
        prev = previous.get(row["path"])
        if (
            prev is not None
            and prev.get("qa_key") == _qa_key(row, ref, tkey)
            and prev.get("align_dy") is not None
        ):
            results[idx] = {**{k: prev.get(k) for k in QA_COLUMNS}, "reason": prev.get("qa_reason", "")}
            results[idx]["status"] = "excluded" if results[idx]["reason"] else "ok"
            continue
        groups.setdefault(ref["frame_id"], []).append((idx, row["frame_id"], _meta(row)))
        ref_meta[ref["frame_id"]] = _meta(ref)
    batches = _qa_batches(groups, n_workers)
    so = options.storage_options
    args = [
        (store_url, so, r, ref_meta[r], [(f, m) for _, f, m in items], thresholds) for r, items in batches
    ]
    for (_rid, items), out in zip(batches, run_tasks(client, _qa_task, args, name="qa"), strict=True):
        if out.ok:
            _add_profile(cpu, "qa", out.value)
            got = out.value["results"]
        else:
            why = f"{type(out.error).__name__ if out.error else 'KilledWorker'}: {out.error}"
            got = [{"status": "excluded", "reason": f"QA could not run: {why}"}] * len(items)
        for (idx, _, _), res in zip(items, got, strict=True):
            results[idx] = res
    cat = cat.copy()
    cat["qa_key"] = cat.get("qa_key", pd.Series(None, index=cat.index, dtype=object)).astype(object)
    for idx, res in results.items():
        for k in QA_COLUMNS:
            if k in res and k not in ("status", "reason"):
                cat.at[idx, k] = res[k]
        cat.at[idx, "qa_key"] = _qa_key(cat.loc[idx], by_path.loc[cat.at[idx, "clean_path"]], tkey)
        if res.get("status") == "excluded":
            cat.at[idx, "status"] = "excluded"
            cat.at[idx, "error"] = res.get("reason", "")
        cat.at[idx, "qa_reason"] = res.get("reason", "")
    return cat


QA_CROP = 512  # packed px: QA reads the central 1024x1024 mosaic pixels of each frame (1 MP); ~0.08 s a pair


def _meta(row) -> dict[str, Any]:
    return {
        "saturated_frac": float(row["saturated_frac"]),
        "mean_level": float(row["mean_level"]),
        "black_level": list(row["black_level"]),
        "white_level": int(row["white_level"]),
        "iso": None if pd.isna(row["iso"]) else float(row["iso"]),
        "exposure_time": None if pd.isna(row["exposure_time"]) else float(row["exposure_time"]),
    }


def _qa_batches(groups: dict[str, list], n_workers: int) -> list[tuple[str, list]]:
    """``[(ref id, items)]``: one batch per reference, the largest split in halves while there are fewer batches
    than workers (so a few references with many frames still use every worker)."""
    batches = [(rid, items) for rid, items in sorted(groups.items())]
    while len(batches) < n_workers:
        i = max(range(len(batches)), key=lambda j: len(batches[j][1]), default=None)
        if i is None or len(batches[i][1]) < 2:
            break
        rid, items = batches.pop(i)
        half = (len(items) + 1) // 2
        batches[i:i] = [(rid, items[:half]), (rid, items[half:])]
    return batches


def _qa_task(store_url, storage_options, ref_id, ref_meta, items, thresholds) -> dict[str, Any]:
    """QA of the noisy frames ``items`` (``[(frame id, meta)]``) against one reference, read and prepared once
    (its normalised crop and noise floor serve every pair). The crops are read first, then the pairs checked
    on the worker's thread budget (NumPy and the FFTs release the GIL), so a worker with more threads than
    tasks does not leave them idle. A pair whose read or check raises is excluded with the reason; the others
    go on."""
    from concurrent.futures import ThreadPoolExecutor

    from .qa import check_pair, prepare_frame

    clock = PhaseClock()
    store = FrameStore(store_url, storage_options)
    # A central crop is plenty for alignment and gain; saturation and level are whole-frame, from ingest.
    with clock("read"):
        ref = store.read_crop(ref_id, QA_CROP)
        crops: list[Any] = []
        for fid, _ in items:
            try:
                crops.append(store.read_crop(fid, QA_CROP))
            except Exception as e:  # this pair's reason, below
                crops.append(e)
    ref_stats = {k: ref_meta[k] for k in ("saturated_frac", "mean_level")}

    def check(crop, meta) -> dict[str, Any]:
        try:
            if isinstance(crop, Exception):
                raise crop
            return check_pair(
                ref, crop, ref_meta=ref_meta, meta=meta, thresholds=thresholds, ref_stats=ref_stats,
                stats={k: meta[k] for k in ("saturated_frac", "mean_level")},
            )  # fmt: skip
        except Exception as e:  # one pair's failure is its own: its reason
            return {"status": "excluded", "reason": f"QA could not run: {type(e).__name__}: {e}"}

    with clock("check"):
        try:
            ref = prepare_frame(ref, ref_meta)
        except Exception:  # each pair raises it again, as its own reason
            pass
        threads = min(worker_threads(), len(items))
        if threads > 1:
            with ThreadPoolExecutor(threads, thread_name_prefix="rawlab-qa") as pool:
                results = list(pool.map(check, crops, [m for _, m in items]))
        else:
            results = [check(crop, m) for crop, (_, m) in zip(crops, items, strict=True)]
    return {"results": results, PROFILE_KEY: clock.cpu}


def _finalise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cat = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in cat.columns:
            cat[col] = None
    extra = sorted(c for c in cat.columns if c not in COLUMNS and c not in ("reused", "store_error"))
    cat = cat[COLUMNS + extra]  # a fixed order, whichever rows came first
    cat = cat.sort_values("path", kind="stable").reset_index(drop=True)
    numeric = ("iso", "exposure_time", "saturated_frac", "mean_level", "align_dy", "align_dx", "gain")
    for col in (*numeric, "capture_time", "burst_index", "sharpness"):
        cat[col] = pd.to_numeric(cat[col], errors="coerce")
    cat["other_paths"] = [
        list(v) if isinstance(v, list | tuple | np.ndarray) else [] for v in cat["other_paths"]
    ]
    cat["other_sources"] = cat["other_sources"].fillna("").astype(str) if "other_sources" in cat else ""
    return cat


def _pair(cat: pd.DataFrame, recipe_obj, key: str) -> pd.DataFrame:
    """Pair the rows built with this build's recipe, over all of them (every source of the store built with it,
    as one build of all those sources would); rows another recipe paired keep their pairs."""
    from .burst_qa import BURST_QA_COLUMNS
    from .pairing import pair_frames

    cat["recipe"] = cat["recipe"].where(cat["recipe"].notna(), key)
    mine = cat["recipe"] == key
    # Bursts are recognised afresh (by this recipe, if it has them) and checked again; what the burst QA
    # wrote on a frame that was in a burst goes, so a frame paired now starts clean.
    was = mine & cat["burst_id"].notna()
    cat.loc[was, [*BURST_QA_COLUMNS, "qa_reason"]] = None
    cat.loc[mine, ["burst_id", "burst_index"]] = None
    if mine.all():
        return pair_frames(cat, recipe_obj)
    cat = cat.copy()
    paired = pair_frames(cat[mine], recipe_obj)
    for col in paired.columns:
        if col not in cat.columns:
            cat[col] = None
        cat[col] = cat[col].astype(object)
        cat.loc[mine, col] = paired[col]
    return cat


def build_catalog(
    sources: list[str],
    out: str,
    *,
    recipe: str | None = None,
    thresholds=None,
    burst_thresholds=None,
    wait: float = 300.0,
    options: RunOptions | None = None,
) -> tuple[pd.DataFrame, BuildSummary]:
    """Build (or update) the store at ``out`` from raw files under ``sources``.

    The store's catalog is updated by merge: rows of files under ``sources`` are added or refreshed, rows of
    files that were under ``sources`` and are gone are dropped (their pixels stay in the store), and rows from
    other sources built into the store before are kept. Building folders one after another therefore gives the
    catalog one build of all of them gives. Pairs are recomputed over all rows built with the same recipe.
    Files with identical content are one row (the first path in name order), the others listed in
    ``other_paths``.

    Parameters
    ----------
    sources
        Folders, files or glob patterns; local paths or fsspec URLs.
    out
        Store path or URL (created if missing; updated incrementally if it is a rawlab store).
    recipe
        Pairing recipe name (``catalogs/<name>.yaml``) or YAML path; ``None`` uses the default rule.
    thresholds
        :class:`rawlab.catalog.qa.QAThresholds` for the pair checks.
    burst_thresholds
        :class:`rawlab.catalog.burst_qa.BurstThresholds` for the burst checks (bursts are recognised by a
        recipe with ``rule: bursts``: ``bursts``, ``auto``; :mod:`rawlab.catalog.bursts`).
    wait
        Seconds to wait for another build that holds the store (:class:`~rawlab.catalog.store.StoreLock`).
    options
        Where the work runs and how it reports (:class:`rawlab.cluster.RunOptions`); its ``storage_options``
        apply to the sources and the store.

    Returns
    -------
    (catalog, summary)

    Raises
    ------
    RawlabError
        A source that does not exist or holds no raw file, an unusable ``out``, a store another build holds
        past ``wait``, or a failure to write the store (:class:`~rawlab.catalog.store.StoreWriteError`: disk
        full, quota, read-only, denied), which stops the build with the store as it was before that file.
    """
    from .burst_qa import BurstThresholds
    from .pairing import load_recipe
    from .qa import QAThresholds

    t0, c0 = time.perf_counter(), time.process_time()
    options = options or RunOptions()
    storage_options = options.storage_options or {}
    thresholds = thresholds or QAThresholds()
    burst_thresholds = burst_thresholds or BurstThresholds()
    recipe_obj = load_recipe(recipe) if recipe else None  # validate before any work
    params = {}
    if recipe_obj is not None and recipe_obj.rule == "bursts":
        params["burst_qa_thresholds"] = burst_thresholds.to_dict()
    store = FrameStore(out, storage_options)
    store.check_target()
    scan = scan_sources(list(sources), storage_options)
    if not scan.files:
        raise RawlabError(
            f"no raw files in {', '.join(map(repr, sources))} ({scan.skipped} other files skipped), so there is "
            f"nothing to build; give the folders, files or glob patterns that hold the camera raw files"
        )
    with store.lock(wait, options.echo):
        try:
            store.initialise(
                {"sources": list(sources), "recipe": recipe, "qa_thresholds": thresholds.to_dict(), **params,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            )  # fmt: skip
        except OSError as e:
            raise RawlabError(f"cannot write the store {out!r}: {e}; choose a writable --out") from None
        return _build(scan, store, recipe_obj, (thresholds, burst_thresholds), options, t0, c0)


def _build(scan, store: FrameStore, recipe_obj, thresholds, options: RunOptions, t0: float, c0: float):
    from .bursts import run_bursts

    thresholds, burst_thresholds = thresholds
    key = recipe_obj.name if recipe_obj is not None else "default"
    old = store.read_catalog()
    old_rows = _expand_rows(old.to_dict("records")) if old is not None else []
    previous = {r["path"]: r for r in old_rows}
    # Rows of other sources stay; rows under this build's sources are rebuilt from the scan (gone: dropped).
    kept = [r for r in old_rows if not scan.covers(r["path"])]
    complete_frames, incomplete = store.frames_state()
    store.remove_frames(incomplete)  # leftovers of a killed build: rewritten if their file is still there
    complete = set(complete_frames)
    srcs = [dataclasses.asdict(f) for f in scan.files]
    reused, todo = [], []
    for src in srcs:
        prev = previous.get(src["path"])
        if _unchanged(prev, src, complete):
            # the decoder's raw_format (DNG), not the scan's guess from the first bytes (TIFF-raw)
            reused.append({**prev, **src, "raw_format": prev.get("raw_format") or src["raw_format"]})
        else:
            todo.append(src)
    options.total(len(todo))
    timings: dict[str, float] = {"scan": time.perf_counter() - t0}
    clock = PhaseClock()  # this process: the client, and a local cluster's scheduler
    clock.cpu["scan"] = time.process_time() - c0
    cpu: dict[str, float] = {}

    c = time.process_time()
    with options.session() as (client, info):
        clock.cpu["cluster start"] = time.process_time() - c
        t = time.perf_counter()
        try:
            with clock("ingest (client, scheduler)"):
                rows = _run_ingest(client, todo, store.url, options, cpu) if todo else []
        except _StoreFull as e:
            wait_idle(client)  # the tasks that were running when the store failed end on their own
            with contextlib.suppress(OSError):
                store.remove_frames(store.frames_state()[1])
            raise StoreWriteError(
                f"{e}; the build stopped and the store is as it was before this file (its catalog unchanged; "
                f"frames written before it are reused by the next run) — free space or fix the permissions of "
                f"{store.url} and run the build again"
            ) from None
        timings["ingest"] = time.perf_counter() - t
        for r in rows:
            r.setdefault("recipe", key)
        for r in reused:
            r["recipe"] = key
        with clock("pairing"):
            cat = _finalise(_collapse(kept + reused + rows))
            cat = _pair(cat, recipe_obj, key)
            # Exclusion is a QA outcome only: clear it so the checks (and any new thresholds) decide afresh.
            redo = cat["status"] == "excluded"
            cat.loc[redo, "status"], cat.loc[redo, "error"] = "ok", ""
        t = time.perf_counter()
        with clock("qa (client, scheduler)"):
            cat = _run_qa(client, cat, store.url, options, thresholds, previous, cpu, max(1, info.n_workers))
        timings["qa"] = time.perf_counter() - t
        t = time.perf_counter()
        with clock("bursts (client, scheduler)"):
            rule = recipe_obj.bursts if recipe_obj is not None and recipe_obj.rule == "bursts" else None
            candidates = rule.reference_candidates if rule is not None else 1
            cat = run_bursts(client, cat, store, burst_thresholds, cpu, candidates)
        timings["bursts"] = time.perf_counter() - t
    with clock("catalog"):
        cat = _finalise(cat.to_dict("records"))
        # Text columns stay text when every row is empty (a store with no bursts), so catalogs compare alike
        # whichever order their folders were built in.
        cat["burst_id"] = cat["burst_id"].astype(object).where(cat["burst_id"].notna(), None)
        store.write_catalog(cat)
    cpu.update({f"driver: {k}": v for k, v in clock.cpu.items()})
    failed = cat[cat["status"] == "failed"]
    n_copies = int(sum(len(v) for v in cat["other_paths"]))
    summary = BuildSummary(
        store=store.url,
        n_files=len(cat) + n_copies,
        n_ingested=sum(1 for r in rows if r.get("status") == "ok" and not r.get("reused")),
        n_reused=len(reused) + sum(1 for r in rows if r.get("reused")),
        n_failed=len(failed),
        n_excluded=int((cat["status"] == "excluded").sum()),
        n_skipped=scan.skipped,
        n_pairs=int(((cat["role"] == "noisy") & (cat["status"] == "ok")).sum()),
        sensors=sorted(cat.loc[cat["status"] != "failed", "sensor"].dropna().unique().tolist()),
        seconds=time.perf_counter() - t0,
        dashboard=info.dashboard,
        timings=timings,
        cpu=cpu,
        failures=list(zip(failed["path"], failed["error"], strict=True)),
        n_duplicates=n_copies,
        n_kept=len(kept),
        n_bursts=int(cat["burst_id"].nunique()),
        n_burst_frames=int(cat["burst_id"].notna().sum()),
    )
    return cat, summary
