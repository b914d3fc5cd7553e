"""ONNX: a trained model directory to a self-describing ``.onnx``, and its ONNX Runtime denoiser.

Export (:func:`export_onnx`, needs the ``onnx`` package and JAX): the graph is written directly from the
Flax parameters with ONNX builtin operators only (``Conv``, ``ConvTranspose``, ``Concat``, ``Add``,
``LeakyRelu``, ``Slice``; opset :data:`OPSET`), following the U-Net's structure
(:class:`rawlab.learn.models.UNet`). There is no tracing step and no converter in between, so the graph is
the network op for op and runs at any height and width that are multiples of the network's down-sampling
(the batch, height and width are dynamic axes). Layout is ONNX's own, NCHW: input ``input``
``[N, C, H, W]`` float32 (``C`` = 8 for the noise-map normalisation, 4 for k-sigma), output ``output``
``[N, 4, H, W]``, both in the network's domain (:class:`rawlab.learn.normalize.Normalisation`). The joint
demosaic+denoise model (``head="rgb"``, config ``joint``) adds its fixed linear demosaic (``Pad``, ``Conv``)
and ``DepthToSpace`` (:func:`_rgb_head`): output ``[N, 3, 2H, 2W]`` linear camera RGB of the RGGB-phase input
(the runtime flips other CFAs in and out, as for TFLite); float32 or int8 like the Bayer models. An int8
export quantises the same function laid out for ONNX Runtime's int8 kernels (:data:`INT8_MIN_OUT`: narrow
convolutions padded and sliced back, up-sampling as a 1x1 ``Conv`` and a channels-last pixel shuffle with
``Transpose``, ``Reshape``, ``Shape`` and ``Mul``).

The same parity rule as TFLite: the graph and the JAX network run on held-out crops (the training store's
evaluation scenes, else ``calibration``, else synthetic crops) and the clean estimates must agree within
:data:`~rawlab.deploy.export.FP32_TOLERANCE` or nothing is written. The model description, schema
``rawlab.onnx/1``, travels in the ONNX ``metadata_props`` under the key ``rawlab`` and beside the file as
``FILE.onnx.json``::

    {"schema": "rawlab.onnx/1",
     "config": {...the source model's config.json, "tile": {"size": 256, "overlap": 32}},
     "export": {"format": "onnx", "opset": 17, "layout": "NCHW", "multiple": 4,
                "input": {"name": "input", "shape": ["N", 8, "H", "W"], "dtype": "float32"},
                "output": {"name": "output", "shape": ["N", 4, "H", "W"], "dtype": "float32"},
                "ops": ["Add", "Concat", ...], "parity": {...}, "source": {...},
                "rawlab_version": "...", "onnx_version": "..."}}

Running (:class:`OnnxDenoiser`) needs only ``onnxruntime``: neither JAX nor TensorFlow is imported.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError
from .export import (
    FP32_TOLERANCE,
    compare_with_jax,
    crop_source,
    load_model_tile,
    model_crops,
    parity_line,
    source_entry,
    tiled_config,
    write_atomic,
)
from .runtime import _cores, _description, _first_line, _TiledDenoiser

__all__ = [
    "METADATA_KEY",
    "OPSET",
    "SCHEMA",
    "GraphBuilder",
    "OnnxDenoiser",
    "OnnxExportResult",
    "export_onnx",
    "read_onnx_metadata",
    "unet_onnx",
]

SCHEMA = "rawlab.onnx/1"
METADATA_KEY = "rawlab"
OPSET = 17  # ONNX Runtime 1.14+ (and darktable's bundled runtime) run it
# The int8 layout (``network_model(int8_layout=True)``, the graph that int8 export quantises) is the same
# function laid out for ONNX Runtime's int8 kernels on x86, which run convolutions channels-last (NHWC):
# - MLAS's fast symmetric int8 convolution (AVX2, AVX-VNNI, AVX-512) packs 16 output channels and refuses
#   fewer; the full-resolution 8-channel convolutions otherwise ran its generic path at about 7x the time per
#   multiply-add (a third of the network's time). Narrow block convolutions get zero filters up to
#   INT8_MIN_OUT; at a narrow top level the skip is placed at channels [w, 2w) and the up-sampling at [0, w),
#   so that their sum is the concatenation (no Slice, no Concat), and the top block stays wide into the heads;
#   other narrow convolutions are sliced back;
# - each 2x2 stride-2 up-sampling is a 1x1 convolution to 4x the channels and a pixel shuffle written
#   channels-last (Transpose, Reshape, Transpose, Reshape, Transpose back): ORT has no int8 ConvTranspose, so
#   it ran in float between a dequantise and a quantise with layout transposes around it, whereas these
#   transposes cancel against ORT's own and the rest stays 8-bit.
# Measured side by side on this 2-core machine: 26% less time than the plain graph, int8 (the README).
INT8_MIN_OUT = 16


def _onnx():
    try:
        import onnx
    except ImportError:
        raise RawlabError(
            "`rawlab export --format onnx` needs the onnx package: pip install 'rawlab[onnx]'"
        ) from None
    return onnx


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise RawlabError(
            "running an .onnx model needs ONNX Runtime: pip install 'rawlab[onnx]' (or pip install onnxruntime)"
        ) from None
    return onnxruntime


# ------------------------------------------------------------------------------------------ the graph


class GraphBuilder:
    """A small helper to write an ONNX graph node by node (constants become initializers)."""

    def __init__(self):
        self.onnx = _onnx()
        self.nodes: list = []
        self.initializers: list = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value, stem: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(self, inputs, outputs, *, metadata: dict[str, str] | None = None, doc: str = ""):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, "rawlab", inputs, outputs, self.initializers, doc_string=doc)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="rawlab",
            producer_version=__version__,
        )
        model.ir_version = min(
            model.ir_version, 8
        )  # readable by older ONNX Runtimes (1.14+), e.g. darktable's
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        self.onnx.checker.check_model(model)
        return model


# (offset, total): a tensor's channels sit at [offset, offset + n) of total channels, zeros elsewhere
Placement = tuple[int, int]


def _conv(
    g: GraphBuilder,
    x: str,
    p,
    *,
    stride: int = 1,
    pad: int = 0,
    min_out: int = 0,
    x_at: Placement | None = None,
    out_at: Placement | None = None,
) -> str:
    """A ``Conv`` from Flax parameters ``p``, the same function in any of these int8 layouts
    (:data:`INT8_MIN_OUT`): ``x_at``, the input's channels are placed in a wider tensor (zero weights for the
    rest); ``out_at``, the output's are placed so in ``total`` channels (zero filters for the rest, no slice);
    ``min_out``, a convolution with fewer output channels gets zero filters up to ``min_out`` and a ``Slice``
    back to its own channels."""
    kernel = np.asarray(p["kernel"], np.float32)  # flax (kh, kw, in, out), a cross-correlation like ONNX Conv
    bias = np.asarray(p["bias"], np.float32) if "bias" in p else np.zeros(kernel.shape[-1], np.float32)
    n_out = kernel.shape[-1]
    if x_at is not None:
        kernel = _placed(kernel, x_at, axis=2)
    sliced = out_at is None and n_out < min_out
    if sliced:
        out_at = (0, min_out)
    if out_at is not None:
        kernel, bias = _placed(kernel, out_at, axis=3), _placed(bias, out_at, axis=0)
    w = g.const(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), "w")
    inputs = [x, w] + ([g.const(bias, "b")] if "bias" in p or out_at is not None else [])
    kh, kw = kernel.shape[:2]
    y = g.op(
        "Conv", inputs, "conv", kernel_shape=[kh, kw], strides=[stride, stride], pads=[pad, pad, pad, pad]
    )
    return _channels(g, y, 0, n_out) if sliced else y


def _placed(a: np.ndarray, at: Placement, axis: int) -> np.ndarray:
    """``a`` with its ``axis`` placed at ``[offset, offset + n)`` of ``total``, zeros elsewhere."""
    offset, total = at
    shape = list(a.shape)
    shape[axis] = total
    out = np.zeros(shape, np.float32)
    index = [slice(None)] * a.ndim
    index[axis] = slice(offset, offset + a.shape[axis])
    out[tuple(index)] = a
    return out


def _channels(g: GraphBuilder, x: str, start: int, stop: int) -> str:
    """Channels ``[start, stop)`` of NCHW ``x`` (``Slice`` with starts, ends and axes ``[1]``)."""
    ints = [g.const(np.array([v], np.int64)) for v in (start, stop, 1)]
    return g.op("Slice", [x, *ints], "channels")


def _conv_transpose(
    g: GraphBuilder, x: str, p, *, shuffle: bool = False, out_at: Placement | None = None
) -> str:
    # flax ConvTranspose (transpose_kernel=False) is lax.conv_transpose: the input dilated by the stride and
    # correlated with the kernel as stored; ONNX ConvTranspose scatters with the kernel, i.e. the same
    # thing with the kernel flipped in space. Weights (in, out, kh, kw).
    kernel = np.asarray(p["kernel"], np.float32)[::-1, ::-1]
    if shuffle:
        return _pixel_shuffle_up(g, x, kernel, np.asarray(p["bias"], np.float32), out_at)
    w = g.const(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)), "wt")
    b = g.const(np.asarray(p["bias"], np.float32), "b")
    kh, kw = kernel.shape[:2]
    return g.op("ConvTranspose", [x, w, b], "up", kernel_shape=[kh, kw], strides=[2, 2])


def _pixel_shuffle_up(
    g: GraphBuilder, x: str, kernel: np.ndarray, bias: np.ndarray, out_at: Placement | None = None
) -> str:
    """The 2x2 stride-2 ``ConvTranspose`` with ``kernel`` (kh, kw, in, out; ONNX's scatter orientation) as a
    1x1 ``Conv`` to ``4 out`` channels ordered ``(dy, dx, c)``, then the pixel shuffle channels-last: output
    pixel ``(2i + dy, 2j + dx)`` of channel ``c`` is that conv's channel ``(2 dy + dx) out + c`` at ``(i, j)``
    (the int8 layout, :data:`INT8_MIN_OUT`); ``out_at`` places the output's channels in a wider tensor. Height
    and width stay dynamic."""
    if out_at is not None:
        kernel, bias = _placed(kernel, out_at, axis=3), _placed(bias, out_at, axis=0)
    n_in, n_out = kernel.shape[2:]
    w = kernel.transpose(0, 1, 3, 2).reshape(4 * n_out, n_in, 1, 1)  # row (dy, dx, c), column ci
    y = g.op("Conv", [x, g.const(np.ascontiguousarray(w), "wu"), g.const(np.tile(bias, 4), "bu")], "up1x1",
             kernel_shape=[1, 1])  # fmt: skip
    y = g.op("Transpose", [y], "nhwc", perm=[0, 2, 3, 1])  # [N, H, W, (dy, dx, c)]
    six = g.op("Reshape", [y, g.const(np.array([0, 0, 0, 2, 2, n_out], np.int64))], "split")
    six = g.op("Transpose", [six], "shuffle", perm=[0, 1, 3, 2, 4, 5])  # [N, H, dy, W, dx, c]
    shape = g.op("Shape", [y], "shape")
    dims = [g.op("Slice", [shape, *(g.const(np.array([v], np.int64)) for v in (0, 1))], "n"),
            g.op("Mul", [g.op("Slice", [shape, *(g.const(np.array([v], np.int64)) for v in (1, 3))], "hw"),
                         g.const(np.array([2], np.int64))], "hw2"),
            g.const(np.array([n_out], np.int64))]  # fmt: skip
    up = g.op("Reshape", [six, g.op("Concat", dims, "shape2", axis=0)], "merge")  # [N, 2H, 2W, c]
    return g.op("Transpose", [up], "nchw", perm=[0, 3, 1, 2])


def unet_onnx(g: GraphBuilder, x: str, spec, params, *, int8_layout: bool = False) -> str:
    """Append the :class:`rawlab.learn.models.UNet` ``spec`` with ``params`` (its Flax parameter tree) to
    ``g``, reading NCHW tensor ``x``; returns the name of the output ``[N, out_channels, H, W]``.
    ``int8_layout``: the same function laid out for ONNX Runtime's int8 kernels (:data:`INT8_MIN_OUT`).

    Module names follow Flax's creation order in ``UNet.__call__``: ``Conv_i`` (the down-sampling
    convolutions, then the 1x1 head), ``_Block_i`` (encoder blocks, then decoder blocks from the deepest up),
    ``ConvTranspose_j`` (from the deepest up).
    """
    p = params["params"] if "params" in params else params
    slope = float(spec.negative_slope)
    levels = len(spec.widths)
    frames = None
    if spec.merge_frames:  # [merged, frames, sigma merged, sigma frames]: the U-Net's 8, frames_in's 8 K
        c = 4 * (spec.merge_frames + 1)
        frames = g.op("Concat", [_channels(g, x, 4, c), _channels(g, x, c + 4, 2 * c)], "frames", axis=1)
        x = g.op("Concat", [_channels(g, x, 0, 4), _channels(g, x, c, c + 4)], "base", axis=1)

    def act(t: str) -> str:
        return g.op("LeakyRelu", [t], "lrelu", alpha=slope)

    min_out = INT8_MIN_OUT if int8_layout else 0
    # The int8 layout of a narrow top level (width w, 2 w <= INT8_MIN_OUT; not with a burst's frames_in): its
    # skip is placed at channels [w, 2 w) of INT8_MIN_OUT and the up-sampling into it at [0, w), so that their
    # sum is the concatenation, with neither a Slice nor a Concat; the top decoder block's output stays wide
    # (at [0, w)) into the 1x1 heads.
    w0 = spec.widths[0]
    place = int8_layout and frames is None and w0 < INT8_MIN_OUT and 2 * w0 <= INT8_MIN_OUT
    wide = (0, INT8_MIN_OUT)

    def block(t: str, index: int, level: int, x_at=None, out_at=None) -> str:
        bp = p[f"_Block_{index}"]
        n = spec.convs(level)
        for k in range(n):
            t = act(_conv(g, t, bp[f"Conv_{k}"], pad=1, min_out=min_out, x_at=x_at if k == 0 else None,
                          out_at=out_at if k == n - 1 else None))  # fmt: skip
        return t

    skips, h = [], x
    for i in range(levels):
        if i > 0:
            h = act(
                _conv(
                    g, h, p[f"Conv_{i - 1}"], stride=2, x_at=(w0, INT8_MIN_OUT) if place and i == 1 else None
                )
            )
        h = block(h, i, i, out_at=(w0, INT8_MIN_OUT) if place and i == 0 else None)
        if i == 0 and frames is not None:
            h = g.op("Add", [h, _conv(g, frames, p["frames_in"], pad=1)], "frames_in")
        skips.append(h)
    h_at = None
    for j, i in enumerate(reversed(range(levels - 1))):
        top = place and i == 0
        h = _conv_transpose(g, h, p[f"ConvTranspose_{j}"], shuffle=int8_layout, out_at=wide if top else None)
        h = g.op("Add" if top else "Concat", [h, skips[i]], "cat", **({} if top else {"axis": 1}))
        h = block(h, levels + j, i, x_at=wide if top else None, out_at=wide if top else None)
        h_at = wide if top else None
    if spec.head == "rgb":
        planes = _channels(g, x, 0, 4)
        if spec.denoise_first:  # the Bayer head (Conv_{levels-1}) denoises the planes the demosaic reads
            planes = g.op("Add", [planes, _conv(g, h, p[f"Conv_{levels - 1}"], x_at=h_at)], "denoised")
        residual = _conv(g, h, p[f"Conv_{levels - 1 + spec.denoise_first}"], x_at=h_at)
        return _rgb_head(g, planes, residual, spec.demosaic)
    residual = _conv(g, h, p[f"Conv_{levels - 1}"], x_at=h_at)
    return g.op("Add", [_channels(g, x, 0, spec.out_channels), residual], "output")


def _rgb_head(g: GraphBuilder, planes: str, residual: str, demosaic: str) -> str:
    """The joint model's head (:class:`rawlab.learn.models.UNet` with ``head="rgb"``): the fixed linear demosaic
    ``demosaic`` (``model.spec.demosaic``: bilinear or MHC) of the 4 RGGB-phase ``planes`` (the input's, or the
    Bayer head's denoised ones with ``denoise_first``) plus the 12-channel ``residual``, then depth-to-space to
    ``[N, 3, 2H, 2W]``.

    The demosaic is :func:`rawlab.learn.models.linear_demosaic` op for op: one packed pixel of edge
    padding (``Pad``, mode ``edge``), then its 3x3 kernel as a ``Conv`` without bias. Its 12 channels are ordered
    ``(dy, dx, colour)``, which is ONNX ``DepthToSpace``'s ``DCR`` order (channel ``(2 dy + dx) * 3 + c`` goes to
    pixel ``(2 i + dy, 2 j + dx)`` of colour ``c``), so depth-to-space is one builtin op.
    """
    from ..learn.models import demosaic_kernel

    padded = g.op("Pad", [planes, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], "pad", mode="edge")
    kernel = g.const(
        np.ascontiguousarray(demosaic_kernel(demosaic).transpose(3, 2, 0, 1)), demosaic
    )  # HWIO -> OIHW
    base = g.op("Conv", [padded, kernel], demosaic, kernel_shape=[3, 3])
    return g.op("DepthToSpace", [g.op("Add", [base, residual], "add")], "rgb", blocksize=2, mode="DCR")


def _io_shapes(spec) -> tuple[list, list]:
    """The graph's input and output shapes (NCHW; ``N``, ``H``, ``W`` dynamic): the joint model's output is RGB
    at twice the input's height and width."""
    if spec.head == "rgb":
        return ["N", spec.in_channels, "H", "W"], ["N", spec.out_channels, "2H", "2W"]
    return ["N", spec.in_channels, "H", "W"], ["N", spec.out_channels, "H", "W"]


