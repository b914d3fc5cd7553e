"""Noise profiles in the formats other tools read: darktable's ``noiseprofiles.json`` and DNG ``NoiseProfile``.

**darktable.** The layout is darktable's ``data/noiseprofiles.json``: ``{"version": 0, "noiseprofiles": [{"maker",
"models": [{"comment", "model", "profiles": [{"name", "iso", "a": [R, G, B], "b": [R, G, B]}]}]}]}``. The
loader (``src/common/noiseprofiles.c``) rejects a file whose version is not 0, and any profile without
``name``, ``iso``, or three ``a`` and three ``b`` values; :func:`darktable_problems` runs the same checks. It
finds a camera's entry by maker substring and exact model string, so ``model_name`` must be the name darktable
shows for the camera. The repository's ``data/noiseprofiles.schema`` (JSON Schema draft 4) adds curation
rules: a ``comment`` on every model, names ``"<model> iso <digits>"`` (up to 38 characters, letters, digits
and ``_- ()*``), integer ISOs, and at least four profiles per model. Its maker enum lists only the makers
already in the file. darktable fits ``Var = a * x + b`` on raw data that has black subtracted and is scaled
to white, with white balance set to 1 (its profiling style), so rawlab's normalised ``a`` and ``b`` go in
unchanged. Green is the mean of G1 and G2. The profiling shots are demosaiced first, which lowers the
variance a little, so darktable's shipped values run slightly below raw-mosaic values.

**DNG.** ``NoiseProfile`` (tag 51041, DNG 1.3+) holds ``(S, O)`` pairs with noise ``N(x) = sqrt(S * x + O)``
for linear ``x`` in [0, 1] (after linearisation, black subtraction and scaling to white, before
demosaicing). That is rawlab's ``(a, b)``. It holds one pair for all planes or one per colour plane, in
``CFAPlaneColor`` order; rawlab's DNGs declare R, G, B. The DNG SDK requires ``S > 0`` and ``O >= 0``, so a
negative fitted ``b`` is written as 0.

**Android.** A camera HAL reports ``android.sensor.noiseProfile`` (the DNG ``(S, O)`` per CFA channel R, Gr,
Gb, B) from a model over sensitivity: ``S = A * sensitivity + B`` and ``O = C * sensitivity**2 + D *
digital_gain**2``, with ``digital_gain = max(1, sensitivity / max_analog_sensitivity)`` (the form the CTS
``dng_noise_model`` tool generates). :func:`to_android` fits ``A, B`` and ``C, D`` per channel by least
squares over the profiled ISOs (rawlab's ``a``, ``b`` are the normalised ``S``, ``O``; G1 is Gr, G2 is Gb)
and checks the model with the CTS ``test_dng_noise_model`` pass criterion: at each sensitivity and channel
the model's variance must be within ``max(0.0012, 0.2 * model)`` of the measured one (here: the per-ISO
fit, at mean levels 0.05 to 0.95).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..bayer import unpack
from ..errors import RawlabError, RawlabWarning
from .model import sample_poisson_gaussian
from .profile import ISOProfile, NoiseProfileSet, SensorProfile, save_profiles

__all__ = [
    "ANDROID_TOLERANCE",
    "FORMATS",
    "android_c_source",
    "darktable_problems",
    "read_darktable",
    "save",
    "to_android",
    "to_darktable",
    "to_dng_noise_profile",
    "write_darktable",
    "write_dng_noise_profiles",
]

FORMATS = ("rawlab", "darktable", "dng", "android")
ANDROID_TOLERANCE = {
    "atol": 0.0012,
    "rtol": 0.2,
}  # CTS test_dng_noise_model: VAR_ATOL_THRESH, VAR_RTOL_THRESH
DARKTABLE_VERSION = 0  # DT_NOISE_PROFILE_VERSION in darktable's noiseprofiles.c
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\- ()*]")  # characters darktable's schema allows in a profile name


def _sensors(profiles: NoiseProfileSet | SensorProfile) -> list[SensorProfile]:
    return [profiles] if isinstance(profiles, SensorProfile) else list(profiles.sensors)


def _maker_model(sensor: SensorProfile) -> tuple[str, str]:
    """Maker and model: the profile's ``make``/``model`` fields, else the sensor name split at its first space."""
    make, model = sensor.extra.get("make"), sensor.extra.get("model")
    if make and model:
        return " ".join(str(make).split()), " ".join(str(model).split())
    head, _, tail = sensor.sensor.partition(" ")
    return head, tail or head


