"""``rawlab export``: a trained model directory to a self-describing ``.tflite``, with a parity check.

The path (measured with JAX 0.10 and TensorFlow 2.21): ``jax2tf.convert`` (native serialization, the only
mode JAX 0.10 has: the network becomes one ``XlaCallModule`` op holding StableHLO) -> a ``tf.function`` at a
**fixed** input shape ``(1, T, T, C)`` -> ``TFLiteConverter.from_concrete_functions``, which legalises the
StableHLO to builtin TFLite ops (CONV_2D, TRANSPOSE_CONV, CONCATENATION, ADD, LEAKY_RELU, SLICE). Only builtin
ops are allowed (``TFLITE_BUILTINS``, or ``TFLITE_BUILTINS_INT8`` for full-integer models), and the written
flatbuffer is checked again for custom (Flex / Select TF) ops. A fixed shape is required: dynamic shapes
break TRANSPOSE_CONV at run time (docs/architecture.md, "Known facts about the stack"), so denoising runs tile by tile.

Quantisation (``--quantize``): ``none`` (float32), ``fp16`` (float16 weights, float32 compute), ``dynamic``
(int8 weights, activations quantised on the fly), ``int8`` (full integer, int8 input and output, calibrated
on representative crops). Calibration crops come from the training store recorded in the model's config
(the training split's scenes), or ``--calibration`` (a store or raw files); synthetic crops only as a last
resort, with a warning.

Parity: the exported graph and the JAX network are run on held-out crops (the store's evaluation scenes).
For float32 the largest absolute difference of the clean estimate must be at most ``1e-4`` (normalised
units) or the export fails; for every format the PSNR against JAX's output, and the PSNR cost against the
clean references where there are any, are printed and stored in the model's description
(:mod:`rawlab.deploy.runtime`).

TensorFlow is imported only here (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError
from .runtime import SCHEMA, builtin_op_names, embed_metadata

__all__ = [
    "FORMATS",
    "FP32_TOLERANCE",
    "QUANTIZE",
    "ExportResult",
    "export_model",
    "export_tflite",
    "training_store",
]

QUANTIZE = ("none", "fp16", "dynamic", "int8")
FORMATS = ("tflite", "onnx", "dtmodel")  # onnx and dtmodel: rawlab.deploy.onnx and rawlab.deploy.dtmodel
FP32_TOLERANCE = 1e-4  # normalised units: the float32 export must match JAX this closely


@dataclass
class ExportResult:
    out: Path
    sidecar: Path
    quantize: str
    tile: int
    nbytes: int
    ops: list[str]
    parity: dict[str, Any]
    calibration: dict[str, Any]
    seconds: float
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"export: {self.out} ({self.quantize}, {self.nbytes / 1e6:.2f} MB, tile {self.tile}, "
            f"{len(self.ops)} builtin op types); {parity_line('TFLite', self.parity, self.seconds)}"
        )


def parity_line(label: str, parity: dict[str, Any], seconds: float) -> str:
    """The end of an export's summary: ``max |LABEL - JAX| ...``, the PSNR cost where measured, the time."""
    cost = parity.get("psnr_cost_db")
    cost = f", PSNR cost {cost:+.3f} dB vs JAX" if cost is not None else ""
    return f"max |{label} - JAX| {parity['max_abs']:.2e}{cost} ({seconds:.1f} s)"


def training_store(config: dict[str, Any]) -> str | None:
    """The store a model was trained on, as ``rawlab train`` records it (``config["training"]["store"]``)."""
    value = (config.get("training") or {}).get("store")
    return value if isinstance(value, str) and value else None


def crop_source(config: dict[str, Any], calibration: str | None) -> tuple[str | None, str | None]:
    """Where an export's crops come from: ``(calibration or the training store, None)``, or ``(None, why)``
    when there is neither (the caller warns with ``why`` and falls back to synthetic crops)."""
    source = calibration or training_store(config)
    why = "no training store in the model's config and no --calibration"
    if source is not None and calibration is None and not os.path.exists(source) and "://" not in source:
        why, source = f"the training store {source} recorded in the model's config is not here", None
    return source, (why if source is None else None)


