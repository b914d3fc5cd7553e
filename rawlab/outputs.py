"""Where a command writes, checked before the long work (every command that writes: synth, noise-fit, stats,
train, export, denoise).

A conversion or a batch of files should not run for minutes and then fail on an output it could never have
written: :func:`output_file` and :func:`output_folder` check (and create) the location first, with a real
write, because permission bits do not tell the whole story (root ignores them; a read-only mount or a
pseudo-filesystem such as ``/proc`` refuses everyone). Each problem is a :class:`RawlabError` naming the path,
what is wrong and what to do.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import RawlabError

__all__ = ["exists_reason", "output_file", "output_folder", "publish"]


def _folder(folder: Path, what: str, given: str) -> None:
    """Create ``folder`` (and its parents) for writing, or say why it cannot be."""
    for parent in (folder, *folder.parents):
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise RawlabError(
                    f"{what} {given}: {parent} is a file, not a folder, so nothing can be written below it; "
                    "choose a path in a folder"
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RawlabError(
            f"{what} {given}: cannot create the folder {folder} ({e.strerror or e}); choose a writable location"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".rawlab-write-check-"):
            pass
    except OSError as e:
        raise RawlabError(
            f"{what} {given}: cannot write in {folder} ({e.strerror or e}); choose a writable location"
        ) from None


def output_folder(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """``path`` as a folder that exists and takes files (created if missing).

    Raises
    ------
    RawlabError
        ``path`` or a parent of it is a file, or the folder cannot be created or written in.
    """
    p = Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise RawlabError(f"{what} {p} is a file; give a folder to write into")
    _folder(p, what, os.fspath(path))
    return p


def output_file(
    path: str | os.PathLike[str], what: str = "--out", *, companions: tuple[str, ...] = ()
) -> Path:
    """``path`` as a file that can be written (its folder created if missing); ``companions`` are suffixes
    of files written beside it (``".json"`` for ``OUT.json``), checked the same way.

    Raises
    ------
    RawlabError
        ``path`` (or a companion) is a folder, a parent is a file, or the folder cannot be written in.
    """
    p = Path(path)
    for q in (p, *(p.with_name(p.name + c) for c in companions)):
        if q.is_dir():
            raise RawlabError(f"{what} {p}: {q} is a folder; give the path of the file to write")
    _folder(p.parent, what, os.fspath(path))
    for q in (p, *(p.with_name(p.name + c) for c in companions)):
        if q.exists():
            try:  # an existing file is replaced: it must be writable too
                open(q, "r+b").close()
            except OSError as e:
                raise RawlabError(
                    f"{what} {p}: cannot replace {q} ({e.strerror or e}); choose a writable location"
                ) from None
    return p


def exists_reason(out: str | os.PathLike[str]) -> str:
    """Why an output was not written: it exists, and nothing is replaced unless asked."""
    return f"{os.fspath(out)} exists; kept it (pass --overwrite to replace it)"


def publish(tmp: Path, out: Path, overwrite: bool) -> bool:
    """Move the finished ``tmp`` to ``out``; without ``overwrite`` never replace a file that appeared there
    meanwhile (a hard link is the atomic no-clobber rename). Returns False if ``out`` was kept (``tmp`` is then
    the caller's to remove)."""
    if overwrite:
        tmp.replace(out)
        return True
    try:
        os.link(tmp, out)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: check, then rename (a narrow race remains)
        if os.path.lexists(out):
            return False
        tmp.replace(out)
        return True
    tmp.unlink()
    return True
