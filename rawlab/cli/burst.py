"""Bursts: ``burst merge`` (align and merge several raw frames of one scene into one DNG)."""

from __future__ import annotations

import click

from ._common import _Group, main


@main.group(cls=_Group)
def burst():
    """Align and merge bursts of raw frames (HDR+-style, on the Bayer mosaic)."""
