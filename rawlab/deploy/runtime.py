"""Run a denoiser: a ``.tflite`` file (LiteRT interpreter) or a model directory (JAX), tile by tile.

:func:`load_denoiser` is the one entry point. Both kinds give the same interface as
:class:`rawlab.learn.TrainedModel`: ``denoise(x, a, b)`` on packed normalised planes, ``noise_params(sensor,
iso)``, ``tile``, ``normalisation``, ``config``. Both run the network on fixed-size tiles with overlap
(:mod:`rawlab.deploy.tiling`), the only way a TFLite model exported at a fixed shape can see a whole image.

A ``.tflite`` written by ``rawlab export`` is self-describing: its flatbuffer carries a metadata entry named
``rawlab`` holding the JSON below, and the same JSON is written beside it as ``FILE.json`` for people to read.
The embedded copy wins; the sidecar is read only for a ``.tflite`` without one. Schema ``rawlab.tflite/1``::

    {"schema": "rawlab.tflite/1",
     "config": {...the source model's config.json (rawlab.model/1): model, normalisation, noise, split...,
                "tile": {"size": 256, "overlap": 32}},        # the exported (fixed) tile, packed pixels
     "export": {"quantize": "int8", "source": {"path": ..., "name": ..., "step": ...},
                "input":  {"shape": [1, 256, 256, 8], "dtype": "int8", "scale": 0.0039, "zero_point": -128},
                "output": {"shape": [1, 256, 256, 4], "dtype": "int8", "scale": 0.0049, "zero_point": -103},
                "ops": ["ADD", "CONV_2D", ...], "calibration": {...}, "parity": {...},
                "rawlab_version": "0.1.0", "tensorflow_version": "2.21.0"}}

This module never imports TensorFlow: running a ``.tflite`` needs only ``ai-edge-litert``.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..bayer import to_rggb
from ..errors import RawlabError
from .ensemble import DEFAULT_ENSEMBLE, self_ensemble
from .guard import classical_estimate, classical_estimates, model_and_classical, sure_blend, sure_fuse
from .tiling import run_tiled

__all__ = [
    "METADATA_NAME",
    "SCHEMA",
    "JaxDenoiser",
    "TFLiteDenoiser",
    "builtin_op_names",
    "describe_model",
    "embed_metadata",
    "load_denoiser",
    "read_metadata",
]

SCHEMA = "rawlab.tflite/1"
METADATA_NAME = "rawlab"
_TFL_IDENTIFIER = b"TFL3"


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise RawlabError(
            "running a .tflite model needs the LiteRT runtime: pip install 'rawlab[litert]' "
            "(or pip install ai-edge-litert)"
        ) from None
    return schema


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------ flatbuffer


def embed_metadata(tflite: bytes, meta: dict[str, Any]) -> bytes:
    """Return ``tflite`` with ``meta`` (JSON) added as the flatbuffer metadata entry ``rawlab``."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    model.metadata = [
        m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())
    ]
    data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    model.buffers.append(schema.BufferT(data=data))
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(tflite) + len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_TFL_IDENTIFIER)
    return bytes(builder.Output())


def _model(tflite: bytes):
    if tflite[4:8] != _TFL_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer")
    return _schema().Model.GetRootAs(tflite, 0)


def _embedded(tflite: bytes) -> dict[str, Any] | None:
    model = _model(tflite)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def builtin_op_names(tflite: bytes) -> list[str]:
    """Names of the operators a TFLite flatbuffer uses (``CUSTOM`` for custom ops, e.g. Flex/Select TF)."""
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = _model(tflite)
    out = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        op = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # schema v3a: the larger one is the code
        name = names.get(op, str(op))
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
        out.append(name)
    return sorted(set(out))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``rawlab.tflite/1`` description of a ``.tflite``: embedded in it, else its ``FILE.json`` sidecar.

    Raises
    ------
    RawlabError
        If the file is missing, is not a TFLite model, or carries no rawlab description.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise RawlabError(f"cannot read the model {os.fspath(path)!r}: {e.strerror or e}") from None
    if data[4:8] != _TFL_IDENTIFIER:
        raise RawlabError(
            f"{p} is not a TFLite model (no TFL3 flatbuffer); pass a .tflite written by `rawlab export` or "
            "a model directory"
        )
    try:
        meta = _embedded(data)
    except RawlabError:
        raise
    except Exception as e:  # struct.error, IndexError, UnicodeDecodeError, bad JSON: a damaged flatbuffer
        raise RawlabError(
            f"the model {p} is truncated or corrupt ({len(data)} bytes; reading its flatbuffer failed: "
            f"{_first_line(e)}); copy it again or re-export it with `rawlab export`"
        ) from None
    if not isinstance(meta, dict | None):
        raise RawlabError(
            f"the model {p} carries a rawlab description that is not a JSON object; re-export it"
        )
    return _description(p, meta, SCHEMA, "rawlab export")


