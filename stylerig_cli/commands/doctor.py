"""``stylerig doctor``: what this machine can do, and how to fix what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console

_MARK = {"ok": "[green]✓[/]", "missing": "[yellow]✗[/]", "info": "[blue]·[/]"}


@app.command()
def doctor(
    search: Annotated[
        list[Path] | None,
        typer.Option(
            "--search", metavar="DIR", help="Also look for face models and generators in DIR (repeatable)."
        ),
    ] = None,
) -> None:
    """Print what this machine can do (torch, CUDA, nvdiffrast, landmark detectors, face models,
    generators), each with the exact step to fix what is missing."""
    from stylerig.doctor import run_checks

    checks = run_checks(extra=search or ())
    width = max(len(c.name) for c in checks)
    area = None
    for c in checks:
        if c.area != area:
            area = c.area
            console.print(f"\n[bold]{escape(area)}[/]")
        console.print(
            f"  {_MARK.get(c.status, '?')} {escape(c.name):<{width}}  {escape(c.detail)}", highlight=False
        )
        if c.fix and c.status != "ok":
            console.print(f"    {'':<{width}}  [dim]fix:[/] {escape(c.fix)}", highlight=False)
    n_missing = sum(c.status == "missing" for c in checks)
    console.print(
        f"\n{n_missing} optional item(s) missing; the built-in face model and the torch renderer need none of them."
    )
