"""``stylerig doctor``."""

from __future__ import annotations

from stylerig_cli.app import app


@app.command()
def doctor() -> None:
    """Print what this machine can do, and the exact step to fix what is missing."""
    raise NotImplementedError