def _description(p: Path, meta: Any, schema: str, command: str) -> dict[str, Any]:
    """A model file's description: ``meta`` (the copy embedded in ``p``, or None), else the ``FILE.json``
    sidecar beside ``p``; checked to be of ``schema``. ``command`` is the remedy named when there is none.

    Raises
    ------
    RawlabError
        If there is no description, the sidecar is not JSON, or the schema is not ``schema``.
    """
    sidecar = p.with_name(p.name + ".json")
    if meta is None and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except ValueError as e:
            raise RawlabError(f"{sidecar} is not valid JSON: {e}") from None
    if meta is None:
        raise RawlabError(
            f"{p} has no rawlab description (no embedded metadata and no {sidecar.name} beside it), so its tile "
            f"size, normalisation and noise law are unknown; export it with `{command}`"
        )
    if not isinstance(meta, dict) or meta.get("schema") != schema:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise RawlabError(f"{p}: description has schema {got!r}, expected {schema!r}")
    return meta


# ------------------------------------------------------------------------------------------- denoisers


class _TiledDenoiser:
    """What both kinds share: the model config, its normalisation and noise law, tiled ``denoise``."""

    kind = "?"
    batch = 1
    config: dict[str, Any]
    # The SURE guard (rawlab.deploy.guard): each tile blended back toward the input as far as Stein's unbiased
    # risk estimate says is better, so the output is not expected to be worse than the input; doubles the cost.
    guard = True
    guard_weights: list[
        float
    ]  # the guard's weight of each tile of the last denoise() call (1: the network's)
    # Images of the self-ensemble (rawlab.deploy.ensemble) when denoise() is told the CFA; 1: the frame alone.
    ensemble = DEFAULT_ENSEMBLE
    # With the guard: fuse the (ensembled) estimate with VST+NL-means by SURE (rawlab.deploy.guard.sure_fuse),
    # tile by tile; two passes of NL-means per strength. False: the guarded network alone. "bm3d": VST+BM3D
    # joins the candidates (the optional bm3d package; two BM3D passes, ~60 s per mosaic megapixel).
    fuse: bool | str = True
    fuse_weights: np.ndarray  # (tiles, 2) weights of the network and of VST+NL-means (its strengths together)
    # With the guard: denoise() also keeps the network's own (unguarded, ensembled) estimate, for demosaic().
    keep_network = False
    network_estimate: np.ndarray | None = None
    # With the fusion: denoise() also keeps the fused estimate's per-pixel derivative (the fusion's weights
    # held, rawlab.deploy.guard.sure_fuse), for a fusion downstream that needs it (denoise --burst's fusion with
    # the single-frame model).
    keep_derivative = False
    fused_derivative: np.ndarray | None = None
    # Run the network on each image flipped into the RGGB phase (rawlab.bayer.to_rggb), as the joint model
    # runs its U-Net, and flip its estimate back: the joint model's own Bayer estimate, for demosaic().
    rggb_phase = False

    @property
    def tile(self) -> dict[str, int]:
        from ..learn.modelio import DEFAULT_TILE

        return {**DEFAULT_TILE, **self.config.get("tile", {})}

    @cached_property
    def normalisation(self):
        from ..learn.normalize import Normalisation

        return Normalisation.from_dict(self.config.get("normalisation", {}))

    @property
    def name(self) -> str:
        return self.config.get("name") or self.config.get("model", {}).get("arch", "unet")

    def noise_params(self, sensor: str, iso: float) -> tuple[np.ndarray, np.ndarray] | None:
        """``(a, b)`` per channel for ``sensor`` at ``iso`` from the model's noise profiles (rawlab's one rule,
        :func:`rawlab.deploy.noiseparams.model_noise`), or None for a sensor the model does not know."""
        from .noiseparams import model_noise

        got = model_noise(self.config, sensor, iso)
        return None if got is None else (got.a, got.b)

    def check(self) -> None:
        """Raise :class:`RawlabError` now if the network cannot run (before any file is read). A model
        directory is read whole by :func:`load_denoiser`, so only a ``.tflite`` has more to check."""

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def denoise(self, x: np.ndarray, a, b, cfa: str | None = None) -> np.ndarray:
        """Denoise packed normalised planes ``(N, h, w, 4)`` or ``(h, w, 4)`` float32 with noise ``(a, b)``.

        ``a`` and ``b`` are per channel ``(4,)`` or per image ``(N, 1, 1, 4)`` (normalised units, ``Var[x] =
        a x + b``). Any ``h`` and ``w`` work: the image is processed in overlapping tiles of the model's
        size and blended without seams. Returns the clean estimate in the same layout and units.

        With ``guard`` (the default) each tile is the SURE-weighted blend of the network's output and the input
        (:func:`rawlab.deploy.guard.sure_blend`); ``guard_weights`` then lists the tiles' weights. Given the
        mosaic's ``cfa``, the estimate is the mean over ``ensemble`` rotations of the frame
        (:func:`rawlab.deploy.ensemble.self_ensemble`; each guarded), at ``ensemble`` times the cost. With the
        guard and ``fuse`` (the default), that estimate is then blended tile by tile with VST+NL-means and the
        input by SURE (:func:`rawlab.deploy.guard.sure_fuse`); ``fuse_weights`` lists the tiles' weights, and
        with ``keep_derivative`` ``fused_derivative`` holds the fused estimate's per-pixel derivative.
        """
        x = np.asarray(x, np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        a = np.broadcast_to(np.asarray(a, np.float32).reshape(-1, 4), (len(x), 4))
        b = np.broadcast_to(np.asarray(b, np.float32).reshape(-1, 4), (len(x), 4))
        norm, t = self.normalisation, self.tile
        out = np.empty_like(x)
        self.guard_weights = []
        fuse = bool(self.guard and self.fuse)
        keep = bool(self.guard and self.keep_network)
        fuse_weights = []
        network = np.empty_like(x) if keep else None
        derive = bool(fuse and self.keep_derivative)
        derivative = np.empty_like(x) if derive else None

        def frame(planes: np.ndarray, an: np.ndarray, bn: np.ndarray) -> np.ndarray:
            valid = min(planes.shape[0], t["size"]), min(planes.shape[1], t["size"])  # below a tile: padded

            def net(tiles):
                return norm.from_network(self._run(norm.to_network(tiles, an, bn)), an, bn)

            def guarded(tiles):
                seen: list[np.ndarray] = []  # the network's first pass is its estimate f(y)

                def kept(v: np.ndarray) -> np.ndarray:
                    seen.append(net(v))
                    return seen[-1]

                est, w, *deriv = sure_blend(kept, tiles, an, bn, derivative=fuse, valid=valid)
                self.guard_weights.extend(w.tolist())
                network = seen[:1] if keep else []  # with keep_network the network's estimate travels along
                return np.concatenate([est, *deriv, *network], axis=-1)  # with fuse the derivatives too

            flip = self.rggb_phase and cfa is not None  # a flip is its own inverse
            est = run_tiled(
                guarded if self.guard else net, to_rggb(planes, cfa) if flip else planes, t["size"],
                t["overlap"], batch=self.batch, out_channels=4 * (1 + fuse + keep) if self.guard else 4,
            )  # fmt: skip
            return np.ascontiguousarray(to_rggb(est, cfa)) if flip else est

        for n in range(len(x)):
            if cfa is None or self.ensemble == 1:
                est = frame(x[n], a[n], b[n])
            else:
                est = self_ensemble(
                    lambda p, src, n=n: frame(p, a[n][src], b[n][src]), x[n], cfa, self.ensemble
                )
            if keep:
                network[n], est = est[..., -4:], est[..., :-4]
            if fuse:
                classical = classical_estimates(x[n], a[n], b[n])
                if self.fuse == "bm3d":
                    classical.append(
                        classical_estimate(x[n], a[n], b[n], method="vst-bm3d", seed=len(classical) + 1)
                    )
                est, w, *deriv = sure_fuse(
                    x[n], [(est[..., :4], est[..., 4:]), *classical], a[n], b[n], per_channel=True,
                    derivative=derive,
                )  # fmt: skip
                fuse_weights.append(model_and_classical(w))
                if derive:
                    derivative[n] = deriv[0]
            out[n] = est
        self.fuse_weights = np.concatenate(fuse_weights) if fuse_weights else np.zeros((0, 2))
        self.network_estimate = None if network is None else network[0] if single else network
        self.fused_derivative = None if derivative is None else derivative[0] if single else derivative
        return out[0] if single else out

    @property
    def head(self) -> str:
        """``"bayer"`` (a denoiser: :meth:`denoise`) or ``"rgb"`` (the joint model: :meth:`demosaic`)."""
        return (self.config.get("model", {}).get("spec") or {}).get("head", "bayer")

    def _denoiser_part(self):
        """The Bayer denoiser inside a joint model that denoises first, as a runtime of its own; None where the
        runtime cannot run it alone (an exported joint model has only the RGB output)."""
        return None

    def merge_part(self):
        """A burst model that reads only its merge, as a runtime of the single-frame U-Net it then is
        (:func:`rawlab.learn.modelio.merge_part`); None for any other model and for exports (whose weights
        the runtime does not read)."""
        return None

    def demosaic(self, x: np.ndarray, a, b, cfa: str) -> np.ndarray:
        """The joint model: packed normalised planes ``(h, w, 4)`` of a ``cfa`` mosaic with noise ``(a, b)``
        (per channel, normalised) -> clean linear camera RGB ``(2h, 2w, 3)`` float32, normalised.

        The planes are flipped into the RGGB phase the network knows and the RGB flipped back
        (:func:`rawlab.bayer.to_rggb`); tiles as :meth:`denoise` (output twice the input's size); the mean over
        ``ensemble`` rotations of the mosaic (:func:`rawlab.deploy.ensemble.self_ensemble`).

        **The guard, for a joint model that denoises first** (``model.spec.denoise_first``, such as
        ``builtin-joint``) run from its model directory: its RGB is the fixed linear demosaic ``L`` of its Bayer
        head's estimate ``B`` plus its RGB head's correction. The Bayer part is run alone as :meth:`denoise`
        runs a denoiser (SURE-guarded, ensembled, fused with VST+NL-means: ``F``), and its improvement is
        demosaicked by the same ``L``: ``RGB + L(F - B)``, where ``B`` is the Bayer part's own ensembled
        estimate, kept from the guard's first pass; ``L`` is applied to each image of the self-ensemble and
        mapped back, as the network applies it (every demosaic in ``DEMOSAICS`` is unchanged by the rotations,
        :func:`rawlab.learn.lsdemosaic.symmetric_basis`, so this is exact). ``L`` is linear, so this is the
        network's RGB with ``F`` in place of ``B`` under the demosaic; where the RGB head is still zero (as in
        ``builtin-joint``) it is ``L(F)`` exactly, and the joint network need not run. ``guard_weights`` and
        ``fuse_weights`` are the Bayer part's. Other joint models, and exports, have no guard: SURE compares an
        estimate with its noisy input, and the input here is a mosaic.
        """
        from ..bayer import from_rggb, to_rggb

        if self.head != "rgb":
            raise RawlabError(
                f"the model {self.name!r} is a Bayer denoiser, not a joint demosaic model; for --output rgb "
                "pass a model trained with the joint config (`rawlab train STORE --config joint`)"
            )
        a = np.asarray(a, np.float32).reshape(4)
        b = np.asarray(b, np.float32).reshape(4)
        norm, t = self.normalisation, self.tile

        def frame(planes: np.ndarray, src: list[int]) -> np.ndarray:
            an, bn = a[src], b[src]

            def net(tiles):
                return self._run(norm.to_network(tiles, an, bn))

            xc = np.ascontiguousarray(to_rggb(planes, cfa))
            rgb = run_tiled(net, xc, t["size"], t["overlap"], batch=self.batch, out_channels=3, scale=2)
            return np.ascontiguousarray(from_rggb(rgb, cfa))

        x = np.asarray(x, np.float32)
        bayer = self._denoiser_part() if self.guard else None
        if bayer is None:
            return self_ensemble(frame, x, cfa, self.ensemble, rgb=True)
        bayer.guard, bayer.fuse, bayer.ensemble = True, self.fuse, self.ensemble
        bayer.keep_network = bayer.rggb_phase = True
        better = bayer.denoise(x, a, b, cfa)
        self.guard_weights, self.fuse_weights = bayer.guard_weights, bayer.fuse_weights
        name = self.config["model"]["spec"].get("demosaic", "bilinear")

        # L on each image of the ensemble, as the network has it
        def demosaic(planes: np.ndarray) -> np.ndarray:
            return self_ensemble(
                lambda p, _src: _linear_demosaic(p, cfa, name), planes, cfa, self.ensemble, rgb=True
            )

        if self._rgb_head_is_zero:
            return demosaic(better)
        return self_ensemble(frame, x, cfa, self.ensemble, rgb=True) + demosaic(
            better - bayer.network_estimate
        )

    _rgb_head_is_zero = False


class TFLiteDenoiser(_TiledDenoiser):
    """A ``.tflite`` written by ``rawlab export``, run with the LiteRT interpreter (XNNPACK on CPU)."""

    kind = "tflite"

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any], num_threads: int | None = None):
        self.path = os.fspath(path)
        self.meta = meta
        self.config = meta["config"]
        self.export = meta.get("export", {})
        self.num_threads = num_threads or _cores()

    @property
    def quantize(self) -> str:
        return self.export.get("quantize", "none")

    @cached_property
    def interpreter(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            _schema()  # raises the install hint
            raise
        try:
            with _quiet_stderr():  # LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate" line
                it = Interpreter(model_path=self.path, num_threads=self.num_threads)
                it.allocate_tensors()
        except (ValueError, RuntimeError) as e:  # LiteRT's words for a damaged or truncated flatbuffer
            raise RawlabError(
                f"the model {self.path} cannot be loaded by the TFLite runtime ({_first_line(e)}); the file is "
                "truncated or corrupt: copy it again or re-export it with `rawlab export`"
            ) from None
        return it

    def check(self) -> None:
        """Build the interpreter and check its input against the description: a damaged file fails here."""
        self._io  # noqa: B018 - the property raises for a model that cannot run

    @cached_property
    def _io(self):
        it = self.interpreter
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        t = self.tile["size"]
        if tuple(inp["shape"][1:3]) != (t, t):
            raise RawlabError(
                f"{self.path}: the network input is {tuple(inp['shape'])} but its description says tiles of {t}; "
                "re-export the model"
            )
        return inp, out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        inp, out = self._io
        it = self.interpreter
        results = []
        for tile in batch:
            v = tile[None]
            if inp["dtype"] != np.float32:
                scale, zero = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                v = np.clip(np.round(v / scale + zero), info.min, info.max).astype(inp["dtype"])
            it.set_tensor(inp["index"], v)
            it.invoke()
            y = it.get_tensor(out["index"])
            if out["dtype"] != np.float32:
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * np.float32(scale)
            results.append(y[0])
        return np.stack(results)

    def __getstate__(self):  # an interpreter does not pickle: ship the path and description
        return {"path": self.path, "meta": self.meta, "num_threads": self.num_threads}

    def __setstate__(self, state):
        self.__init__(state["path"], state["meta"], state["num_threads"])


def _linear_demosaic(planes: np.ndarray, cfa: str, name: str) -> np.ndarray:
    """The joint model's fixed linear demosaic (:func:`rawlab.learn.models.linear_demosaic`) of packed planes
    ``(h, w, 4)`` of a ``cfa`` mosaic, on the whole frame: RGB ``(2h, 2w, 3)`` in the mosaic's geometry."""
    from ..bayer import from_rggb
    from ..learn.models import depth_to_space, linear_demosaic

    rggb = np.ascontiguousarray(to_rggb(planes, cfa))[None]
    return np.ascontiguousarray(from_rggb(np.asarray(depth_to_space(linear_demosaic(rggb, name)))[0], cfa))


class JaxDenoiser(_TiledDenoiser):
    """A model directory (``rawlab train --workdir``), run with JAX on the same tiles as its TFLite export."""

    kind = "jax"
    batch = 4

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.path = None

    @cached_property
    def _apply(self):
        import jax

        return jax.jit(self.model.module.apply)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._apply(self.model.params, batch))

    @cached_property
    def _denoiser(self) -> JaxDenoiser | None:
        if self.head != "rgb" or not self.model.spec.denoise_first:
            return None
        from ..learn.modelio import denoiser_part

        return JaxDenoiser(denoiser_part(self.model))

    def _denoiser_part(self) -> JaxDenoiser | None:
        return self._denoiser

    @cached_property
    def _merge_part(self) -> JaxDenoiser | None:
        from ..learn.modelio import merge_part

        part = merge_part(self.model)
        return None if part is None else JaxDenoiser(part)

    def merge_part(self) -> JaxDenoiser | None:
        return self._merge_part

    @cached_property
    def _rgb_head_is_zero(self) -> bool:  # an untrained RGB head: the joint model is its denoiser, then L
        if self.head != "rgb":
            return False
        head = self.model.params["params"].get(f"Conv_{len(self.model.spec.widths)}", {})
        return bool(head) and all(not np.any(np.asarray(v)) for v in head.values())