def _rgb(values) -> list[float]:
    """R, G1, G2, B -> R, G, B with G the mean of the two greens."""
    r, g1, g2, b = (float(v) for v in values)
    return [r, 0.5 * (g1 + g2), b]


def to_darktable(
    profiles: NoiseProfileSet | SensorProfile,
    maker: str | None = None,
    model_name: str | None = None,
    *,
    comment: str | None = None,
) -> dict[str, Any]:
    """A darktable ``noiseprofiles.json`` document for the sensors in ``profiles``.

    Parameters
    ----------
    profiles
        A profile set (one darktable model per sensor) or one sensor.
    maker, model_name
        darktable's maker and model for the camera. Give them only for a single sensor. They default to the
        profile's ``make`` and ``model`` fields, or to the sensor name split at its first space.
    comment
        The model's ``comment`` (darktable's schema requires one); defaults to a note naming rawlab.

    Raises
    ------
    RawlabError
        If ``maker``/``model_name`` are given for several sensors, or no ISO has usable R, G, B values.
    """
    sensors = _sensors(profiles)
    if (maker or model_name) and len(sensors) != 1:
        raise RawlabError(
            f"maker/model_name name one camera but the profile set has {len(sensors)} sensors; "
            "export them one at a time or set each sensor's make and model fields"
        )
    makers: dict[str, list[dict]] = {}
    for s in sensors:
        mk, md = _maker_model(s)
        mk, md = maker or mk, model_name or md
        entries = []
        for p in sorted(s.profiles, key=lambda p: p.iso):
            a, b, iso = _rgb(p.a), _rgb(p.b), round(p.iso)
            if not (all(math.isfinite(v) and v > 0 for v in a) and all(map(math.isfinite, b))):
                warnings.warn(
                    f"{s.sensor} ISO {p.iso:g}: a={a}, b={b} is not a usable noise profile (a must be positive "
                    "and finite); left out of the darktable file",
                    RawlabWarning,
                    stacklevel=2,
                )
                continue
            stem = _NAME_CHARS.sub("-", md)[: 38 - len(f" iso {iso}")].rstrip(" -_")
            entries.append({"name": f"{stem} iso {iso}", "iso": iso, "a": a, "b": b})
        if not entries:
            raise RawlabError(f"sensor {s.sensor!r} has no ISO with usable R, G, B noise parameters")
        note = (
            comment
            or f"{md} profiled by rawlab {__version__} ({s.method}; raw Bayer, black-subtracted, 0..1)"
        )
        makers.setdefault(mk, []).append({"comment": note, "model": md, "profiles": entries})
    return {
        "version": DARKTABLE_VERSION,
        "noiseprofiles": [{"maker": mk, "models": models} for mk, models in makers.items()],
    }


def darktable_problems(doc: Any) -> list[str]:
    """What darktable's loader would reject in ``doc`` (the checks of ``dt_noiseprofile_verify``); [] if none."""
    if not isinstance(doc, dict) or doc.get("version") != DARKTABLE_VERSION:
        return [f"'version' must be {DARKTABLE_VERSION}"]
    if not isinstance(doc.get("noiseprofiles"), list):
        return ["'noiseprofiles' must be an array"]
    problems = []
    for i, mk in enumerate(doc["noiseprofiles"]):
        if not isinstance(mk, dict) or "maker" not in mk or not isinstance(mk.get("models"), list):
            problems.append(f"maker #{i + 1} needs 'maker' and a 'models' array")
            continue
        for mo in mk["models"]:
            if not isinstance(mo, dict) or "model" not in mo or not isinstance(mo.get("profiles"), list):
                problems.append(f"{mk['maker']}: a model needs 'model' and a 'profiles' array")
                continue
            for p in mo["profiles"]:
                where = f"{mk['maker']} {mo['model']} {p.get('name', '?') if isinstance(p, dict) else '?'}"
                if not isinstance(p, dict) or not {"name", "iso", "a", "b"} <= p.keys():
                    problems.append(f"{where}: a profile needs name, iso, a and b")
                elif any(not isinstance(p[k], list) or len(p[k]) != 3 for k in ("a", "b")):
                    problems.append(f"{where}: 'a' and 'b' need 3 values (R, G, B)")
    return problems