def model_crops(model, source: str | None, size: int, n: int, *, split: str, seed: int):
    """``(crops, description)`` for an export's int8 calibration (``split="train"``) or parity check
    (``"eval"``): :func:`rawlab.deploy.crops.find_crops` of ``source`` for a single-frame model, bursts
    simulated by the training source for a burst model (:func:`rawlab.deploy.burst.burst_crops`: it trains on
    no store and takes 8 K channels). One home for TFLite and ONNX."""
    if model.config.get("burst"):
        from .burst import burst_crops

        return burst_crops(source, size, n, model, split=split, seed=seed)
    from .crops import find_crops

    return find_crops(source, size, n, model, split=split, seed=seed)


def load_model_tile(model_dir: str | os.PathLike[str], tile: int | None):
    """Load a model directory for export and check the tile: ``(model, size, overlap)``.

    Raises
    ------
    RawlabError
        If the model cannot be loaded or ``tile`` is not a multiple of the network's down-sampling above
        twice the overlap.
    """
    from ..learn.modelio import load_model

    model = load_model(model_dir)
    overlap = int(model.tile["overlap"])
    size = int(tile or model.tile["size"])
    m = model.spec.multiple
    if size % m or size <= 2 * overlap:
        raise RawlabError(
            f"--tile {size} does not fit this network: it must be a multiple of {m} (its down-sampling) and "
            f"more than twice the tile overlap ({overlap}); e.g. --tile {max(m, (2 * overlap // m + 1) * m)}"
        )
    return model, size, overlap


def tiled_config(model, size: int, overlap: int) -> dict[str, Any]:
    """A copy of the model's config with the exported tile: the ``config`` of an export's description."""
    config = json.loads(json.dumps(model.config))
    config["tile"] = {"size": size, "overlap": overlap}
    return config


def source_entry(model_dir: str | os.PathLike[str], model) -> dict[str, Any]:
    """The ``export.source`` of an export's description: the model directory it came from."""
    return {"path": os.path.abspath(model_dir), "name": model.name, "step": model.config.get("step")}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary beside it, so ``path`` is never half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING chatter
    # TF 2.21 prints a oneDNN notice at import whatever the log level; oneDNN only speeds up TF's own CPU
    # kernels, which export uses for tracing, not for the TFLite model it writes.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError:
        raise RawlabError(
            "`rawlab export` needs TensorFlow (for jax2tf and the TFLite converter): "
            "pip install 'rawlab[export]'"
        ) from None
    return tf, jax2tf