def network_model(model, *, metadata: dict[str, str] | None = None, int8_layout: bool = False):
    """The ONNX ``ModelProto`` of a :class:`rawlab.learn.TrainedModel`'s network, NCHW, dynamic N, H, W
    (``int8_layout``: for a graph to be quantised, :data:`INT8_MIN_OUT`)."""
    spec = model.spec
    if type(model.module).__name__ != "UNet":
        raise RawlabError(
            f"ONNX export knows the U-Net family; {type(model.module).__name__} is not one of them"
        )
    g = GraphBuilder()
    helper, tp = g.onnx.helper, g.onnx.TensorProto
    y = unet_onnx(g, "input", spec, model.params, int8_layout=int8_layout)
    y = g.op("Identity", [y], "identity")
    g.nodes[-1].output[0] = "output"
    shape_in, shape_out = _io_shapes(spec)
    inp = helper.make_tensor_value_info("input", tp.FLOAT, shape_in)
    out = helper.make_tensor_value_info("output", tp.FLOAT, shape_out)
    kind = "joint demosaic+denoise U-Net (RGB out)" if spec.head == "rgb" else "packed Bayer U-Net"
    return g.model([inp], [out], metadata=metadata, doc=f"rawlab {model.name}: {kind}, NCHW")


def op_types(model_proto) -> list[str]:
    return sorted({n.op_type for n in model_proto.graph.node})


