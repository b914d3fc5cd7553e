"""``rawlab serve``: an HTTP service that denoises raw files (FastAPI on uvicorn, the ``serve`` extra).

Endpoints:

- ``POST /denoise?format=dng|png|tiff&model=NAME``: a multipart upload with one file field (``file``); the
  answer is the denoised DNG (same size, CFA, levels and metadata as ``rawlab denoise`` writes) or a rendered
  PNG/TIFF preview. Headers: ``X-Rawlab-Noise-Source`` (``model law``, ``DNG NoiseProfile`` or
  ``single-image``), ``X-Rawlab-Noise`` (the parameters used), ``X-Rawlab-Model``, ``X-Rawlab-Seconds``,
  ``X-Rawlab-Fusion`` (the median weights of the network and of the classical denoisers, VST+NL-means and
  VST+DCT, :mod:`rawlab.deploy.guard`);
- ``GET /models``: the models served (name, kind, tile, the sensors whose noise law each knows);
- ``GET /health``: ``{"status": "ok", "workers", "busy", "waiting", "done"}``, answered at once whatever runs.

Errors are JSON ``{"detail": reason}`` with a 4xx status for anything about the upload: 400 no file or an
empty one, 413 larger than the limit, 415 not a raw file (PNG, JPEG, text ... by their first bytes), 422 a raw
rawlab cannot use (X-Trans, Foveon, linear DNG, truncated or corrupt: the reason from the decoder), 503 more
jobs waiting than the queue holds, 504 past the time limit per job. A 500 is a bug and says only "internal
error" (the traceback goes to the server log, never into a response).

Files: the upload is streamed (python-multipart's parser, never Starlette's form parser, which spools to the
system temporary folder) into ``<service temp folder>/<random job id>/input``, and the output is written
beside it; the job folder is removed when the answer has been built. The uploaded file name is never a path:
it only names the download (``Content-Disposition``), reduced to letters, digits, ``.``, ``_`` and ``-``.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at run time

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import RawlabError
from .pool import WorkerPool

__all__ = ["ServeConfig", "create_app", "describe_models", "model_names"]

FORMATS = {"dng": "image/x-adobe-dng", "png": "image/png", "tiff": "image/tiff"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ServeConfig:
    """What the service serves and its limits."""

    models: dict[str, str]  # name -> model path (a .onnx, .tflite or a model directory)
    workers: int = 1  # concurrent jobs (one process each)
    num_threads: int = 1  # runtime threads per worker
    max_upload_bytes: int = 200 * 2**20
    job_timeout: float = 300.0  # seconds
    max_queue: int = 16  # jobs waiting for a worker beyond those running; more are answered 503
    tmp_root: str | None = None  # where the service's temporary folder goes (default: the system's)
    described: list[dict[str, Any]] = field(default_factory=list)


def model_names(paths: list[str]) -> dict[str, str]:
    """``{name: path}``: each model's file or folder name without suffix (``builtin`` for the built-in
    model), made unique with ``-2``, ``-3``."""
    from ..learn.modelio import resolve_model

    out: dict[str, str] = {}
    for p in paths:
        base = _SAFE.sub("-", Path(p.rstrip("/")).stem) or "model"
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = os.fspath(resolve_model(p).absolute())  # "builtin": the model shipped inside rawlab
    return out


def describe_models(models: dict[str, str]) -> list[dict[str, Any]]:
    """Check each model (as ``rawlab denoise`` does, before anything starts) and describe it for ``/models``."""
    from ..deploy.runtime import describe_model, read_metadata

    out = []
    for name, path in models.items():
        label = describe_model(path)  # raises RawlabError with the reason
        p = Path(path)
        if p.is_dir():
            config, kind = json.loads((p / "config.json").read_text()), "jax"
        elif p.suffix.lower() == ".onnx":
            from ..deploy.onnx import read_onnx_metadata

            config, kind = read_onnx_metadata(p)["config"], "onnx"
        else:
            config, kind = read_metadata(p)["config"], "tflite"
        sensors = [
            s.get("sensor") for s in (config.get("noise") or {}).get("sensors", []) if isinstance(s, dict)
        ]
        out.append(
            {"name": name, "kind": kind, "label": label, "tile": config.get("tile"), "sensors": sensors}
        )
    return out


class _Rejected(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _download_name(filename: str | None, fmt: str) -> str:
    stem = PurePosixPath((filename or "").replace("\\", "/")).name
    stem = _SAFE.sub("_", stem.rsplit(".", 1)[0] if "." in stem else stem).strip("._")[:64] or "image"
    return f"{stem}-denoised.{fmt}"


def _header(value: Any) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")


async def _receive_upload(request, dest: Path, limit: int) -> str | None:
    """Stream the multipart body's ``file`` part into ``dest``; returns the uploaded name (or raises)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise _Rejected(400, "send the raw file as multipart/form-data with a field named 'file' "
                        "(curl -F file=@photo.dng ...)")  # fmt: skip
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > 4 * limit + 65536:
        raise _Rejected(
            413, f"the upload is {int(declared)} bytes; this service takes files up to {limit} bytes"
        )
    state: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "target": False, "name": None,
                             "found": False, "size": 0, "over": False}  # fmt: skip
    fh = dest.open("wb")

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["target"] = disp.get(b"name") == b"file" and not state["found"]
        if state["target"]:
            state["found"] = True
            state["name"] = disp.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(data, start, end):
        if not state["target"] or state["over"]:
            return
        state["size"] += end - start
        if state["size"] > limit:
            state["over"] = True
            return
        fh.write(data[start:end])

    def on_part_end():
        state["target"], state["headers"] = False, {}

    parser = MultipartParser(
        params[b"boundary"],
        {"on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
         "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end},
    )  # fmt: skip
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if state["over"] and received > 4 * limit:
                break  # drained enough for the client to read the answer; stop reading
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        if not state["over"]:
            raise _Rejected(400, f"the multipart body is malformed ({e})") from None
    finally:
        fh.close()
    if state["over"]:
        raise _Rejected(413, f"the file is larger than this service takes ({limit} bytes)")
    if not state["found"]:
        raise _Rejected(400, "no file field named 'file' in the upload (curl -F file=@photo.dng ...)")
    if state["size"] == 0:
        raise _Rejected(400, f"the uploaded file {state['name']!r} is empty")
    return state["name"]


def _sniff(path: Path) -> None:
    from ..rawmeta import sniff_raw_format

    with path.open("rb") as f:
        head = f.read(64)
    if sniff_raw_format(head) is None:
        kind = (
            "a PNG image"
            if head.startswith(b"\x89PNG")
            else "a JPEG image"
            if head[:3] == b"\xff\xd8\xff"
            else None
        )
        raise _Rejected(
            415, f"the upload is {kind or 'not a camera raw file'}; send a Bayer raw (DNG, NEF, CR2, ARW ...)"
        )


def create_app(config: ServeConfig):
    """The FastAPI application; its lifespan starts the worker pool and the temporary folder, then removes them."""
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import JSONResponse, Response

    pool = WorkerPool(config.models, workers=config.workers, num_threads=config.num_threads,
                      job_timeout=config.job_timeout)  # fmt: skip
    state: dict[str, Any] = {"jobs": 0}  # admitted and not yet answered (running or waiting for a worker)
    default = next(iter(config.models))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if config.tmp_root:
            Path(config.tmp_root).mkdir(parents=True, exist_ok=True)
        state["tmp"] = Path(tempfile.mkdtemp(prefix="rawlab-serve-", dir=config.tmp_root))
        try:
            await pool.start()
            yield
        finally:
            await pool.close()
            shutil.rmtree(state["tmp"], ignore_errors=True)

    app = FastAPI(title="rawlab", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool, app.state.serve = pool, state

    @app.exception_handler(Exception)
    async def internal(request, exc):  # a bug: no traceback in the answer (the server log has it)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "workers": pool.n, "busy": pool.busy, "waiting": max(0, state["jobs"] - pool.busy),
                "done": pool.done, "restarts": pool.restarts}  # fmt: skip

    @app.get("/models")
    async def models():
        return {"default": default, "models": config.described}

    @app.post("/denoise")
    async def denoise(request: Request, format: str = Query("dng"), model: str | None = Query(None)):
        fmt, name = format.lower(), model or default
        if fmt not in FORMATS:
            return JSONResponse(
                {"detail": f"unknown format {format!r}; choose dng, png or tiff"}, status_code=400
            )
        if name not in config.models:
            return JSONResponse(
                {"detail": f"unknown model {name!r}; GET /models lists them"}, status_code=404
            )
        if state["jobs"] >= pool.n + config.max_queue:
            return JSONResponse({"detail": "busy: too many jobs waiting; retry later"}, status_code=503,
                                headers={"Retry-After": "5"})  # fmt: skip
        job_dir = state["tmp"] / uuid.uuid4().hex
        job_dir.mkdir()
        try:
            filename = await _receive_upload(request, job_dir / "input", config.max_upload_bytes)
            _sniff(job_dir / "input")
            out = job_dir / f"output.{fmt}"
            state["jobs"] += 1
            try:
                res = await pool.run(
                    {"path": str(job_dir / "input"), "out": str(out), "fmt": fmt, "model": name}
                )
            finally:
                state["jobs"] -= 1
            if res.status == "failed":
                raise _Rejected(422, f"cannot denoise the upload: {res.error}")
            if res.status == "timeout":
                raise _Rejected(504, res.error or "timed out")
            if res.status != "ok":
                return JSONResponse({"detail": "internal error"}, status_code=500)
            data = await asyncio.to_thread(out.read_bytes)
        except _Rejected as e:
            return JSONResponse({"detail": e.detail}, status_code=e.status)
        except RawlabError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        finally:
            await asyncio.to_thread(shutil.rmtree, job_dir, True)
        headers = {
            "Content-Disposition": f'attachment; filename="{_download_name(filename, fmt)}"',
            "X-Rawlab-Noise-Source": _header(res.noise_source),
            "X-Rawlab-Noise": _header(res.noise),
            "X-Rawlab-Model": _header(name),
            "X-Rawlab-Seconds": f"{res.seconds:.3f}",
        }
        if res.fuse_weights is not None:
            headers["X-Rawlab-Fusion"] = (
                f"network {res.fuse_weights[0]:.3f}, classical {res.fuse_weights[1]:.3f}"
            )
        return Response(content=data, media_type=FORMATS[fmt], headers=headers)

    return app
