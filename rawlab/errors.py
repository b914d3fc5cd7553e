"""Error types that carry what a user needs to fix the problem.

Every error raised for bad input (a file that is not a raw, a sensor that is not in a store, a malformed
recipe) derives from :class:`RawlabError`. The command line prints its message and exits without a traceback;
anything else is a bug in rawlab and keeps its traceback.
"""

from __future__ import annotations

import os

__all__ = ["RawReadError", "RawlabError", "RawlabWarning"]


class RawlabError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug in rawlab."""


class RawlabWarning(UserWarning):
    """Something was off in the input but rawlab carried on (e.g. a metadata fallback was used)."""


class RawReadError(RawlabError):
    """A file could not be read as a Bayer raw.

    Parameters
    ----------
    path
        The file that failed.
    reason
        A sentence a user understands: what is wrong and, where there is one, what to do.
    kind
        A short machine-readable category: ``"missing"``, ``"not-raw"``, ``"undecodable"``, ``"truncated"``,
        ``"non-bayer"`` or ``"no-pixels"``. Catalogs record it next to the message.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, kind: str = "undecodable"):
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep path/reason/kind when pickled across Dask workers
        return (type(self), (self.path, self.reason, self.kind))
