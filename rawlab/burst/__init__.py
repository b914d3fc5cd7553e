"""Bursts: align several raw frames of one scene on the Bayer mosaic and merge them (``rawlab burst merge``)."""

from .align import Alignment, align_frame, grey
from .files import BurstResult, merge_bursts, merge_files, read_burst
from .merge import Merged, merge_burst

__all__ = [
    "Alignment",
    "BurstResult",
    "Merged",
    "align_frame",
    "grey",
    "merge_burst",
    "merge_bursts",
    "merge_files",
    "read_burst",
]