@contextlib.contextmanager
def _captured_stderr():
    """Capture file descriptor 2 (the converter's C++ logging) and yield a function returning it."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        text: list[str] = []
        try:
            yield lambda: "".join(text)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def _convert(tf, concrete, fn, quantize: str, representative: Callable | None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with _captured_stderr() as log, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            return conv.convert()
        except Exception as e:  # ConverterError and friends: the model uses something TFLite cannot run
            error = e
    tail = "\n".join(log().strip().splitlines()[-8:])
    raise RawlabError(
        f"the TFLite converter failed ({type(error).__name__}: {str(error).strip().splitlines()[0]}); only builtin "
        f"TFLite ops are allowed. Converter log:\n{tail}"
    )


def export_model(model_dir, out, *, fmt: str = "tflite", quantize: str = "none", **kwargs):
    """``rawlab export --format FMT``: :func:`export_tflite`, :func:`rawlab.deploy.onnx.export_onnx` (float32)
    or :func:`rawlab.deploy.dtmodel.export_dtmodel` (a darktable package); each result has ``summary()`` and
    ``sidecar``. ``model_dir`` may be ``"builtin"``. ``kwargs`` (``tile``, ``calibration``, ``echo`` ...) go to
    the exporter."""
    from ..learn.modelio import resolve_model

    if fmt not in FORMATS:
        raise RawlabError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model_dir = resolve_model(model_dir)  # "builtin": the model shipped inside rawlab
    if fmt == "tflite":
        return export_tflite(model_dir, out, quantize=quantize, **kwargs)
    if fmt == "onnx":
        from .onnx import export_onnx

        if quantize not in ("none", "int8"):
            raise RawlabError(f"--format onnx takes --quantize none or int8, not {quantize!r}")
        return export_onnx(model_dir, out, quantize=quantize, **kwargs)
    if quantize != "none":
        raise RawlabError(
            f"--format {fmt} is float32 only; drop --quantize {quantize} (quantised models: --format tflite or onnx)"
        )
    kwargs.pop("n_calibration", None)
    from .dtmodel import export_dtmodel

    return export_dtmodel(model_dir, out, **kwargs)


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(x, np.float64) - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _db(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def _io(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero = detail["quantization"]
    out = {"shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    if scale:
        out.update(scale=float(scale), zero_point=int(zero))
    return out


def export_tflite(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    quantize: str = "none",
    tile: int | None = None,
    calibration: str | None = None,
    n_calibration: int = 16,
    n_eval: int = 8,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the model in ``model_dir`` to a TFLite flatbuffer ``out`` (and ``out + ".json"``).

    Parameters
    ----------
    model_dir
        A ``rawlab train`` workdir (``config.json`` + ``model.msgpack``).
    out
        The ``.tflite`` file to write (overwritten), and ``out + ".json"`` beside it; checked (its folder
        created) before anything else is done.
    quantize
        ``none``, ``fp16``, ``dynamic`` or ``int8`` (module docstring).
    tile
        Tile side in packed pixels (default: the model's ``tile.size``); a multiple of the network's
        ``spec.multiple`` and more than twice the overlap.
    calibration
        A rawlab store or raw files/folder for calibration and parity crops (default: the training store).
        From a store, the PSNR against clean is measured against each pair's aligned, exposure-matched
        reference (:func:`rawlab.deploy.crops.store_crops`).
    n_calibration, n_eval
        Number of crops for int8 calibration and for the parity check.
    echo
        Called with progress and warning lines.

    Raises
    ------
    RawlabError
        Bad arguments, an ``out`` that cannot be written, a model that does not convert to builtin ops, or a
        float32 parity failure.
    """
    from ..outputs import output_file

    t0 = time.perf_counter()
    say = echo or (lambda _m: None)
    if quantize not in QUANTIZE:
        raise RawlabError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    out = output_file(out, companions=(".json",))  # before the model is loaded and converted
    model, size, overlap = load_model_tile(model_dir, tile)
    # Crops: training scenes to calibrate, held-out scenes to check.
    source, why = crop_source(model.config, calibration)
    # A burst model (rawlab.deploy.burst) takes simulated bursts, not single-frame crops.
    burst = bool(model.config.get("burst"))
    if source is None and not burst:
        say(
            f"warning: {why}: calibrating and checking on synthetic crops; int8 accuracy on real data may be "
            "worse. Pass --calibration STORE"
        )
    eval_crops, described = model_crops(model, source, size, n_eval, split="eval", seed=seed)
    calib_crops, calib_described = (
        model_crops(model, source, size, n_calibration, split="train", seed=seed + 1)
        if quantize == "int8"
        else ([], None)
    )
    norm = model.normalisation

    tf, jax2tf = _tensorflow()
    c = model.spec.in_channels  # the normalisation's channels; a burst model's 8 K
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        converted = jax2tf.convert(model.network_fn(), with_gradient=False)
    fn = tf.function(
        converted, input_signature=[tf.TensorSpec((1, size, size, c), tf.float32)], autograph=False
    )
    concrete = fn.get_concrete_function()

    def representative():
        for crop in calib_crops:
            for flip in (False, True):  # flipped copies: more variety for the activation ranges
                x = crop.noisy[:, ::-1] if flip else crop.noisy
                yield [np.asarray(norm.to_network(x[None], crop.a, crop.b), np.float32)]

    say(f"converting {model.name} to TFLite ({quantize}, tile {size}x{size}x{c})")
    flat = _convert(tf, concrete, fn, quantize, representative)
    ops = builtin_op_names(flat)
    custom = [o for o in ops if o.startswith("CUSTOM") or "FLEX" in o.upper()]
    if custom:
        raise RawlabError(
            f"the converted model uses non-builtin ops {custom}; it would need the Flex delegate"
        )

    parity = _parity(model, flat, eval_crops, size, quantize)
    parity["crops"] = described
    calib = {"source": calib_described, "n_crops": len(calib_crops)}
    say(
        f"parity on {len(eval_crops)} crops of {described}: max |TFLite - JAX| {parity['max_abs']:.2e}, "
        f"PSNR vs JAX output {_db(parity['psnr_vs_jax'])}"
        + (
            f"; vs clean: JAX {parity['psnr_jax']:.2f} dB, TFLite {parity['psnr_tflite']:.2f} dB "
            f"(cost {parity['psnr_cost_db']:+.3f} dB)"
            if parity.get("psnr_cost_db") is not None
            else ""
        )
    )
    if quantize == "none" and not parity["max_abs"] <= FP32_TOLERANCE:
        raise RawlabError(
            f"parity check failed: the float32 TFLite model differs from JAX by up to {parity['max_abs']:.2e} "
            f"(allowed {FP32_TOLERANCE:g}) on {described}; the conversion is not faithful, nothing was written"
        )

    meta = {
        "schema": SCHEMA,
        "config": tiled_config(model, size, overlap),
        "export": {
            "quantize": quantize,
            "source": source_entry(model_dir, model),
            "input": parity.pop("input"),
            "output": parity.pop("output"),
            "ops": ops,
            "calibration": calib,
            "parity": parity,
            "rawlab_version": __version__,
            "tensorflow_version": tf.__version__,
        },
    }
    flat = embed_metadata(flat, meta)
    sidecar = out.with_name(out.name + ".json")
    write_atomic(out, flat)
    write_atomic(sidecar, (json.dumps(meta, indent=2) + "\n").encode())
    return ExportResult(out, sidecar, quantize, size, len(flat), ops, parity, calib, time.perf_counter() - t0)


