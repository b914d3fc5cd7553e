"""rawlab: curate paired raw-denoising datasets, characterise sensor noise, train and ship raw denoisers.

The public API is small and imported lazily, so ``import rawlab`` (and ``rawlab --help``) stays instant.
"""

from __future__ import annotations

from ._version import __version__
from .errors import RawlabError, RawReadError

__all__ = [
    "RawReadError",
    "RawlabError",
    "__version__",
    "evaluate_store",
    "open_catalog",
    "open_store",
    "read_info",
    "read_raw",
    "write_dng",
]


def __getattr__(name: str):
    if name in ("read_raw", "read_info"):
        from . import rawio

        return getattr(rawio, name)
    if name in ("open_catalog", "open_store"):
        from . import catalog

        return getattr(catalog, name)
    if name == "evaluate_store":
        from .evaluation import evaluate_store

        return evaluate_store
    if name == "write_dng":
        from .dng import write_dng

        return write_dng
    raise AttributeError(f"module 'rawlab' has no attribute {name!r}")
