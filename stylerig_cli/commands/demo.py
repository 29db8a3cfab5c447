"""``stylerig demo``: sample → fit-dfr → train-rignet → mix → analyze → evaluate on the built-in world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from stylerig.demo import DemoConfig
from stylerig_cli.app import app, console


class _View:
    """One rich progress view: the stages overall, and the running stage's own bar."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._overall: Any = None
        self._current: Any = None

    def __enter__(self) -> _View:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def stage(self, name: str, index: int, total: int, skipped: bool) -> None:
        if self._overall is None:
            self._overall = self._progress.add_task("demo", total=total, info="")
        self._progress.update(self._overall, completed=index, info=name)
        if self._current is not None:
            self._progress.update(self._current, visible=False)
        info = "[dim]done before: skipped[/]" if skipped else ""
        self._current = self._progress.add_task(
            name, total=1 if skipped else None, completed=int(skipped), info=info
        )

    def update(self, done: int, total: int, info: str = "") -> None:
        if self._current is not None:
            self._progress.update(self._current, completed=done, total=total, info=escape(info))

    def finish(self, total: int) -> None:
        if self._overall is not None:
            self._progress.update(self._overall, completed=total, info="done")
        if self._current is not None:
            self._progress.update(self._current, visible=False)


_D = DemoConfig()  # the defaults the help states (stylerig.demo is torch-free at import)


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="The demo folder (default runs/demo, or runs/demo-quick with --quick).",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run of seconds (tiny sizes; its numbers mean nothing).")
    ] = False,
    samples: Annotated[
        int | None, typer.Option(min=8, metavar="N", help=f"Sample set size (default {_D.n_samples}).")
    ] = None,
    dfr_steps: Annotated[
        int | None, typer.Option(min=1, metavar="N", help=f"DFR steps (default {_D.dfr_steps}).")
    ] = None,
    rig_steps: Annotated[
        int | None, typer.Option(min=1, metavar="N", help=f"RigNet steps (default {_D.rig_steps}).")
    ] = None,
    rig_batch: Annotated[
        int | None, typer.Option(min=1, metavar="B", help=f"RigNet pairs per step (default {_D.rig_batch}).")
    ] = None,
    eval_pairs: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help=f"Held-out pairs per edit (default {_D.eval_pairs})."),
    ] = None,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to run.")] = "cpu",
    renderer: Annotated[
        str,
        typer.Option(
            metavar="auto|torch|nvdiffrast",
            help="Rasterizer of fit-dfr and train-rignet (auto: nvdiffrast on CUDA when installed).",
        ),
    ] = "auto",
    threads: Annotated[
        int | None, typer.Option(min=1, metavar="T", help="CPU threads (default: torch's choice).")
    ] = None,
) -> None:
    """The whole mission on the built-in world, about 13 minutes on 2 CPU cores: sample a set, fit DFR,
    train one rig for pose, expression and light, draw the mixing figures and Figures 4 / 6, and measure
    the edits with the world's independent estimator. Run it again to resume: finished stages are skipped."""
    import dataclasses

    import torch
    from rich.table import Table

    from stylerig.demo import STAGES, DemoConfig, run_demo
    from stylerig.evaluate import oracle_value

    if threads is not None:
        torch.set_num_threads(threads)
    cfg = DemoConfig.quick() if quick else DemoConfig()
    out = out or Path("runs/demo-quick" if quick else "runs/demo")
    over = {
        "n_samples": samples,
        "analyze_samples": samples,
        "dfr_steps": dfr_steps,
        "rig_steps": rig_steps,
        "rig_batch": rig_batch,
        "eval_pairs": eval_pairs,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})
    args = {
        "out": str(out),
        "quick": quick,
        "device": device,
        "renderer": renderer,
        "threads": threads,
        **over,
    }
    with _View() as view:
        result = run_demo(out, cfg, device=device, renderer=renderer, progress=view, arguments=args)
        view.finish(len(STAGES))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)

    t = Table(title=f"stylerig demo: {escape(str(out))}", title_justify="left")
    t.add_column("stage")
    t.add_column("time", justify="right")
    t.add_column("output")
    for s in result.stages:
        shown = ", ".join(escape(p) for p in s.outputs.values())
        t.add_row(s.name, "skipped" if s.skipped else _duration(s.seconds), shown)
    console.print(t)

    m = result.metrics
    k = Table(
        title=f"issue 6 targets, measured with {escape(str(m.get('estimator')))} on {m.get('n_pairs')} held-out pairs",
        title_justify="left",
    )
    k.add_column("metric")
    k.add_column("value", justify="right")
    k.add_column("perfect edit", justify="right")  # the world's oracle: what any rig could reach
    k.add_column("target", justify="right")
    k.add_column("met", justify="center")
    for key, v in (m.get("targets") or {}).items():
        o = oracle_value(m, key)
        k.add_row(
            key,
            f"{v['value']:.3f}",
            "–" if o is None else f"{o:.3f}",
            v["target"],
            "[green]yes[/]" if v["met"] else "[red]no[/]",
        )
    console.print(k)
    console.print("pictures:", highlight=False)
    for role, path in result.pictures.items():
        console.print(f"  {role}: {escape(path)}", highlight=False)
    console.print(
        f"numbers: {escape(str(out))}/evaluate/metrics.md, metrics.json; this run took {_duration(result.seconds)}",
        highlight=False,
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
