"""``rawlab catalog build``: scan, ingest (one Dask task per file), pair, check pair quality, write the catalog.

Incremental and resumable: frames are keyed by content hash and written completely before being marked done
(:mod:`rawlab.catalog.store`), and a file whose path, size and modification time match the previous catalog is
not read again. A re-run after a crash or a SIGKILL therefore ingests only what is missing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import RawlabError
from .ingest import ingest_file
from .qa import QA_COLUMNS
from .scan import scan_sources
from .store import FrameStore

__all__ = ["BuildSummary", "build_catalog"]

# Catalog columns in a stable, readable order; any other column follows.
COLUMNS = [
    "path", "sha256", "frame_id", "status", "error", "error_kind", "make", "model", "sensor", "iso",
    "exposure_time", "cfa", "black_level", "white_level", "height", "width", "scene", "role", "clean_path",
    "saturated_frac", "mean_level", "align_dy", "align_dx", "align_match", "gain", "gain_r", "gain_g1",
    "gain_g2", "gain_b", "expected_gain", "ref_saturated_frac", "qa_reason", "raw_format", "wb", "make_source",
    "model_source", "iso_source", "exposure_source", "relpath", "source_root", "size", "mtime",
]  # fmt: skip


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
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"catalog build: {self.n_files} files -> {self.store}: {self.n_ingested} ingested, "
            f"{self.n_reused} already there, {self.n_failed} failed, {self.n_excluded} excluded by QA, "
            f"{self.n_pairs} noisy/clean pairs, {len(self.sensors)} sensors ({self.seconds:.1f} s)"
        )


def _previous_rows(store: FrameStore) -> dict[str, dict[str, Any]]:
    cat = store.read_catalog()
    if cat is None:
        return {}
    return {r["path"]: r for r in cat.to_dict("records") if r.get("status") in ("ok", "excluded")}


def _unchanged(prev: dict[str, Any] | None, src: dict[str, Any], complete: set[str]) -> bool:
    return (
        prev is not None
        and prev.get("frame_id") in complete
        and prev.get("size") == src["size"]
        and (src["mtime"] is None or prev.get("mtime") == src["mtime"])
    )


def _run_ingest(client, todo, store_url, storage_options, progress) -> list[dict[str, Any]]:
    """One task per file. Files whose worker died are retried one at a time, so that a file is recorded as
    crashing only when it kills a worker on its own (a dying worker also takes its queued neighbours down)."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    def submit(i, src):
        key = f"ingest-{i}-{src['path'][-40:]}"
        return client.submit(ingest_file, src, store_url, storage_options, key=key, pure=False)

    def outcome(fut, src) -> dict[str, Any] | None:
        try:
            return fut.result()
        except KilledWorker:
            return None
        except Exception as e:  # a bug in rawlab for this file: record it, keep going
            return {**src, "status": "failed", "error_kind": "internal", "error": f"{type(e).__name__}: {e}"}
        finally:
            fut.release()

    futures = {submit(i, src): src for i, src in enumerate(todo)}
    rows, suspects = [], []
    for fut in as_completed(futures):
        row = outcome(fut, futures[fut])
        if row is None:
            suspects.append(futures[fut])
            continue
        rows.append(row)
        if progress:
            progress(1)
    for i, src in enumerate(suspects):  # alone now: a second death convicts the file
        row = outcome(submit(f"retry-{i}", src), src)
        rows.append(row if row is not None else {
            **src, "status": "failed", "error_kind": "crash",
            "error": "the worker process died while reading this file, also when retried alone (LibRaw crash)",
        })  # fmt: skip
        if progress:
            progress(1)
    return rows


def _run_qa(client, cat: pd.DataFrame, store_url, storage_options, thresholds, previous) -> pd.DataFrame:
    noisy = cat[(cat["role"] == "noisy") & (cat["status"] == "ok")]
    if noisy.empty:
        return cat
    by_path = cat.set_index("path")
    tkey = repr(sorted(thresholds.to_dict().items()))
    jobs, results = {}, {}
    for idx, row in noisy.iterrows():
        ref = by_path.loc[row["clean_path"]]
        prev = previous.get(row["path"])
        if (
            prev is not None
            and prev.get("qa_key") == f"{row['frame_id']}|{ref['frame_id']}|{tkey}"
            and prev.get("align_dy") is not None
        ):
            results[idx] = {**{k: prev.get(k) for k in QA_COLUMNS}, "reason": prev.get("qa_reason", "")}
            results[idx]["status"] = "excluded" if results[idx]["reason"] else "ok"
            continue
        jobs[idx] = client.submit(
            _qa_task, store_url, storage_options, ref["frame_id"], row["frame_id"],
            _meta(ref), _meta(row), thresholds, pure=False,
        )  # fmt: skip
    for idx, fut in jobs.items():
        try:
            results[idx] = fut.result()
        except Exception as e:
            results[idx] = {"status": "excluded", "reason": f"QA could not run: {type(e).__name__}: {e}"}
    cat = cat.copy()
    cat["qa_key"] = cat.get("qa_key", pd.Series(None, index=cat.index, dtype=object)).astype(object)
    for idx, res in results.items():
        for k in QA_COLUMNS:
            if k in res and k not in ("status", "reason"):
                cat.at[idx, k] = res[k]
        cat.at[idx, "qa_key"] = (
            f"{cat.at[idx, 'frame_id']}|{by_path.loc[cat.at[idx, 'clean_path'], 'frame_id']}|{tkey}"
        )
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


