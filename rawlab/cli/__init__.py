"""The ``rawlab`` command line: parse, validate, call one library function, print a one-line summary.

Heavy modules (rawpy, dask, jax, tensorflow) are imported inside the commands so ``rawlab --help`` is instant.
Exit codes (docs/architecture.md, "CLI contract"): 0 success, 1 a ``--strict`` failure, 2 a usage error or bad input;
errors a user can fix are printed as one message, never as a traceback.

One module per stage of the pipeline registers its commands on :data:`main`, in the pipeline's order.
"""

from __future__ import annotations

from ._common import main

# isort: off
from . import curate, characterise, learn, ship  # noqa: F401  (registers the commands in the pipeline's order)
from . import burst  # noqa: F401  (after ship: bursts, issue 14)
# isort: on

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