def write_darktable(
    profiles: NoiseProfileSet | SensorProfile,
    path: str | os.PathLike[str],
    maker: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Write :func:`to_darktable`'s document to ``path``; darktable loads it with ``--noiseprofiles PATH``."""
    doc = to_darktable(profiles, maker, model_name)
    path = Path(path)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_darktable(path: str | os.PathLike[str], *, include_skipped: bool = False) -> NoiseProfileSet:
    """Read a darktable ``noiseprofiles.json`` as a rawlab profile set (G1 = G2 = darktable's G).

    Entries marked ``"skip": true`` are left out, as darktable does, unless ``include_skipped``.

    Raises
    ------
    RawlabError
        If the file is missing, not JSON, or fails darktable's own checks.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RawlabError(f"darktable noise profile {os.fspath(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise RawlabError(f"{os.fspath(path)!r} is not valid JSON: {e}") from None
    problems = darktable_problems(doc)
    if problems:
        raise RawlabError(
            f"{os.fspath(path)!r} is not a darktable noise profile file: {'; '.join(problems[:3])}"
        )
    sensors = []
    for mk in doc["noiseprofiles"]:
        for mo in mk["models"]:
            model = " ".join(mo["model"].split())
            name = model if model.lower().startswith(mk["maker"].lower()) else f"{mk['maker']} {model}"
            isos = [
                ISOProfile(p["iso"], _rggb(p["a"]), _rggb(p["b"]), extra={"name": p["name"]} | _skip(p))
                for p in mo["profiles"]
                if include_skipped or not p.get("skip")
            ]
            extra = {"make": mk["maker"], "model": mo["model"], "comment": mo.get("comment", "")}
            sensors.append(SensorProfile(name, "darktable", isos, {}, extra))
    return NoiseProfileSet(sensors, {"source": f"darktable noiseprofiles version {doc['version']}"})


def _skip(p: dict) -> dict:
    return {"skip": True} if p.get("skip") else {}


def _rggb(rgb) -> list[float]:
    r, g, b = rgb
    return [r, g, g, b]


def to_dng_noise_profile(profile: ISOProfile) -> list[tuple[float, float]]:
    """DNG ``NoiseProfile`` pairs ``(S, O)`` for planes R, G, B (``CFAPlaneColor`` 0, 1, 2), normalised units.

    ``S = a`` and ``O = max(b, 0)`` per plane; G is the mean of G1 and G2.

    Raises
    ------
    RawlabError
        If a plane's ``a`` is not positive and finite (the DNG SDK rejects ``S <= 0``).
    """
    pairs = [(s, max(o, 0.0)) for s, o in zip(_rgb(profile.a), _rgb(profile.b), strict=True)]
    if not all(math.isfinite(s) and s > 0 and math.isfinite(o) for s, o in pairs):
        raise RawlabError(
            f"ISO {profile.iso:g}: NoiseProfile needs finite S > 0 and O for R, G, B, got {pairs}; "
            "refit this ISO or leave it out"
        )
    return pairs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "sensor"


def write_dng_noise_profiles(
    profiles: NoiseProfileSet | SensorProfile,
    out_dir: str | os.PathLike[str],
    *,
    json_name: str = "dng_noise_profiles.json",
    dng_dir: str = "dng",
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> dict[str, Any]:
    """Write every ISO's DNG ``NoiseProfile`` as JSON and CSV, plus one small DNG per ISO that carries it.

    Each DNG holds a flat field at 20% (top half) and 60% (bottom half) of the range, with noise drawn from
    the profile. So the tag can be checked against the pixels: read the tag with tifffile and the pixels with
    rawpy. Black level, white level and CFA come from the sensor's ``black_level``, ``white_level`` and
    ``cfa`` fields when present (else 0, 65535 and RGGB).

    Returns
    -------
    dict
        The manifest written to ``out_dir/json_name``. Its ``dng`` and ``csv`` paths are relative to ``out_dir``.
    """
    from ..dng import write_dng

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    doc: dict[str, Any] = {
        "schema": "rawlab.dng-noise-profile/1",
        "tag": "NoiseProfile (51041)",
        "model": "Var[x] = S * x + O, x = (DN - black) / (white - black)",
        "planes": ["R", "G", "B"],
        "csv": Path(json_name).with_suffix(".csv").name,
        "sensors": [],
    }
    rows = []
    for s in _sensors(profiles):
        make, model = _maker_model(s)
        cfa = s.extra.get("cfa", "RGGB")
        cfa = (
            cfa if isinstance(cfa, str) else cfa[0] if len(cfa) == 1 else "RGGB"
        )  # noise-fit lists the CFAs seen
        white = int(s.extra.get("white_level", 65535))
        black = np.broadcast_to(np.asarray(s.extra.get("black_level", 0), float), (4,))
        entry = {"sensor": s.sensor, "make": make, "model": model, "profiles": []}
        for p in sorted(s.profiles, key=lambda p: p.iso):
            pairs = to_dng_noise_profile(p)
            rel = Path(dng_dir) / _slug(s.sensor) / f"iso_{round(p.iso)}.dng"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            level = np.where(np.arange(h // 2)[:, None] < h // 4, 0.2, 0.6) * np.ones((4, 1, w // 2))
            x = sample_poisson_gaussian(level, p.a, np.clip(p.b, 0, None), rng)
            dn = np.rint(black[:, None, None] + x * (white - black[:, None, None]))
            mosaic = unpack(np.clip(dn, 0, white).astype(np.uint16), cfa)
            write_dng(
                out / rel,
                mosaic,
                cfa=cfa,
                black_level=black,
                white_level=white,
                make=make,
                model=model,
                iso=round(p.iso),
                noise_profile=pairs,
            )
            entry["profiles"].append(
                {"iso": p.iso, "noise_profile": [list(q) for q in pairs], "dng": rel.as_posix()}
            )
            rows += [[s.sensor, p.iso, plane, *q] for plane, q in zip("RGB", pairs, strict=True)]
        doc["sensors"].append(entry)
    (out / json_name).write_text(json.dumps(doc, indent=2) + "\n")
    with open(out / doc["csv"], "w", newline="") as f:
        csv.writer(f).writerows([["sensor", "iso", "plane", "S", "O"], *rows])
    return doc


def to_android(
    profiles: NoiseProfileSet | SensorProfile, *, max_analog_sensitivity: float | None = None
) -> dict[str, Any]:
    """The Android noise model (module docstring) of each sensor, with the CTS check of it.

    ``max_analog_sensitivity`` defaults to the highest profiled ISO (no digital gain in the fit).

    Raises
    ------
    RawlabError
        If a sensor has fewer than two usable ISOs (the model has two parameters per term).
    """
    doc: dict[str, Any] = {
        "schema": "rawlab.android-noise-model/1",
        "model": "S = A * sens + B; O = C * sens^2 + D * digital_gain^2; digital_gain = max(1, sens / max_analog)",
        "planes": ["R", "Gr", "Gb", "B"],
        "tolerance": dict(ANDROID_TOLERANCE),
        "sensors": [],
    }
    levels = np.linspace(0.05, 0.95, 10)
    for s in _sensors(profiles):
        ps = [
            p for p in sorted(s.profiles, key=lambda p: p.iso) if all(math.isfinite(v) for v in (*p.a, *p.b))
        ]
        if len(ps) < 2:
            raise RawlabError(
                f"{s.sensor}: the Android noise model needs at least two profiled ISOs, got {len(ps)}; "
                "profile more ISOs"
            )
        iso = np.array([p.iso for p in ps], float)
        a = np.array([p.a for p in ps])
        b = np.array([p.b for p in ps])
        max_analog = float(max_analog_sensitivity or iso.max())
        dg = np.maximum(1.0, iso / max_analog)
        coef_s = np.linalg.lstsq(np.stack([iso, np.ones_like(iso)], 1), a, rcond=None)[0]  # (2, 4): A, B
        coef_o = np.linalg.lstsq(np.stack([iso**2, dg**2], 1), b, rcond=None)[0]  # (2, 4): C, D
        s_pred = np.clip(iso[:, None] * coef_s[0] + coef_s[1], 0, None)
        o_pred = np.clip(iso[:, None] ** 2 * coef_o[0] + dg[:, None] ** 2 * coef_o[1], 0, None)
        model = s_pred[:, :, None] * levels + o_pred[:, :, None]  # (iso, channel, level)
        measured = a[:, :, None] * levels + b[:, :, None]
        diff = np.abs(measured - model)
        passed = diff <= np.maximum(ANDROID_TOLERANCE["atol"], ANDROID_TOLERANCE["rtol"] * model)
        rel = diff / np.maximum(model, 1e-30)
        make, model_name = _maker_model(s)
        doc["sensors"].append(
            {
                "sensor": s.sensor,
                "make": make,
                "model": model_name,
                "max_analog_sensitivity": max_analog,
                "A": coef_s[0].tolist(),
                "B": coef_s[1].tolist(),
                "C": coef_o[0].tolist(),
                "D": coef_o[1].tolist(),
                "validation": {
                    "cts_pass": bool(passed.all()),
                    "cts_share_passed": float(passed.mean()),
                    "max_relative_difference": float(rel.max()),
                    "per_iso": [
                        {
                            "iso": float(i),
                            "passed": bool(passed[k].all()),
                            "max_relative_difference": float(rel[k].max()),
                        }
                        for k, i in enumerate(iso)
                    ],
                    "levels": levels.tolist(),
                },
            }
        )
    return doc


def android_c_source(sensor: dict[str, Any]) -> str:
    """C functions ``compute_noise_model_entry_S/O(plane, sens)`` for one sensor of :func:`to_android`."""

    def arr(v):
        return ", ".join(f"{x:.10e}" for x in v)

    return f"""/* Android noise model of {sensor["sensor"]}, fitted by rawlab {__version__}.
 * Planes R, Gr, Gb, B; S and O in the DNG NoiseProfile convention (normalised signal). */
double compute_noise_model_entry_S(int plane, int sens) {{
    static const double A[] = {{ {arr(sensor["A"])} }};
    static const double B[] = {{ {arr(sensor["B"])} }};
    double s = A[plane] * sens + B[plane];
    return s < 0.0 ? 0.0 : s;
}}

double compute_noise_model_entry_O(int plane, int sens) {{
    static const double C[] = {{ {arr(sensor["C"])} }};
    static const double D[] = {{ {arr(sensor["D"])} }};
    double digital_gain = sens / {sensor["max_analog_sensitivity"]:.1f} < 1.0 ? 1.0 : sens / {sensor["max_analog_sensitivity"]:.1f};
    double o = C[plane] * sens * sens + D[plane] * digital_gain * digital_gain;
    return o < 0.0 ? 0.0 : o;
}}
"""


def save(
    profiles: NoiseProfileSet | SensorProfile, path: str | os.PathLike[str], format: str = "rawlab"
) -> list[Path]:
    """Write ``profiles`` in ``format`` (``rawlab``, ``darktable``, ``dng`` or ``android``); return the files written.

    For ``dng``, ``path`` is the JSON manifest; the CSV goes beside it and the DNGs into ``<stem>_dng/``. For
    ``android``, ``path`` is the JSON (coefficients, CTS check and the profiles' own validation when they carry
    one) and ``<stem>_<sensor>.c`` beside it holds the C functions.

    Raises
    ------
    RawlabError
        For an unknown format.
    """
    path = Path(path)
    if format == "rawlab":
        save_profiles(
            profiles if isinstance(profiles, NoiseProfileSet) else NoiseProfileSet([profiles]), path
        )
        return [path]
    if format == "darktable":
        return [write_darktable(profiles, path)]
    if format == "dng":
        doc = write_dng_noise_profiles(profiles, path.parent, json_name=path.name, dng_dir=f"{path.stem}_dng")
        dngs = [path.parent / p["dng"] for s in doc["sensors"] for p in s["profiles"]]
        return [path, path.parent / doc["csv"], *dngs]
    if format == "android":
        doc = to_android(profiles)
        if isinstance(profiles, NoiseProfileSet) and profiles.extra.get("validation"):
            for entry in doc["sensors"]:
                entry["rawlab_validation"] = profiles.extra["validation"].get(entry["sensor"])
        files = [path]
        for entry in doc["sensors"]:
            c_path = path.with_name(f"{path.stem}_{_slug(entry['sensor'])}.c")
            c_path.write_text(android_c_source(entry))
            entry["c_source"] = c_path.name
            files.append(c_path)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return files
    raise RawlabError(f"unknown noise-profile format {format!r}; choose one of {', '.join(FORMATS)}")
