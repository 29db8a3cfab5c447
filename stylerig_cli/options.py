"""Command-line options that several commands share (one wording, one place).

Each names its flag: typer 0.27.2 names an option without flags after an upper-case metavar equal to its
parameter's name (``--DFR``, ``--LR``), so ``stylerig evaluate --dfr`` failed there ("No such option:
--dfr"). ``tests/test_cli.py`` checks that every option whose metavar is its name in capitals spells out
its flag.
"""

from __future__ import annotations

from typing import Any

import typer

#: ``--dfr`` of the commands that apply a rig: which DFR reads the current parameters.
DFR_OF_RIG: Any = typer.Option(
    "--dfr",
    metavar="DFR",
    help="The DFR (default: the one the rig was trained with; with several rigs, the first one's).",
    show_default=False,
)

#: ``--device`` of the commands that run a generator (not training).
RUN_DEVICE: Any = typer.Option("--device", metavar="auto|cpu|cuda[:N]", help="Where to run.")


def rig_option(help: str) -> Any:
    """``--rig`` / ``-r`` (a rig.safetensors or its folder) with a command's own help text."""
    return typer.Option("--rig", "-r", metavar="RIG", help=help, show_default=False)
