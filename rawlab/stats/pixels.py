"""Pixel statistics of a whole store as Dask reductions: exposure, saturation and level histograms.

Each frame is read through :meth:`FrameStore.frame_array` (a dask array over its Zarr chunks). A function
mapped over every chunk reduces it to a small vector per channel (:data:`FIELDS` then the histogram), and
``sum`` over the chunk axes reduces those in a tree. :func:`frame_stats` runs one cluster task per frame
(:func:`rawlab.cluster.run_tasks`), which computes that tree chunk by chunk: one pass over the pixels, one
chunk in memory at a time, whatever the size of the store. What comes back to this process is one small
vector per frame; the per-frame numbers and the histogram per sensor and ISO are reduced here, in catalog
order, so the result does not depend on which task finished first.

The histogram is of the normalised signal ``x`` (docs/architecture.md) in stops below white, ``log2(x)``, in quarter
stops from -14 to 0 (:data:`HIST_EDGES`); samples at or below ``2**-14`` (including negative noise around
black) are counted apart as ``n_under``, and white (x >= 1) falls in the top bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..bayer import CHANNELS, normalise

if TYPE_CHECKING:
    from ..cluster import RunOptions

__all__ = [
    "FIELDS",
    "HIST_EDGES",
    "SUMMARY",
    "PixelGroup",
    "frame_stats",
    "frame_stats_graph",
    "level_quantile",
]

FIELDS = ("n", "sum_x", "sum_x2", "n_saturated", "n_zero", "n_under")
HIST_EDGES = np.linspace(-14.0, 0.0, 57)  # log2(x): quarter stops from 2**-14 to white
_NF = len(FIELDS)
_NB = len(HIST_EDGES) - 1
_WIDTH = _NF + _NB


def _block_stats(block: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    """Per-channel sums of one chunk ``(4, h, w)`` DN -> ``(4, 1, 1, FIELDS + bins)`` (float64, exact counts)."""
    out = np.zeros((block.shape[0], 1, 1, _WIDTH))
    xs = normalise(block, black, white, dtype=np.float64)
    for c in range(block.shape[0]):
        dn = block[c].ravel()
        x = xs[c].ravel()
        out[c, 0, 0, :_NF] = (
            dn.size,
            x.sum(),
            (x * x).sum(),
            np.count_nonzero(dn >= white),
            np.count_nonzero(dn == 0),
            0.0,
        )
        lo = x > 2.0 ** HIST_EDGES[0]
        out[c, 0, 0, 5] = dn.size - np.count_nonzero(lo)
        idx = np.clip(((np.log2(x[lo]) - HIST_EDGES[0]) * 4.0).astype(np.int64), 0, _NB - 1)
        out[c, 0, 0, _NF:] = np.bincount(idx, minlength=_NB)
    return out


def level_quantile(hist: np.ndarray, n_under: float, q: float) -> float:
    """The ``q`` quantile of the normalised signal from a stops histogram (log-linear inside a bin).

    Returns NaN for an empty histogram and ``0.0`` when the quantile falls among the samples at or below
    ``2**-14`` (``n_under``).
    """
    hist = np.asarray(hist, dtype=np.float64)
    total = n_under + hist.sum()
    if total <= 0:
        return float("nan")
    target = q * total
    if target <= n_under:
        return 0.0
    cum = n_under + np.cumsum(hist)
    i = int(np.searchsorted(cum, target))
    i = min(i, _NB - 1)
    before = cum[i] - hist[i]
    frac = (target - before) / hist[i] if hist[i] > 0 else 0.0
    stops = HIST_EDGES[i] + frac * (HIST_EDGES[i + 1] - HIST_EDGES[i])
    return float(min(2.0**stops, 1.0))


SUMMARY = (
    "n_samples", "mean_level", "level_std", "saturated_frac", "zero_frac", "level_p50", "level_p99",
    *(f"mean_{c}" for c in CHANNELS),
)  # fmt: skip


def _summarise(sums: np.ndarray) -> np.ndarray:
    """Per-frame summaries (:data:`SUMMARY`) from a block of frames' sums ``(n, 4, width)`` (on a worker)."""
    out = np.empty((sums.shape[0], len(SUMMARY)))
    for k, f in enumerate(sums):
        n = f[:, 0]
        mean_c = f[:, 1] / n
        var_c = f[:, 2] / n - mean_c**2
        total = n.sum()
        hist, under = f[:, _NF:].sum(axis=0), f[:, 5].sum()
        out[k] = (
            total, mean_c.mean(), np.sqrt(np.maximum(var_c, 0)).mean(), f[:, 3].sum() / total,
            f[:, 4].sum() / total, level_quantile(hist, under, 0.50), level_quantile(hist, under, 0.99), *mean_c,
        )  # fmt: skip
    return out


@dataclass
class PixelGroup:
    """The lazy pixel pass of one sensor at one ISO (ISO NaN: frames without one).

    ``summaries`` is a dask array ``(n_frames, len(SUMMARY))``, one row per frame of ``frame_ids``;
    ``hist`` a dask array ``(4, FIELDS + bins)`` of per-channel sums over the group's frames.
    """

    sensor: str
    iso: float
    frame_ids: list[str]
    summaries: Any
    hist: Any


def _frame_sums(fstore, row: dict[str, Any]):
    """Lazy per-channel sums ``(4, FIELDS + bins)`` of one frame: one task per chunk, added in a tree."""
    black = np.asarray(row["black_level"], dtype=np.float64)
    white = float(row["white_level"])
    return (
        fstore.frame_array(row["frame_id"])
        .map_blocks(
            _block_stats, black=black, white=white, new_axis=3, chunks=(4, 1, 1, _WIDTH), dtype=np.float64
        )
        .sum(axis=(1, 2))
    )


