"""The bursts ``rawlab eval`` scores and their truth (:mod:`rawlab.evaluation.bursts`): a ``rawlab synth --burst``
folder, or a store built from one.

A synth folder's ``truth.json`` (``bursts[]``) gives each burst's frames, the reference's noise-free mosaic
(``clean_reference``), the moving object's mask per frame (``object_mask``) and, in its profiles, the sensor's
true noise law at each ISO. A store (``catalog build --recipe bursts``) keeps no link to that truth (its
catalog's ``truth_path`` is the pair dataset's colour truth, found through ``scenes[]``), but it keeps each
frame's source path, and the truth is the ``truth.json`` above those files that lists their folder; the frames
are then the store's, those its QA kept, the store's reference first (it must be the truth's reference).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RawlabError

__all__ = ["BurstCase", "find_bursts", "is_burst_source", "load_case"]

_TRUTH = "truth.json"


@dataclasses.dataclass(frozen=True)
class BurstCase:
    """One burst with its truth: the frames (``paths``, the reference first), the clean reference (``.npy``,
    float32 ``(H, W)`` normalised mosaic), the object's mask (``.npy``, uint8 ``(N, H, W)``) or None, and the true
    noise law ``(a, b)`` at its ISO. Read from ``store`` (burst ``burst_id``, its frames ``frames``, the
    reference first) when that is set, else from the files."""

    sensor: str
    scene: str
    iso: int
    folder: str
    paths: tuple[str, ...]
    clean: str
    mask: str | None
    a: tuple[float, ...]
    b: tuple[float, ...]
    store: str | None = None
    burst_id: str | None = None
    frames: tuple[int, ...] = ()
    storage_options: dict | None = dataclasses.field(default=None, compare=False, hash=False)

    @property
    def n_frames(self) -> int:
        return len(self.paths)


def _truth_file(source: str | os.PathLike[str]) -> Path:
    p = Path(source)
    return p if p.name == _TRUTH and p.is_file() else p / _TRUTH


def _is_store(source: str | os.PathLike[str], storage_options: dict | None = None) -> bool:
    from ..catalog.store import FrameStore

    return FrameStore(source, storage_options).exists()


def is_burst_source(source: str | os.PathLike[str], storage_options: dict | None = None) -> bool:
    """Whether ``source`` holds bursts to score: a ``rawlab synth --burst`` folder (or its ``truth.json``)
    listing bursts, or a store with bursts and no noisy/clean pairs."""
    path = _truth_file(source)
    if path.is_file():
        try:
            return bool(json.loads(path.read_text()).get("bursts"))
        except (OSError, ValueError, AttributeError):
            return False
    try:
        if not _is_store(source, storage_options):
            return False
        from ..catalog import open_catalog

        cat = open_catalog(source, storage_options)
    except (RawlabError, OSError, ValueError):
        return False
    return "burst_id" in cat.columns and cat["burst_id"].notna().any() and not (cat["role"] == "noisy").any()


def _read_truth(path: Path):
    """``(bursts[] entries, noise profiles)`` of a synth ``truth.json``; RawlabError if it lists no bursts."""
    from ..noise.profile import load_profiles

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RawlabError(
            f"cannot read {path}: {e}; write it again with `rawlab synth OUT --burst N`"
        ) from None
    bursts = doc.get("bursts") if isinstance(doc, dict) else None
    if not bursts:
        raise RawlabError(
            f"{path} lists no bursts (a pair or calibration dataset?); burst evaluation needs a folder written "
            "by `rawlab synth OUT --burst N`"
        )
    return bursts, load_profiles(path)


def _case(root: Path, entry: dict, profiles, paths: list[Path] | None = None, **store) -> BurstCase:
    """A burst of ``truth.json`` in ``root``: its frame files (the reference first) unless ``paths`` (frames
    read from a store) are given; its truth files must exist."""
    clean = root / entry["clean_reference"]
    mask = root / entry["object_mask"] if entry.get("object_mask") else None
    if paths is None:
        folder = root / entry["folder"]
        ref = int(entry.get("reference", 0))
        files = [folder / f for f in entry["frames"]]
        paths = [files[ref], *(p for k, p in enumerate(files) if k != ref)]
        needed = [*paths, clean, *([mask] if mask else [])]
    else:
        needed = [clean, *([mask] if mask else [])]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise RawlabError(
            f"{missing[0]} is missing ({len(missing)} file(s) of burst {entry['folder']}); write the folder "
            "again with `rawlab synth`"
        )
    law = profiles.noise_at(entry["sensor"], entry["iso"], outside="none")
    if law is None:
        raise RawlabError(f"{root / _TRUTH} has no noise law for {entry['sensor']} at ISO {entry['iso']}")
    return BurstCase(
        entry["sensor"], entry["scene"], int(entry["iso"]), entry["folder"], tuple(map(os.fspath, paths)),
        os.fspath(clean), os.fspath(mask) if mask else None, tuple(map(float, law.a)), tuple(map(float, law.b)),
        **store,
    )  # fmt: skip


def find_bursts(
    source: str | os.PathLike[str], storage_options: dict | None = None
) -> tuple[list[BurstCase], list[str]]:
    """The bursts of ``source`` with their truth, in sensor, ISO, scene order, and notes on what was left out.

    ``source`` is a ``rawlab synth --burst`` folder (or its ``truth.json``), or a store built from one by
    ``catalog build --recipe bursts`` (:func:`_store_cases`).

    Raises
    ------
    RawlabError
        ``source`` has no ``truth.json`` listing bursts and is no store with bursts whose source files have
        one, or a burst's frames or truth files are missing.
    """
    path = _truth_file(source)
    if not path.is_file() and _is_store(source, storage_options):
        cases, notes = _store_cases(os.fspath(source), storage_options)
    elif not path.is_file():
        raise RawlabError(
            f"{os.fspath(source)} has no {_TRUTH}: burst evaluation needs the truth of a `rawlab synth OUT "
            "--burst N` folder (the clean reference and the moving object); pass that OUT, or a store built "
            "from it"
        )
    else:
        bursts, profiles = _read_truth(path)
        cases, notes = [_case(path.parent, entry, profiles) for entry in bursts], []
    cases.sort(key=lambda c: (c.sensor, c.iso, c.scene, c.folder))
    return cases, notes


_TRUTH_LEVELS = 4  # a synth burst frame's folder and three above it: OUT/<sensor>/<scene>/burst_iso<ISO>/


def _store_cases(store: str, storage_options: dict | None) -> tuple[list[BurstCase], list[str]]:
    """The bursts of a store whose truth is found through the catalog's source paths.

    A store keeps each burst's source paths (the catalog's ``path``), not its truth: the truth is the
    ``truth.json`` of ``rawlab synth --burst`` in the frames' folder or up to three above it whose
    ``bursts[].folder`` is that folder. The frames scored are the store's: those QA kept (``status`` ok), the
    store's reference first, which must be the truth's reference frame (its clean reference is that frame's).
    Bursts with no truth there (moved or remote sources, real captures) are left out with a note.
    """
    from ..catalog import open_catalog

    cat = open_catalog(store, storage_options)
    if "burst_id" not in cat.columns or not cat["burst_id"].notna().any():
        raise RawlabError(
            f"store {store} has no bursts; build it from a `rawlab synth OUT --burst N` folder with "
            "`rawlab catalog build OUT --out STORE --recipe bursts`, or pass that folder"
        )
    truths: dict[str, tuple[Path, dict[str, dict], Any] | None] = {}

    def truth_of(folder: str):
        up = folder
        for _ in range(_TRUTH_LEVELS):
            candidate = os.path.join(up, _TRUTH)
            if candidate not in truths:
                truths[candidate] = None
                if os.path.isfile(candidate):
                    try:
                        bursts, profiles = _read_truth(Path(candidate))
                    except RawlabError:
                        bursts, profiles = [], None
                    table = {os.path.normpath(os.path.join(up, e["folder"])): e for e in bursts}
                    truths[candidate] = (Path(up), table, profiles)
            got = truths[candidate]
            if got is not None and folder in got[1]:
                return got[0], got[1][folder], got[2]
            up = os.path.dirname(up)
        return None

    cases, lost, other_ref = [], [], []
    for bid, rows in cat[cat["burst_id"].notna()].groupby("burst_id", sort=True):
        rows = rows.sort_values("burst_index")
        paths = [p if isinstance(p, str) else "" for p in rows["path"]]
        local = "://" not in paths[0] and paths[0]
        found = truth_of(os.path.dirname(os.path.abspath(paths[0]))) if local else None
        if found is None:
            lost.append(bid)
            continue
        root, entry, profiles = found
        roles = rows["role"].tolist()
        ok = (rows["status"] == "ok").to_numpy()
        if "reference" not in roles:
            lost.append(bid)
            continue
        ref = roles.index("reference")
        if os.path.basename(paths[ref]) != entry["frames"][int(entry.get("reference", 0))]:
            other_ref.append(entry["folder"])
            continue
        order = [ref, *(k for k in range(len(rows)) if k != ref and ok[k])]
        store_keys = {
            "store": store,
            "burst_id": bid,
            "frames": tuple(order),
            "storage_options": storage_options,
        }
        cases.append(_case(root, entry, profiles, [Path(paths[k]) for k in order], **store_keys))
    notes = []
    if other_ref:
        notes.append(
            f"{len(other_ref)} burst(s) left out: the store's QA chose a reference other than the frame whose "
            f"clean reference the truth holds ({', '.join(other_ref)})"
        )
    if lost:
        notes.append(
            f"{len(lost)} burst(s) of {store} left out: no `rawlab synth --burst` truth.json lists their source "
            f"folder (bursts {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''})"
        )
    if not cases:
        raise RawlabError(
            f"no burst of store {store} has a truth to score against: a store keeps its bursts' source paths, "
            "not their truth, and no `rawlab synth --burst` truth.json lists those folders (moved, remote or "
            "real captures); pass the synth folder itself"
        )
    return cases, notes


def load_case(case: BurstCase):
    """``(planes (N, 4, h, w) float32 normalised, cfa, truth (4, h, w), region (4, h, w) bool or None)``, the
    reference first; from the store when the case has one (the frames QA kept), else from the files."""
    from ..bayer import normalise, pack

    if case.store is not None:
        from ..catalog.bursts import open_burst

        ds = open_burst(case.store, case.burst_id, case.storage_options).isel(frame=list(case.frames))
        raw, black = ds["raw"].values, ds["black_level"].values
        white, cfa = ds.attrs["white_level"], ds.attrs["cfa"]
        planes = np.stack([normalise(r, bl, white) for r, bl in zip(raw, black, strict=True)]).astype(
            np.float32
        )
    else:
        from ..burst import read_burst

        frames = read_burst(case.paths)
        cfa = frames[0].info.cfa
        planes = np.stack([f.normalized() for f in frames]).astype(np.float32)
    truth = pack(np.load(case.clean), cfa)
    region = None
    if case.mask is not None:
        region = pack(np.load(case.mask).any(axis=0).astype(np.uint8), cfa).astype(bool)
    if truth.shape != planes.shape[1:]:
        raise RawlabError(
            f"{case.clean} is {truth.shape} packed but the frames of {case.folder} are {planes.shape[1:]}"
        )
    return planes, cfa, truth, region
