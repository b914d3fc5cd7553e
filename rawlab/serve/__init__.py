"""``rawlab serve``: denoising over HTTP (the ``serve`` extra: FastAPI, uvicorn, python-multipart).

:func:`serve` checks the models, builds the app (:mod:`rawlab.serve.app`) and runs uvicorn; the work runs in a
pool of worker processes (:mod:`rawlab.serve.pool`). Layer: above ``deploy`` (it runs ``deploy``'s denoising),
below the entry points.
"""

from __future__ import annotations

import os

from ..errors import RawlabError

__all__ = ["build_config", "serve"]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def build_config(
    models: list[str],
    *,
    workers: int | None = None,
    max_upload_mb: float = 200,
    job_timeout: float = 300,
    max_queue: int = 16,
    tmp_root: str | None = None,
):
    """A :class:`rawlab.serve.app.ServeConfig` for ``models`` (checked now: a bad one raises its reason)."""
    from .app import ServeConfig, describe_models, model_names

    if not models:
        raise RawlabError("pass at least one --model (a .onnx, a .tflite or a model directory)")
    if max_upload_mb <= 0 or job_timeout <= 0 or max_queue < 0:
        raise RawlabError("--max-upload-mb and --job-timeout must be positive and --max-queue at least 0")
    named = model_names(models)
    described = describe_models(named)
    n = workers or max(1, min(2, _cores()))
    return ServeConfig(
        models=named,
        workers=n,
        num_threads=max(1, _cores() // n),
        max_upload_bytes=int(max_upload_mb * 2**20),
        job_timeout=float(job_timeout),
        max_queue=max_queue,
        tmp_root=tmp_root,
        described=described,
    )


def serve(config, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the service until interrupted."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError:
        raise RawlabError("`rawlab serve` needs the serve extra: pip install 'rawlab[serve]'") from None
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