def compare_with_jax(model, run: Callable[[np.ndarray], np.ndarray], crops, label: str) -> dict[str, Any]:
    """Run an exported network (``run``: network-domain ``(N, h, w, C)`` in, ``(N, h, w, 4)`` out) and the
    JAX network on the same crops; compare the clean estimates.

    Returns ``n_crops``, ``max_abs`` (largest ``|exported - JAX|``, normalised units), ``psnr_vs_jax`` (None
    for identical outputs: JSON has no infinity), ``psnr_jax`` and ``psnr_<label>`` against the crops' clean
    references and ``psnr_cost_db`` (None without references).
    """
    import jax

    norm = model.normalisation
    apply = jax.jit(model.network_fn())
    max_abs, p_vs, p_jax, p_exp = 0.0, [], [], []
    for crop in crops:
        x = np.asarray(norm.to_network(crop.noisy[None], crop.a, crop.b), np.float32)
        y_exp = norm.from_network(run(x), crop.a, crop.b)[0]
        y_jax = norm.from_network(np.asarray(apply(x)), crop.a, crop.b)[0]
        max_abs = max(max_abs, float(np.max(np.abs(y_exp - y_jax))))
        p_vs.append(_psnr(y_exp, y_jax))
        if crop.clean is not None and y_jax.shape == crop.clean.shape:  # a joint model's RGB: no packed truth
            p_jax.append(_psnr(y_jax, crop.clean))
            p_exp.append(_psnr(y_exp, crop.clean))
    finite = [v for v in p_vs if np.isfinite(v)]
    out = {
        "n_crops": len(crops),
        "max_abs": max_abs,
        "psnr_vs_jax": float(np.mean(finite)) if finite else None,
        "psnr_jax": float(np.mean(p_jax)) if p_jax else None,
        f"psnr_{label}": float(np.mean(p_exp)) if p_exp else None,
    }
    out["psnr_cost_db"] = out["psnr_jax"] - out[f"psnr_{label}"] if p_jax else None
    return out


def _parity(model, flat: bytes, crops, size: int, quantize: str) -> dict[str, Any]:
    """Run the converted graph and JAX on the same crops; compare the clean estimates."""
    from .runtime import TFLiteDenoiser

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.tflite"
        path.write_bytes(flat)
        meta = {
            "config": {**model.config, "tile": {"size": size, "overlap": 0}},
            "export": {"quantize": quantize},
        }
        runner = TFLiteDenoiser(path, meta)
        out = compare_with_jax(model, runner._run, crops, "tflite")
        inp, outp = runner._io
        io = {"input": _io(inp), "output": _io(outp)}
        del runner
    return {**out, **io}