def embed_description(model_proto, meta: dict[str, Any]) -> None:
    """Add ``meta`` (JSON) to ``model_proto``'s ``metadata_props`` under :data:`METADATA_KEY`."""
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)


# ---------------------------------------------------------------------------------------- the runtime


def _session(source, num_threads: int | None, what: str):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads or _cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's Fail / InvalidProtobuf / InvalidGraph: a damaged or foreign file
        raise RawlabError(
            f"the model {what} cannot be loaded by ONNX Runtime ({_first_line(e)}); the file is truncated or "
            "corrupt: copy it again or re-export it with `rawlab export --format onnx`"
        ) from None


def read_onnx_metadata(path: str | os.PathLike[str], *, session=None) -> dict[str, Any]:
    """The ``rawlab.onnx/1`` description of an ``.onnx``: embedded in it, else its ``FILE.onnx.json`` sidecar.

    Raises
    ------
    RawlabError
        If the file is missing, not an ONNX model ONNX Runtime can load, or carries no rawlab description.
    """
    p = Path(path)
    if not p.is_file():
        raise RawlabError(
            f"model {os.fspath(path)!r} does not exist; pass a .onnx from `rawlab export --format onnx`"
        )
    sess = session or _session(os.fspath(p), 1, str(p))
    raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    meta = None
    if raw is not None:
        try:
            meta = json.loads(raw)
        except ValueError:
            raise RawlabError(
                f"the model {p} carries a rawlab description that is not valid JSON; re-export it"
            ) from None
    return _description(p, meta, SCHEMA, "rawlab export --format onnx")