def _qa_task(store_url, storage_options, ref_id, noisy_id, ref_meta, meta, thresholds):
    from .qa import check_pair

    store = FrameStore(store_url, storage_options)
    # A central crop is plenty for alignment and gain; saturation and level are whole-frame, from ingest.
    return check_pair(
        store.read_crop(ref_id, QA_CROP),
        store.read_crop(noisy_id, QA_CROP),
        ref_meta=ref_meta,
        meta=meta,
        thresholds=thresholds,
        ref_stats={k: ref_meta[k] for k in ("saturated_frac", "mean_level")},
        stats={k: meta[k] for k in ("saturated_frac", "mean_level")},
    )


def _finalise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cat = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in cat.columns:
            cat[col] = None
    cat = cat[COLUMNS + [c for c in cat.columns if c not in COLUMNS and c != "reused"]]
    cat = cat.sort_values("path", kind="stable").reset_index(drop=True)
    for col in ("iso", "exposure_time", "saturated_frac", "mean_level", "align_dy", "align_dx", "gain"):
        cat[col] = pd.to_numeric(cat[col], errors="coerce")
    return cat


def build_catalog(
    sources: list[str],
    out: str,
    *,
    recipe: str | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    thresholds=None,
    storage_options: dict | None = None,
    progress: Callable[[int], None] | None = None,
    set_total: Callable[[int], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, BuildSummary]:
    """Build (or update) the store at ``out`` from raw files under ``sources``.

    Parameters
    ----------
    sources
        Folders, files or glob patterns; local paths or fsspec URLs.
    out
        Store path or URL (created if missing; updated incrementally if it is a rawlab store).
    recipe
        Pairing recipe name (``catalogs/<name>.yaml``) or YAML path; ``None`` uses the default rule.
    client
        An existing ``distributed.Client``; else one is created (``scheduler`` address or a local cluster).
    thresholds
        :class:`rawlab.catalog.qa.QAThresholds` for the pair checks.

    Returns
    -------
    (catalog, summary)
    """
    from ..cluster import dask_client
    from .pairing import load_recipe, pair_frames
    from .qa import QAThresholds

    t0 = time.perf_counter()
    storage_options = storage_options or {}
    thresholds = thresholds or QAThresholds()
    recipe_obj = load_recipe(recipe) if recipe else None  # validate before any work
    scan = scan_sources(list(sources), storage_options)
    store = FrameStore(out, storage_options)
    try:
        store.initialise(
            {"sources": list(sources), "recipe": recipe, "qa_thresholds": thresholds.to_dict(),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )  # fmt: skip
    except OSError as e:
        raise RawlabError(f"cannot write the store {out!r}: {e}; choose a writable --out") from None
    previous = _previous_rows(store)
    complete_frames, incomplete = store.frames_state()
    store.remove_frames(
        incomplete
    )  # leftovers of a killed build: rewritten below if their file is still there
    complete = set(complete_frames)
    srcs = [dataclasses.asdict(f) for f in scan.files]
    reused = [{**previous[s["path"]], **s} for s in srcs if _unchanged(previous.get(s["path"]), s, complete)]
    todo = [s for s in srcs if not _unchanged(previous.get(s["path"]), s, complete)]
    if set_total:
        set_total(len(todo))

    timings: dict[str, float] = {"scan": time.perf_counter() - t0}

    def work(c, dashboard):
        t = time.perf_counter()
        rows = _run_ingest(c, todo, store.url, storage_options, progress) if todo else []
        timings["ingest"] = time.perf_counter() - t
        cat = _finalise(reused + rows)
        cat = pair_frames(cat, recipe_obj)
        # Exclusion is a QA outcome only: clear it so the checks (and any new thresholds) decide afresh.
        redo = cat["status"] == "excluded"
        cat.loc[redo, "status"], cat.loc[redo, "error"] = "ok", ""
        t = time.perf_counter()
        cat = _run_qa(c, cat, store.url, storage_options, thresholds, previous)
        timings["qa"] = time.perf_counter() - t
        return cat, rows, dashboard

    if client is not None:
        cat, rows, dashboard = work(client, getattr(client, "dashboard_link", None))
    else:
        with dask_client(scheduler, workers=workers, echo=echo) as (c, info):
            cat, rows, dashboard = work(c, info.dashboard)
    cat = _finalise(cat.to_dict("records"))
    store.write_catalog(cat)
    failed = cat[cat["status"] == "failed"]
    summary = BuildSummary(
        store=store.url,
        n_files=len(cat),
        n_ingested=sum(1 for r in rows if r.get("status") == "ok" and not r.get("reused")),
        n_reused=len(reused) + sum(1 for r in rows if r.get("reused")),
        n_failed=len(failed),
        n_excluded=int((cat["status"] == "excluded").sum()),
        n_skipped=scan.skipped,
        n_pairs=int(((cat["role"] == "noisy") & (cat["status"] == "ok")).sum()),
        sensors=sorted(cat.loc[cat["status"] != "failed", "sensor"].dropna().unique().tolist()),
        seconds=time.perf_counter() - t0,
        dashboard=dashboard,
        timings=timings,
        failures=list(zip(failed["path"], failed["error"], strict=True)),
    )
    return cat, summary
