"""Find raw files under the sources of a build: folders, globs, single files; local paths or fsspec URLs.

Files are recognised by content (:func:`rawlab.rawio.sniff_raw_format` on their first bytes), not only by
extension: a raw without a raw extension is found, and a file with a raw extension that is not a raw is kept
as a candidate so the build records it as failed with the reason. Other files (sidecars, JPEG previews, notes)
are skipped and counted.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from ..errors import RawlabError

__all__ = ["RAW_EXTENSIONS", "ScanResult", "SourceFile", "scan_sources"]

# Extensions of raw formats LibRaw reads (lower case, without the dot).
RAW_EXTENSIONS = frozenset(
    "3fr ari arw bay braw cap cr2 cr3 crw cs1 dc2 dcr dng drf eip erf fff gpr iiq k25 kdc mdc mef mos mrw nef "
    "nrw orf pef ptx pxn qtk r3d raf raw rw2 rwl rwz sr2 srf srw sti x3f".split()
)
_SKIP_NAMES = {".DS_Store", "Thumbs.db"}
_HEADER_BYTES = 64


@dataclass(frozen=True)
class SourceFile:
    """One candidate raw file."""

    path: str  # absolute local path, or a URL with protocol for remote files
    relpath: str  # posix path relative to the source root it was found under
    source_root: str
    size: int
    mtime: float | None
    raw_format: str | None  # from content; None when only the extension says raw


@dataclass(frozen=True)
class ScanResult:
    files: list[SourceFile]
    skipped: int  # files that are neither raw by content nor by extension
    scopes: tuple[tuple[str, str], ...] = ()  # ("folder" | "file" | "glob", full path or URL) per source

    def covers(self, path: str) -> bool:
        """Whether ``path`` (a catalog path) lies where this scan looked: a file of these sources that the
        scan did not find has been deleted or moved."""
        for kind, where in self.scopes:
            if (
                (kind == "folder" and path.startswith(where.rstrip("/") + "/"))
                or (kind == "file" and path == where)
                or (kind == "glob" and fnmatch.fnmatchcase(path, where))
            ):
                return True
        return False


def _mtime(info: dict) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        v = info.get(key)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return None


def _expand(source: str, storage_options: dict) -> tuple[object, str, list[tuple[str, dict]], str, str]:
    """Resolve one source to ``(fs, root, [(path, info), ...], kind, path)``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source, **storage_options)
    if any(ch in path for ch in "*?["):
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        found = fs.glob(path, detail=True)
        return fs, root, [(p, i) for p, i in sorted(found.items()) if i.get("type") == "file"], "glob", path
    if not fs.exists(path):
        raise RawlabError(
            f"source {source!r} does not exist; give folders, files or glob patterns of raw files"
        )
    if fs.isfile(path):
        return fs, path.rsplit("/", 1)[0], [(path, fs.info(path))], "file", path
    found = fs.find(path, detail=True)
    return fs, path.rstrip("/"), sorted(found.items()), "folder", path.rstrip("/")


def _full(fs, path: str) -> str:
    """The catalog's spelling of a path: absolute for local files, a URL with its protocol otherwise."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return os.path.abspath(path) if protocol in ("file", "local") else f"{protocol}://{path}"


def scan_sources(sources: list[str], storage_options: dict | None = None) -> ScanResult:
    """List raw candidates under ``sources``, in a deterministic order, each file once.

    Raises
    ------
    RawlabError
        If a source does not exist (nothing else is scanned then, so a typo is not half-built).
    """
    from ..rawio import sniff_raw_format

    storage_options = storage_options or {}
    resolved = [_expand(s, storage_options) for s in sources]
    seen: set[str] = set()
    files: list[SourceFile] = []
    skipped = 0
    scopes = tuple((kind, _full(fs, where)) for fs, _, _, kind, where in resolved)
    for (fs, root, entries, _kind, _where), source in zip(resolved, sources, strict=True):
        for path, info in entries:
            name = path.rsplit("/", 1)[-1]
            rel = path[len(root) :].lstrip("/") if path.startswith(root) else name
            if name in _SKIP_NAMES or any(part.startswith(".") for part in rel.split("/")):
                continue  # hidden files and folders (including rawlab's own temporary files)
            full = _full(fs, path)
            if full in seen:
                continue
            try:
                with fs.open(path, "rb") as f:
                    header = f.read(_HEADER_BYTES)
            except OSError:
                header = b""  # unreadable: judged by its extension; the build records why it failed
            fmt = sniff_raw_format(header)
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if fmt is None and ext not in RAW_EXTENSIONS:
                skipped += 1
                continue
            seen.add(full)
            files.append(SourceFile(full, rel, source, int(info.get("size") or 0), _mtime(info), fmt))
    return ScanResult(files, skipped, scopes)
