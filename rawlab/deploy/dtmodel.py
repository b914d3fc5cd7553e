"""``rawlab export --format dtmodel``: a darktable model package for the ``rawdenoise`` task (darktable 5.6+).

The format (darktable-ai-sdk's ``docs/dtmodel-format.md`` and darktable's ``dev-doc/AI_Tasks.md``, "Raw
Denoise"): a ``.dtmodel`` is a zip archive whose one top-level folder is named after the model ``id`` and
holds ``config.json`` and the ONNX files it names. ``config.json`` has ``id``, ``name``, ``description``,
``task``, ``backend`` (``"onnx"``) and ``version`` (the fields darktable-ai-sdk's validator requires), plus
``arch``, ``tiling`` and, for raw denoise, ``variants``. rawlab writes the Bayer variant only::

    rawdenoise-tiny/
      config.json     {"id": "rawdenoise-tiny", "task": "rawdenoise", "backend": "onnx", "tiling": true,
                       "variants": {"bayer": {"input_kind": "bayer_v1", "onnx": "model_bayer.onnx",
                                              "bayer_orientation": "force_rggb", "wb_norm": "daylight",
                                              "edge_pad": "mirror_cropped"}}, ...}
      model_bayer.onnx

The ``bayer_v1`` contract darktable runs: input ``input`` ``[1, 4, T, T]`` float32, the CFA packed to R, G1,
G2, B (forced to an RGGB origin), each site ``(DN - black) / range`` times the daylight white balance;
output ``output`` ``[1, 3, 2T, 2T]`` float32 camera RGB in the same frame, which darktable re-mosaics to the
file's CFA and writes as a DNG. darktable tiles it (T = 512, 384, 256 or 192 packed pixels, overlap 16).

What ``model_bayer.onnx`` does around the rawlab network (all ONNX builtin ops):

1. **noise level**: darktable gives no noise parameters, so the graph measures them on each tile: per
   channel, the diagonal Haar detail of the packed plane (``(x00 - x01 - x10 + x11) / 2``, variance
   ``sigma^2`` for white noise) and its median absolute value over the tile (``TopK``), ``sigma = MAD /
   0.6745`` (robust to edges and texture). The network's noise map is that ``sigma``, flat over the tile
   (``a = 0``, ``b = sigma^2``): a blind, signal-independent approximation of the law the model was trained
   with. Only noise-map models (the default normalisation) can be packaged; k-sigma ones need ``a > 0``;
2. **the network**, exactly as ``--format onnx`` writes it (same parity check against JAX);
3. **to RGB**: each denoised plane placed back at its CFA sites (``DepthToSpace``), the two missing greens of
   each 2x2 cell filled with the mean of G1 and G2, red and blue repeated over their cell. darktable samples
   this RGB at the CFA sites, so the DNG it writes holds exactly the network's denoised mosaic; the filled
   values are never seen.

darktable-ai-sdk (``pip install darktable-ai-sdk``) validates the package where it is installed; the tests
check the same rules without it.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError

__all__ = [
    "ONNX_NAME",
    "REQUIRED",
    "TASK",
    "DtmodelExportResult",
    "bayer_graph",
    "blind_sigma",
    "check_package",
    "export_dtmodel",
    "model_id",
]

TASK = "rawdenoise"
ONNX_NAME = "model_bayer.onnx"
REQUIRED = (
    "id",
    "name",
    "description",
    "task",
    "backend",
    "version",
)  # darktable-ai-sdk's validate_config_json
MAD_TO_SIGMA = 0.6745  # median |N(0, 1)|
BAYER_VARIANT = {
    "input_kind": "bayer_v1",
    "onnx": ONNX_NAME,
    "bayer_orientation": "force_rggb",
    "wb_norm": "daylight",
    "edge_pad": "mirror_cropped",
}


def model_id(stem: str) -> str:
    """A package id from a file name: lower case letters, digits and dashes (``rawdenoise-`` prefixed)."""
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "rawlab"
    return slug if slug.startswith(f"{TASK}-") else f"{TASK}-{slug}"


def blind_sigma(x: np.ndarray) -> np.ndarray:
    """The graph's noise estimate in numpy: ``(4,)`` sigma of packed planes ``(4, H, W)`` (H, W even)."""
    d = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 2
    flat = np.abs(d).reshape(4, -1)
    k = flat.shape[1] // 2 + 1  # the k-th largest of n: the upper median, as the graph's TopK takes it
    return (-np.sort(-flat, axis=1))[:, k - 1] / MAD_TO_SIGMA


