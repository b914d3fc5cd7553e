"""Deployment: export a trained model to TFLite and denoise real raw files with it (or with JAX).

``export_tflite`` needs TensorFlow (the ``export`` extra) and imports it; ``load_denoiser`` and the denoising
pipeline need only the LiteRT runtime (``ai-edge-litert``) for ``.tflite`` files, or JAX for model directories.
"""

from __future__ import annotations

__all__ = ["denoise_files", "export_tflite", "load_denoiser"]


def __getattr__(name: str):
    if name == "load_denoiser":
        from .runtime import load_denoiser

        return load_denoiser
    if name == "export_tflite":
        from .export import export_tflite

        return export_tflite
    if name == "denoise_files":
        from .denoise import denoise_files

        return denoise_files
    raise AttributeError(f"module 'rawlab.deploy' has no attribute {name!r}")
