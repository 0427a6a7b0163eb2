"""Click options shared by the commands of ``cli.py`` and ``cli_profile.py``, and how their values resolve."""

from __future__ import annotations

import shutil
import sys

import click

__all__ = ["HEAT_KINDS", "heat_option", "table_width", "width_option"]

HEAT_KINDS = ("time", "memory", "activations")

width_option = click.option(
    "--width", "-w", type=click.IntRange(min=0), default=None, metavar="N",
    help="Text table width in columns [default: the terminal's width, else 100; 0: no limit].")


def table_width(width: int | None, output: str | None) -> int | None:
    """``--width``: as given (0: no limit), else the terminal's width when writing to one, else 100."""
    if width is not None:
        return width or None
    if output is None and sys.stdout.isatty():
        return max(shutil.get_terminal_size((100, 24)).columns, 60)
    return 100


heat_option = click.option(
    "--heat", type=click.Choice(HEAT_KINDS), default=None,
    help="Diagram heat overlay: colour nodes by self time, peak memory (CUDA profiles) or activation size "
         "[default for a profile: time].")
