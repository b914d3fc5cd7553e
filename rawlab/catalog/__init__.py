"""Catalog build: scan raw folders, pair frames (or recognise bursts), check their quality, ingest pixels into a
Zarr store."""

from __future__ import annotations

import os

__all__ = ["build_catalog", "catalog_summary", "open_burst", "open_bursts", "open_catalog", "open_store"]


def open_catalog(store: str | os.PathLike[str], storage_options: dict | None = None):
    """The store's catalog as a pandas DataFrame, one row per source file (docs/architecture.md, "File formats").

    Files with identical content (same ``sha256``) are one row, the first path in name order; the others are
    listed in its ``other_paths``. Every source built into the store is there (builds merge into the catalog).

    Raises
    ------
    RawlabError
        If ``store`` is not a rawlab store or has no catalog yet.
    """
    from ..errors import RawlabError
    from .store import FrameStore

    fstore = FrameStore(store, storage_options)
    if not fstore.exists():
        raise RawlabError(
            f"{fstore.url} is not a rawlab store; build one with `rawlab catalog build SRC --out STORE`"
        )
    cat = fstore.read_catalog()
    if cat is None:
        raise RawlabError(
            f"{fstore.url} has no catalog yet (an interrupted first build?); run the build again"
        )
    return cat


def __getattr__(name: str):
    if name == "build_catalog":
        from .build import build_catalog

        return build_catalog
    if name == "open_store":
        from .store import open_store

        return open_store
    if name in ("open_burst", "open_bursts"):
        from . import bursts

        return getattr(bursts, name)
    if name == "catalog_summary":
        from .summary import catalog_summary

        return catalog_summary
    raise AttributeError(name)