class OnnxDenoiser(_TiledDenoiser):
    """A ``.onnx`` written by ``rawlab export --format onnx``, run with ONNX Runtime on the CPU."""

    kind = "onnx"

    def __init__(
        self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None, num_threads: int | None = None
    ):
        self.path = os.fspath(path)
        self.num_threads = num_threads or _cores()
        self.meta = meta if meta is not None else read_onnx_metadata(self.path, session=self.session)
        self.config = self.meta["config"]
        self.export = self.meta.get("export", {})

    @property
    def quantize(self) -> str:
        return self.export.get("quantize", "none")

    @cached_property
    def session(self):
        return _session(self.path, self.num_threads, self.path)

    def check(self) -> None:
        """Build the session and check its input against the description: a damaged file fails here."""
        inp = self.session.get_inputs()[0]
        want = self.normalisation.channels
        if len(inp.shape) != 4 or inp.shape[1] != want:
            raise RawlabError(
                f"{self.path}: the network input is {inp.shape} but its description says NCHW with {want} "
                "channels; re-export the model"
            )

    @cached_property
    def _names(self) -> tuple[str, str]:
        return self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    def run_nchw(self, x: np.ndarray) -> np.ndarray:
        """The network on ``[N, C, H, W]`` float32 (H and W multiples of ``export.multiple``)."""
        name_in, name_out = self._names
        return self.session.run([name_out], {name_in: np.ascontiguousarray(x, np.float32)})[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        y = self.run_nchw(np.moveaxis(batch, -1, 1))
        return np.moveaxis(y, 1, -1)

    def __getstate__(self):  # a session does not pickle: ship the path and description
        return {"path": self.path, "meta": self.meta, "num_threads": self.num_threads}

    def __setstate__(self, state):
        self.__init__(state["path"], state["meta"], state["num_threads"])


# ----------------------------------------------------------------------------------------- the export


@dataclass
class OnnxExportResult:
    out: Path
    sidecar: Path
    tile: int
    nbytes: int
    ops: list[str]
    parity: dict[str, Any]
    seconds: float
    quantize: str = "none"

    def summary(self) -> str:
        kind = "float32" if self.quantize == "none" else f"{self.quantize}, static QOperator"
        return (
            f"export: {self.out} (onnx {kind}, opset {OPSET}, {self.nbytes / 1e6:.2f} MB, tile {self.tile}, dynamic "
            f"H x W, {len(self.ops)} builtin op types); {parity_line('ONNX', self.parity, self.seconds)}"
        )


def network_parity(model, proto, crops, described: str):
    """Load the network graph ``proto`` in ONNX Runtime and check it against JAX on ``crops``
    (:func:`rawlab.deploy.export.compare_with_jax`, ``crops`` = ``described``): ``(session, parity)``."""
    session = _session(proto.SerializeToString(), None, "just written")

    def run(x: np.ndarray) -> np.ndarray:  # NHWC in and out, as the comparison feeds it; the graph is NCHW
        return np.moveaxis(session.run(None, {"input": np.moveaxis(x, -1, 1)})[0], 1, -1)

    result = compare_with_jax(model, run, crops, "onnx")
    result["crops"] = described
    return session, result


def eval_crops(model, calibration: str | None, size: int, n_eval: int, seed: int, say) -> tuple[list, str]:
    """Held-out crops for the parity check, chosen as ``rawlab export`` chooses them for TFLite."""
    source, why = crop_source(model.config, calibration)
    if source is None and not model.config.get("burst"):  # a burst model checks on simulated bursts
        say(f"warning: {why}: checking parity on synthetic crops. Pass --calibration STORE")
    return model_crops(model, source, size, n_eval, split="eval", seed=seed)


def export_onnx(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tile: int | None = None,
    calibration: str | None = None,
    n_eval: int = 8,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
    quantize: str = "none",
    n_calibration: int = 16,
) -> OnnxExportResult:
    """Export the model in ``model_dir`` to ``out`` (ONNX) and ``out + ".json"``, after a parity check.

    ``quantize="int8"``: static int8 (ONNX Runtime's ``quantize_static``, QOperator format: ``QLinearConv``,
    uint8 activations, int8 per-channel weights), its activation ranges calibrated on ``n_calibration`` crops
    of the training scenes (and their flips); its PSNR cost against JAX is measured and reported, as for int8
    TFLite, instead of the float32 tolerance.

    ``tile`` is the tile ``rawlab denoise`` runs (default: the model's); the graph itself takes any multiple of
    the network's down-sampling. ``calibration``: a store or raw files for the parity crops (default: the
    training store's held-out scenes). Raises :class:`RawlabError` for bad arguments, an ``out`` that cannot
    be written, or a parity failure (then nothing is written).
    """
    from ..outputs import output_file

    t0 = time.perf_counter()
    say = echo or (lambda _m: None)
    out = output_file(out, companions=(".json",))
    model, size, overlap = load_model_tile(model_dir, tile)
    crops, described = eval_crops(model, calibration, size, n_eval, seed, say)
    onnx = _onnx()
    proto = network_model(model)
    ops = op_types(proto)
    say(f"writing {model.name} as ONNX (opset {OPSET}, NCHW, dynamic H x W, {len(ops)} op types)")
    if quantize not in ("none", "int8"):
        raise RawlabError(f"--format onnx takes --quantize none or int8, not {quantize!r}")
    _, result = network_parity(model, proto, crops, described)
    if quantize == "int8":
        if not result["max_abs"] <= FP32_TOLERANCE:  # the float graph must be faithful before quantising it
            raise RawlabError(
                f"parity check failed: the float32 ONNX graph differs from JAX by up to {result['max_abs']:.2e}; "
                "nothing was written"
            )
        laid_out = network_model(model, int8_layout=True)  # the same function, faster once int8
        proto = quantized_model(model, laid_out, calibration, size, n_calibration, seed, say)
        ops = op_types(proto)
        _, result = network_parity(model, proto, crops, described)
    say(
        f"parity on {len(crops)} crops of {described}: max |ONNX - JAX| {result['max_abs']:.2e}"
        + (
            f"; vs clean: JAX {result['psnr_jax']:.2f} dB, ONNX {result['psnr_onnx']:.2f} dB"
            if result["psnr_jax"]
            else ""
        )
    )
    if quantize == "none" and not result["max_abs"] <= FP32_TOLERANCE:
        raise RawlabError(
            f"parity check failed: the ONNX model differs from JAX by up to {result['max_abs']:.2e} (allowed "
            f"{FP32_TOLERANCE:g}) on {described}; the export is not faithful, nothing was written"
        )
    spec = model.spec
    meta = {
        "schema": SCHEMA,
        "config": tiled_config(model, size, overlap),
        "export": {
            "format": "onnx",
            "quantize": quantize,
            "opset": OPSET,
            "layout": "NCHW",
            "multiple": spec.multiple,
            "input": {"name": "input", "shape": _io_shapes(spec)[0], "dtype": "float32"},
            "output": {"name": "output", "shape": _io_shapes(spec)[1], "dtype": "float32"},
            "ops": ops,
            "parity": result,
            "source": source_entry(model_dir, model),
            "rawlab_version": __version__,
            "onnx_version": onnx.__version__,
        },
    }
    embed_description(proto, meta)
    data = proto.SerializeToString()
    sidecar = out.with_name(out.name + ".json")
    write_atomic(out, data)
    write_atomic(sidecar, (json.dumps(meta, indent=2) + "\n").encode())
    return OnnxExportResult(out, sidecar, size, len(data), ops, result, time.perf_counter() - t0, quantize)


def quantized_model(model, proto, calibration: str | None, size: int, n: int, seed: int, say):
    """``proto`` quantised to static int8 (QOperator) with activation ranges from crops of the training scenes."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    onnx = _onnx()
    source, _why = crop_source(model.config, calibration)
    crops, described = model_crops(model, source, size, n, split="train", seed=seed + 1)
    norm = model.normalisation
    inputs = [
        np.ascontiguousarray(np.moveaxis(np.asarray(norm.to_network(x[None], c.a, c.b), np.float32), -1, 1))
        for c in crops
        for x in (c.noisy, c.noisy[:, ::-1])  # flipped copies: more variety for the activation ranges
    ]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter({"input": x} for x in inputs)

        def get_next(self):
            return next(self._it, None)

    say(f"quantising to int8 with {len(inputs)} calibration tiles of {described}")
    root = logging.getLogger()  # onnxruntime.quantization advises on the root logger; not the user's business
    level = root.level
    root.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "float.onnx", Path(d) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
        try:
            return onnx.load(str(dst))
        finally:
            root.setLevel(level)
