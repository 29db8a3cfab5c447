"""Command-line options that several commands share (one wording, one place)."""

from __future__ import annotations

from typing import Any

import typer

#: ``--dfr`` of the commands that apply a rig: which DFR reads the current parameters.
DFR_OF_RIG: Any = typer.Option(
    metavar="DFR",
    help="The DFR (default: the one the rig was trained with; with several rigs, the first one's).",
    show_default=False,
)

#: ``--device`` of the commands that run a generator (not training).
RUN_DEVICE: Any = typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to run.")


def rig_option(help: str) -> Any:
    """``--rig`` / ``-r`` (a rig.safetensors or its folder) with a command's own help text."""
    return typer.Option("--rig", "-r", metavar="RIG", help=help, show_default=False)