def _groups(cat: pd.DataFrame) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """The rows of :func:`pixel_rows` per sensor and ISO (ISO NaN: frames without one), in catalog order."""
    members: dict[tuple[str, float], list] = {}
    for r in pixel_rows(cat).to_dict("records"):
        iso = float(r["iso"]) if r["iso"] is not None and np.isfinite(r["iso"]) else math.nan
        members.setdefault((r["sensor"], iso), []).append(r)
    return members


def frame_stats_graph(store, cat: pd.DataFrame, storage_options: dict | None = None) -> list[PixelGroup]:
    """The lazy Dask graph of the pixel pass, one :class:`PixelGroup` per sensor and ISO.

    Frames are the catalog's rows with pixels (status ``ok`` or ``excluded``), each content hash once. Per
    chunk one task reads it and reduces it (``_block_stats``); per frame the chunk sums are added in a tree;
    per group the frames' sums are stacked, summarised (one task per frame) and added into the histogram.
    :func:`frame_stats` runs the same per-frame graphs, one cluster task per frame.
    """
    import dask.array as da

    from ..catalog.store import FrameStore

    fstore = FrameStore(store, storage_options)
    groups = []
    for (sensor, iso), rows in _groups(cat).items():
        stacked = da.stack([_frame_sums(fstore, r) for r in rows])  # (n, 4, width), one chunk per frame
        summaries = stacked.map_blocks(_summarise, drop_axis=2, chunks=(1, len(SUMMARY)), dtype=np.float64)
        groups.append(PixelGroup(sensor, iso, [r["frame_id"] for r in rows], summaries, stacked.sum(axis=0)))
    return groups


def _frame_task(store, storage_options: dict, row: dict[str, Any]) -> np.ndarray:
    """One frame's sums ``(4, FIELDS + bins)``, computed chunk by chunk on this worker (one task per frame)."""
    from ..catalog.store import FrameStore

    return np.asarray(_frame_sums(FrameStore(store, storage_options), row).compute(scheduler="sync"))


def pixel_rows(cat: pd.DataFrame) -> pd.DataFrame:
    """The catalog rows the pixel pass reads: those with pixels (``ok`` or ``excluded``), one per content hash."""
    has = cat["frame_id"].notna() & (cat["frame_id"] != "") & cat["status"].isin(["ok", "excluded"])
    return cat[has].drop_duplicates("frame_id")


def frame_stats(
    store,
    cat: pd.DataFrame | None = None,
    *,
    options: RunOptions | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, float], np.ndarray]]:
    """Run the pixel pass: one task per frame (:func:`rawlab.cluster.run_tasks`), reduced here in a fixed order.

    Parameters
    ----------
    store
        Store path or URL.
    cat
        Its catalog (read from the store when not given).
    options
        Where the work runs and how it reports (:class:`rawlab.cluster.RunOptions`): ``progress(1)`` as each
        frame is done. Default: a new local cluster.

    Returns
    -------
    frames
        One row per catalog row with pixels (identical content shares the numbers): ``path``, ``frame_id``,
        ``sensor``, ``iso``, and ``mean_level`` (normalised, mean of the four channel means), ``mean_R`` ...
        ``mean_B``, ``level_std`` (mean per-channel spread of x: scene contrast plus noise),
        ``saturated_frac`` and ``zero_frac`` (0..1 of samples at the white level, at 0 DN), ``level_p50``
        and ``level_p99`` (normalised quantiles of x over all channels, from the quarter-stop histogram).
    hists
        ``{(sensor, iso): (4, FIELDS + bins) array}``: per-channel sums and the stops histogram
        (:data:`HIST_EDGES`) over the group's frames. ISO is NaN for frames without one.

    Raises
    ------
    RawlabError
        If a frame the catalog lists cannot be read from the store.
    """
    from ..cluster import RunOptions, run_tasks
    from ..errors import RawlabError

    opts = options or RunOptions()
    if cat is None:
        from ..catalog import open_catalog

        cat = open_catalog(store, opts.storage_options)
    groups = _groups(cat)
    if not groups:
        return _empty_frames(), {}
    rows = [r for members in groups.values() for r in members]
    with opts.session() as (client, _info):
        outcomes = run_tasks(
            client,
            _frame_task,
            [(store, opts.storage_options or {}, r) for r in rows],
            name="pixel-stats",
            progress=opts.progress,
        )
    failed = [(rows[o.index], o) for o in outcomes if not o.ok]
    if failed:
        r, o = failed[0]
        raise RawlabError(
            f"{len(failed)} of {len(rows)} frames of {store} could not be read for the statistics, first "
            f"{r['path']} ({o.why}); check the store with `rawlab catalog show` or rebuild it"
        )
    parts, hists, k = [], {}, 0
    for (sensor, iso), members in groups.items():  # catalog order, whatever finished first
        sums = np.stack([outcomes[k + i].value for i in range(len(members))])
        k += len(members)
        ids = [r["frame_id"] for r in members]
        parts.append(pd.DataFrame(_summarise(sums), columns=list(SUMMARY)).assign(frame_id=ids))
        hists[(sensor, iso)] = sums.sum(axis=0)
    per_id = pd.concat(parts, ignore_index=True)
    per_id["n_samples"] = per_id["n_samples"].astype(np.int64)
    rows_out = cat.loc[cat["frame_id"].isin(per_id["frame_id"]), ["path", "frame_id", "sensor", "iso"]]
    return rows_out.merge(per_id, on="frame_id", how="left"), hists


def _empty_frames() -> pd.DataFrame:
    return pd.DataFrame(columns=["path", "frame_id", "sensor", "iso", *SUMMARY])