def describe_model(path: str | os.PathLike[str]) -> str:
    """A short label for a model (``"tiny.tflite (tflite int8)"``), checking it without loading the network.

    Raises
    ------
    RawlabError
        As :func:`load_denoiser` would for a missing or malformed model.
    """
    from ..learn.modelio import CONFIG, PARAMS, resolve_model
    from ..learn.modelio import SCHEMA as MODEL_SCHEMA

    p = resolve_model(path)
    if p.is_dir():
        cfg = p / CONFIG
        try:
            schema = json.loads(cfg.read_text()).get("schema")
        except (OSError, ValueError):
            schema = None
        if schema != MODEL_SCHEMA or not (p / PARAMS).exists():
            from ..learn.modelio import load_model

            load_model(p)  # raises the precise reason
        from ..learn.modelio import BUILTINS

        name = os.fspath(path) if os.fspath(path) in BUILTINS else p.name  # "builtin-joint", not its folder
        return f"{name} (jax)"
    if not p.exists():
        load_denoiser(p)  # raises
    if p.suffix.lower() == ".onnx":
        from .onnx import read_onnx_metadata

        q = read_onnx_metadata(p).get("export", {}).get("quantize", "none")
        return f"{p.name} (onnx {'float32' if q == 'none' else q})"
    meta = read_metadata(p)
    return f"{p.name} (tflite {meta.get('export', {}).get('quantize', 'none')})"


