"""A rich progress bar fed by the trainer's ``progress(step, total, record)`` callback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RichProgress"]


class RichProgress:
    """Progress bar with steps, s/step, time left and the last logged loss (rank 0 only).

    Use as a context manager and pass the object as the trainer's ``progress`` callback::

        with RichProgress("fit-dfr") as bar:
            trainer.fit(progress=bar)

    Args:
        label: text left of the bar.
        keys: record keys shown after the bar when they are logged (default: ``loss``).
        console: a :class:`rich.console.Console` (default: rich's stdout console).
    """

    def __init__(self, label: str, keys: tuple[str, ...] = ("loss",), console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._keys = keys
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, step: int, total: int, record: Mapping[str, float]) -> None:
        if self._task is None:
            self._task = self._progress.add_task("train", total=total, completed=step, info="")
        info = None
        if record:
            parts = [f"{k} {record[k]:.4g}" for k in self._keys if k in record]
            if "s_per_step" in record:
                parts.append(f"{record['s_per_step']:.3f} s/step")
            info = "  ".join(parts)
        if info is not None:
            self._progress.update(self._task, completed=step, total=total, info=info)
        else:
            self._progress.update(self._task, completed=step, total=total)
