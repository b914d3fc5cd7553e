"""Decide which frame is the clean reference of which noisy frame: the default rule and dataset recipes.

Input: catalog rows (``path``, ``relpath`` posix under its source root, ``sensor``, ``iso``, ``exposure_time``
in s, ``status``). Output: a copy with ``scene``, ``role`` (``clean``/``noisy``/``single``), ``clean_path``
(noisy rows), ``pair_note`` (why a frame is single, or which frame is the reference) and ``pair_group``
(``scene|sensor[|key=value]``). ``failed`` rows are left as they are (no role); every other row (``ok``, and
``excluded`` rows a re-run carries over) gets exactly one role. A reference and its noisy frames share scene
and sensor. Results do not depend on row order: every choice ends with the path name as the last tie-break.

Default rule (docs/architecture.md, "Pairing rule"), per directory and sensor:

- the frame with the lowest ISO is the clean reference (ties: the longest exposure, then the first path in
  name order); every other frame is noisy and paired with it;
- a frame without an ISO, in a group where other frames have one, cannot be ranked and is ``single``;
- if no frame of the group has an ISO, frames are ranked by exposure alone (longest is clean), assuming one
  ISO for all of them; a frame with neither is ``single``;
- a group left with one rankable frame (e.g. a directory with one frame) holds a ``single`` frame.

Recipes (``catalogs/<name>.yaml``; schema in ``catalogs/README.md``) describe other layouts with regexes over
``relpath``, ordered role rules, ``pair_by`` groups and metadata parsed from names.

Every row also gets ``truth_path``: the scene's linear camera-RGB truth that ``rawlab synth`` wrote, found
through a ``truth.json`` in the frame's folder or up to two folders above it (its ``scenes[].frames`` folder
is the frame's folder), or None (a real capture, a remote file, a truth file that is gone).
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import RawlabError

__all__ = [
    "CATALOGS_DIR", "FillRule", "Recipe", "RoleRule", "apply_recipe", "available_recipes", "load_recipe",
    "pair_default", "pair_frames",
]  # fmt: skip

CATALOGS_DIR = Path(__file__).resolve().parents[2] / "catalogs"
ROLES = ("clean", "noisy", "single")
REFERENCE_KEYS = ("lowest_iso", "longest_exposure")
FILL_COLUMNS = {"iso": "iso_source", "exposure_time": "exposure_source"}
_KEYS = ("name", "description", "rule", "patterns", "scene", "roles", "pair_by", "reference", "metadata")
_BURST_KEYS = ("name", "description", "rule", "bursts")  # rule: bursts (rawlab.catalog.bursts)
_OUT_COLUMNS = ("scene", "role", "clean_path", "pair_note", "pair_group")


@dataclass(frozen=True)
class RoleRule:
    """``role`` for files whose relpath matches ``pattern`` (``re.search``)."""

    pattern: re.Pattern
    role: str


@dataclass(frozen=True)
class FillRule:
    """Fill catalog ``column`` (``iso`` or ``exposure_time`` in s) from named group ``group`` when missing."""

    column: str
    group: str
    reciprocal: bool = False  # value is 1 / number (SIDD's shutter "00060" is 1/60 s)
    scale: float = 1.0


@dataclass(frozen=True)
class Recipe:
    """A validated pairing recipe; build one with :func:`load_recipe`."""

    name: str
    description: str
    rule: str = "patterns"  # or "default" (the built-in rule, no other keys), or "bursts" (catalog.bursts)
    patterns: tuple[re.Pattern, ...] = ()
    scene: str = "{scene}"
    roles: tuple[RoleRule, ...] = ()
    pair_by: tuple[str, ...] = ()
    reference: tuple[str, ...] = REFERENCE_KEYS
    metadata: tuple[FillRule, ...] = ()
    source: str | None = None
    bursts: Any = None  # rule "bursts": its rawlab.catalog.bursts.BurstRule


# ---------------------------------------------------------------------------------------------- loading


def available_recipes() -> list[str]:
    """Names of the recipes shipped in ``catalogs/``: the pairing recipes in name order, then the burst
    recipes (``rule: bursts``) in name order."""
    pairs, bursts = [], []
    for p in sorted(CATALOGS_DIR.glob("*.yaml")):
        try:
            rule = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("rule")
        except (OSError, yaml.YAMLError, AttributeError):
            rule = None
        (bursts if rule == "bursts" else pairs).append(p.stem)
    return pairs + bursts


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Load and validate a recipe: a name in ``catalogs/`` (``"sid"``) or the path to a YAML file.

    Raises
    ------
    RawlabError
        Unknown name, missing or unreadable file, invalid YAML, or a recipe that breaks the schema; the
        message names the file, the key and the bad value, and says what is expected.
    """
    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise RawlabError(
                f"Recipe file {text!r} does not exist; give the path to a YAML recipe, or one of the "
                f"recipe names {', '.join(available_recipes())}."
            )
    else:
        path = CATALOGS_DIR / f"{text}.yaml"
        if not path.is_file():
            raise RawlabError(
                f"Unknown recipe {text!r}; available recipes: {', '.join(available_recipes()) or '(none)'} "
                f"(in {CATALOGS_DIR}). Use one of these names or the path to a YAML recipe file."
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RawlabError(
            f"Recipe {path}: cannot be read ({e}); check the path and its permissions."
        ) from None
    except yaml.YAMLError as e:
        raise RawlabError(f"Recipe {path}: not valid YAML: {e}. Fix the YAML syntax.") from None
    return _parse(data, str(path))


def _parse(data: Any, where: str) -> Recipe:
    def fail(msg: str) -> RawlabError:
        return RawlabError(f"Recipe {where}: {msg} (schema: catalogs/README.md)")

    if not isinstance(data, dict):
        raise fail(f"expected a mapping with keys {', '.join(_KEYS)}; got {type(data).__name__}")
    keys = _BURST_KEYS if data.get("rule") == "bursts" else _KEYS
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown and data.get("rule") == "bursts":
        raise fail(f"key(s) {', '.join(map(repr, unknown))} have no effect with rule: bursts; remove them")
    if unknown:
        raise fail(
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(sorted(_KEYS))}"
        )
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise fail(f"missing required field {key!r} (a non-empty string)")
    rule = data.get("rule", "patterns")
    if rule == "bursts":  # burst recognition (rawlab.catalog.bursts), configured by its own section
        from .bursts import parse_burst_rule

        return Recipe(
            name=data["name"], description=data["description"], rule="bursts",
            bursts=parse_burst_rule(data.get("bursts"), fail), source=where,
        )  # fmt: skip
    if rule == "default":
        extra = sorted(k for k in data if k not in ("name", "description", "rule"))
        if extra:
            raise fail(f"key(s) {', '.join(extra)} have no effect with rule: default; remove them")
        return Recipe(name=data["name"], description=data["description"], rule="default", source=where)
    if rule != "patterns":
        raise fail(f"rule is {rule!r}; expected 'patterns' (the default), 'default' or 'bursts'")
    for key in ("patterns", "roles"):
        if key not in data:
            raise fail(f"missing required field {key!r}")

    def regex(value: Any, label: str) -> re.Pattern:
        if not isinstance(value, str):
            raise fail(f"{label} is {value!r}; expected a regular expression string")
        try:
            return re.compile(value)
        except re.error as e:
            raise fail(
                f"{label} '{value}' is not a valid regular expression: {e}. Fix it (Python re syntax; "
                "single-quote it in YAML so backslashes survive)"
            ) from None

    raw = data["patterns"]
    if not isinstance(raw, list) or not raw:
        raise fail(f"patterns is {raw!r}; expected a non-empty list of regular expressions")
    patterns = tuple(regex(p, f"patterns[{i}]") for i, p in enumerate(raw))

    def groups_everywhere(name: str, what: str) -> None:
        for i, p in enumerate(patterns):
            if name not in p.groupindex:
                have = ", ".join(p.groupindex) or "none"
                raise fail(
                    f"{what} uses group {name!r}, which patterns[{i}] '{p.pattern}' does not define (its named "
                    f"groups: {have}); add (?P<{name}>...) to the pattern or stop using it"
                )

    scene = data.get("scene", "{scene}")
    if not isinstance(scene, str):
        raise fail(f"scene is {scene!r}; expected a template string such as '{{scene}}'")
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(scene) if f is not None]
    except ValueError as e:
        raise fail(f"scene template {scene!r} is malformed: {e}") from None
    if not fields:
        raise fail(f"scene template {scene!r} uses no group; name at least one, e.g. '{{scene}}'")
    for f, conv, spec in fields:
        if not f.isidentifier() or conv or spec:
            raise fail(f"scene template {scene!r}: write plain fields like {{name}}; got {{{f}}}")
        groups_everywhere(f, f"scene template {scene!r}")

    roles_raw = data["roles"]
    if not isinstance(roles_raw, list) or not roles_raw:
        raise fail(f"roles is {roles_raw!r}; expected a non-empty list of {{pattern: REGEX, role: ROLE}}")
    roles = []
    for i, r in enumerate(roles_raw):
        if not isinstance(r, dict) or set(r) != {"pattern", "role"}:
            raise fail(f"roles[{i}] is {r!r}; expected a mapping with exactly the keys pattern and role")
        if r["role"] not in ROLES:
            raise fail(f"roles[{i}].role is {r['role']!r}; expected one of {', '.join(ROLES)}")
        roles.append(RoleRule(regex(r["pattern"], f"roles[{i}].pattern"), r["role"]))

    pair_by = data.get("pair_by", [])
    if not isinstance(pair_by, list) or not all(isinstance(g, str) for g in pair_by):
        raise fail(f"pair_by is {pair_by!r}; expected a list of group names")
    for g in pair_by:
        groups_everywhere(g, "pair_by")

    reference = data.get("reference", list(REFERENCE_KEYS))
    if (
        not isinstance(reference, list)
        or any(k not in REFERENCE_KEYS for k in reference)
        or len(set(reference)) != len(reference)
    ):
        raise fail(
            f"reference is {reference!r}; expected a list of distinct keys from {', '.join(REFERENCE_KEYS)}"
        )

    meta = data.get("metadata", {}) or {}
    if not isinstance(meta, dict):
        raise fail(f"metadata is {meta!r}; expected a mapping such as {{exposure_time: {{group: exposure}}}}")
    fills = []
    for column, spec in meta.items():
        if column not in FILL_COLUMNS:
            raise fail(f"metadata key {column!r} is not fillable; allowed: {', '.join(FILL_COLUMNS)}")
        spec = {"group": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or "group" not in spec or set(spec) - {"group", "reciprocal", "scale"}:
            raise fail(
                f"metadata.{column} is {spec!r}; expected a group name or {{group, reciprocal, scale}}"
            )
        if not any(spec["group"] in p.groupindex for p in patterns):
            raise fail(f"metadata.{column} reads group {spec['group']!r}, which no pattern defines")
        scale = spec.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise fail(f"metadata.{column}.scale is {scale!r}; expected a positive number")
        if not isinstance(spec.get("reciprocal", False), bool):
            raise fail(f"metadata.{column}.reciprocal is {spec['reciprocal']!r}; expected true or false")
        fills.append(FillRule(column, spec["group"], spec.get("reciprocal", False), float(scale)))
    return Recipe(
        name=data["name"], description=data["description"], patterns=patterns, scene=scene, roles=tuple(roles),
        pair_by=tuple(pair_by), reference=tuple(reference), metadata=tuple(fills), source=where,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- pairing


@dataclass
class _Frame:
    pos: int  # row position in the working frame
    path: str
    rel: str
    sensor: str
    iso: float
    exposure: float
    dirkey: str  # the real directory (parent of path): the default rule's scene
    dirlabel: str  # its readable name (parent of relpath)


@dataclass
class _Result:
    scene: str
    role: str
    clean_path: str | None = None
    note: str | None = None
    group: str | None = None


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _prepare(df: pd.DataFrame) -> tuple[pd.DataFrame, list[_Frame]]:
    out = df.reset_index(drop=True)  # positional work; the caller's index is restored at the end
    for col in _OUT_COLUMNS:
        out[col] = out[col].astype(object) if col in out.columns else None
    names = ("path", "relpath", "sensor", "iso", "exposure_time", "status")
    columns = [out[c].tolist() if c in out.columns else [None] * len(out) for c in names]
    frames = []
    for pos, (path, rel, sensor, iso, exposure, status) in enumerate(zip(*columns, strict=True)):
        if status == "failed":
            continue
        posix = str(path).replace("\\", "/")
        rel = rel.replace("\\", "/") if isinstance(rel, str) and rel else posix.rpartition("/")[2]
        dirkey = posix.rpartition("/")[0]
        label = rel.rpartition("/")[0] or dirkey.rpartition("/")[2] or "/"
        sensor = sensor if isinstance(sensor, str) else ""
        frames.append(_Frame(pos, str(path), rel, sensor, _num(iso), _num(exposure), dirkey, label))
    frames.sort(key=lambda f: (f.path, f.pos))
    return out, frames


def _dir_scenes(frames: list[_Frame]) -> dict[str, str]:
    """Directory -> scene name: its path under the source root, or the full directory where that is ambiguous."""
    label = {f.dirkey: f.dirlabel for f in frames}
    users = defaultdict(set)
    for key, name in label.items():
        users[name].add(key)
    return {key: (name if len(users[name]) == 1 else key) for key, name in label.items()}


def _finish(df: pd.DataFrame, out: pd.DataFrame, results: dict[int, _Result]) -> pd.DataFrame:
    if results:
        pos = list(results)
        for col, attr in zip(_OUT_COLUMNS, ("scene", "role", "clean_path", "note", "group"), strict=True):
            out.iloc[pos, out.columns.get_loc(col)] = [getattr(results[p], attr) for p in pos]
    paths = out["path"].tolist() if "path" in out.columns else [None] * len(out)
    out["truth_path"] = pd.Series(truth_paths(paths), index=out.index, dtype=object)
    out.index = df.index
    return out


_TRUTH_FILE = "truth.json"  # rawlab synth's (schema rawlab.noise/1, per sensor "scenes")
_TRUTH_LEVELS = 3  # the frame's folder and two above it: synth's OUT/<sensor>/<scene>/ layout


def _truth_table(path: str) -> dict[str, str]:
    """``{frame folder: colour truth file}`` (absolute) from a synth ``truth.json``; empty if it has none."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    root = os.path.dirname(path)
    table = {}
    for sensor in data.get("sensors", []) if isinstance(data, dict) else []:
        for scene in sensor.get("scenes", []) if isinstance(sensor, dict) else []:
            frames, rgb = (scene.get(k) if isinstance(scene, dict) else None for k in ("frames", "rgb_truth"))
            if isinstance(frames, str) and isinstance(rgb, str):
                rgb = os.path.normpath(os.path.join(root, rgb))
                if os.path.isfile(rgb):
                    table[os.path.normpath(os.path.join(root, frames))] = rgb
    return table


def truth_paths(paths: list) -> list[str | None]:
    """The colour truth of each frame path (local files only; module docstring), None where there is none."""
    tables: dict[str, dict[str, str]] = {}
    by_dir: dict[str, str | None] = {}
    out = []
    for path in paths:
        if not isinstance(path, str) or "://" in path:
            out.append(None)
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in by_dir:
            by_dir[folder], up = None, folder
            for _ in range(_TRUTH_LEVELS):
                candidate = os.path.join(up, _TRUTH_FILE)
                if candidate not in tables:
                    tables[candidate] = _truth_table(candidate) if os.path.isfile(candidate) else {}
                if folder in tables[candidate]:
                    by_dir[folder] = tables[candidate][folder]
                    break
                up = os.path.dirname(up)
        out.append(by_dir[folder])
    return out


def _sensor_txt(sensor: str) -> str:
    return repr(sensor) if sensor else "(unknown sensor)"


def pair_default(df: pd.DataFrame) -> pd.DataFrame:
    """Pair frames by the default rule (module docstring, docs/architecture.md "Pairing rule"): per directory and sensor, lowest ISO is clean.

    Parameters
    ----------
    df
        Catalog rows with ``path``, ``relpath``, ``sensor``, ``iso``, ``exposure_time`` (s), ``status``.

    Returns
    -------
    A copy of ``df`` (same index and row order) with ``scene``, ``role``, ``clean_path``, ``pair_note`` and
    ``pair_group`` set on every row that is not ``failed``.
    """
    out, frames = _prepare(df)
    scenes = _dir_scenes(frames)
    groups: dict[tuple[str, str], list[_Frame]] = defaultdict(list)
    for f in frames:
        groups[(f.dirkey, f.sensor)].append(f)
    results: dict[int, _Result] = {}
    for (dirkey, sensor), members in groups.items():
        _rank_directory(members, scenes[dirkey], sensor, results)
    return _finish(df, out, results)


def _rank_directory(members: list[_Frame], scene: str, sensor: str, results: dict[int, _Result]) -> None:
    """The default rule for the frames of one sensor in one directory."""
    where = f"sensor {_sensor_txt(sensor)} in scene {scene!r}"

    def put(f: _Frame, role: str, note: str | None, clean: str | None = None) -> None:
        results[f.pos] = _Result(scene, role, clean, note, f"{scene}|{sensor}")

    known = [f for f in members if not math.isnan(f.iso)]
    if known:  # rank by ISO; a frame without one cannot be placed
        unranked, why = [f for f in members if math.isnan(f.iso)], "ISO unknown"
        ranked = sorted(known, key=lambda f: (f.iso, math.isnan(f.exposure), -_nz(f.exposure), f.path))
    else:  # no ISO at all: assume one ISO and rank by exposure alone
        unranked, why = [f for f in members if math.isnan(f.exposure)], "neither ISO nor exposure time known"
        ranked = sorted(
            (f for f in members if not math.isnan(f.exposure)), key=lambda f: (-f.exposure, f.path)
        )
    for f in unranked:
        put(f, "single", f"{why}, so it cannot be ranked against the other frames of {where}")
    if len(ranked) == 1:
        put(ranked[0], "single", f"{'only' if len(members) == 1 else 'no other rankable'} frame of {where}")
    elif ranked:
        basis = "lowest ISO" if known else "no ISO known: longest exposure"
        put(ranked[0], "clean", f"reference of {where} ({basis})")
        for f in ranked[1:]:
            put(f, "noisy", None, ranked[0].path)


def _nz(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _reference_key(reference: tuple[str, ...]):
    def key(f: _Frame):
        parts: list[Any] = []
        for k in reference:
            v = f.iso if k == "lowest_iso" else -f.exposure
            parts += [math.isnan(v), _nz(v)]
        return (*parts, f.path)

    return key


def _render_scene(template: str, groups: dict[str, str | None]) -> str:
    text = template.format_map({k: (v or "") for k, v in groups.items()})
    return "/".join(p for p in text.split("/") if p)


def apply_recipe(recipe: Recipe, df: pd.DataFrame) -> pd.DataFrame:
    """Pair frames as ``recipe`` describes (``catalogs/README.md``); ``rule: default`` runs :func:`pair_default`.

    Metadata missing from a file (NaN ``iso``/``exposure_time``) is filled from the groups the recipe names,
    and ``iso_source``/``exposure_source`` are set to ``"recipe"`` for those rows; values the files carry are
    kept. Returns a copy of ``df`` with the same index and row order.
    """
    if recipe.rule == "default":
        return pair_default(df)
    if recipe.rule == "bursts":
        from .bursts import recognise_bursts

        return recognise_bursts(df, recipe)
    out, frames = _prepare(df)
    for fill in recipe.metadata:
        if fill.column not in out.columns:
            out[fill.column] = math.nan
        out[fill.column] = pd.to_numeric(out[fill.column], errors="coerce").astype(float)
        src = FILL_COLUMNS[fill.column]
        out[src] = out[src].astype(object) if src in out.columns else None
    scenes = _dir_scenes(frames)
    filled: dict[str, dict[int, float]] = defaultdict(dict)  # column -> {row position: value}
    results: dict[int, _Result] = {}
    buckets: dict[tuple[str, str, tuple], dict[str, list[_Frame]]] = defaultdict(lambda: defaultdict(list))
    for f in frames:
        m = next((m for p in recipe.patterns if (m := p.search(f.rel))), None)
        if m is None:
            n = len(recipe.patterns)
            note = f"relpath {f.rel!r} matches none of the {n} pattern(s) of recipe {recipe.name!r}"
            results[f.pos] = _Result(scenes[f.dirkey], "single", None, note)
            continue
        groups = m.groupdict()
        for fill in recipe.metadata:
            value = _num(groups.get(fill.group))
            current = f.iso if fill.column == "iso" else f.exposure
            if math.isnan(current) and not math.isnan(value) and value > 0:
                value = (1.0 / value if fill.reciprocal else value) * fill.scale
                filled[fill.column][f.pos] = value
                if fill.column == "iso":
                    f.iso = value
                else:
                    f.exposure = value
        scene = _render_scene(recipe.scene, groups) or scenes[f.dirkey]
        key = tuple((g, groups.get(g) or "") for g in recipe.pair_by)
        gname = "|".join([scene, f.sensor, *(f"{g}={v}" for g, v in key)])
        rule = next((i for i, r in enumerate(recipe.roles) if r.pattern.search(f.rel)), None)
        if rule is None:
            note = f"relpath {f.rel!r} matches no role rule of recipe {recipe.name!r}"
            results[f.pos] = _Result(scene, "single", None, note, gname)
        elif recipe.roles[rule].role == "single":
            results[f.pos] = _Result(
                scene, "single", None, f"recipe {recipe.name!r} roles[{rule}] marks it single", gname
            )
        else:
            buckets[(scene, f.sensor, key)][recipe.roles[rule].role].append(f)
    for column, values in filled.items():
        out.iloc[list(values), out.columns.get_loc(column)] = list(values.values())
        out.iloc[list(values), out.columns.get_loc(FILL_COLUMNS[column])] = "recipe"
    order = _reference_key(recipe.reference)
    for (scene, sensor, key), members in buckets.items():
        gname = "|".join([scene, sensor, *(f"{g}={v}" for g, v in key)])
        where = f"scene {scene!r} (sensor {_sensor_txt(sensor)}{''.join(f', {g}={v}' for g, v in key)})"
        cleans = sorted(members["clean"], key=order)
        for i, f in enumerate(cleans):
            note = (
                f"reference of {where}" if i == 0 else f"clean; the reference of {where} is {cleans[0].path}"
            )
            results[f.pos] = _Result(scene, "clean", None, note, gname)
        for f in members["noisy"]:
            if cleans:
                results[f.pos] = _Result(scene, "noisy", cleans[0].path, None, gname)
            else:
                results[f.pos] = _Result(scene, "single", None, f"no clean reference in {where}", gname)
    return _finish(df, out, results)


def pair_frames(df: pd.DataFrame, recipe: Recipe | str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Assign scene, role and clean reference to every frame: the default rule, or a recipe (name, path, object)."""
    if recipe is None:
        return pair_default(df)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return apply_recipe(recipe, df)
