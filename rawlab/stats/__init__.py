"""Cross-device statistics (``rawlab stats``): tables, comparisons, an HTML report (docs/architecture.md, "Layers").

Definitions (normalised signal ``x``, 1 = white; ``Var = a·x + b``): SNR at 18% grey
``20·log10(x / sqrt(a·x + b))`` dB; read-noise-limited dynamic range ``log2(1 / sqrt(b))`` stops; photon
transfer ``1 / (a·(white - black))`` e-/DN and ``sqrt(b) / a`` e- of read noise. Details in
:mod:`rawlab.stats.metrics`.

>>> res = rawlab.stats.compute_stats("store.zarr", options=RunOptions(client=client))  # doctest: +SKIP
>>> res.sensors                  # one row per sensor and ISO (sensors.csv)
>>> rawlab.stats.write_outputs(res, "report/")                     # CSVs, PNGs and report.html

Imports are lazy: ``import rawlab.stats`` loads neither dask nor matplotlib.
"""

from __future__ import annotations

__all__ = [
    "GREY",
    "Anchors",
    "StatsResult",
    "balance_table",
    "composition_table",
    "compute_stats",
    "crossover",
    "dynamic_range_stops",
    "frame_stats",
    "iso_invariant_from",
    "law_shape",
    "load_anchors",
    "overall_ranking",
    "photon_transfer",
    "rank_sensors",
    "sensor_summary",
    "sensor_table",
    "shape_table",
    "snr_db",
    "snr_gap",
    "write_outputs",
]

_WHERE = {
    "metrics": (
        "GREY",
        "crossover",
        "dynamic_range_stops",
        "iso_invariant_from",
        "photon_transfer",
        "snr_db",
    ),
    "table": ("balance_table", "composition_table", "sensor_summary", "sensor_table"),
    "compare": (
        "Anchors",
        "law_shape",
        "load_anchors",
        "overall_ranking",
        "rank_sensors",
        "shape_table",
        "snr_gap",
    ),
    "pixels": ("frame_stats",),
    "pipeline": ("StatsResult", "compute_stats"),
    "report": ("write_outputs",),
}


def __getattr__(name: str):
    import importlib

    for module, names in _WHERE.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'rawlab.stats' has no attribute {name!r}")