def bayer_graph(model, *, metadata: dict[str, str] | None = None):
    """The ``bayer_v1`` ONNX model of a noise-map :class:`rawlab.learn.TrainedModel` (module docstring)."""
    from .onnx import GraphBuilder, unet_onnx

    if model.normalisation.kind != "noisemap":
        raise RawlabError(
            f"a darktable package needs a noise-map model (darktable gives no noise parameters, so the graph "
            f"measures a noise level for the map); {model.name} uses {model.normalisation.kind!r} normalisation"
        )
    g = GraphBuilder()
    helper, tp = g.onnx.helper, g.onnx.TensorProto
    i64 = lambda *v: g.const(np.array(v, np.int64), "shape")  # noqa: E731
    x = "input"
    # 1. noise level per channel: MAD of the diagonal Haar detail over the tile
    haar = np.zeros((4, 1, 2, 2), np.float32)
    haar[:, 0] = [[0.5, -0.5], [-0.5, 0.5]]
    d = g.op("Conv", [x, g.const(haar, "haar")], "haar", group=4, kernel_shape=[2, 2], strides=[2, 2])
    flat = g.op("Reshape", [g.op("Abs", [d]), i64(4, -1)], "flat")
    n = g.op("Gather", [g.op("Shape", [flat]), i64(1)], "n")
    k = g.op("Add", [g.op("Div", [n, i64(2)]), i64(1)], "k")
    top = g.op("TopK", [flat, k], "topk", axis=1, largest=1, sorted=0)
    g.nodes[-1].output.append("topk_indices")
    median = g.op("ReduceMin", [top], "median", axes=[1], keepdims=1)  # opset 17: axes attribute
    sigma = g.op("Div", [median, g.const(np.array(MAD_TO_SIGMA, np.float32))], "sigma")
    sigma = g.op("Reshape", [sigma, i64(1, 4, 1, 1)], "sigma4")
    sigma_map = g.op("Expand", [sigma, g.op("Shape", [x])], "sigma_map")
    # 2. the network
    y = unet_onnx(g, g.op("Concat", [x, sigma_map], "net_in", axis=1), model.spec, model.params)

    # 3. packed R, G1, G2, B -> camera RGB at the mosaic's resolution (RGGB cells)
    def plane(i: int) -> str:
        return g.op("Slice", [y, i64(i), i64(i + 1), i64(1)], "plane")

    r, g1, g2, b = (plane(i) for i in range(4))
    gm = g.op("Mul", [g.op("Add", [g1, g2]), g.const(np.array(0.5, np.float32))], "gmean")

    def cells(tl: str, tr: str, bl: str, br: str) -> str:  # DepthToSpace DCR: channel (2 dy + dx) -> (dy, dx)
        return g.op("DepthToSpace", [g.op("Concat", [tl, tr, bl, br], "cell", axis=1)], "d2s", blocksize=2)

    rgb = g.op("Concat", [cells(r, r, r, r), cells(gm, g1, g2, gm), cells(b, b, b, b)], "rgb", axis=1)
    g.op("Identity", [rgb])
    g.nodes[-1].output[0] = "output"
    inp = helper.make_tensor_value_info("input", tp.FLOAT, [1, 4, "H", "W"])
    out = helper.make_tensor_value_info("output", tp.FLOAT, [1, 3, "H2", "W2"])
    return g.model([inp], [out], metadata=metadata, doc=f"rawlab {model.name}: darktable rawdenoise bayer_v1")


def dt_config(model, pkg_id: str, *, name: str | None = None) -> dict[str, Any]:
    step = model.config.get("step")
    return {
        "id": pkg_id,
        "name": name or f"raw denoise rawlab {model.name}",
        "description": f"rawlab {model.name} U-Net raw denoiser (Bayer), noise level measured per tile",
        "task": TASK,
        "arch": "rawlab-unet",
        "backend": "onnx",
        "version": f"1.{int(step)}" if isinstance(step, int) else "1.0",
        "tiling": True,
        "variants": {"bayer": dict(BAYER_VARIANT)},
        "model_card": {"author": "rawlab", "source": f"rawlab {__version__}", "license": "Apache-2.0"},
    }


