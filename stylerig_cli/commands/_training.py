"""What ``fit-dfr`` and ``train-rignet`` share on the command line: the progress bar and the run summary."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape

from stylerig_cli.app import console

R = TypeVar("R")


def run_with_progress(title: str, keys: Sequence[str], run: Callable[[Any], R]) -> R:
    """Call ``run(progress)`` with a rich progress bar on rank 0 (``progress`` is None on other ranks)."""
    from stylerig.training import RichProgress

    main = os.environ.get("RANK", "0") in ("", "0")
    bar = RichProgress(title, keys=tuple(keys), console=console) if main else None
    if bar is None:
        return run(None)
    with bar:
        return run(bar)


def report_run(result: Any, steps: int, out: Path) -> bool:
    """Print a trainer result's notes, and stop on an interrupted run (exit 130, checkpoint kept).

    Returns:
        False on ranks other than 0 (nothing printed), else True after the notes and the resume line.
    """
    if result.rank != 0:
        return False
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    t = result.train
    if t.interrupted:
        console.print(
            f"[yellow]interrupted[/] at step {t.step}/{steps}; checkpoint saved in {escape(str(out))} "
            "(run the same command again to continue)",
            highlight=False,
        )
        sys.exit(130)
    if t.resumed_from:
        console.print(f"resumed from step {t.resumed_from}", highlight=False)
    return True


def print_preset(preset: str, used: str, settings: str) -> None:
    """One line: the preset a run resolved ``preset`` to (and why, under auto) and the settings it gave."""
    why = "a set of the built-in world" if used == "world" else "not a set of the built-in world"
    how = f" (auto: {why})" if preset.strip().lower() == "auto" else ""
    console.print(f"preset {used}{how}: {settings}", highlight=False)
