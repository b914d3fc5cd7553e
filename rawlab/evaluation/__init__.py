"""Evaluation: a denoiser (a model directory, a ``.tflite`` file) and the classical baselines scored on
held-out noisy/clean pairs of a store, and the ``rawlab.eval/1`` report.

It sits above ``learn`` and ``deploy`` (it loads their models) and below the CLI (docs/architecture.md,
"Layers"). Modules: :mod:`~rawlab.evaluation.metrics` (PSNR, SSIM), :mod:`~rawlab.evaluation.scoring` (which
pairs, which noise parameters, the Dask run), :mod:`~rawlab.evaluation.report` (JSON, plot, table); on bursts,
:mod:`~rawlab.evaluation.bursts` (reference, single-frame model, merge and burst model per frame count),
:mod:`~rawlab.evaluation.burst_sources` (the bursts and their truth), :mod:`~rawlab.evaluation.burst_report`.
The classical baselines (variance stabilisation + classical denoisers) live in :mod:`rawlab.deploy.classical`:
the deploy runtime fuses its network with one of them. Heavy imports happen inside the submodules; ``import
rawlab.evaluation`` is cheap.
"""

from __future__ import annotations

__all__ = [
    "BASELINES",
    "METHODS",
    "EvalResult",
    "denoise_baseline",
    "evaluate_bursts",
    "evaluate_store",
    "load_denoiser",
    "psnr",
    "select_pairs",
    "ssim",
    "write_burst_outputs",
    "write_outputs",
]

_WHERE = {
    "BASELINES": "scoring",  # from rawlab.deploy.classical
    "denoise_baseline": "scoring",
    "METHODS": "scoring",
    "EvalResult": "scoring",
    "evaluate_store": "scoring",
    "load_denoiser": "scoring",
    "select_pairs": "scoring",
    "psnr": "metrics",
    "ssim": "metrics",
    "write_outputs": "report",
    "evaluate_bursts": "bursts",
    "write_burst_outputs": "burst_report",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'rawlab.evaluation' has no attribute {name!r}")