def load_denoiser(path: str | os.PathLike[str], *, num_threads: int | None = None):
    """Load a denoiser from a model directory (JAX) or a ``.tflite`` / ``.onnx`` written by ``rawlab export``.

    Parameters
    ----------
    path
        ``"builtin"`` (the model shipped inside rawlab), a ``rawlab train`` workdir, or a ``.tflite`` or
        ``.onnx`` (with its metadata embedded, or a
        ``FILE.json`` sidecar; an ``.onnx`` runs with ONNX Runtime, :mod:`rawlab.deploy.onnx`).
    num_threads
        TFLite interpreter threads (default: the cores available to this process).

    Returns
    -------
    TFLiteDenoiser, OnnxDenoiser or JaxDenoiser
        ``denoise(x, a, b)``, ``noise_params(sensor, iso)``, ``tile``, ``normalisation``, ``config``, ``kind``.

    Raises
    ------
    RawlabError
        If ``path`` is neither, or the runtime it needs is not installed.
    """
    from ..learn.modelio import resolve_model

    p = resolve_model(path)
    if p.is_dir():
        from ..learn.modelio import load_model

        return JaxDenoiser(load_model(p))
    if not p.exists():
        raise RawlabError(
            f"model {os.fspath(path)!r} does not exist; pass a model directory (`rawlab train --workdir`) or "
            "a .tflite or .onnx from `rawlab export`"
        )
    if p.suffix.lower() == ".onnx":  # ONNX Runtime only: neither JAX nor TensorFlow is imported
        from .onnx import OnnxDenoiser

        return OnnxDenoiser(p, num_threads=num_threads)
    return TFLiteDenoiser(p, read_metadata(p), num_threads)


def _first_line(e: BaseException) -> str:
    """``"struct.error: unpack_from requires ..."``: the exception's type and the first line of its message."""
    t = type(e)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__.lstrip('_')}.{t.__qualname__}"
    text = str(e).strip().splitlines()
    return f"{name}: {text[0]}" if text else name


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ logging that Python cannot filter) for the duration; errors still raise."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