def check_package(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a ``.dtmodel`` against the format's rules; return its ``config.json``.

    One top-level folder named after ``id``; ``config.json`` with the required fields, ``backend`` onnx, task
    ``rawdenoise`` with a ``bayer_v1`` variant whose ONNX file is in the folder; no absolute or ``..`` paths.

    Raises
    ------
    RawlabError
        Naming the first rule the package breaks.
    """
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as e:
        raise RawlabError(f"{p} is not a .dtmodel (zip) archive: {e}") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        bad = [n for n in names if n.startswith("/") or ".." in n.split("/")]
        tops = {n.split("/", 1)[0] for n in names}
        if bad or len(tops) != 1 or any("/" not in n for n in names):
            raise RawlabError(
                f"{p}: a .dtmodel holds one top-level folder and nothing else; found {sorted(names)}"
            )
        (top,) = tops
        try:
            config = json.loads(zf.read(f"{top}/config.json"))
        except KeyError:
            raise RawlabError(f"{p}: no {top}/config.json") from None
        missing = [k for k in REQUIRED if k not in config]
        if missing:
            raise RawlabError(f"{p}: config.json lacks {', '.join(missing)}")
        if config["id"] != top:
            raise RawlabError(f"{p}: config.json id {config['id']!r} is not the folder name {top!r}")
        if config["backend"] != "onnx" or config["task"] != TASK:
            raise RawlabError(
                f"{p}: expected backend onnx and task {TASK}, got {config['backend']}, {config['task']}"
            )
        bayer = (config.get("variants") or {}).get("bayer") or {}
        if bayer.get("input_kind") != "bayer_v1" or f"{top}/{bayer.get('onnx')}" not in names:
            raise RawlabError(f"{p}: config.json names no bayer_v1 variant with its ONNX file in the package")
    return config


@dataclass
class DtmodelExportResult:
    out: Path
    sidecar: Path
    package_id: str
    tile: int
    nbytes: int
    parity: dict[str, Any]
    seconds: float
    quantize: str = "none"

    def summary(self) -> str:
        return (
            f"export: {self.out} (darktable {TASK} package {self.package_id!r}, {self.nbytes / 1e6:.2f} MB); "
            f"max |ONNX - JAX| {self.parity['max_abs']:.2e}; install it in darktable 5.6+: preferences > AI > "
            f"import from file ({self.seconds:.1f} s)"
        )


def export_dtmodel(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tile: int | None = None,
    calibration: str | None = None,
    n_eval: int = 8,
    seed: int = 0,
    name: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> DtmodelExportResult:
    """Write the model in ``model_dir`` as a darktable ``.dtmodel`` package ``out`` (and ``out + ".json"``).

    The network inside passes the ONNX export's parity check against JAX first, and the whole ``bayer_v1``
    graph is checked against its numpy definition (noise estimate, network, re-mosaic) on one crop.
    """
    from ..outputs import output_file
    from .export import FP32_TOLERANCE, load_model_tile, source_entry, tiled_config, write_atomic
    from .onnx import OPSET, SCHEMA, _session, embed_description, eval_crops, network_model, network_parity

    t0 = time.perf_counter()
    say = echo or (lambda _m: None)
    out = output_file(out, companions=(".json",))
    model, size, overlap = load_model_tile(model_dir, tile)
    if model.spec.head != "bayer":
        raise RawlabError(
            f"a darktable raw-denoise package (bayer_v1) holds a Bayer denoiser; {model.name} is a joint "
            "demosaic+denoise model (RGB out): export it with --format onnx or tflite"
        )
    pkg_id = model_id(Path(out).stem)
    crops, described = eval_crops(model, calibration, size, n_eval, seed, say)
    net, result = network_parity(model, network_model(model), crops, described)
    proto = bayer_graph(model)
    graph = _session(proto.SerializeToString(), None, "just written")
    # the whole graph against its definition, on the first crop as darktable would feed it
    x = np.ascontiguousarray(np.moveaxis(crops[0].noisy, -1, 0)[None], np.float32)
    rgb = graph.run(None, {"input": x})[0]
    sigma = blind_sigma(x[0])
    ref = net.run(
        None, {"input": np.concatenate([x, np.broadcast_to(sigma[None, :, None, None], x.shape)], 1)}
    )[0]
    got = np.stack(
        [rgb[0, 0, 0::2, 0::2], rgb[0, 1, 0::2, 1::2], rgb[0, 1, 1::2, 0::2], rgb[0, 2, 1::2, 1::2]]
    )
    result["bayer_graph_max_abs"] = float(np.max(np.abs(got - ref[0])))
    worst = max(result["max_abs"], result["bayer_graph_max_abs"])
    say(f"parity on {len(crops)} crops of {described}: max |ONNX - JAX| {result['max_abs']:.2e}; bayer_v1 graph "
        f"vs its definition {result['bayer_graph_max_abs']:.2e}")  # fmt: skip
    if not worst <= FP32_TOLERANCE:
        raise RawlabError(
            f"parity check failed: the darktable graph differs by up to {worst:.2e} (allowed {FP32_TOLERANCE:g}); "
            "nothing was written"
        )
    config = dt_config(model, pkg_id, name=name)
    meta = {
        "schema": SCHEMA,
        "config": tiled_config(model, size, overlap),
        "export": {
            "format": "dtmodel",
            "opset": OPSET,
            "layout": "NCHW",
            "contract": "darktable rawdenoise bayer_v1",
            "parity": result,
            "source": source_entry(model_dir, model),
            "rawlab_version": __version__,
        },
        "dtmodel": config,
    }
    embed_description(proto, meta)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{pkg_id}/config.json", json.dumps(config, indent=4) + "\n")
        zf.writestr(f"{pkg_id}/{ONNX_NAME}", proto.SerializeToString())
    check_package(tmp)
    tmp.replace(out)
    sidecar = out.with_name(out.name + ".json")
    write_atomic(sidecar, (json.dumps(meta, indent=2) + "\n").encode())
    return DtmodelExportResult(
        out, sidecar, pkg_id, size, out.stat().st_size, result, time.perf_counter() - t0
    )
